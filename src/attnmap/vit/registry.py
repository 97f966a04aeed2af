"""The method registry behind `attnmap.explain`: a leaf module (it imports no method module).

Registration follows timm's pattern: the registry only stores; the built-in methods register
themselves when `attnmap.vit` imports its method modules, and users call `register_method` (public
as ``attnmap.register_method``). Installed packages can add methods to command-line runs through
the ``attnmap.methods`` entry-point group.

A method is a plain function ``fn(model, images, target, **options) -> Tensor``. ``target`` is
what the caller gave (see `attnmap.vit.targets`: None, class indices, a direction or a callable);
the built-in methods resolve it against the model's output after their own forward pass, and a
user's class-index method can use `resolve_target(target, logits)` (None: each image's argmax).
The function returns (B, gh, gw) patch maps, or (B, H, W) pixel maps when registered with
``output="pixels"``.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from attnmap.errors import InputError
from attnmap.vit.targets import Target, resolve

__all__ = ["Method", "Target", "get_method", "method", "methods"]


@dataclass(frozen=True)
class Method:
    name: str
    fn: Callable[..., torch.Tensor]
    description: str
    needs_grad: bool
    output: Literal["patches", "pixels"]

    def options(self) -> dict[str, object]:
        """The method's keyword options with their defaults."""
        params = list(inspect.signature(self.fn).parameters.values())[3:]
        return {p.name: p.default for p in params if p.kind is p.KEYWORD_ONLY}


_REGISTRY: dict[str, Method] = {}
PLUGIN_GROUP = "attnmap.methods"
_plugins_loaded = False


def register_method(
    name: str,
    fn: Callable[..., torch.Tensor] | None = None,
    *,
    description: str = "",
    needs_grad: bool = False,
    output: Literal["patches", "pixels"] = "patches",
    replace: bool = False,
) -> Callable[..., torch.Tensor]:
    """Make ``fn`` available as method ``name`` in `attnmap.explain`, the CLI and `attnmap.evaluate`.

    ``fn(model, images, target, *, option=default, ...)`` gets preprocessed images (B, 3, H, W) and
    ``target`` as given by the caller (pass it to `resolve_target` with the logits); it returns
    (B, gh, gw) patch maps, or (B, H, W) pixel maps with ``output="pixels"`` (`attnmap.explain`
    refuses anything else in one line naming the method). Its keyword-only
    arguments are the method's options (``--option KEY=VALUE`` on the command line). Use as
    ``register_method("name", fn, ...)`` or as a decorator ``@register_method("name", ...)``.
    A name already taken is an error unless ``replace=True``.

    Command-line runs are fresh processes: a package makes its methods available there by
    declaring an entry point in the ``attnmap.methods`` group whose module registers them when
    imported (loaded the first time the method list is needed).
    """
    if output not in ("patches", "pixels"):
        raise InputError(f"output must be 'patches' or 'pixels', got {output!r}")

    def register(function: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        if not callable(function):
            raise InputError(f"method {name!r}: {function!r} is not callable")
        if len(inspect.signature(function).parameters) < 3:
            raise InputError(f"method {name!r}: the function must take (model, images, target, ...)")
        if name in _REGISTRY and not replace and _REGISTRY[name].fn is not function:
            raise InputError(f"method {name!r} is already registered (pass replace=True to override)")
        doc = (inspect.getdoc(function) or "").strip().splitlines()
        _REGISTRY[name] = Method(name, function, description or (doc[0] if doc else name), needs_grad, output)
        return function

    return register if fn is None else register(fn)


def method(
    name: str,
    description: str,
    needs_grad: bool,
    output: Literal["patches", "pixels"] = "patches",
) -> Callable[[Callable[..., torch.Tensor]], Callable[..., torch.Tensor]]:
    """Decorator for the built-in methods (`register_method` with a required description)."""
    return register_method(name, description=description, needs_grad=needs_grad, output=output)


def unregister_method(name: str) -> None:
    """Remove method ``name`` (e.g. a user method registered for one session)."""
    _REGISTRY.pop(name, None)


def _load_plugins() -> None:
    """Import the modules of installed ``attnmap.methods`` entry points once (they register)."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    from importlib.metadata import entry_points

    for entry in entry_points(group=PLUGIN_GROUP):
        try:
            entry.load()
        except Exception as error:  # noqa: BLE001 - a broken plugin must not break attnmap
            warnings.warn(
                f"attnmap: method plugin {entry.name} ({entry.value}) failed to load: {error}", stacklevel=2
            )


def get_method(name: str) -> Method:
    if name not in _REGISTRY:
        _load_plugins()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise InputError(f"unknown method {name!r}; available: {', '.join(sorted(_REGISTRY))}") from None


def methods() -> dict[str, str]:
    """Every registered method name with a one-line description."""
    _load_plugins()
    return {name: m.description for name, m in sorted(_REGISTRY.items())}


def resolve_target(target: Target, logits: torch.Tensor) -> torch.Tensor:
    """Class indices (B,) for ``target``: None → each row's argmax; int → the same for all rows.

    For methods that explain a class of (B, classes) logits; anything else (token outputs, a
    direction or callable target, a float or bool "index") is an `InputError`, never a silent cast.
    """
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise InputError(f"resolve_target needs (B, classes) logits, got {shape}")
    objective = resolve(target, logits, classifier=True, needs_target=True, method="this method")
    if objective.kind != "class":
        raise InputError(
            f"this method explains a class index, but the target is a {objective.kind}; pass an int or B ints"
        )
    return objective.indices
