"""The ``deepssim`` command: a thin layer over the Python API, one module per command group.

Results go to stdout (plain, or JSON with ``--json``); progress and errors go to stderr.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from ..versions import __version__
from . import audit, basic, bench, evaluate, ldm, model


def _pixel_limit(text: str) -> int:
    from ..readers.limits import parse_max_pixels

    try:
        return parse_max_pixels(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deepssim",
        description="Audit synthetic medical images for memorized training data.",
    )
    parser.add_argument("--version", action="version", version=f"deepssim {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    parser.add_argument(
        "--max-pixels", type=_pixel_limit, metavar="N",
        help="largest image or volume (pixels, voxels) any command reads; bigger files are refused "
             "from their header, before decoding, as unreadable (default 134,217,728 = 2**27, "
             "or $DEEPSSIM_MAX_PIXELS)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    basic.add_commands(sub)
    model.add_commands(sub)
    audit.add_commands(sub)
    bench.add_commands(sub)
    evaluate.add_commands(sub)
    ldm.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from ..readers.limits import set_max_pixels

    try:
        if args.max_pixels is not None:
            set_max_pixels(args.max_pixels)  # for this run; the readers read this one setting
        return int(args.func(args))
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"deepssim {args.command}: error: {exc}", file=sys.stderr)
        return 2
    finally:
        if args.max_pixels is not None:
            set_max_pixels(None)
