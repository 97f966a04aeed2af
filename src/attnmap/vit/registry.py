"""The method registry behind `attnmap.explain`.

A method is a plain function ``fn(model, images, target, **options) -> Tensor`` registered with
`@method(...)`. ``target`` is passed as the user gave it (see `attnmap.vit.targets`); the method resolves it
against the model's output after its own forward pass (`Captured.objective`). The function
returns (B, gh, gw) patch maps, or (B, H, W) pixel maps when registered with ``output="pixels"``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from attnmap.errors import InputError
from attnmap.vit.targets import Target

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


def method(
    name: str,
    description: str,
    needs_grad: bool,
    output: Literal["patches", "pixels"] = "patches",
) -> Callable[[Callable[..., torch.Tensor]], Callable[..., torch.Tensor]]:
    """Register ``fn(model, images, target, *, option=default, ...)`` as method ``name``."""

    def register(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        if name in _REGISTRY:
            raise RuntimeError(f"method {name!r} registered twice")
        _REGISTRY[name] = Method(name, fn, description, needs_grad, output)
        return fn

    return register


def get_method(name: str) -> Method:
    _load_builtin_methods()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise InputError(f"unknown method {name!r}; available: {', '.join(sorted(_REGISTRY))}") from None


def methods() -> dict[str, str]:
    """Every registered method name with a one-line description."""
    _load_builtin_methods()
    return {name: m.description for name, m in sorted(_REGISTRY.items())}


def _load_builtin_methods() -> None:
    # Importing the method modules runs their @method decorators.
    import attnmap.vit.lrp  # noqa: F401
    import attnmap.vit.methods  # noqa: F401
