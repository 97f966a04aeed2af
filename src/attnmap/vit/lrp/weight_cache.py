"""|W| of the Linear layers the LRP z⁺ rule goes through, and the block inside which it is reused."""

from __future__ import annotations

import contextlib
import contextvars
import weakref
from collections.abc import Iterator

import torch

# |W| of every Linear the z⁺ rule went through, per weight tensor, kept inside a `weight_cache`
# block only. Computing |W| costs about as much as the forward matmul at batch 1, so a caller that
# explains many batches with a model nobody changes meanwhile (`attnmap explain`'s image loop) holds
# one block around them. Outside a block |W| is computed on each use: between two calls the user may
# have changed the weights in a way no tensor attribute shows (``p.data.copy_(w)``, an EMA update),
# and the next maps must be the new model's. Inside, a tensor whose version, data or dtype changed is
# still recomputed.
_ABS_WEIGHTS: contextvars.ContextVar[dict | None] = contextvars.ContextVar("abs_weights", default=None)


@contextlib.contextmanager
def weight_cache() -> Iterator[None]:
    """Reuse |W| across LRP calls inside the block (the weights must not change meanwhile)."""
    if _ABS_WEIGHTS.get() is not None:  # nested: the outer block's cache
        yield
        return
    token = _ABS_WEIGHTS.set({})
    try:
        yield
    finally:
        _ABS_WEIGHTS.reset(token)


def absolute_weight(weight: torch.Tensor) -> torch.Tensor:
    """|weight|, reused inside a `weight_cache` block while the tensor's state is unchanged."""
    cache = _ABS_WEIGHTS.get()
    state = (weight._version, weight.data_ptr(), weight.dtype, weight.device, tuple(weight.shape))
    key = id(weight)
    cached = cache.get(key) if cache is not None else None
    if cached is not None and cached[0]() is weight and cached[1] == state:
        return cached[2]
    with torch.no_grad():
        result = weight.detach().abs()
    if cache is not None:
        cache[key] = (weakref.ref(weight), state, result)
    return result
