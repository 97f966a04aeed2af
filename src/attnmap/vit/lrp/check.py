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
from attnmap.model_state import eval_mode, model_state
from attnmap.vit.adapters import call_model
from attnmap.vit.lrp.twin import Trace
from attnmap.vit.targets import OUTPUT_FIELDS, output_tensor

_VERIFIED: weakref.WeakKeyDictionary[nn.Module, set[tuple]] = weakref.WeakKeyDictionary()
# the class of the model's own output, the field the twin's output tensor stands for (Hugging Face
# ModelOutputs) and whether the twin's final tokens are the output's ``last_hidden_state`` (the
# pooler's input, not the encoder's output before a post-norm as in CLIP), seen in the check's
# forward: a callable target gets what the model returns
_OUTPUT_KIND: weakref.WeakKeyDictionary[nn.Module, tuple[type, str, bool]] = weakref.WeakKeyDictionary()
TOKENS_FIELD = "last_hidden_state"
_MAX_REMEMBERED = 16


def _fingerprint(model: nn.Module, images: torch.Tensor) -> tuple:
    return model_state(model), tuple(images.shape[1:]), images.dtype, str(images.device)


def _tolerance(dtype: torch.dtype, reference: torch.Tensor) -> float:
    """Round-off headroom: fused vs manual attention differ by a few ulps per layer, a wrong twin by O(1)."""
    return 10 * torch.finfo(dtype).eps ** 0.5 * (1.0 + reference.abs().max().item())


def _model_forward(model: nn.Module, images: torch.Tensor) -> tuple[Any, torch.Tensor | None]:
    """The model's own output and, for timm models, its final-norm tokens."""
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
    return output, (captured[-1] if captured else None)


def _remember_output_kind(model: nn.Module, output: Any, trace: Trace) -> None:
    tensor = output_tensor(output)
    field = next((name for name in OUTPUT_FIELDS if getattr(output, name, None) is tensor), None)
    if field is None or isinstance(output, torch.Tensor):
        return
    tokens = getattr(output, TOKENS_FIELD, None)
    same_tokens = (
        field != TOKENS_FIELD
        and isinstance(tokens, torch.Tensor)
        and tokens.ndim == 3
        and tokens.shape[0] == trace.final_tokens.shape[0]
        and tokens.shape[1] >= trace.final_tokens.shape[1]  # the twin may hold the read-out rows only
    )
    if same_tokens:
        theirs = tokens[:, : trace.final_tokens.shape[1]]
        error = (trace.final_tokens.detach() - theirs).abs().max().item()
        same_tokens = theirs.shape == trace.final_tokens.shape and error <= _tolerance(theirs.dtype, theirs)
    _OUTPUT_KIND[model] = (type(output), field, same_tokens)


def gives_tokens(model: nn.Module) -> bool:
    """Whether `as_model_output` can hand a callable target the model's ``last_hidden_state`` beside
    its pooled output (a Hugging Face model with a pooler whose input the twin computes)."""
    kind = _OUTPUT_KIND.get(model)
    return kind is not None and kind[2]


def as_model_output(model: nn.Module, tensor: torch.Tensor, tokens: torch.Tensor | None = None) -> Any:
    """``tensor`` (the twin's output) as the model returns it: in its ModelOutput class, under the
    same field, for a Hugging Face model (a callable target reads ``out.pooler_output``); with the
    twin's final ``tokens`` as ``last_hidden_state`` when given (only where `gives_tokens`); as it is
    otherwise."""
    kind = _OUTPUT_KIND.get(model)
    if kind is None:
        return tensor
    output_class, field, _ = kind
    fields = {field: tensor}
    if tokens is not None:
        fields[TOKENS_FIELD] = tokens
    return output_class(**fields)


def verify_twin(model: nn.Module, images: torch.Tensor, trace: Trace) -> None:
    """Raise if the twin's forward on ``images`` differs from the model's own (once per model state)."""
    key = _fingerprint(model, images)
    seen = _VERIFIED.setdefault(model, set())
    if key in seen:
        return
    output, tokens = _model_forward(model, images)
    logits = output_tensor(output)
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
    _remember_output_kind(model, output, trace)
    if len(seen) >= _MAX_REMEMBERED:
        seen.clear()
    seen.add(key)
