"""Read-outs of a token output, (B, N, D) → (B, D'), and a direction target that scores one.

Why: many encoders people run give their tokens, not an embedding (a timm ViT built with
``global_pool=''`` as Virchow2's published configuration is; a Hugging Face ``ViTModel`` saved
without its pooler, as Phikon is). Their embedding is a read-out the user's code applies after the
model: the class token, the mean of the patch tokens, or both concatenated (Virchow, Virchow2). A
direction in that embedding's space is what a linear probe or an MIL model on the embeddings gives,
so `ReadoutDirection` explains ⟨read-out(tokens), d⟩. The same read-outs serve the slide pipeline's
Hugging Face encoders (`attnmap.wsi.hf_encoder`): one spelling of which rows each one averages.

Prefix tokens (class, distillation, registers) come first in every supported family; the patch
mean leaves all of them out. While `attnmap.explain` runs on such a target, the methods read their
maps at the read-out's rows (`query_override`), as they read a pooled model's at its pool's: a
rollout explaining a patch-mean score starts from the patch tokens, not from the class token.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from attnmap.errors import InputError
from attnmap.readout_names import TOKEN_READOUTS

_QUERY: contextvars.ContextVar[str | None] = contextvars.ContextVar("readout_query", default=None)


def read_tokens(tokens: torch.Tensor, readout: str, num_prefix: int) -> torch.Tensor:
    """(B, N, D) tokens → (B, D) (``cls``, ``patch_mean``) or (B, 2D) (``cls_and_patch_mean``)."""
    if readout == "cls":
        return tokens[:, 0]
    patch_mean = tokens[:, num_prefix:].mean(dim=1)
    if readout == "patch_mean":
        return patch_mean
    if readout == "cls_and_patch_mean":
        return torch.cat([tokens[:, 0], patch_mean], dim=1)
    raise InputError(f"readout must be one of {', '.join(TOKEN_READOUTS)}, got {readout!r}")


def readout_rows(readout: str, batch: int, tokens: int, num_prefix: int, like: torch.Tensor) -> torch.Tensor:
    """(B, N) weights of the token rows ``readout`` reads (`read_tokens`' rows, as the query row of
    the attention methods): one-hot token 0 (``cls``), uniform over the patch tokens
    (``patch_mean``), or half of each (``cls_and_patch_mean``)."""
    if readout not in TOKEN_READOUTS:
        raise InputError(f"readout must be one of {', '.join(TOKEN_READOUTS)}, got {readout!r}")
    rows = torch.zeros(batch, tokens, dtype=like.dtype, device=like.device)
    if readout != "patch_mean":
        rows[:, 0] = 1.0 if readout == "cls" else 0.5
    if readout != "cls":
        rows[:, num_prefix:] = (1.0 if readout == "patch_mean" else 0.5) / (tokens - num_prefix)
    return rows


@dataclass(frozen=True, eq=False)
class ReadoutDirection:
    """Target scoring ⟨read-out(tokens), direction⟩ for a model whose output is (B, N, D) tokens.

    ``direction``: (D',) for every image or (B, D'), D' the read-out's width. `attnmap.explain`
    binds it to the model (its number of prefix tokens) before use; as a callable target, LRP seeds
    the tokens with tokens ⊙ ∂score/∂tokens, the LRP-0 relevance of the (linear) read-out.
    """

    readout: str
    direction: torch.Tensor
    num_prefix: int | None = None

    def __post_init__(self) -> None:
        if self.readout not in TOKEN_READOUTS:
            raise InputError(f"readout must be one of {', '.join(TOKEN_READOUTS)}, got {self.readout!r}")
        direction = self.direction
        if not isinstance(direction, torch.Tensor) or not direction.is_floating_point():
            raise InputError("a read-out direction must be a floating-point tensor, (D,) or (B, D)")
        if direction.ndim not in (1, 2):
            raise InputError(f"a read-out direction must be (D,) or (B, D), got {tuple(direction.shape)}")
        if not torch.isfinite(direction).all():
            raise InputError("the read-out direction contains NaN or infinite values")

    @property
    def __name__(self) -> str:  # how records and titles name a callable target
        return f"{self.readout} read-out · direction {tuple(self.direction.shape)}"

    def bound(self, model: nn.Module) -> ReadoutDirection:
        """This target with ``model``'s prefix-token count; refuses a read-out the model lacks."""
        from attnmap.vit.adapters import adapter_for

        adapter = adapter_for(model)
        prefix = adapter.num_prefix_tokens
        if self.readout != "patch_mean" and not _has_class_token(model, prefix):
            raise InputError(
                f"readout {self.readout!r}: {type(model).__name__} has no class token; use patch_mean"
            )
        direction = self.direction.clone() if self.direction.is_inference() else self.direction
        return replace(self, direction=direction, num_prefix=prefix)

    def part(self, start: int, stop: int, batch: int) -> ReadoutDirection:
        """The target of images start..stop of a batch of ``batch`` (a per-image direction is sliced)."""
        if self.direction.ndim == 2 and self.direction.shape[0] == batch:
            return replace(self, direction=self.direction[start:stop])
        return self

    def identity(self) -> dict[str, Any]:
        """What a stored map records of this target (the direction by the digest of its values)."""
        values = self.direction.detach().cpu().double().contiguous().numpy().tobytes()
        return {"readout": self.readout, "direction": hashlib.sha256(values).hexdigest(),
                "shape": list(self.direction.shape)}

    def __call__(self, output: Any) -> torch.Tensor:
        from attnmap.vit.targets import output_tensor, whole_batch

        # a Hugging Face model with a pooler returns its tokens beside the pooled output
        hidden = getattr(output, "last_hidden_state", None)
        tokens = hidden if isinstance(hidden, torch.Tensor) and hidden.ndim == 3 else output_tensor(output)
        if self.num_prefix is None:
            raise InputError("a ReadoutDirection must be bound to its model (attnmap.explain does it)")
        if tokens.ndim != 3:
            raise InputError(
                f"readout {self.readout!r} reads tokens, but the model's output is {tuple(tokens.shape[1:])} "
                "per image: pass the direction itself as the target (attnmap explain: leave --readout out)"
            )
        features = read_tokens(tokens, self.readout, self.num_prefix)
        direction = self.direction.to(device=features.device, dtype=features.dtype)
        wrong_rows = direction.ndim == 2 and len(direction) != len(features)
        if direction.shape[-1] != features.shape[-1] or wrong_rows:
            images = whole_batch(len(features))  # the user's batch, of which these may be a chunk
            raise InputError(
                f"the direction has shape {tuple(direction.shape)} but the {self.readout} read-out is "
                f"{features.shape[-1]} wide for {images} images: give ({features.shape[-1]},) or "
                f"({images}, {features.shape[-1]})"
            )
        return (features * direction).sum(dim=-1)


def _has_class_token(model: nn.Module, num_prefix: int) -> bool:
    """A timm model says so (``cls_token``); in the Hugging Face families a prefix means one."""
    if hasattr(model, "cls_token") and hasattr(model, "patch_embed"):  # timm
        return model.cls_token is not None
    return num_prefix > 0


@contextlib.contextmanager
def reading_rows_of(target: object) -> Iterator[None]:
    """Inside the block, `query_override` names ``target``'s read-out (when it is a `ReadoutDirection`)."""
    token = _QUERY.set(target.readout if isinstance(target, ReadoutDirection) else None)
    try:
        yield
    finally:
        _QUERY.reset(token)


def query_override() -> str | None:
    """The read-out whose rows the maps are read at, when the explained score names one."""
    return _QUERY.get()
