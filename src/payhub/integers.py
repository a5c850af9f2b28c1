"""Whole-number settings are written as TOML integers: ``true``, ``1.0`` and ``1e3`` are refused.

Pydantic's lax mode turns ``true``, ``1.0`` and the text ``"1.0"`` into 1; its strict mode would also refuse the
text that ``PAYHUB_…`` environment variables carry ("5"). :func:`refuse_inexact` sits between the two: wherever the
field's type wants an ``int`` (also inside ``list``, ``dict`` and optional types) it refuses booleans, floats and
text other than digits with an optional sign, and leaves everything else to the field's own validation.
Settings models apply it to every field.
"""

from __future__ import annotations

import re
import types
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import ValidationInfo

_WHOLE = re.compile(r"\s*[+-]?[0-9]+\s*")
"""Whole-number text, as environment variables give it."""

_NUMBER = re.compile(r"\s*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?\s*")
"""Number text with a decimal point or an exponent: refused with a hint to drop them."""


def refuse_inexact(value: Any, annotation: Any) -> None:
    """Raise ValueError when ``value`` holds a bool or a float where ``annotation`` wants an ``int``."""
    origin = get_origin(annotation)
    if origin is Annotated:
        refuse_inexact(value, get_args(annotation)[0])
    elif origin in (Union, types.UnionType):
        options = get_args(annotation)
        if int in options and not any(option in (float, bool) for option in options):
            refuse_inexact(value, int)
        else:  # int | SomeModel etc.: look inside the containers only
            for option in options:
                if option is not int:
                    refuse_inexact(value, option)
    elif origin in (list, tuple, set, frozenset) and isinstance(value, list | tuple):
        for item_type in get_args(annotation)[:1]:
            for item in value:
                refuse_inexact(item, item_type)
    elif origin is dict and isinstance(value, dict):
        args = get_args(annotation)
        for item in value.values():
            refuse_inexact(item, args[1] if len(args) == 2 else Any)
    elif annotation is int and isinstance(value, bool):
        raise ValueError(f"a whole number is required, not {str(value).lower()}")
    elif annotation is int and isinstance(value, str) and not _WHOLE.fullmatch(value) and not _NUMBER.fullmatch(value):
        raise ValueError("a whole number is required, written in digits with an optional sign")  # text not echoed
    elif annotation is int and (isinstance(value, float) or isinstance(value, str) and not _WHOLE.fullmatch(value)):
        shown = "" if isinstance(value, str) else f", not {value!r}"  # text is not echoed: it may be long
        raise ValueError(f"a whole number is required{shown} (write it without a decimal point or exponent)")


def whole_numbers(cls: Any, value: Any, info: ValidationInfo) -> Any:
    """A ``mode="before"`` field validator for every field of a settings model: see :func:`refuse_inexact`."""
    field = cls.model_fields.get(info.field_name) if info.field_name else None
    if field is not None and field.annotation is not None:
        refuse_inexact(value, field.annotation)
    return value
