"""The value types of the command's numeric flags: every number a flag takes is checked here,
before any work, and a bad one is reported by argparse as
``argument --batch-size: must be an integer >= 1, got 0`` (exit code 2).

A flag whose value an API object also checks (the audit's options, the preprocessing
contract) takes its bound from that object's module, so that the two cannot disagree.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

from ..classes import Thresholds

INT_MAX = 2**31 - 1
"""The largest integer a count takes: beyond it, counts overflow the libraries underneath."""
SEED_MAX = 2**32 - 1
"""The largest seed (numpy's and torch's generators both take 32-bit seeds)."""


@dataclass(frozen=True)
class Number:
    """An argparse ``type``: an integer (``kind`` int) or a finite number within ``low`` ..
    ``high`` (``low_open`` / ``high_open``: that bound itself excluded)."""

    kind: type = int
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def rule(self, *, overflow: bool = False) -> str:
        """What the flag takes, as its error says it (``an integer >= 1``); the overflow
        guard ``INT_MAX`` is named only with ``overflow``."""
        noun = "an integer" if self.kind is int else "a number"
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {self._show(self.low)}")
        if self.high is not None and (self.high != INT_MAX or overflow):
            parts.append(f"{'<' if self.high_open else '<='} {self._show(self.high)}")
        return " ".join([noun, " and ".join(parts)]) if parts else noun

    def _show(self, bound: float) -> str:
        return str(int(bound)) if self.kind is int else f"{bound:g}"

    def __call__(self, text: str) -> int | float:
        try:
            value: int | float = int(text, 10) if self.kind is int else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {self.rule()}, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be {self.rule()} (finite), got {text}")
        if not self.admits(value):
            raise argparse.ArgumentTypeError(
                f"must be {self.rule(overflow=self.high == INT_MAX and value > INT_MAX)}, got {text}")
        return value

    def admits(self, value: float) -> bool:
        """Whether ``value`` is within the bounds."""
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)


def at_least(low: int) -> Number:
    """An integer >= ``low`` (and at most ``INT_MAX``)."""
    return Number(int, low, INT_MAX)


positive_int = at_least(1)
"""A count of at least one: images, pairs, epochs, batch sizes, threads."""
non_negative_int = at_least(0)
"""A count where 0 turns something off."""
seed = Number(int, 0, SEED_MAX)
"""A random seed."""
positive_float = Number(float, 0.0, low_open=True)
"""A number > 0: minutes, learning rates."""
non_negative_float = Number(float, 0.0)
"""A number >= 0: loss weights (0: off)."""
probability = Number(float, 0.0, 1.0)
"""A probability or a fraction, in [0, 1]."""
open_probability = Number(float, 0.0, 1.0, low_open=True, high_open=True)
"""A rate strictly between 0 and 1 (a false-alarm rate)."""
dropout = Number(float, 0.0, 1.0, high_open=True)
"""A dropout rate, in [0, 1) (1 would drop every value)."""
precision = Number(float, 0.0, 1.0, low_open=True)
"""A target precision, in (0, 1]."""
similarity = Number(float, -1.0, 1.0, low_open=True, high_open=True)
"""A similarity threshold strictly between -1 and 1."""
axis = Number(int, 0, 2)
"""A volume's slicing axis."""


def thresholds(text: str) -> Thresholds:
    """``LOW,HIGH``: two finite numbers with LOW <= HIGH (``Thresholds.parse``)."""
    try:
        return Thresholds.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def pixel_limit(text: str) -> int:
    """The readers' pixel limit (``readers.limits.parse_max_pixels``)."""
    from ..readers.limits import parse_max_pixels

    try:
        return parse_max_pixels(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
