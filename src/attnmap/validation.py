"""Checking user values against typed dataclasses with pydantic, as one-line `InputError`s.

Why pydantic rather than hand-written checks: the dataclass annotations (``Annotated[int, Ge(1)]``,
``Literal[...]``, ``list[str]``) are then the single statement of what a value may be, for the
YAML configuration, the CLI and the Python API alike. Configuration files are validated in strict
JSON mode, so ``"256"``, ``true`` or ``128.5`` are not an ``int`` and ``"normal"`` is not a list.

pydantic is imported inside the functions, so importing a module that declares such a dataclass
stays cheap.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, get_type_hints

from attnmap.errors import InputError

STRICT = {"strict": True, "extra": "forbid"}
"""pydantic configuration of every checked dataclass: set as its ``__pydantic_config__``."""

T = TypeVar("T")


class Check:
    """An ``Annotated`` marker: pydantic runs ``function(value)`` after the type check.

    ``function`` returns the (possibly normalised) value or raises ``ValueError`` (e.g. `InputError`)
    with a message; pydantic reports it under the key's name.
    """

    def __init__(self, function: Callable[[Any], Any]) -> None:
        self.function = function

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> Any:
        from pydantic_core import core_schema

        return core_schema.no_info_after_validator_function(self.function, handler(source))


def _known_keys(cls: type | None, loc: tuple) -> list[str]:
    """The field names of the dataclass that holds key ``loc`` (empty if it is not one)."""
    for part in loc[:-1]:
        if cls is None or not dataclasses.is_dataclass(cls):
            return []
        hint = get_type_hints(cls).get(str(part))
        cls = hint if isinstance(hint, type) else None
    return [item.name for item in dataclasses.fields(cls)] if cls and dataclasses.is_dataclass(cls) else []


def format_errors(error: Any, prefix: str = "", cls: type | None = None) -> str:
    """One line from a pydantic ``ValidationError``: the dotted key, the problem, the value given."""
    parts = []
    for item in error.errors(include_url=False):
        key = ".".join(str(part) for part in (*([prefix] if prefix else []), *item["loc"]))
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "unexpected_keyword_argument":
            known = _known_keys(cls, item["loc"])
            message = "unknown key" + (f"; known: {', '.join(known)}" if known else "")
        elif item["type"] == "missing_keyword_argument":
            message = "required key missing"
        given = item.get("input")
        said = message.endswith((f"got {given!r}", f"got {given}"))  # a check's own message names it
        keyless = item["type"] in ("unexpected_keyword_argument", "missing_keyword_argument")
        shown = "" if keyless or said or isinstance(given, Mapping) else f" (got {given!r})"
        parts.append(f"{key or '(top level)'}: {message}{shown}")
    return "; ".join(parts)


@functools.cache
def _adapter(cls: type) -> Any:
    from pydantic import TypeAdapter

    return TypeAdapter(cls)


def validate_mapping(cls: type[T], raw: Mapping[str, Any], prefix: str = "") -> T:
    """Build ``cls`` (a dataclass, possibly nested) from ``raw``, strictly; `InputError` on any bad key.

    The values go through JSON so that pydantic's strict JSON mode applies: a string or a boolean
    is never an integer, a float never silently truncated, a list never made from a string.
    """
    from pydantic import ValidationError

    try:
        text = json.dumps(raw)
    except (TypeError, ValueError) as error:
        raise InputError(f"{prefix or 'configuration'}: values must be numbers, strings, lists or mappings "
                         f"({error})") from None
    try:
        return _adapter(cls).validate_json(text)
    except ValidationError as error:
        raise InputError(format_errors(error, prefix, cls)) from None


@functools.cache
def _field_adapters(cls: type) -> tuple[tuple[str, Any], ...]:
    from pydantic import TypeAdapter

    hints = get_type_hints(cls, include_extras=True)
    return tuple((item.name, TypeAdapter(hints[item.name])) for item in dataclasses.fields(cls))


def check_fields(instance: Any) -> None:
    """Validate (and normalise: lists to tuples, ints to floats) each field of a frozen dataclass.

    Used by ``__post_init__`` of dataclasses built from Python, where a numpy integer or a list
    for a tuple is fine: lax mode, but still no ranges or enumerations outside their annotation.
    """
    from pydantic import ValidationError

    for name, adapter in _field_adapters(type(instance)):
        try:
            value = adapter.validate_python(getattr(instance, name))
        except ValidationError as error:
            raise InputError(format_errors(error, name)) from None
        object.__setattr__(instance, name, value)
