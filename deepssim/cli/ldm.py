"""``deepssim ldm train-vae | train | sample`` and ``deepssim case-study``."""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Callable
from typing import Any

from ..auditing.options import MIN_VERIFY_TOP
from ..ldm.duplication import LEVELS
from ..ldm.presets import PRESETS
from .model import MIN_SIZE
from .types import at_least, non_negative_float, positive_float, positive_int, seed

Command = Callable[[argparse.Namespace], int]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--no-progress", action="store_true")


def _resumable(args: argparse.Namespace) -> str:
    """What an interrupted LDM training kept, and how to go on."""
    return ("the state after the last finished epoch is kept in the output folder (if one finished): "
            "run the same command with --resume to continue from it")


def _rerun(args: argparse.Namespace) -> str:
    """Commands that pick up what an interrupted run finished when run again."""
    return f"what was finished is kept in {args.out}: run the same command again to continue"


def _needs_monai(command: Command) -> Command:
    """``command`` run only when the ``ldm`` extra (MONAI) is installed; else an error naming
    the extra (one line on stderr and exit code 2, as for any other error of the command)."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        from ..ldm.nets import require_monai

        try:
            require_monai()
        except ImportError as exc:
            raise RuntimeError(str(exc)) from None
        return command(args)

    return run


@_needs_monai
def _cmd_train_vae(args: argparse.Namespace) -> int:
    from ..ldm import preset, train_vae
    from ..storage import check_output_folder

    check_output_folder(args.out, inputs=args.images)
    config = preset(args.preset, image_size=args.image_size, seed=args.seed, grid_every=args.grid_every,
                    vae_epochs=args.epochs, vae_batch_size=args.batch_size, vae_lr=args.lr,
                    vae_perceptual=args.perceptual, vae_perceptual_weight=args.perceptual_weight,
                    vae_adv_weight=args.adv_weight, vae_kl_weight=args.kl_weight)
    result = train_vae(args.images, args.out, config, device=args.device, resume=args.resume,
                       max_minutes=args.max_minutes, progress=not args.no_progress)
    r = result.recon_ssim
    print(f"VAE in {result.folder}: {result.loop.steps} steps ({result.loop.stopped_by}), "
          f"reconstruction SSIM mean {r['mean']:.3f}, median {r['median']:.3f}")
    return 0


@_needs_monai
def _cmd_train(args: argparse.Namespace) -> int:
    from ..ldm import train_ldm
    from ..storage import check_output_folder

    check_output_folder(args.out, inputs=[*args.images, args.vae])
    overrides: dict[str, Any] = {k: v for k, v in {
        "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
        "grid_every": args.grid_every}.items() if v is not None}
    result = train_ldm(args.images, args.vae, args.out, duplication=args.duplication, unet_overrides=overrides,
                       device=args.device, resume=args.resume, max_minutes=args.max_minutes,
                       max_steps=args.max_steps, progress=not args.no_progress)
    print(f"LDM in {result.folder}: {len(result.counts)} images, {int(result.counts.sum())} records "
          f"({args.duplication}), {result.loop.steps} steps ({result.loop.stopped_by}), "
          f"scale factor {result.scale_factor:.4f}; duplication record in {result.folder / 'duplication.csv'}")
    return 0


@_needs_monai
def _cmd_sample(args: argparse.Namespace) -> int:
    from ..ldm import sample
    from ..storage import check_output_folder

    check_output_folder(args.out)
    paths = sample(args.model, args.out, n=args.n, per_record=args.per_record, seed=args.seed,
                   batch_size=args.batch_size, device=args.device, progress=not args.no_progress)
    print(f"{len(paths)} samples in {args.out} (manifest.csv lists them)")
    return 0


@_needs_monai
def _cmd_case_study(args: argparse.Namespace) -> int:
    from ..ldm import CaseStudyConfig, case_study
    from ..storage import check_output_folder

    check_output_folder(args.out, inputs=args.images)
    options = {k: v for k, v in {
        "preset": args.preset, "n_train": args.n_train, "n_samples": args.n_samples, "match": args.match,
        "levels": tuple(args.levels) if args.levels else None, "vae_epochs": args.vae_epochs,
        "unet_epochs": args.unet_epochs, "deepssim_minutes": args.deepssim_minutes, "verify": args.verify,
        "seed": args.seed}.items() if v is not None}
    say = (lambda text: print(text, file=sys.stderr)) if args.json else print
    summary = case_study(args.images, args.out, CaseStudyConfig(**options), model=args.model,
                         device=args.device, progress=not args.no_progress, say=say)
    if args.json:
        print(json.dumps(summary, indent=2))
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    group = sub.add_parser(
        "ldm", help="train and sample a latent diffusion model (MONAI) to study memorization",
        description="A MONAI latent diffusion model (AutoencoderKL + DiffusionModelUNet, DDPM "
                    "training, DDIM sampling) with duplicated training records.")
    ldm_sub = group.add_subparsers(dest="ldm_command", required=True, metavar="SUBCOMMAND")

    p = ldm_sub.add_parser("train-vae", help="train the autoencoder",
                           description="Train the AutoencoderKL (L1 + KL + perceptual + adversarial).")
    p.add_argument("images", nargs="+", metavar="IMAGES", help="folders or files of training images")
    p.add_argument("--out", required=True, metavar="VAE_DIR")
    p.add_argument("--preset", default="small", choices=sorted(PRESETS))
    p.add_argument("--image-size", type=at_least(MIN_SIZE), help="images are resized to S x S (small 64, paper 128)")
    p.add_argument("--epochs", type=positive_int)
    p.add_argument("--batch-size", type=positive_int)
    p.add_argument("--lr", type=positive_float)
    p.add_argument("--kl-weight", type=non_negative_float)
    p.add_argument("--perceptual-weight", type=non_negative_float, help="0 switches the perceptual loss off")
    p.add_argument("--perceptual", metavar="imagenet|PATH",
                   help="ResNet-50 weights of the perceptual loss: 'imagenet' (torch hub cache) or a file")
    p.add_argument("--adv-weight", type=non_negative_float, help="0 switches the adversarial loss off")
    p.add_argument("--max-minutes", type=positive_float, help="stop after this much training time")
    p.add_argument("--grid-every", type=positive_int, help="reconstruction grid every N epochs")
    p.add_argument("--seed", type=seed)
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    _common(p)
    p.set_defaults(func=_cmd_train_vae, on_interrupt=_resumable)

    p = ldm_sub.add_parser("train", help="train the diffusion model on the VAE's latents",
                           description="Train the DiffusionModelUNet; the preset and image size come "
                                       "from the VAE folder.")
    p.add_argument("images", nargs="+", metavar="IMAGES", help="folders or files of training images")
    p.add_argument("--vae", required=True, metavar="VAE_DIR", help="a `deepssim ldm train-vae` folder")
    p.add_argument("--out", required=True, metavar="LDM_DIR")
    p.add_argument("--duplication", default="none", choices=list(LEVELS),
                   help="copies per training image: none 1, low 1-4, high 1-14 (recorded in duplication.csv)")
    p.add_argument("--epochs", type=positive_int)
    p.add_argument("--batch-size", type=positive_int)
    p.add_argument("--lr", type=positive_float)
    p.add_argument("--max-minutes", type=positive_float)
    p.add_argument("--max-steps", type=positive_int)
    p.add_argument("--grid-every", type=positive_int, help="sample grid every N epochs")
    p.add_argument("--seed", type=seed)
    p.add_argument("--resume", action="store_true")
    _common(p)
    p.set_defaults(func=_cmd_train, on_interrupt=_resumable)

    p = ldm_sub.add_parser("sample", help="sample images (DDIM) as PNG with a manifest",
                           description="Sample with DDIM; sample i uses noise seeded by (seed, i), "
                                       "so the images do not depend on the batch size.")
    p.add_argument("model", metavar="LDM_DIR")
    p.add_argument("--out", required=True, metavar="DIR")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--n", type=positive_int, help="samples in total")
    how.add_argument("--per-record", type=positive_int, help="samples per training image")
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--batch-size", type=positive_int, default=64)
    _common(p)
    p.set_defaults(func=_cmd_sample, on_interrupt=_rerun)

    p = sub.add_parser(
        "case-study", help="the memorization experiment: LDM with and without duplication, oracle, audit",
        description="Train the LDM with duplicated and unduplicated records, sample it, find copies "
                    "with the registered-SSIM oracle, audit the samples with DeepSSIM and write "
                    "report.md and case_study.json. Rerun the same command to resume.")
    p.add_argument("--images", nargs="+", required=True, metavar="DIR")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--preset", choices=sorted(PRESETS), help="LDM preset (default small)")
    p.add_argument("--n-train", type=at_least(2), help="distinct training images (default 100)")
    p.add_argument("--n-samples", type=positive_int, help="samples per duplication level (default 300)")
    p.add_argument("--levels", nargs="+", choices=list(LEVELS), help="duplication levels (default none high)")
    p.add_argument("--match", choices=["epochs", "steps"],
                   help="train every level for the same optimiser steps (default: same compute) or the same epochs over its records")
    p.add_argument("--vae-epochs", type=positive_int)
    p.add_argument("--unet-epochs", type=positive_int)
    p.add_argument("--model", metavar="MODEL_DIR", help="a DeepSSIM model (default: train the fast preset on the subset)")
    p.add_argument("--deepssim-minutes", type=positive_float, help="training budget of that model (default 8)")
    p.add_argument("--verify", type=at_least(MIN_VERIFY_TOP), help="audit verification depth (default 10; 0 off)")
    p.add_argument("--seed", type=seed)
    p.add_argument("--json", action="store_true", help="print case_study.json")
    _common(p)
    p.set_defaults(func=_cmd_case_study, on_interrupt=_rerun)
