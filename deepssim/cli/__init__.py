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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deepssim",
        description="Audit synthetic medical images for memorized training data.",
    )
    parser.add_argument("--version", action="version", version=f"deepssim {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
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
    try:
        return int(args.func(args))
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"deepssim {args.command}: error: {exc}", file=sys.stderr)
        return 2
