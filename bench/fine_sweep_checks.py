"""The identities `bench/fine_sweep.py` checks on each fine-map case (float64 throughout)."""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F

from attnmap import ReadoutDirection

TOLERANCE = 1e-7
"""Relative to the largest magnitude compared (float64 arithmetic through a few layers)."""


READOUT_TOLERANCE = 1e-5
"""For maps made by two implementations of one network (the encoder's own layers, its timm twin):
LRP's ε = 1e-9 stabiliser meets different groupings of the same sums (CLIP's class position added
inside its embeddings, its post-norm on the class token only), ~1e-7 apart; a read-out of other
tokens or another norm is O(1) apart."""


def _close(
    a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor, tolerance: float | None = None
) -> bool:  # noqa: E501
    a, b = (np.asarray(torch.as_tensor(v).detach().cpu().double()) for v in (a, b))
    if a.shape != b.shape:
        return False
    scale = max(np.abs(a).max(initial=0.0), np.abs(b).max(initial=0.0), 1e-12)
    tolerance = TOLERANCE if tolerance is None else max(tolerance, TOLERANCE)
    return bool(np.abs(a - b).max(initial=0.0) <= tolerance * scale)


def _same_up_to_scale(drawn: np.ndarray, reference: np.ndarray) -> bool:
    """``drawn`` = c · ``reference`` for one c (both maps of one patch), compared cross-multiplied."""
    return _close(drawn * reference.sum(), reference * drawn.sum(), READOUT_TOLERANCE)


def case_checks(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    features: torch.Tensor,
    head: torch.nn.Module,
    method: str,
    mil_method: str,
    target: int,
    bounds: tuple[torch.Tensor, torch.Tensor] | None,
    reference: tuple[torch.nn.Module, str] | None,
) -> list[str]:
    """The names of the identities one (encoder, head, method, MIL method, target) case breaks."""
    from attnmap.wsi.heatmap.fine import FineConfig, bag_fine_maps, fine_maps, mil_directions

    config = FineConfig(method, None, mil_method)
    result = bag_fine_maps(model, inputs, head, features, config, target, bounds)
    failures = []
    count, size = len(inputs), tuple(inputs.shape[-2:])
    if result.maps.shape != (count, *size):
        return [f"size {result.maps.shape} (expected {(count, *size)})"]
    if not np.isfinite(result.maps).all():
        return ["non-finite maps"]
    if result.target != target:
        failures.append(f"target {result.target} (asked {target})")
    if not _close(result.maps.sum(axis=(1, 2)), result.patch_scores):
        failures.append("conservation")
    directions, _, _ = mil_directions(head, features, target, mil_method)
    row = {int(index): position for position, index in enumerate(result.indices)}
    for index in (0, count - 1):
        alone, _, _ = fine_maps(
            model, inputs[index : index + 1], directions[index : index + 1], method, bounds=bounds
        )
        if not _close(alone[0], result.maps[row[index]]):
            failures.append("batch")
            break
    order = torch.as_tensor(np.random.default_rng(target).permutation(count))
    other = bag_fine_maps(model, inputs[order], head, features[order], config, target, bounds)
    other_row = {int(order[int(index)]): position for position, index in enumerate(other.indices)}
    if not all(_close(other.maps[other_row[i]], result.maps[row[i]]) for i in range(count)):
        failures.append("slide")
    if method != "lrp" and reference is not None:
        failures += _readout_failures(reference, inputs, directions, method, result.maps, row)
    return failures


def _readout_failures(
    reference: tuple[torch.nn.Module, str],
    inputs: torch.Tensor,
    directions: torch.Tensor,
    method: str,
    maps: np.ndarray,
    row: dict[int, int],
) -> list[str]:
    """The fine maps against `attnmap.explain` on the encoder alone (its tokens, its read-out)."""
    from attnmap import explain

    tokens_model, readout = reference
    directions = directions.to(inputs)
    target = directions if readout == "direction" else ReadoutDirection(readout, directions)
    tokens = explain(tokens_model, inputs, method, target=target).detach().double()
    expected = F.interpolate(tokens[:, None], size=inputs.shape[-2:], mode="nearest")[:, 0].numpy()
    if all(_same_up_to_scale(maps[row[i]], expected[i]) for i in range(len(inputs))):
        return []
    return [f"readout ({readout})"]


def _bias_free(model: torch.nn.Module) -> torch.nn.Module:
    """A copy with every additive constant zeroed: biases, class / register tokens, positions,
    BatchNorm shifts (so f(0) = 0 for a ReLU network and for a frozen-gate transformer)."""
    free = copy.deepcopy(model)
    if hasattr(free, "fine_twin"):
        free.__dict__["_fine_twin"] = None
    names = (
        "bias",
        "cls_token",
        "dist_token",
        "reg_token",
        "register_tokens",
        "pos_embed",
        "position_embeddings",
        "class_embedding",
        "running_mean",
        "feature_mean",
    )
    with torch.no_grad():
        for name, value in [*free.named_parameters(), *free.named_buffers()]:
            leaf = name.rsplit(".", 1)[-1]
            if leaf in names or name.endswith("position_embedding.weight"):
                value.zero_()
    return free


def _piecewise_linear(model: torch.nn.Module) -> bool:
    allowed = (
        torch.nn.Conv2d,
        torch.nn.Linear,
        torch.nn.BatchNorm2d,
        torch.nn.ReLU,
        torch.nn.MaxPool2d,
        torch.nn.AdaptiveAvgPool2d,
        torch.nn.AvgPool2d,
        torch.nn.Identity,
        torch.nn.Flatten,
    )
    leaves = [module for module in model.modules() if not list(module.children())]
    return bool(leaves) and all(isinstance(module, allowed) for module in leaves)


def bias_free_identity(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    features: torch.Tensor,
    bounds: tuple[torch.Tensor, torch.Tensor] | None,
) -> tuple[str, str]:
    """(class, detail) of the bias-free identity of the ``lrp`` rule (see `bench/fine_sweep.py`)."""
    from attnmap.wsi.heatmap.encoder_relevance import encoder_relevance

    free = _bias_free(model)
    generator = torch.Generator().manual_seed(5)
    direction = torch.randn(features.shape, generator=generator, dtype=torch.float64).to(features)
    result = encoder_relevance(free, inputs, direction)
    score = (free(inputs) * direction).sum(dim=1).detach()
    failures = []
    if not _close(result.bias_share, torch.zeros_like(result.bias_share)) and not _close(
        result.bias_share + score, score
    ):
        failures.append(f"bias share {result.bias_share.abs().max():.3g} ≠ 0")
    if not _close(result.pixels.sum(dim=(1, 2)), score):
        failures.append("Σ pixels ≠ d·f(p)")
    if _piecewise_linear(free):
        images = inputs.clone().requires_grad_(True)
        (gradient,) = torch.autograd.grad((free(images) * direction).sum(), images)
        if not _close(result.pixels, (gradient * inputs).sum(dim=1)):
            failures.append("LRP-0 ≠ gradient × input")
    return ("wrong", "; ".join(failures)) if failures else ("ok", "")
