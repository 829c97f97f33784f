"""``deepssim ssim``."""

from __future__ import annotations

import argparse
import json
from typing import Any


def _cmd_ssim(args: argparse.Namespace) -> int:
    from ..readers import read_image
    from ..refssim import check_image, register, ssim

    a = check_image(read_image(args.a), args.a)
    b = check_image(read_image(args.b), args.b)
    if a.shape != b.shape:
        raise ValueError(
            f"{args.a} is {a.shape[0]}x{a.shape[1]} but {args.b} is {b.shape[0]}x{b.shape[1]}: "
            "SSIM compares images of one size (resize one of them first)"
        )
    result: dict[str, Any] = {"a": args.a, "b": args.b, "shape": list(a.shape), "ssim": ssim(a, b)}
    if args.registered:
        alignment = register(a, b, device=args.device)
        result["registered_ssim"] = alignment.score
        result["alignment"] = {
            "flip_axis0": alignment.flip[0],
            "flip_axis1": alignment.flip[1],
            "angle_deg": alignment.angle,
            "shift_px": list(alignment.shift),
        }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{result['registered_ssim'] if args.registered else result['ssim']:.6f}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ssim",
        help="reference SSIM of two images",
        description=(
            "Reference SSIM of two images of one size (per-image z-score, scikit-image defaults, "
            "data_range of A). A and B are image files (PNG, JPEG, TIFF, BMP, NIfTI, DICOM, "
            ".npy/.npz) or slice ids such as vol.nii.gz#axis2:85."
        ),
    )
    p.add_argument("a", metavar="A", help="first image (its range sets data_range)")
    p.add_argument("b", metavar="B", help="second image")
    p.add_argument(
        "--registered",
        action="store_true",
        help="best SSIM over flips, rotations within +-15 deg and small shifts of B",
    )
    p.add_argument(
        "--device", default="auto", help="for --registered: auto (default), cpu or cuda"
    )
    p.add_argument(
        "--json", action="store_true", help="print a JSON object (with --registered: both values)"
    )
    p.set_defaults(func=_cmd_ssim)
