"""What an explanation explains: one scalar score per image, from the ``target`` the user gave.

A classifier has classes; a headless encoder (timm ``num_classes=0``, ``global_pool=''``, Hugging
Face ``ViTModel``/``Dinov2Model``/``CLIPVisionModel``...) has only an embedding or tokens. So
``target`` may be

- ``None``: each image's predicted class (classifiers only; on a headless model the gradient and
  LRP methods raise `InputError`: there is nothing to explain until a score is named);
- an int, or B ints (a list or an integer tensor): class indices;
- a floating tensor of shape ``output.shape[1:]`` (e.g. (D,)) or ``output.shape`` (e.g. (B, D)):
  a direction in the output space; the score is ⟨output, d⟩ per image, and the LRP initial relevance
  is ``output ⊙ d`` (the LRP-0 relevance of that linear read-out). With d = ∂y/∂f of a model on top
  (an MIL head, a linear probe) the encoder's explanation chains onto the head's;
- a callable ``f(output) -> (B,)`` scores, given the model's raw output (a tensor, or a Hugging
  Face ``ModelOutput``); LRP seeds with ``output ⊙ ∂f/∂output`` (gradient × input at the output,
  which equals the direction rule when f is linear).

"The output" is the model's output tensor: a tensor as returned, or from a ``ModelOutput`` the first
present of ``logits``, ``image_embeds``, ``pooler_output``, ``last_hidden_state``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F

from attnmap.errors import InputError

Target = int | str | Sequence[int | str] | torch.Tensor | Callable[[Any], torch.Tensor] | None

OUTPUT_FIELDS = ("logits", "image_embeds", "pooler_output", "last_hidden_state")
# token outputs: a (D,) direction in an embedding of the tokens is what users mostly hold
_WHOLE_BATCH: ContextVar[int | None] = ContextVar("attnmap_whole_batch", default=None)


@contextmanager
def parts_of_batch(batch: int) -> Iterator[None]:
    """Within: targets are resolved on parts of a batch of ``batch`` images (the LRP methods' chunks).

    Why: `resolve` sees only a part's output, and its messages named the part's shapes ("give (8, 5)"
    for the user's 11 images); with this they name the whole batch the user gave."""
    token = _WHOLE_BATCH.set(batch)
    try:
        yield
    finally:
        _WHOLE_BATCH.reset(token)


def whole_batch(batch: int) -> int:
    """The size of the batch the user gave, for messages about a part of ``batch`` images of it."""
    return _WHOLE_BATCH.get() or batch


def output_tensor(output: Any) -> torch.Tensor:
    """The tensor targets read from a model's raw ``output`` (see the module docstring)."""
    if isinstance(output, torch.Tensor):
        return output
    for name in OUTPUT_FIELDS:
        value = getattr(output, name, None)
        if isinstance(value, torch.Tensor):
            return value
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise InputError(f"cannot find an output tensor in the model's output ({type(output).__name__})")


@dataclass(frozen=True)
class Objective:
    """A resolved target: how to score each image and how to seed LRP at the output tensor."""

    kind: Literal["class", "direction", "callable", "none"]
    indices: torch.Tensor | None = None
    direction: torch.Tensor | None = None
    fn: Callable[[Any], torch.Tensor] | None = None

    def score(self, output: Any) -> torch.Tensor:
        """(B,) differentiable scores of the raw model ``output``."""
        if self.kind == "callable":
            assert self.fn is not None
            return _call(self.fn, output, output_tensor(output).shape[0])
        tensor = output_tensor(output)
        if self.kind == "class":
            return tensor.gather(1, self.indices[:, None].to(tensor.device))[:, 0]
        if self.kind == "direction":
            return (tensor * self.direction.to(tensor)).flatten(1).sum(dim=1)
        raise InputError("this explanation has no target score")

    def seeds(
        self,
        tensor: torch.Tensor,
        as_output: Callable[..., Any] | None = None,
        tokens: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The initial LRP relevance at the output tensor (same shape as ``tensor``) and at the model's
        final ``tokens`` when a callable target reads them too (None otherwise). ``as_output(tensor,
        tokens)`` gives a callable target the output in the form the model returns it (a ModelOutput);
        the relevance at each input of the score's read-out is that input times the score's gradient
        there (LRP-0 of a linear read-out)."""
        if self.kind == "class":
            return F.one_hot(self.indices.to(tensor.device), tensor.shape[-1]).to(tensor.dtype), None
        if self.kind == "direction":
            return tensor.detach() * self.direction.to(tensor), None
        if self.kind == "callable":
            assert self.fn is not None
            with torch.enable_grad():
                leaf = tensor.detach().requires_grad_(True)
                token_leaf = None if tokens is None else tokens.detach().requires_grad_(True)
                output = leaf if as_output is None else as_output(leaf, token_leaf)
                leaves = [leaf] if token_leaf is None else [leaf, token_leaf]
                score = _call(self.fn, output, leaf.shape[0]).sum()
                gradients = torch.autograd.grad(score, leaves, allow_unused=True)
            seeds = [None if g is None else x.detach() * g for x, g in zip(leaves, gradients, strict=True)]
            output_seed = torch.zeros_like(leaf) if seeds[0] is None else seeds[0]
            return output_seed, (seeds[1] if len(seeds) > 1 else None)
        raise InputError("this explanation has no target score")


def _call(fn: Callable[[Any], torch.Tensor], output: Any, batch: int) -> torch.Tensor:
    scores = fn(output)
    if not isinstance(scores, torch.Tensor) or scores.shape != (batch,):
        shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
        # named without a batch size: the callable may be given a part of the user's batch (a chunk)
        raise InputError(
            f"the target callable must return one score per image of the output it is given, shape (B,); "
            f"got {shape} for an output of {batch} images"
        )
    if not scores.is_floating_point():
        raise InputError(f"the target callable must return floating-point scores, got {scores.dtype}")
    if torch.is_grad_enabled() and not scores.requires_grad:
        raise InputError(
            "the target callable's scores do not depend on the model's output (detached, or computed "
            "without gradients); return e.g. output[:, k], not output.detach()[:, k]"
        )
    return scores


def _is_direction(target: object) -> bool:
    return isinstance(target, torch.Tensor) and target.is_floating_point()


_READOUT_HINT = (
    "; for a direction of one embedding ({width},) read from the tokens, name that embedding: "
    "attnmap.ReadoutDirection('cls' | 'patch_mean' | 'cls_and_patch_mean', direction) "
    "(attnmap explain: --readout cls)"
)
"""What a refused target on a model whose output is tokens says: the read-outs made for that case."""


def resolve(target: Target, output: Any, *, classifier: bool, needs_target: bool, method: str) -> Objective:
    """Check ``target`` against the model's raw ``output`` and turn it into an `Objective`.

    ``classifier``: the model has classes (its output tensor is logits). ``needs_target``: the
    method explains a score (gradient and LRP methods); others only validate a given target.
    """
    tensor = output_tensor(output).detach()
    batch = tensor.shape[0]
    if target is None:
        if classifier and tensor.ndim == 2:
            return Objective("class", indices=tensor.argmax(dim=-1))
        if needs_target:
            raise InputError(
                f"method {method!r} needs a target: the model is headless (its output is "
                f"{tuple(tensor.shape[1:])} per image, not class logits); pass target= a direction tensor "
                f"of shape {tuple(tensor.shape[1:])} (attnmap explain: --direction FILE.npy) or a callable "
                "output -> (B,) scores"
                + (_READOUT_HINT.format(width=tensor.shape[-1]) if tensor.ndim == 3 else "")
            )
        return Objective("none")
    if callable(target) and not isinstance(target, torch.Tensor):
        return Objective("callable", fn=target)
    if _is_direction(target):
        direction = target.detach().to(device=tensor.device, dtype=tensor.dtype)
        if tuple(direction.shape) == tuple(tensor.shape[1:]):
            direction = direction.unsqueeze(0)
        elif tuple(direction.shape) != tuple(tensor.shape):
            whole = (whole_batch(batch), *tensor.shape[1:])  # the user's batch, not a chunk's
            raise InputError(
                f"direction target has shape {tuple(target.shape)} but the model's output is "
                f"{whole}: give {tuple(tensor.shape[1:])} or {whole}"
                + (_READOUT_HINT.format(width=tensor.shape[-1]) if tensor.ndim == 3 else "")
            )
        if not torch.isfinite(direction).all():
            raise InputError("direction target contains NaN or infinite values")
        return Objective("direction", direction=direction)
    if not classifier or tensor.ndim != 2:
        raise InputError(
            f"class index target {_describe(target)} given, but the model has no classes (its output is "
            f"{tuple(tensor.shape[1:])} per image); pass a direction tensor (e.g. a one-hot vector) "
            "or a callable"
        )
    try:
        values = torch.as_tensor(target, device=tensor.device).reshape(-1)
    except (TypeError, ValueError, RuntimeError):
        values = None
    if values is None or values.dtype == torch.bool or values.is_floating_point() or values.is_complex():
        # a float class index (2.5, or 2.0 from arithmetic) or a bool would be cast silently
        raise InputError(
            f"target must be an int, B ints, a direction tensor or a callable, got {_describe(target)}"
        )
    indices = values.to(torch.long)
    if indices.numel() == 1 and (batch == 1 or torch.as_tensor(target).ndim == 0):
        indices = indices.expand(batch)  # one class for all; a 1-long list is one image's, not all
    if indices.numel() != batch:
        raise InputError(f"got {indices.numel()} targets for a batch of {batch} images")
    n_classes = tensor.shape[1]
    wrong = indices[(indices < 0) | (indices >= n_classes)]
    if wrong.numel():
        # the wrong values once each: one class for every image was listed B times (or a chunk's times)
        values = sorted(set(wrong.tolist()))
        named = f"target {values[0]}" if len(values) == 1 else f"targets {values}"
        raise InputError(f"{named} out of range: the model has {n_classes} classes (0..{n_classes - 1})")
    return Objective("class", indices=indices)


def _describe(target: object) -> str:
    text = repr(target.tolist() if isinstance(target, torch.Tensor) else target)
    return text if len(text) < 40 else text[:37] + "..."


def slice_target(target: Target, start: int, stop: int, batch: int, what: str = "") -> Target:
    """The part of ``target`` that belongs to images start..stop of a batch of ``batch``.

    One class, a (D,) direction and callables apply to every image and are passed on as they are;
    a callable with a ``part(start, stop, batch)`` method (`attnmap.vit.readout.ReadoutDirection`) gives
    its own part.
    """
    if callable(target) and hasattr(target, "part"):  # a callable holding per-image parts (ReadoutDirection)
        return target.part(start, stop, batch)
    if target is None or isinstance(target, int) or callable(target) and not isinstance(target, torch.Tensor):
        return target
    if _is_direction(target):
        if target.ndim >= 1 and target.shape[0] == batch and target.ndim > 1:
            return target[start:stop]
        return target
    values = torch.as_tensor(target)
    if values.ndim == 0:
        return int(values)
    values = values.reshape(-1)
    if values.numel() != batch:
        raise InputError(f"got {values.numel()} targets for {what}{batch} images")
    return values[start:stop].tolist()
