"""Reading PyTorch files (``torch.save``: a resume state, a weights file) without running code.

Every ``torch.load`` of deepssim goes through ``load_torch_file``: the file is read with
``weights_only=True`` (tensors and plain values only, never code), and a file that is
truncated, damaged, not a PyTorch file, or that asks for Python objects is refused with one
line naming it. The message never suggests loading it without ``weights_only``.
"""

from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path
from typing import Any

_GLOBAL = re.compile(r"GLOBAL (\S+)")


class UnsafeFileError(ValueError):
    """A PyTorch file that cannot be read as tensors and plain values (the message says why)."""


def load_torch_file(path: str | Path, what: str) -> Any:
    """The content of the ``torch.save`` file ``path`` (a ``what``, such as ``resume state``),
    on the CPU, read without unpickling code.

    Raises:
        FileNotFoundError: no file at ``path``.
        UnsafeFileError: the file holds code, is truncated or damaged, or is not a PyTorch file.
    """
    import torch

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: {what} not found")
    if not path.is_file():
        raise UnsafeFileError(f"{path}: not a file (a {what} is a file written by torch.save)")
    try:
        with warnings.catch_warnings():  # the unpickler's notes on pickle protocols are noise here
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = _GLOBAL.search(str(exc))
        if found:
            raise UnsafeFileError(f"{path}: refused: this {what} asks to load the Python object "
                                  f"{found.group(1)}, which can run code; a {what} holds tensors and "
                                  "plain values only") from None
        raise UnsafeFileError(f"{path}: not a readable {what}: damaged, or not a file of tensors and "
                              "plain values (nothing in it was run)") from None
    except OSError:
        raise  # the system's own message names the file
    except Exception:  # the parser's errors on a truncated, damaged or foreign file vary by kind
        raise UnsafeFileError(f"{path}: not a readable {what} (truncated, damaged, or not written by "
                              "torch.save)") from None


def mismatch(exc: Exception) -> str:
    """The gist of a torch loading error on one line: its first finding (the line after a
    heading such as ``Error(s) in loading state_dict for Embedder:``), shortened."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    first = lines[1] if len(lines) > 1 and lines[0].endswith(":") else lines[0]
    return first if len(first) <= 200 else first[:197] + "..."
