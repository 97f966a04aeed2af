"""Proof that the LRP twin computes what the user's model computes.

The twin re-implements the forward pass; if timm or the user's model does something the twin does
not know about, every relevance map would be silently wrong. So the twin's final-norm tokens (those
it computes: the read-out rows of a class-token model, `ViTTwin.readout_rows`) and logits are
compared with the model's own forward (eval mode, captured by a forward hook on ``model.norm``) and
a mismatch raises `UnsupportedModelError`.

The comparison costs one extra forward pass, so it runs once per model state: a passed check is
remembered for the same module objects, the same parameter/buffer tensors and their in-place
version counters (an optimiser step or ``load_state_dict`` changes them), input size, dtype and
device. Anything else triggers a new check.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import nn

from attnmap.errors import UnsupportedModelError
from attnmap.model_state import model_state
from attnmap.vit.adapters import call_model, eval_mode
from attnmap.vit.lrp.twin import Trace
from attnmap.vit.targets import OUTPUT_FIELDS, output_tensor

_VERIFIED: weakref.WeakKeyDictionary[nn.Module, set[tuple]] = weakref.WeakKeyDictionary()
# the class of the model's own output and the field the twin's output tensor stands for (Hugging Face
# ModelOutputs), seen in the check's forward: a callable target gets what the model returns
_OUTPUT_KIND: weakref.WeakKeyDictionary[nn.Module, tuple[type, str]] = weakref.WeakKeyDictionary()
_MAX_REMEMBERED = 16


def _fingerprint(model: nn.Module, images: torch.Tensor) -> tuple:
    return model_state(model), tuple(images.shape[1:]), images.dtype, str(images.device)


def _tolerance(dtype: torch.dtype, reference: torch.Tensor) -> float:
    """Round-off headroom: fused vs manual attention differ by a few ulps per layer, a wrong twin by O(1)."""
    return 10 * torch.finfo(dtype).eps ** 0.5 * (1.0 + reference.abs().max().item())


def _model_forward(model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The model's own output tensor and, for timm models, its final-norm tokens."""
    captured: list[torch.Tensor] = []
    hf = hasattr(getattr(model, "config", None), "model_type")
    norm = None if hf else getattr(model, "norm", None)
    hook = norm.register_forward_hook(lambda _m, _i, out: captured.append(out)) if norm is not None else None
    try:
        with eval_mode(model), torch.no_grad():
            output = call_model(model, images)
    finally:
        if hook is not None:
            hook.remove()
    tensor = output_tensor(output)
    field = next((name for name in OUTPUT_FIELDS if getattr(output, name, None) is tensor), None)
    if field is not None and not isinstance(output, torch.Tensor):
        _OUTPUT_KIND[model] = (type(output), field)
    return tensor, (captured[-1] if captured else None)


def as_model_output(model: nn.Module, tensor: torch.Tensor) -> Any:
    """``tensor`` (the twin's output) as the model returns it: in its ModelOutput class, under the
    same field, for a Hugging Face model (a callable target reads ``out.last_hidden_state``); as it
    is otherwise."""
    kind = _OUTPUT_KIND.get(model)
    if kind is None:
        return tensor
    output_class, field = kind
    return output_class(**{field: tensor})


def verify_twin(model: nn.Module, images: torch.Tensor, trace: Trace) -> None:
    """Raise if the twin's forward on ``images`` differs from the model's own (once per model state)."""
    key = _fingerprint(model, images)
    seen = _VERIFIED.setdefault(model, set())
    if key in seen:
        return
    logits, tokens = _model_forward(model, images)
    pairs = [("logits", trace.logits, logits)]
    if tokens is not None:
        wanted = tokens if trace.rows is None else tokens[:, : trace.rows]  # what the twin computed
        pairs.insert(0, ("final-norm tokens", trace.final_tokens, wanted))
    for name, ours, theirs in pairs:
        if ours.shape != theirs.shape:
            raise UnsupportedModelError(
                f"the LRP twin's {name} have shape {tuple(ours.shape)} but the model's are "
                f"{tuple(theirs.shape)}: "
                f"{type(model).__name__} does something the LRP rules do not cover"
            )
        error = (ours.detach() - theirs).abs().max().item()
        if not error <= _tolerance(ours.dtype, theirs):
            raise UnsupportedModelError(
                f"the LRP twin's {name} differ from the model's own forward by {error:.3g}: "
                f"{type(model).__name__} does something the LRP rules do not cover"
            )
    if len(seen) >= _MAX_REMEMBERED:
        seen.clear()
    seen.add(key)
