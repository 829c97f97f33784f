"""``deepssim train``, ``deepssim embed`` and ``deepssim score``."""

from __future__ import annotations

import argparse
import json
import sys

from .types import (
    at_least, axis, dropout, non_negative_int, positive_float, positive_int, probability, seed,
)

# The model's choices, written out: importing the model would load torch for every command.
BACKBONES = ("convnext_base", "convnext_tiny", "resnet18", "resnet50", "small")
POOLINGS = ("avg", "gem", "local")
SCORINGS = ("cosine", "best-flip", "cross-fit")
PRESET_NAMES = ("fast", "paper", "plus")
"""The training presets (``deepssim.training.PRESETS``)."""
MIN_SIZE = 16
"""``Preprocess``'s smallest image size (``deepssim.model.preprocess.MIN_SIZE``)."""
MIN_IN_BATCH_BLOCK = 2
"""``TrainConfig``'s smallest in-batch block (``deepssim.training.config.MIN_IN_BATCH_BLOCK``)."""


def _csv_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _cmd_train(args: argparse.Namespace) -> int:
    """Flags map to ``TrainConfig.with_overrides`` keys; the configuration does the rest."""
    from ..storage import check_output_folder
    from ..training import get_preset, train

    check_output_folder(args.out, inputs=args.images)
    overrides = {
        "epochs": args.epochs,
        "max_minutes": args.max_minutes,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "n_train_pairs": args.n_train_pairs,
        "n_val_pairs": args.n_val_pairs,
        "max_images": args.max_images,
        "families": args.families,
        "val_families": args.val_families,
        "preprocess__size": args.image_size,
        "preprocess__intensity": args.intensity,
        "model__backbone": args.backbone,
        "model__pooling": args.pooling,
        "model__grid": args.grid,
        "model__dilate_last": args.dilate_last,
        "model__embedding_dim": args.embedding_dim,
        "model__scoring": args.scoring,
        "model__dropout": args.dropout,
        "in_batch_pairs": args.in_batch_pairs,
        "in_batch_block": args.in_batch_block,
        "flip_pairs": args.flip_pairs,
        "copy_partners": args.copy_partners,
        "compile": args.compile,
        "val_every": args.val_every,
        "init": args.init,
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if args.pretrained is not None:
        overrides["model__pretrained"] = None if args.pretrained.lower() == "none" else args.pretrained
    config = get_preset(args.preset).with_overrides(**overrides)
    result = train(args.images, args.out, config, device=args.device, resume=args.resume,
                   progress=not args.no_progress)
    summary = {"model": str(result.model_dir), "stopped_by": result.stopped_by, "best": result.best}
    print(json.dumps(summary, indent=2) if args.json else
          f"model written to {result.model_dir} (validation MAE perturbed "
          f"{result.best['val_perturbed_mae']:.4f}, r {result.best['val_perturbed_r']:.3f})")
    return 0


def _train_interrupted(args: argparse.Namespace) -> str:
    """What an interrupted training run kept, and how to go on."""
    from pathlib import Path

    state = Path(args.out) / "train_state.pt"  # training.state.STATE, named here without torch
    if state.is_file():
        return (f"{state} holds the state after the last finished epoch: run the same command with "
                "--resume to continue from it")
    return (f"no epoch had finished; the pair sets already built are kept in {Path(args.out) / 'cache'}: "
            "run the same command again to reuse them")


def _written_whole(args: argparse.Namespace) -> str:
    """An interrupted command whose output file is written at the end, whole."""
    if args.out is None:
        return "run the same command again to start it over"
    return f"{args.out} was not written (it is written whole at the end): run the same command again"


def _cmd_embed(args: argparse.Namespace) -> int:
    from ..model import load_model
    from ..model.files import embed_folder, save_embeddings
    from ..readers import SliceSpec
    from ..storage import check_output_file

    check_output_file(args.out, inputs=[args.images])  # an .npz inside the folder would be read as an image
    model = load_model(args.model, device=args.device, trust_torchscript=args.trust_torchscript)
    spec = SliceSpec.parse(args.slices, axis=args.axis, skip_empty=args.skip_empty)
    skipped: list = []
    ids, emb = embed_folder(model, args.images, slices=spec, batch_size=args.batch_size,
                            skip_unreadable=args.skip_unreadable, flips=args.flips, workers=args.workers,
                            skipped=skipped)
    save_embeddings(args.out, ids, emb, model)
    if skipped:
        print(f"{len(skipped)} unreadable file(s) skipped:", file=sys.stderr)
        for error in skipped:
            print(f"  {error}", file=sys.stderr)
    if model.real_flips and not args.flips:
        print(f"note: this model scores pairs by {model.scoring}, which needs every image's four flips: "
              "embed with --flips to compute its scores from these files", file=sys.stderr)
    views = " (4 flips each)" if args.flips else ""
    print(f"{len(ids)} embeddings{views} of dimension {emb.shape[-1]} written to {args.out}")
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    from ..model import load_model
    from ..model.files import score_pairs_csv
    from ..storage import check_output_file, write_csv

    if args.out is not None:
        check_output_file(args.out, inputs=[args.pairs])
    model = load_model(args.model, device=args.device, trust_torchscript=args.trust_torchscript)
    header, rows = score_pairs_csv(model, args.pairs, args.root, batch_size=args.batch_size,
                                   allow_outside_root=args.allow_outside_root)
    text = write_csv(args.out, header, rows)
    if args.out is None:
        sys.stdout.write(text)
    else:
        print(f"{len(rows)} scored pairs written to {args.out}", file=sys.stderr)
    return 0


REMOVED_TRAIN_FLAGS = {
    ("--flip-search", "--no-flip-search", "--joint-flips", "--no-joint-flips", "--cross-fit",
     "--no-cross-fit", "--flip-symmetric", "--no-flip-symmetric"):
        "the scoring rule is one flag: --scoring cosine, best-flip or cross-fit",
    ("--in-batch-mining",): "in-batch pairs are always the pairs within blocks of inputs (--in-batch-block)",
    ("--in-batch-grouping",): "the in-batch blocks hold random inputs",
    ("--stem",): "the small backbone has one stem",
}
"""Flags of earlier versions, each refused with what replaces it."""


class _Removed(argparse.Action):
    """A flag of an earlier version: using it is an error that says what replaces it."""

    def __init__(self, *args: object, use: str, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.use = use

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        parser.error(f"{option_string} was removed: {self.use}")


def _removed_flags(p: argparse.ArgumentParser) -> None:
    for names, use in REMOVED_TRAIN_FLAGS.items():
        p.add_argument(*names, action=_Removed, use=use, nargs="?", help=argparse.SUPPRESS)


def workers_option(p: argparse.ArgumentParser) -> None:
    from ..readers.read import MAX_READING_WORKERS

    p.add_argument("--workers", type=positive_int, metavar="N",
                   help="threads that read and resize the files while the network runs "
                        f"(default: half the cores, at most {MAX_READING_WORKERS}); results do not depend on it; "
                        "each thread holds one file of up to --max-pixels elements at a time")


def allow_outside_root_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--allow-outside-root", action="store_true",
                   help="read image paths of the pairs file that lead outside --root (.., absolute "
                        "paths, symbolic links out of it); refused by default")


def _model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="model folder (or a TorchScript file, see below)")
    p.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--trust-torchscript", action="store_true",
                   help="allow loading the authors' TorchScript checkpoint (it can run code)")


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a DeepSSIM model on images (no labels needed)",
        description="Self-supervised training: cos(embeddings) learns the SSIM of image pairs "
                    "as if aligned. Flags override the preset's values.",
    )
    p.add_argument("images", nargs="+", metavar="IMAGES", help="folders or files of training images")
    p.add_argument("--out", required=True, help="model folder to write")
    p.add_argument("--preset", default="fast", choices=PRESET_NAMES)
    p.add_argument("--image-size", type=at_least(MIN_SIZE), help="images are resized to S x S")
    p.add_argument("--epochs", type=positive_int)
    p.add_argument("--max-minutes", type=positive_float, help="stop training after M minutes")
    p.add_argument("--batch-size", type=positive_int)
    p.add_argument("--lr", type=positive_float)
    p.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    p.add_argument("--seed", type=seed)
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--backbone", choices=list(BACKBONES))
    p.add_argument("--pooling", choices=list(POOLINGS),
                   help="local (fast): the head applied to each cell of a G x G layout (--grid; "
                        "8 in fast), the score the mean of the cells' cosines; avg (paper), gem "
                        "(plus)")
    p.add_argument("--grid", type=positive_int, metavar="G",
                   help="cells per side of the layout of local pooling (default 4; 8 in fast); "
                        "at most the last stage's map side (image size / 32, / 16 with "
                        "--dilate-last)")
    p.add_argument("--dilate-last", action=argparse.BooleanOptionalAction, default=None,
                   help="keep the last stage at the resolution of the one before (dilated): a "
                        "map twice as fine, for --grid twice as large (small and resnet50 "
                        "backbones; on in fast, where turning it off, another backbone or "
                        "another pooling also takes grid 4 and 256-d unless given)")
    p.add_argument("--embedding-dim", type=positive_int, metavar="D",
                   help="embedding size (with local pooling, split evenly over the G x G cells; "
                        "default 256, 1,024 in fast)")
    p.add_argument("--init", metavar="MODEL_DIR",
                   help="start from the weights of this trained model (fine-tuning; its network "
                        "settings must match the run's)")
    p.add_argument("--pretrained",
                   help="imagenet (torchvision weights API), a weights file, or none")
    p.add_argument("--scoring", choices=list(SCORINGS),
                   help="how a pair is scored: cosine (paper, plus: one cosine, its network "
                        "taught to ignore flips; chosen on fast, it trains with flips at p 0.5 per "
                        "axis and without flipped pairs unless given), best-flip (the best cosine "
                        "over the four flips of the synthetic image), cross-fit (fast: joint flips "
                        "of both images, the relative flip cross-fitted); these two undo flips and "
                        "train without them")
    _removed_flags(p)
    p.add_argument("--intensity", choices=["zscore", "rank"], help="per-image normalisation")
    p.add_argument("--dropout", type=dropout, help="dropout of the projection head")
    p.add_argument("--in-batch-pairs", type=non_negative_int, metavar="N",
                   help="extra pairs among the images of each batch from one block of inputs "
                        "(targets computed per block before training), at most N times the "
                        "batch's images (0: off; the fast preset: 32)")
    p.add_argument("--in-batch-block", type=at_least(MIN_IN_BATCH_BLOCK), metavar="N",
                   help="inputs per block of the in-batch pairs (default 128)")
    p.add_argument("--flip-pairs", type=probability, metavar="P",
                   help="probability that a sampled pair is shown flipped (both sides alike); "
                        "in-batch pairs of differently flipped pairs learn the SSIM of their "
                        "relative orientation (0: off; the fast preset: 0.75; needs training "
                        "without flips)")
    p.add_argument("--copy-partners", type=non_negative_int, metavar="K",
                   help="with in-batch pairs: each near-copy also meets the K inputs of its "
                        "source's block that look most like the source, as in-batch pairs "
                        "(targets computed once before training; 0: off; the fast preset: 12)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the training steps (the fast preset does: more steps "
                        "in its minutes; the first compilation, about a minute, comes before the "
                        "time budget starts)")
    p.add_argument("--val-every", type=non_negative_int, metavar="N",
                   help="validate every N epochs and when training stops (0: only when it "
                        "stops, as the fast preset does; validation time counts against "
                        "--max-minutes)")
    p.add_argument("--n-train-pairs", type=positive_int)
    p.add_argument("--n-val-pairs", type=positive_int)
    p.add_argument("--max-images", type=positive_int, help="use a random subset of at most N images")
    p.add_argument("--families", type=_csv_list, help="near-copy generators for training pairs")
    p.add_argument("--val-families", type=_csv_list, help="generators for validation pairs")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=_cmd_train, on_interrupt=_train_interrupted)

    p = sub.add_parser("embed", help="embed every image of a folder into an .npz file")
    _model_options(p)
    p.add_argument("--images", required=True, help="folder (or file) of images")
    p.add_argument("--out", required=True, help="output .npz (ids, embeddings)")
    p.add_argument("--slices", default="center", help="for volumes: center, all, START:STOP[:STEP]")
    p.add_argument("--axis", type=axis, help="slicing axis (default: the format's)")
    p.add_argument("--skip-empty", action="store_true", help="drop all-background slices")
    p.add_argument("--skip-unreadable", action="store_true",
                   help="embed what can be read instead of stopping at unreadable files")
    p.add_argument("--flips", action="store_true",
                   help="embeddings of each image's four flips, (N, 4, D): for the synthetic "
                        "images of a best-flip model, whose score is the best over them, and for "
                        "both sides of a cross-fit model")
    workers_option(p)
    p.set_defaults(func=_cmd_embed, on_interrupt=_written_whole)

    p = sub.add_parser("score", help="DeepSSIM score of the pairs listed in a CSV file")
    _model_options(p)
    p.add_argument("--pairs", required=True, help="CSV with columns real,synthetic (others kept)")
    p.add_argument("--root", required=True, help="folder the paths in the CSV are relative to")
    p.add_argument("--out", help="output CSV (default: stdout)")
    allow_outside_root_option(p)
    p.set_defaults(func=_cmd_score, on_interrupt=_written_whole)
