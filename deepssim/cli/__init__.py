"""The ``deepssim`` command: a thin layer over the Python API, one module per command group.

Results go to stdout (plain, or JSON with ``--json``); progress and errors go to stderr. An
error is one line, ``deepssim COMMAND: error: ...``, with exit code 2 (argparse's own for a
bad flag, 2 too); Ctrl-C is one line saying what was kept, with exit code 130. ``--debug``
shows the traceback of an error instead.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from ..versions import __version__
from . import audit, basic, bench, evaluate, ldm, model
from .types import pixel_limit

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130
"""128 + SIGINT, what a shell reports for a command stopped by Ctrl-C."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deepssim",
        description="Audit synthetic medical images for memorized training data.",
    )
    parser.add_argument("--version", action="version", version=f"deepssim {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    parser.add_argument(
        "--max-pixels", type=pixel_limit, metavar="N",
        help="largest image or volume (pixels, voxels) any command reads; bigger files are refused "
             "from their header, before decoding, as unreadable (default 134,217,728 = 2**27, "
             "or $DEEPSSIM_MAX_PIXELS)",
    )
    parser.add_argument("--debug", action="store_true",
                        help="on an error, show the traceback instead of the one-line message")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    basic.add_commands(sub)
    model.add_commands(sub)
    audit.add_commands(sub)
    bench.add_commands(sub)
    evaluate.add_commands(sub)
    ldm.add_commands(sub)
    return parser


def command_name(args: argparse.Namespace) -> str:
    """``deepssim audit``, ``deepssim benchmark build``: how messages name the command run."""
    words = [args.command, getattr(args, f"{args.command}_command", None)]
    return " ".join(["deepssim", *(w for w in words if w)])


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (a message of several lines joined)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return " ".join(lines) if lines else type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from ..readers.limits import set_max_pixels

    name = command_name(args)
    try:
        if args.max_pixels is not None:
            set_max_pixels(args.max_pixels)  # for this run; the readers read this one setting
        return int(args.func(args))
    except KeyboardInterrupt:
        if args.debug:
            raise
        kept = args.on_interrupt(args) if hasattr(args, "on_interrupt") else \
            "run the same command again to start it over"
        lead = "\n" if sys.stderr.isatty() else ""  # off the line of a progress bar
        print(f"{lead}{name}: interrupted; {kept}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ValueError, RuntimeError, OSError) as exc:
        if args.debug:
            raise
        print(f"{name}: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:  # the last resort: a bug or an input no check foresaw
        if args.debug:
            raise
        print(f"{name}: error: {type(exc).__name__}: {one_line(exc)} (run with --debug for the "
              "traceback)", file=sys.stderr)
        return EXIT_ERROR
    finally:
        if args.max_pixels is not None:
            set_max_pixels(None)
