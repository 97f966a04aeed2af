"""Recording each block's post-softmax attention from a ViT as the user built it.

``with AttentionCapture(model, layers=..., with_grad=...) as cap: captured = cap.forward(images)``
runs one forward pass with the model in eval mode and returns its output plus the attention
A (B, H, N, N) of the requested blocks, together with the token layout the methods need (prefix
token count, patch grid for this input size, which row the classifier reads). On exit — also when
anything raises — the model is exactly as it was: fused-attention flags, hooks, training flags of
every submodule, gradient-checkpointing flag. ``requires_grad`` of the user's parameters is never
touched.

Gradients: with ``with_grad=True`` the recorded attention tensors are part of an autograd graph, so
a method takes d(score)/dA with ``torch.autograd.grad(score, captured.attention_list())`` — only the
gradients it uses, no parameter gradients. The graph outlives the context; restoring the model does
not change it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from attnmap.errors import InputError
from attnmap.vit.adapters import QueryRow, ViTAdapter, adapter_for
from attnmap.vit.targets import Objective, Target, output_tensor, resolve


@dataclass
class Captured:
    """What one forward pass recorded.

    ``output`` is the model's raw output (a tensor or a Hugging Face ``ModelOutput``); ``logits`` its
    output tensor (see `attnmap.vit.targets.output_tensor`): logits, an embedding or tokens.
    ``attentions[l]`` is block l's attention (B, H, N, N) with N = num_prefix_tokens + gh·gw (or
    what the capture's ``reduce`` made of it).
    ``query_row`` says which row of A stands for "what the read-out looks at": ``"cls"`` (token 0),
    ``"patch_mean"`` (the mean of the patch rows, for models pooling the patch tokens, e.g. timm
    ``global_pool="avg"``), ``"distilled"`` (½ on the class and ½ on the distillation token, which
    DeiT distilled / with teacher read), ``"cls_and_patch_mean"`` or ``"latent"`` (an
    attention-pool head's row), ``"pooled_max"`` / ``"pooled_avgmax"`` (a max pool's winners); ``query``
    holds those (B, N) weights, ``identity_query`` the share of them whose residual identity path
    the rollouts remove (`ViTAdapter.identity_weights`).
    """

    output: Any
    logits: torch.Tensor
    attentions: dict[int, torch.Tensor]
    num_blocks: int
    num_prefix_tokens: int
    grid_size: tuple[int, int]
    query_row: QueryRow
    query: torch.Tensor
    identity_query: torch.Tensor
    classifier: bool

    @property
    def num_tokens(self) -> int:
        return self.num_prefix_tokens + self.grid_size[0] * self.grid_size[1]

    def layers(self) -> list[int]:
        return sorted(self.attentions)

    def attention_list(self) -> list[torch.Tensor]:
        """The recorded attention tensors in block order (for `torch.autograd.grad`)."""
        return [self.attentions[index] for index in self.layers()]

    def query_weights(self, like: torch.Tensor) -> torch.Tensor:
        """(B, N) weights selecting the query row (see the class docstring), in ``like``'s dtype."""
        return self.query.to(dtype=like.dtype, device=like.device)

    def objective(self, target: Target, method: str, needs_target: bool) -> Objective:
        """``target`` checked against this output (see `attnmap.vit.targets.resolve`)."""
        return resolve(
            target, self.output, classifier=self.classifier, needs_target=needs_target, method=method
        )

    def to_grid(self, scores: torch.Tensor) -> torch.Tensor:
        """(B, N) scores over all tokens, or (B, gh·gw) over the patches → (B, gh, gw) patch map."""
        if scores.shape[-1] == self.num_tokens and self.num_prefix_tokens:
            scores = scores[:, self.num_prefix_tokens :]
        return scores.reshape(scores.shape[0], *self.grid_size)


def resolve_layers(layers: int | Iterable[int] | None, num_blocks: int) -> list[int]:
    """Block indices (negative ones count from the end) → sorted non-negative indices."""
    if layers is None:
        return list(range(num_blocks))
    requested = [layers] if isinstance(layers, int) else list(layers)
    resolved = set()
    for layer in requested:
        if isinstance(layer, bool) or not isinstance(layer, int):
            raise InputError(f"layer must be an int, got {layer!r}")
        if not -num_blocks <= layer < num_blocks:
            raise InputError(f"layer {layer} out of range: the model has {num_blocks} blocks")
        resolved.add(layer % num_blocks)
    return sorted(resolved)


def start_block(start_layer: object, num_blocks: int) -> int:
    """The first block a rollout-type method multiplies from (``start_layer`` of rollout,
    grad_rollout, transformer_attribution and lrp_rollout): 0..num_blocks−1, counted from the first
    block. One rule for the four: a negative value is refused, not read from the end (rollout and
    grad_rollout took -1 as the last block while the LRP rollouts refused it)."""
    if isinstance(start_layer, bool) or not isinstance(start_layer, int):
        raise InputError(f"start_layer must be an integer, got {start_layer!r}")
    if not 0 <= start_layer < num_blocks:
        raise InputError(
            f"start_layer={start_layer} is out of range: the model has {num_blocks} blocks "
            f"(0..{num_blocks - 1}, counted from the first)"
        )
    return start_layer


class _Sink(dict):
    """The dict the adapters write into; applies ``reduce`` to each attention on the way in."""

    def __init__(self, reduce: Callable[[torch.Tensor], torch.Tensor] | None) -> None:
        super().__init__()
        self.reduce = reduce

    def __setitem__(self, index: int, attention: torch.Tensor) -> None:
        super().__setitem__(index, attention if self.reduce is None else self.reduce(attention))


class AttentionCapture:
    """Context manager recording attention of ``layers`` (default: all blocks) of ``model``.

    ``with_grad=True`` keeps the attention in an autograd graph (the forward then runs with grad
    enabled even inside ``torch.no_grad()``); otherwise the forward runs under ``no_grad``.
    ``reduce`` (no-grad only) is applied to each block's attention as soon as it is computed, e.g.
    a head mean: then only the reduced (B, N, N) maps stay in memory, not L × (B, H, N, N).
    """

    def __init__(
        self,
        model: nn.Module,
        layers: int | Iterable[int] | None = None,
        with_grad: bool = False,
        reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        if reduce is not None and with_grad:
            raise ValueError("reduce cannot be combined with with_grad: gradients need the attention itself")
        self.adapter: ViTAdapter = adapter_for(model)
        self.layers = resolve_layers(layers, self.adapter.num_blocks)
        self.with_grad = with_grad
        self._stack: ExitStack | None = None
        self._sink: dict[int, torch.Tensor] = _Sink(reduce)

    def __enter__(self) -> AttentionCapture:
        stack = ExitStack()
        try:
            self.adapter.eval_mode(stack)
            self.adapter.record(stack, self.layers, self.with_grad, self._sink)
        except BaseException:
            stack.close()
            raise
        self._stack = stack
        return self

    def __exit__(self, *exc_info: object) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()

    def forward(self, images: torch.Tensor) -> Captured:
        """Run the model once on ``images`` and return logits + recorded attention."""
        if self._stack is None:
            raise RuntimeError("AttentionCapture.forward must be called inside its `with` block")
        self.adapter.check_images(images)
        self._sink.clear()
        with torch.set_grad_enabled(self.with_grad):
            output = self.adapter.run(images, self._sink)
        missing = [index for index in self.layers if index not in self._sink]
        if missing:
            raise RuntimeError(f"no attention was recorded for blocks {missing}")
        grid = self.adapter.grid_size(*images.shape[-2:])
        tokens = self.adapter.num_prefix_tokens + grid[0] * grid[1]
        query = self.adapter.query_weights(images.shape[0], tokens, images)
        captured = Captured(
            output=output,
            logits=output_tensor(output),
            attentions=dict(self._sink),
            num_blocks=self.adapter.num_blocks,
            num_prefix_tokens=self.adapter.num_prefix_tokens,
            grid_size=grid,
            query_row=self.adapter.query_row,
            query=query,
            identity_query=self.adapter.identity_weights(query),
            classifier=self.adapter.classifier,
        )
        self._sink.clear()
        tokens = captured.attentions[self.layers[0]].shape[-1]
        if tokens != captured.num_tokens:
            raise RuntimeError(
                f"recorded {tokens} tokens but expected {captured.num_prefix_tokens} prefix + "
                f"{captured.grid_size[0]}x{captured.grid_size[1]} patches"
            )
        return captured


def capture(
    model: nn.Module,
    images: torch.Tensor,
    layers: int | Sequence[int] | None = None,
    with_grad: bool = False,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Captured:
    """One forward pass of ``model`` on ``images`` recording attention (see `AttentionCapture`)."""
    with AttentionCapture(model, layers=layers, with_grad=with_grad, reduce=reduce) as recorder:
        return recorder.forward(images)


def attention_gradients(score: torch.Tensor, captured: Captured) -> dict[int, torch.Tensor]:
    """d(score)/dA for every recorded block, by one backward pass through the attention only."""
    layers = captured.layers()
    with torch.enable_grad():
        gradients = torch.autograd.grad(score, [captured.attentions[index] for index in layers])
    return dict(zip(layers, gradients, strict=True))
