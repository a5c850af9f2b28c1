"""JSON with exact amounts, as payment providers write it: numbers with a fraction are read as ``Decimal`` and
Decimals are written as plain numbers (never through a float)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

__all__ = ["dumps", "loads"]


def dumps(value: Any) -> str:
    """JSON text for dicts, lists, strings, ints, bools, None and finite Decimals (written as plain numbers)."""
    if value is None or isinstance(value, bool | int | str):
        return json.dumps(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"cannot write {value} as a JSON number")
        return format(value, "f")
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{json.dumps(str(k))}:{dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, Sequence):
        return "[" + ",".join(dumps(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as JSON (amounts must be Decimal)")


def loads(text: str) -> Any:
    """Parse JSON, numbers with a fraction or exponent as Decimal."""
    return json.loads(text, parse_float=Decimal)
