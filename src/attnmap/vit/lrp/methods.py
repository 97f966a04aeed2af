"""The four LRP-based methods of Chefer et al. (CVPR 2021), registered with `attnmap.explain`.

All run batched on the user's timm ViT/DeiT through an automatically built, verified LRP twin
(`attnmap.vit.lrp.twin`), on the model's device and dtype. Relevance is per sample. Numerics: float64
uses the reference stabiliser (reproduces the reference implementation); float32 uses the
sign-following ε = 1e-7 (see `attnmap.vit.lrp.rules`); a float16 or bfloat16 model is refused.

Maps are read at the tokens the classifier reads: the class token row (DeiT distilled: mean of the
class and distillation rows; ``global_pool="avg"``: mean of the pooled token rows), at the patch
columns (class, distillation and register tokens excluded).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable

import torch
from torch import nn

from attnmap.errors import InputError
from attnmap.model_state import eval_mode
from attnmap.vit.adapters import adapter_for, explains
from attnmap.vit.adapters_hf import is_hf_vision_model
from attnmap.vit.capture import resolve_layers, start_block
from attnmap.vit.lrp.check import as_model_output, gives_tokens, verify_twin
from attnmap.vit.lrp.readers import build_twin
from attnmap.vit.lrp.relevance import Relevance, relevance_pass
from attnmap.vit.lrp.rules import stabiliser_for
from attnmap.vit.lrp.twin import Trace, ViTTwin
from attnmap.vit.lrp.weight_cache import weight_cache
from attnmap.vit.pooling import MAX_POOLS, UNIFORM_SHARE, query_share
from attnmap.vit.readout import query_override, readout_rows
from attnmap.vit.registry import method
from attnmap.vit.targets import parts_of_batch, resolve, slice_target

_STABILISER_NOTE = "float64: reference ε=1e-9; float32: sign-following ε=1e-7"

CHUNK_SIZE = 8
"""Images per relevance pass. The trace of activations, attention maps and their gradients grows
with the batch; past about 8 ViT-B/16 images it outgrows the caches and per-image time rises
(measured on a 2-core CPU: 1.05 s/img at batch 1, 0.96 at 4 and 8, 1.2–1.4 at 16). Chunking keeps
the per-image cost at its minimum and bounds peak memory; relevance is per sample, so the maps are
the same as in one pass."""


def _in_chunks(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """Run ``fn(model, images, target, **options)`` on chunks of `CHUNK_SIZE` images."""

    @functools.wraps(fn)
    def chunked(model: nn.Module, images: torch.Tensor, target: object, **options: object) -> torch.Tensor:
        _check_precision(model, fn.__name__)
        batch = images.shape[0]
        with _without_autocast(images.device.type):
            if batch <= CHUNK_SIZE:
                return fn(model, images, target, **options)
            with weight_cache():  # one |W| per Linear for the whole call: its weights cannot change within it
                return _chunks(fn, model, images, target, **options)

    return chunked


def _check_precision(model: nn.Module, method: str) -> None:
    """Refuse a float16 / bfloat16 model: the rules compute in the model's dtype, and in half
    precision the ε-rule's sums lose the signal (on the bundled shapes ViT a bfloat16 LRP map
    correlated -0.74 with the float64 one): a silently wrong map."""
    dtype = next((parameter.dtype for parameter in model.parameters()), None)
    if dtype in (torch.float16, torch.bfloat16):
        raise InputError(
            f"{method}: the model is in {dtype}, where LRP's sums lose the map (some come out inverted); "
            "the LRP methods need float32 or float64: explain model.float() with float32 images"
        )


def _without_autocast(device_type: str) -> contextlib.AbstractContextManager[object]:
    """Autocast off for the call: the rules are written for the model's dtype, and under a caller's
    ``torch.autocast`` the twin's matrix products came out in bfloat16 beside float32 relevance
    (a RuntimeError in the first mixed product)."""
    if torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


def _chunks(
    fn: Callable[..., torch.Tensor], model: nn.Module, images: torch.Tensor, target: object, **options: object
) -> torch.Tensor:
    batch = images.shape[0]
    maps = []
    with parts_of_batch(batch):  # a target error names the user's batch, not the chunk's
        for start in range(0, batch, CHUNK_SIZE):
            stop = min(start + CHUNK_SIZE, batch)
            part = slice_target(target, start, stop, batch, what="a batch of ")
            maps.append(fn(model, images[start:stop], part, **options))
    return torch.cat(maps)


def _compute(
    model: nn.Module,
    images: torch.Tensor,
    target: object,
    stop_block: int,
    grad_from: int | None,
    method: str,
    to_pixels: bool = False,
    reduce: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor] | None = None,
) -> tuple[ViTTwin, Trace, Relevance, dict[int, torch.Tensor]]:
    """Twin forward, check, ∇A (only for blocks ≥ ``grad_from``), relevance down to ``stop_block``.

    ``reduce(R_A, ∇A or None)`` turns each block's attention relevance into what the method keeps,
    block by block (it may overwrite R_A; see `relevance_pass`). The model is in eval mode for the
    call (the twin runs some of the model's own modules, e.g. a Hugging Face embedding with its
    dropout), and left in the mode it was in."""
    with eval_mode(model):
        twin = build_twin(model)
        # the attention methods' checks of dtype, device, size and channels, on the images as given:
        # float64 images were cast to a float32 model's dtype without a word, and the Eva, Beit and
        # RelPos twins run the model's own patch embedding, which fails on a wrong size with an
        # AssertionError or RuntimeError (a model the attention methods cannot read, such as a
        # subclass with its own head, is left to the twin, whose forward is verified against the model's)
        if explains(model):
            adapter_for(model).check_images(images)
        images = images.detach().to(device=twin.device, dtype=twin.dtype)
        # a callable may read the final tokens themselves (a Hugging Face model's last_hidden_state
        # beside its pooled output): then the last block runs on every token
        reads_tokens = callable(target) and not isinstance(target, torch.Tensor) and is_hf_vision_model(model)
        trace = twin.forward(
            images,
            record_from=0 if to_pixels else stop_block,
            grad_from=grad_from,
            record_stem=to_pixels,
            all_rows=reads_tokens,
        )
        verify_twin(model, images, trace)
    tokens = trace.final_tokens if reads_tokens and gives_tokens(model) else None
    output = as_model_output(model, trace.logits, tokens)  # what a callable target is given: the model's kind
    objective = resolve(target, output, classifier=twin.classifier, needs_target=True, method=method)
    gradients: dict[int, torch.Tensor] = {}
    if grad_from is not None:
        blocks = sorted(trace.attentions)
        with torch.enable_grad():
            score = objective.score(output).sum()
            grads = torch.autograd.grad(score, [trace.attentions[i] for i in blocks])
        gradients = dict(zip(blocks, grads, strict=True))
    as_output = functools.partial(as_model_output, model)
    seed, token_seed = objective.seeds(trace.logits.detach(), as_output, tokens)
    per_block = None
    if reduce is not None:

        def per_block(index: int, cam: torch.Tensor) -> torch.Tensor:
            return reduce(cam, gradients.pop(index, None))

    relevance = relevance_pass(
        twin, trace, seed, stabiliser_for(images.dtype), stop_block, to_pixels, reduce=per_block,
        token_seed=token_seed,
    )
    return twin, trace, relevance, gradients


def _readout_rows(twin: ViTTwin, like: torch.Tensor, trace: Trace) -> torch.Tensor:
    """(B, N) weights of the token rows the classifier reads (see the module docstring)."""
    batch, tokens = like.shape[0], like.shape[-1]
    readout = query_override()  # the score reads a token read-out the model's output leaves to the user
    if readout is not None:
        return readout_rows(readout, batch, tokens, twin.num_prefix, like)
    rows = torch.zeros(batch, tokens, dtype=like.dtype, device=like.device)
    if twin.global_pool == "map":
        pool_row = trace.pool.row().to(like.dtype)
        rows[:, tokens - pool_row.shape[-1] :] = pool_row
    elif twin.distilled:
        rows[:, :2] = 0.5
    elif twin.global_pool == "cls_mean":
        rows[:, 0] = 0.5
        rows[:, twin.pool_start :] = 0.5 / (tokens - twin.pool_start)
    elif twin.global_pool == "token" or (twin.global_pool == "" and twin.has_class_token):
        rows[:, 0] = 1.0
    else:
        start = 0 if twin.pool_include_prefix else twin.num_prefix
        if twin.global_pool in MAX_POOLS:
            pooled = trace.final_tokens[:, start:].detach()
            rows[:, start:] = query_share(pooled, twin.global_pool).to(like.dtype)
        else:
            rows[:, start:] = 1.0 / (tokens - start)
    return rows


def _patch_map(twin: ViTTwin, row: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(B, N) token row → (B, gh, gw) at the patch tokens."""
    return row[:, twin.num_prefix :].reshape(-1, *grid)


def _rollout(twin: ViTTwin, per_block: dict[int, torch.Tensor], trace: Trace) -> torch.Tensor:
    """Readout row of (Ā_{L−1}+I)⋯(Ā_s+I) − I without row normalisation, as row-vector products (no N³).

    Subtracting I (the read-out row itself) changes nothing at the patch columns of a CLS read-out;
    for an average-pooled read-out it removes the uniform 1/P that would drown the signal
    (docs/average_pooling.md).
    """
    query = _readout_rows(twin, per_block[max(per_block)], trace).unsqueeze(1)
    # the part beyond the identity, Δ ← Δ + (q + Δ)Ā, carried apart from q so that small products
    # are not rounded away by adding them to q and subtracting it again
    delta = torch.zeros_like(query)
    for index in sorted(per_block, reverse=True):
        delta = delta + (query + delta) @ per_block[index]
    # an attention-pool row and a max pool's winners are signal, not the residual's identity: only
    # the share spread evenly over the pooled tokens is removed (avgmax: its mean half)
    if twin.global_pool == "map":
        row = query + delta
    elif twin.global_pool in MAX_POOLS:
        start = 0 if twin.pool_include_prefix else twin.num_prefix
        row = query + delta
        row[..., start:] -= UNIFORM_SHARE[twin.global_pool] / (row.shape[-1] - start)
    else:
        row = delta
    return _patch_map(twin, row.squeeze(1), trace.grid)


@method(
    "transformer_attribution",
    "Chefer et al. 2021: rollout (no row normalisation) of head-mean clamp(∇A ⊙ LRP relevance of A, 0) "
    f"from block start_layer; batched, on the model's device ({_STABILISER_NOTE})",
    needs_grad=True,
)
@_in_chunks
def transformer_attribution(
    model: nn.Module, images: torch.Tensor, target: object, *, start_layer: int = 0
) -> torch.Tensor:
    """The paper's method: gradient-weighted attention relevance rolled out over blocks ≥ start_layer."""
    depth = build_twin(model).depth
    start = start_block(start_layer, depth)
    twin, trace, relevance, _ = _compute(
        model,
        images,
        target,
        stop_block=start,
        grad_from=start,
        method="transformer_attribution",
        reduce=lambda cam, grad: cam.mul_(grad).clamp_(min=0).mean(dim=1),  # R_A: a reused buffer
    )
    return _rollout(twin, relevance.attention, trace)


@method(
    "lrp",
    "Chefer et al. 2021 full LRP down to the pixels (zᴮ at the patch embedding, z⁺ in a conv stem); "
    f"returns (B, H, W) ({_STABILISER_NOTE})",
    needs_grad=False,
    output="pixels",
)
@_in_chunks
def lrp(model: nn.Module, images: torch.Tensor, target: object) -> torch.Tensor:
    """Conservative LRP of the target logit onto the input pixels, summed over colour channels."""
    _, _, relevance, _ = _compute(
        model, images, target, stop_block=0, grad_from=None, method="lrp", to_pixels=True
    )
    height, width = images.shape[-2:]
    return relevance.pixels[:, :height, :width]


@method(
    "lrp_rollout",
    "Chefer et al. 2021 LRP rollout: rollout (no row normalisation) of "
    "head-mean clamp(LRP relevance of A, 0) "
    f"from block start_layer ({_STABILISER_NOTE})",
    needs_grad=False,
)
@_in_chunks
def lrp_rollout(
    model: nn.Module, images: torch.Tensor, target: object, *, start_layer: int = 0
) -> torch.Tensor:
    """Like transformer_attribution without the gradient weighting."""
    depth = build_twin(model).depth
    start = start_block(start_layer, depth)
    twin, trace, relevance, _ = _compute(
        model,
        images,
        target,
        stop_block=start,
        grad_from=None,
        method="lrp_rollout",
        reduce=lambda cam, _: cam.clamp_(min=0).mean(dim=1),
    )
    return _rollout(twin, relevance.attention, trace)


@method(
    "lrp_attention",
    "Chefer et al. 2021: LRP relevance of one block's attention (× ∇A with grad=True), clamp(0), head mean, "
    f"read-out row ({_STABILISER_NOTE})",
    needs_grad=False,
)
@_in_chunks
def lrp_attention(
    model: nn.Module, images: torch.Tensor, target: object, *, layer: int = -1, grad: bool = False
) -> torch.Tensor:
    """Relevance of block ``layer``'s attention matrix; the propagation stops at that block."""
    if not isinstance(grad, bool):
        raise InputError(f"grad must be True or False, got {grad!r}")
    if isinstance(layer, bool) or not isinstance(layer, int):  # one block: not a list of them
        raise InputError(f"layer must be an integer, got {layer!r}")
    index = resolve_layers(layer, build_twin(model).depth)[0]  # the attention methods' rule
    twin, trace, relevance, gradients = _compute(
        model, images, target, stop_block=index, grad_from=index if grad else None, method="lrp_attention"
    )
    cam = relevance.attention[index]
    if grad:
        cam = gradients[index] * cam
    head_mean = cam.clamp(min=0).mean(dim=1)
    row = (_readout_rows(twin, head_mean, trace).unsqueeze(1) @ head_mean).squeeze(1)
    return _patch_map(twin, row, trace.grid)
