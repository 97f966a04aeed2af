"""Click options shared by every command, and options generated from configuration dataclasses.

Why generated: a default, range or choice written once in a dataclass (`HeatmapStyle`, the
`wsi run` sections) cannot drift from the CLI's; the help text comes from the field's metadata.
Also here: ``--out``/``-o``, ``--device`` and the global ``--quiet`` every command shares.
"""

from __future__ import annotations

import ast
import dataclasses
import types
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints

import click

DEVICES = ("auto", "cpu", "cuda")


def _unwrap(hint: Any) -> tuple[Any, bool, list]:
    """(base type, optional?, Annotated metadata) of a field's type hint."""
    optional, metadata = False, []
    if get_origin(hint) in (Union, types.UnionType):
        members = [arg for arg in get_args(hint) if arg is not type(None)]
        optional = len(members) < len(get_args(hint))
        hint = members[0]
    if get_origin(hint) is Annotated:
        hint, *metadata = get_args(hint)
    return hint, optional, metadata


def _bounds(metadata: list) -> dict[str, Any]:
    bounds: dict[str, Any] = {}
    for item in metadata:
        for attribute, key in (("ge", "min"), ("gt", "min"), ("le", "max"), ("lt", "max")):
            value = getattr(item, attribute, None)
            if value is not None:
                bounds[key] = value
                if attribute in ("gt", "lt"):
                    bounds[f"{key}_open"] = True
    return bounds


def _flatten(hint: Any) -> list[Any]:
    """Element types of a fixed-length (possibly nested) tuple type, in order."""
    if get_origin(hint) is tuple:
        return [leaf for arg in get_args(hint) for leaf in _flatten(_unwrap(arg)[0])]
    return [hint]


def _nest(values: tuple, hint: Any) -> Any:
    """``values`` (flat, from nargs) shaped as the nested tuple type ``hint``."""
    if values is None or not any(get_origin(_unwrap(arg)[0]) is tuple for arg in get_args(hint)):
        return values
    shaped, start = [], 0
    for arg in get_args(hint):
        size = len(_flatten(_unwrap(arg)[0]))
        shaped.append(tuple(values[start : start + size]))
        start += size
    return tuple(shaped)


def _option(item: dataclasses.Field, hint: Any, dest: str, flag: str, default: Any, note: str) -> Any:
    base, optional, metadata = _unwrap(hint)
    help_text = (item.metadata.get("help", "") + note).strip()
    kwargs: dict[str, Any] = {"default": default, "help": help_text, "show_default": default is not None}
    if base is bool:
        return click.option(f"--{flag}/--{item.metadata.get('off', 'no-' + flag)}", dest, **kwargs)
    if get_origin(base) is Literal:
        kwargs["type"] = click.Choice([str(choice) for choice in get_args(base)])
    elif get_origin(base) is tuple:
        leaves = _flatten(base)
        kwargs.update(nargs=len(leaves), type=leaves[0], metavar=item.metadata.get("metavar"))
        kwargs["show_default"] = False
        if default is not None:
            kwargs["help"] += f"  [default: {' '.join(str(v) for v in _flatten_values(default))}]"
    elif base in (int, float):
        bounds = _bounds(metadata)
        kwargs["type"] = (click.IntRange if base is int else click.FloatRange)(**bounds) if bounds else base
    return click.option(f"--{flag}", dest, **kwargs)


def _flatten_values(value: Any) -> list:
    return [leaf for part in value for leaf in _flatten_values(part)] if isinstance(value, tuple) else [value]


def dataclass_options(
    cls: type,
    key: str,
    *,
    flags: Mapping[str, str] | None = None,
    skip: tuple[str, ...] = (),
    unset: bool = False,
    shown_defaults: Mapping[str, Any] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator adding one option per field of dataclass ``cls`` (values collected by `from_options`).

    ``flags`` renames options (field → flag name); ``unset``: every default is None (for overrides
    of a configuration file, whose value the help names as the default); ``shown_defaults`` names
    the effective default of fields whose own default is None (e.g. CLAM's segmentation defaults
    behind an unset value).
    """
    hints = get_type_hints(cls, include_extras=True)
    decorators = []
    for item in dataclasses.fields(cls):
        if item.name in skip or item.name.startswith("_"):
            continue
        default = None if unset else (
            item.default if item.default is not dataclasses.MISSING else item.default_factory()  # type: ignore[misc]
        )
        note = ""
        flag = (flags or {}).get(item.name, item.name.replace("_", "-"))
        if shown_defaults and item.name in shown_defaults:
            shown = shown_defaults[item.name]
            if isinstance(shown, bool):  # as click shows a flag's default: the flag given
                shown = flag if shown else f"no-{flag}"
            either = ", or the --preset's" if "preset" in hints else ""
            note = f"  [default: {shown}{either}]"
        elif unset:  # an override of a configuration file: its default is the file's value
            note = f"  [default: the config's {key}.{item.name}]"
        decorators.append(_option(item, hints[item.name], f"{key}__{item.name}", flag, default, note))

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        for decorator in reversed(decorators):
            command = decorator(command)
        return command

    return decorate


def from_options(cls: type, key: str, options: dict[str, Any], *, drop_unset: bool = False) -> dict[str, Any]:
    """Remove the values of `dataclass_options`(``cls``, ``key``) from ``options``; field → value."""
    hints = get_type_hints(cls, include_extras=True)
    values: dict[str, Any] = {}
    for item in dataclasses.fields(cls):
        dest = f"{key}__{item.name}"
        if dest in options:
            values[item.name] = _nest(options.pop(dest), _unwrap(hints[item.name])[0])
    return {k: v for k, v in values.items() if v is not None} if drop_unset else values


class _FolderPath(click.Path):
    """A folder path that is not empty: click reads ``--out ""`` as the working folder."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and not value.strip():
            self.fail("is empty: give a folder", param, ctx)
        return super().convert(value, param, ctx)


def out_option(help_text: str = "Output folder.", default: Path | None = None) -> Any:
    """``--out DIR`` / ``-o DIR``: where a command writes (``--out-dir`` kept as an alias)."""
    return click.option(
        "--out",
        "-o",
        "--out-dir",
        "out_dir",
        type=_FolderPath(file_okay=False, path_type=Path),
        required=default is None,
        default=default,
        show_default=default is not None,
        help=help_text,
    )


def device_option(default: str | None = "auto", help_text: str = "") -> Any:
    """``--device auto|cpu|cuda|cuda:N`` (auto: CUDA when available)."""
    return click.option(
        "--device",
        default=default,
        show_default=default is not None,
        callback=_check_device,
        help=(help_text or "auto (CUDA when available), cpu, cuda or cuda:N."),
    )


def _check_device(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None or value in DEVICES or (value.startswith("cuda:") and value[5:].isdigit()):
        return value
    raise click.BadParameter(f"{value!r}: use auto, cpu, cuda or cuda:N", ctx=ctx, param=param)


def resolved_device(device: str) -> str:
    """The torch device ``device`` names (auto: CUDA when available), checked to exist."""
    from attnmap.devices import resolve_device

    return str(resolve_device(device))


def quiet() -> bool:
    """Whether the global ``--quiet`` was given (before or after the subcommand)."""
    context = click.get_current_context(silent=True)
    return bool(context is not None and context.find_root().params.get("quiet"))


def parse_options(pairs: tuple[str, ...], option: str = "--option") -> dict[str, object]:
    """``key=value`` strings → dict; values parsed as Python literals when possible (1, 0.5, 'max')."""
    options: dict[str, object] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint=option)
        try:
            value: object = ast.literal_eval(raw.strip())
        except (ValueError, SyntaxError):
            value = raw.strip()
        options[key.strip()] = value
    return options
