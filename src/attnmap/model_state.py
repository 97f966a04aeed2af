"""What a cache derived from a model must be keyed on, so that it never outlives the model it was made
from (the LRP twin's verification, the CPU encoder graph).

Why each part: the identity of every parameter and buffer tensor changes when one is replaced; its
in-place version counter changes with an optimiser step or ``load_state_dict``; its data pointer
changes when its ``.data`` is replaced (``torch.nn.utils.vector_to_parameters``, ``p.data = w``),
which keeps the version counter; the identities of the modules change when a submodule is swapped,
including one without weights (an activation). Writes through ``p.data`` (``p.data.copy_(w)``, an
EMA or DINO teacher update) change none of these: only the bytes tell, so a cache whose result
would silently keep the old weights (a graph holding them as constants) adds `weights_digest`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


def model_state(model: nn.Module) -> tuple:
    """A hashable key that changes whenever ``model``'s weights or submodules are replaced or updated
    in place through autograd-visible operations (see the module docstring for ``.data`` writes)."""
    tensors = tuple(
        (id(t), t._version, t.data_ptr(), t.dtype, str(t.device), tuple(t.shape))
        for t in list(model.parameters()) + list(model.buffers())
    )
    return tensors, tuple(id(module) for module in model.modules())


def weights_digest(model: nn.Module) -> str:
    """sha256 of every parameter's and buffer's bytes (reads all weights once: a cost like one
    forward pass at batch size 1)."""
    digest = hashlib.sha256()
    with torch.no_grad():
        for tensor in list(model.parameters()) + list(model.buffers()):
            data = tensor.detach().cpu().contiguous()
            digest.update(f"{data.dtype}{tuple(data.shape)}".encode())
            if data.numel():
                digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@contextmanager
def eval_mode(*models: nn.Module) -> Iterator[None]:
    """Every module of ``models`` in eval mode for the block (no dropout, drop-path, patch dropout
    or batch statistics in an explanation); each submodule's own training flag restored exactly
    afterwards, a caller's mixed train/eval state included, also when the block raises."""
    modules = [module for model in models for module in model.modules()]
    flags = [module.training for module in modules]
    try:
        for model in models:
            model.eval()
        yield
    finally:
        for module, flag in zip(modules, flags, strict=True):
            module.training = flag
