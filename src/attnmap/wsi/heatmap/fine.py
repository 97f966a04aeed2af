"""Fine heatmaps: a slide decision traced through the MIL model into the pixels of each patch.

For class c the MIL model's relevance of patch i is ``r_i = x_i ⊙ d_i`` with ``d_i = ∂y_c/∂x_i``
(xMIL-LRP: the attention weights held constant, which at ε → 0, γ = 0 equals this detached
gradient × input; or plain gradient × input). Its patch score is ``s_i = Σ_d r_id = d_i · f(p_i)``,
where ``f`` is the patch encoder and ``p_i`` the patch. Explaining ``f`` with the direction target
``d_i`` (`attnmap.wsi.heatmap.encoder_relevance`) gives every pixel of ``p_i`` its part of
``s_i``: conservation holds exactly,

    Σ_pixels R_i + b_i = s_i,

with ``b_i`` the share of the encoder's biases, class token and position embeddings. With
``spread_bias=True`` (the default for display) ``b_i`` is spread evenly over the patch's pixels, so
each fine map sums to its patch score and the coarse and fine levels of a heatmap tell one story.
See ``docs/fine-heatmaps.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from attnmap.errors import InputError, UnsupportedModelError
from attnmap.model_state import eval_mode
from attnmap.wsi.heatmap.encoder_relevance import encoder_relevance, input_bounds
from attnmap.wsi.heatmap.encoder_support import check_fine_encoder

FINE_METHODS = ("lrp", "transformer_attribution")
MIL_METHODS = ("lrp", "gradient_x_input")


@dataclass(frozen=True)
class FineConfig:
    """The heatmap's ``fine`` section: encoder method, MIL method, how many patches get fine maps.

    ``top_k`` = None means every patch ("all" in YAML).
    """

    method: str = "lrp"
    top_k: int | None = 64
    mil_method: str = "lrp"

    def __post_init__(self) -> None:
        if self.method not in FINE_METHODS:
            raise InputError(
                f"heatmap.fine.method must be one of {', '.join(FINE_METHODS)}, got {self.method!r}"
            )
        if self.mil_method not in MIL_METHODS:
            raise InputError(
                f"heatmap.fine.mil_method must be one of {', '.join(MIL_METHODS)}, got {self.mil_method!r}"
            )
        top_k = self.top_k
        # an integer, strictly (2.5 was cut to 2 and [1] was a TypeError), as every other key
        whole = isinstance(top_k, (int, np.integer)) and not isinstance(top_k, bool)
        if top_k is not None and (not whole or top_k < 1):
            raise InputError(f"heatmap.fine.top_k must be a positive integer or 'all', got {top_k!r}")

    @classmethod
    def from_mapping(cls, values: dict | None) -> FineConfig | None:
        """Parse the YAML mapping (``top_k: 64 | all``); None stays None (no fine maps)."""
        if values is None:
            return None
        if not isinstance(values, dict):
            raise InputError(f"heatmap.fine must be a mapping, got {type(values).__name__}")
        unknown = set(values) - {"method", "top_k", "mil_method"}
        if unknown:
            raise InputError(
                f"heatmap.fine: unknown key(s) {', '.join(sorted(map(str, unknown)))}; known: method, top_k, "
                "mil_method"
            )
        top_k = values.get("top_k", 64)
        if isinstance(top_k, str):
            if top_k.lower() != "all":
                raise InputError(f"heatmap.fine.top_k must be a positive integer or 'all', got {top_k!r}")
            top_k = None
        return cls(values.get("method", "lrp"), top_k, values.get("mil_method", "lrp"))

    def as_mapping(self) -> dict:
        """Every key as `from_mapping` reads it back (``top_k: all`` for None): one spelling per
        configuration, for a fingerprint that a default written out or left out does not change."""
        return {"method": self.method, "top_k": "all" if self.top_k is None else int(self.top_k),
                "mil_method": self.mil_method}


@dataclass
class FineMaps:
    """Fine maps of the patches ``indices`` (into the bag): ``maps`` (k, H, W) at encoder input size.

    ``patch_scores`` are the MIL scores of those patches, ``all_scores`` (N,) of every patch (the
    coarse map that goes with the fine maps).
    """

    indices: np.ndarray
    maps: np.ndarray
    patch_scores: np.ndarray
    bias_share: np.ndarray
    target: int
    all_scores: np.ndarray


def mil_directions(
    model: nn.Module, features: torch.Tensor, target: int | None = None, method: str = "lrp"
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(d (N, D), patch scores x_i · d_i (N,), target): the gradient of logit ``target`` per patch.

    ``method="lrp"`` holds the attention weights constant (xMIL-LRP at ε → 0); ``"gradient_x_input"``
    differentiates through them. Works for ABMIL, CLAM_SB and CLAM_MB (their embed / attention /
    classify steps): `attnmap.mil.feature_gradients`, and the patch scores equal
    ``attnmap.mil.explain(model, features, method, target)``.
    """
    if method not in MIL_METHODS:
        raise InputError(f"MIL method for fine maps must be one of {', '.join(MIL_METHODS)}, got {method!r}")
    from attnmap.mil.explain import feature_gradients
    from attnmap.mil.readout import readout_for

    readout_for(model)  # a head the chain does not know: one line naming it, not an AttributeError
    x = model.check_features(torch.as_tensor(features)).detach()
    target = _one_element(target)
    whole = isinstance(target, (int, np.integer)) and not isinstance(target, bool)
    if target is not None and not whole:  # 1.5 was read as class 1
        raise InputError(f"the fine maps' target must be a class index (an integer), got {target!r}")
    if target is None:  # the eval-mode prediction: in train mode dropout would pick a random class
        from attnmap.mil.scores import infer_bag

        target = infer_bag(model, x).prediction
    gradient = feature_gradients(model, x, int(target), detach_attention=method == "lrp")
    return gradient, (gradient * x).sum(dim=1), int(target)


def _one_element(target: object) -> object:
    """A one-element integer tensor or array (a model's own ``prediction``) as its Python int;
    anything else unchanged, so a float (1.5) is still refused rather than cut to a class."""
    if isinstance(target, (torch.Tensor, np.ndarray)) and int(np.prod(target.shape)) == 1:
        integral = not target.is_floating_point() if isinstance(target, torch.Tensor) else (
            np.issubdtype(target.dtype, np.integer)
        )
        if integral and target.dtype not in (torch.bool, np.bool_):
            return int(target.reshape(-1)[0])
    return target


def iter_fine_maps(
    encoder: nn.Module,
    images: torch.Tensor | Callable[[np.ndarray], torch.Tensor],
    directions: torch.Tensor,
    method: str = "lrp",
    spread_bias: bool = True,
    batch_size: int = 32,
    bounds: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """`fine_maps` one batch at a time: (maps, bias shares, scores) of ``batch_size`` patches each.

    ``images`` is the encoder inputs (k, 3, H, W) or a function ``positions → inputs`` (positions
    into ``directions``), so a caller can read patches batch by batch and keep nothing but the batch.
    """
    if method not in FINE_METHODS:
        raise InputError(f"fine method must be one of {', '.join(FINE_METHODS)}, got {method!r}")
    if not callable(images) and len(images) != len(directions):
        raise InputError(f"{len(images)} patches but {len(directions)} directions")
    own = encoder
    encoder = check_fine_encoder(encoder, method)  # a Hugging Face encoder's timm twin, for every method
    weight = next(encoder.parameters())  # inputs may sit anywhere: they go to the encoder's device
    for start in range(0, len(directions), batch_size):
        part = np.arange(start, min(start + batch_size, len(directions)))
        batch = images(part) if callable(images) else images[start : part[-1] + 1]
        batch = batch.to(device=weight.device, dtype=weight.dtype)
        direction = directions[start : part[-1] + 1].to(batch)
        with eval_mode(own, encoder):  # the check's forward too: dropout would make it differ
            result = encoder_relevance(encoder, batch, direction, bounds)
            if start == 0:
                _check_score(own, batch, direction, result.score)
            pixels, bias = result.pixels, result.bias_share
            if method != "lrp":
                pixels = _explained(encoder, batch, direction, method, result.score)
                bias = torch.zeros_like(bias)
            elif spread_bias:
                pixels = pixels + (bias / pixels[0].numel())[:, None, None]
        # the encoder's dtype: float32 halves "top_k: all"
        yield (
            pixels.detach().cpu().numpy(),
            bias.cpu().double().numpy(),
            result.score.cpu().double().numpy(),
        )


def _check_score(
    encoder: nn.Module, images: torch.Tensor, direction: torch.Tensor, score: torch.Tensor
) -> None:
    """The explained score d · f(p) is the one of the features the encoder gives (the read-out the MIL
    model was trained on); a layer the rules mirror wrongly would otherwise give wrong maps silently."""
    with torch.no_grad():
        features = encoder(images)
    products = features * direction if features.shape == direction.shape else None
    tolerance = 1e-6 if images.dtype == torch.float64 else 1e-3
    if products is None or not torch.allclose(
        products.sum(dim=1), score, rtol=0, atol=tolerance * float(products.abs().sum(dim=1).max()) + 1e-6
    ):
        raise UnsupportedModelError(
            f"the relevance rules' forward of {type(encoder).__name__} differs from its own: no fine maps"
        )


def fine_maps(
    encoder: nn.Module,
    images: torch.Tensor,
    directions: torch.Tensor,
    method: str = "lrp",
    spread_bias: bool = True,
    batch_size: int = 32,
    bounds: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(maps (k, H, W), bias shares (k,), scores d·f(p) (k,)) for encoder input ``images`` (k, 3, H, W).

    ``lrp``: conservative LRP of the encoder (exact, see the module docstring). Other methods go
    through ``attnmap.explain(encoder, images, method, target=directions)`` (direction targets);
    their token maps are upsampled and scaled to sum to the patch score (conservation by construction).
    ``bounds`` (`transform_bounds`) use the zB rule at the pixel layer instead of LRP-0 (same totals).
    """
    parts = list(iter_fine_maps(encoder, images, directions, method, spread_bias, batch_size, bounds))
    if not parts:
        return np.zeros((0, *images.shape[-2:])), np.zeros(0), np.zeros(0)
    maps, biases, scores = zip(*parts, strict=True)
    return np.concatenate(maps), np.concatenate(biases), np.concatenate(scores)


def _explained(
    encoder: nn.Module, images: torch.Tensor, directions: torch.Tensor, method: str, score: torch.Tensor
) -> torch.Tensor:
    import torch.nn.functional as F

    from attnmap import explain

    tokens = explain(encoder, images, method, target=directions).detach().to(images.dtype)
    pixels = F.interpolate(tokens[:, None], size=images.shape[-2:], mode="nearest")[:, 0]
    total = pixels.sum(dim=(1, 2))
    # any non-zero total scales (an untrained LayerScale of 1e-5 gives maps near 1e-15, which an
    # absolute threshold zeroed, breaking the sum); a map with no relevance at all is spread evenly
    usable = total.abs() > torch.finfo(total.dtype).tiny
    scale = torch.where(usable, score / torch.where(usable, total, torch.ones_like(total)), 0.0)
    even = torch.where(usable, 0.0, score / pixels[0].numel())
    return pixels * scale[:, None, None] + even[:, None, None]


def transform_bounds(transform: object) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Input bounds of an encoder transform with ``mean``/``std`` (pixels in [0, 1]); None otherwise."""
    mean, std = getattr(transform, "mean", None), getattr(transform, "std", None)
    return None if mean is None or std is None else input_bounds(tuple(mean), tuple(std))


def select_patches(scores: np.ndarray, top_k: int | None) -> np.ndarray:
    """Indices of the ``top_k`` highest patch scores, best first (all patches when None)."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    return order if top_k is None else order[: int(top_k)]


@dataclass
class FineSelection:
    """Which patches of a bag get fine maps (``indices``, best first) and the directions to explain.

    ``directions`` (N, D) and ``scores`` (N,) cover the whole bag; ``target`` is the class explained.
    """

    directions: torch.Tensor
    scores: np.ndarray
    indices: np.ndarray
    target: int


def select_fine_patches(
    mil_model: nn.Module, features: torch.Tensor, config: FineConfig, target: int | None = None
) -> FineSelection:
    """MIL directions and patch scores of the bag, and the ``config.top_k`` patches to explain."""
    directions, patch_scores, target = mil_directions(mil_model, features, target, config.mil_method)
    scores = patch_scores.detach().cpu().double().numpy()
    return FineSelection(directions, scores, select_patches(scores, config.top_k), target)


def iter_selected_fine_maps(
    encoder: nn.Module,
    images: Callable[[np.ndarray], torch.Tensor],
    selection: FineSelection,
    config: FineConfig,
    bounds: tuple[torch.Tensor, torch.Tensor] | None = None,
    batch_size: int = 32,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(maps, bias shares) of the selected patches, batch by batch in ``selection.indices`` order.

    ``images`` reads bag indices → encoder inputs; only one batch of patches is read at a time.
    """
    indices = selection.indices
    directions = selection.directions[torch.as_tensor(indices, device=selection.directions.device)]
    done = 0
    for maps, bias, explained in iter_fine_maps(
        encoder, lambda part: images(indices[part]), directions, config.method, True, batch_size, bounds
    ):
        _check_same_features(explained, selection.scores, indices[done : done + len(explained)])
        done += len(explained)
        yield maps, bias


FEATURE_TOLERANCE = 0.1
"""How far (a share of the bag's largest |patch score|) a patch's explained score d · f(p) may lie from
its MIL score x · d: features computed in another precision (bfloat16 autocast: about 2% of it on
the tiny test ViT, tests/test_fine_maps.py) pass;
pixels not passed through the encoder's transform (raw, unnormalised) or patches in another order
than the feature rows do not (tens of percent and more)."""


def _check_same_features(explained: np.ndarray, scores: np.ndarray, indices: np.ndarray) -> None:
    """`InputError` when the patch images do not give the features the MIL model scored: their maps
    would sum to another number than the patch scores stored with them, silently."""
    tolerance = FEATURE_TOLERANCE * float(np.abs(scores).max(initial=0.0)) + 1e-6
    gaps = np.abs(explained - scores[indices])
    if gaps.size and gaps.max() > tolerance:
        worst = int(np.argmax(gaps))
        raise InputError(
            f"the patch images do not give the features the MIL model scored: patch {int(indices[worst])} "
            f"explains to {explained[worst]:.4g}, its MIL score is {scores[indices[worst]]:.4g}; pass the "
            "encoder's inputs (its transform applied: resized, normalised, float) in the feature rows' order"
        )


def bag_fine_maps(
    encoder: nn.Module,
    images: torch.Tensor | Callable[[np.ndarray], torch.Tensor],
    mil_model: nn.Module,
    features: torch.Tensor,
    config: FineConfig,
    target: int | None = None,
    bounds: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> FineMaps:
    """Fine maps of a bag's top patches: MIL directions → encoder relevance, all in memory.

    ``images`` is either all patches' encoder inputs (N, 3, H, W) or a function ``indices →
    (k, 3, H, W)`` that reads only the selected patches. A slide with ``top_k: all`` should stream
    the maps to disk instead (`iter_selected_fine_maps`, `attnmap.wsi.heatmap.fine_store`).
    """
    from attnmap.mil.base import check_bag_shape

    n_rows = len(check_bag_shape(torch.as_tensor(features)))
    if not callable(images) and len(images) != n_rows:
        # indexed by bag position: a shorter stack failed deep inside, a longer one paired maps with
        # patches they do not belong to
        raise InputError(f"{len(images)} patch images but {n_rows} feature rows: one image per patch")
    selection = select_fine_patches(mil_model, features, config, target)

    def read(indices: np.ndarray) -> torch.Tensor:
        return images(indices) if callable(images) else images[torch.as_tensor(indices)]

    parts = list(iter_selected_fine_maps(encoder, read, selection, config, bounds))
    indices = selection.indices
    if parts:
        maps, bias = (np.concatenate(values) for values in zip(*parts, strict=True))
    else:
        size = read(indices[:1]).shape[-2:] if len(selection.scores) else (0, 0)
        maps, bias = np.zeros((0, *size)), np.zeros(0)
    scores = selection.scores
    return FineMaps(indices, maps, scores[indices], bias, selection.target, scores)
