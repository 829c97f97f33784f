"""The audit's option objects: their defaults (the API's and the CLI's) and their checks."""

from __future__ import annotations

import subprocess
import sys

import pytest

from deepssim.auditing import ReadOptions, SearchOptions, VerifyGrid, VerifyOptions
from deepssim.auditing.options import DEPTH_PER_TOP
from deepssim.classes import REFERENCE_THRESHOLDS, Thresholds
from deepssim.cli import build_parser
from deepssim.readers import SliceSpec


def test_defaults() -> None:
    assert SearchOptions() == SearchOptions(top_k=5, backend="auto", index="flat")
    assert VerifyOptions() == VerifyOptions(top=20, max=None, thresholds=None, grid=VerifyGrid(), correct=True)
    assert ReadOptions() == ReadOptions(slices=SliceSpec(), skip_unreadable=False, batch_size=64, workers=None)
    assert VerifyOptions().depth == 80 and VerifyOptions().decision_thresholds == REFERENCE_THRESHOLDS
    with pytest.raises(ValueError, match="verify correct must be True or False"):
        VerifyOptions(correct=1)  # type: ignore[arg-type]


def test_verify_depth_and_thresholds() -> None:
    assert VerifyOptions(top=3).depth == DEPTH_PER_TOP * 3 == 12
    assert VerifyOptions(top=3, max=5).depth == 5 and VerifyOptions(top=3, max=3).depth == 3
    assert VerifyOptions(top=0, max=9).depth == 0  # off
    given = VerifyOptions(top=2, thresholds="0.2,0.3")
    assert given.thresholds == Thresholds(0.2, 0.3, source="given") == given.decision_thresholds
    assert VerifyOptions(thresholds=(0.5, 0.9)).decision_thresholds.pair == (0.5, 0.9)


@pytest.mark.parametrize(("build", "message"), [
    (lambda: SearchOptions(top_k=0), "top_k must be an integer >= 1, got 0"),
    (lambda: SearchOptions(top_k=2.5), "top_k must be an integer >= 1, got 2.5"),
    (lambda: SearchOptions(backend="annoy"), "unknown backend 'annoy'"),
    (lambda: SearchOptions(index="lsh"), "unknown index 'lsh'"),
    (lambda: SearchOptions(backend="exact", index="ivf"), "index 'ivf' is approximate and needs backend='faiss'"),
    (lambda: VerifyOptions(top=-1), r"verify top must be an integer >= 0 \(0: off\), got -1"),
    (lambda: VerifyOptions(top=True), "verify top must be an integer"),
    (lambda: VerifyOptions(top=2, max=1), r"verify max \(1\) must be at least verify top \(2\)"),
    (lambda: VerifyOptions(top=2, max=3.0), "verify max must be an integer or None, got 3.0"),
    (lambda: VerifyOptions(thresholds="0.9,0.1"), "low <= high"),
    (lambda: VerifyOptions(thresholds="high"), "LOW,HIGH"),
    (lambda: VerifyOptions(grid={"size": 64}), "verify grid must be a VerifyGrid"),
    (lambda: ReadOptions(batch_size=0), "batch_size must be an integer >= 1, got 0"),
    (lambda: ReadOptions(workers=0), "workers must be >= 1, got 0"),
    (lambda: ReadOptions(slices="all"), "slices must be a SliceSpec, got 'all'"),
])
def test_bad_options_are_refused_when_built(build, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=message):
        build()


def test_the_command_line_takes_its_defaults_from_the_options() -> None:
    args = build_parser().parse_args(["audit", "--train", "t", "--synthetic", "s", "--model", "m", "--out", "o"])
    search, verify, read = SearchOptions(), VerifyOptions(), ReadOptions()
    assert (args.top_k, args.backend, args.index) == (search.top_k, search.backend, search.index)
    assert (args.verify, args.verify_max, args.verify_thresholds) == (verify.top, verify.max, verify.thresholds)
    assert (args.verify_size, args.verify_max_shift) == (verify.grid.size, verify.grid.max_shift)
    assert SliceSpec.parse(args.slices, axis=args.axis, skip_empty=args.skip_empty) == read.slices
    assert (args.skip_unreadable, args.batch_size, args.workers) == (read.skip_unreadable, read.batch_size,
                                                                     read.workers)


def test_reading_the_options_loads_no_torch() -> None:
    # The command line builds its parser, defaults included, on every call: it must stay fast.
    code = ("import sys; import deepssim.cli; deepssim.cli.build_parser(); "
            "import deepssim.auditing; deepssim.auditing.VerifyOptions(top=2).grid.shifts(); "
            "print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
