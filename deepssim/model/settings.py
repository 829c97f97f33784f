"""Recorded settings read back: a JSON object checked against the fields of the dataclass it
was written from (``ModelConfig``, ``Preprocess``, ``TrainConfig``, ``PerturbConfig``), so that
an edited or damaged file is refused with the field it got wrong, such as
``model.width: expected an integer, got 'wide'``, instead of failing somewhere later.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Literal, Union


def checked_fields(cls: type, data: object, where: str) -> dict[str, Any]:
    """A copy of ``data`` once it is a JSON object whose every key is a field of the dataclass
    ``cls`` holding a value of that field's type (lists stand for tuples; a nested dataclass's
    field only needs an object, checked by its own class). Fields it lacks keep their defaults.

    Raises:
        ValueError: ``where.field: expected ..., got ...``, or the unknown keys.
    """
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected an object {{...}}, got {_shown(data)}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(str(k) for k in data if k not in names)
    if unknown:
        raise ValueError(f"{where}: unknown settings {', '.join(unknown)}")
    for key, value in data.items():
        expected = _mismatch(hints[key], value)
        if expected:
            raise ValueError(f"{where}.{key}: expected {expected}, got {_shown(value)}")
    return dict(data)


def built(cls: type, data: dict[str, Any], where: str) -> Any:
    """``cls(**data)`` with the class's own refusal (a ValueError) prefixed by ``where``."""
    try:
        return cls(**data)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def _mismatch(hint: Any, value: object) -> str | None:
    """None when ``value`` (parsed JSON) fits the type ``hint``, else what was expected."""
    origin = typing.get_origin(hint)
    if origin is Union or origin is types.UnionType:
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        wanted = [_mismatch(h, value) for h in options if h is not type(None)]
        if any(w is None for w in wanted):
            return None
        return " or ".join(w for w in wanted if w) + (" or null" if type(None) in options else "")
    if origin is Literal:  # the value's kind here; which values, the class says with its own words
        return _mismatch(type(typing.get_args(hint)[0]), value)
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            return "a list"
        items = [args[0]] * len(value) if len(args) == 2 and args[1] is Ellipsis else list(args)
        if len(items) != len(value):
            return f"a list of {len(items)} values"
        for item_hint, item in zip(items, value):
            wrong = _mismatch(item_hint, item)
            if wrong:
                return f"a list of values, each {wrong}"
        return None
    if dataclasses.is_dataclass(hint):
        return None if isinstance(value, dict) else "an object {...}"
    if hint is bool:
        return None if isinstance(value, bool) else "true or false"
    if hint is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else "an integer"
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        return None if ok else "a finite number"
    if hint is str:
        return None if isinstance(value, str) else "a string"
    return None  # a type these files do not record: its class checks it


def _shown(value: object) -> str:
    """A value as a message shows it: short, with its quotes if it is a string."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
