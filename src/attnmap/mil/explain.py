"""Per-patch relevance of an attention-MIL bag decision: `explain` and `feature_gradients`.

    from attnmap.mil import explain, feature_gradients
    scores = explain(model, features, method="lrp", target=None)        # (N,) numpy
    vectors = explain(model, features, method="lrp", per_feature=True)  # (N, D) numpy
    direction = feature_gradients(model, features, target=1)            # (N, D) torch: ∂y_c/∂x_i

Methods (all for the logit y_c of ``target``; None = the predicted class; CLAM_MB uses class c's
attention branch and classifier):

- ``attention``: the target branch's raw (pre-softmax) attention, as `attention_scores` gives it.
  Where the model looked, not what it concluded.
- ``gradient_x_input``: Σ_d x_id ∂y_c/∂x_id with the full model (attention not detached).
- ``integrated_gradients``: zero-bag baseline, ``steps`` (32) midpoints on the straight path; the
  patch scores sum to about y_c(x) − y_c(0).
- ``lrp``: xMIL-LRP, attention weights as constants, LRP-ε/γ through the Linear layers, identity
  through ReLU (options ``eps=1e-5``, ``gamma=0.0``); signed, conserves y_c minus the biases' share.
- ``occlusion``: exact leave-one-out, y_c(bag) − y_c(bag without patch i), for every i in O(N·D).

``per_feature=True`` returns (N, D) relevance for gradient_x_input, integrated_gradients and lrp
(their per-patch scores are its row sums). `feature_gradients` is the direction ∂y_c/∂x_i per patch
that a patch encoder's explanation can start from (x_i ⊙ it is gradient × input); with
``detach_attention=True`` it is the direction whose gradient × input LRP-0 equals.

All methods run in chunks of ``chunk_size`` patches, on the model's device (features may stay on
the CPU), in the model's dtype; see docs/mil-relevance.md for the formulas and their costs.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from attnmap.errors import InputError
from attnmap.mil.base import AttentionMILBase, check_bag_shape
from attnmap.mil.gradients import (
    gradient_passes,
    gradient_x_input_one_pass,
    gradient_x_input_scores,
    integrated_gradients,
)
from attnmap.mil.lrp import check_lrp_options, lrp_relevance
from attnmap.mil.readout import BagPass, bag_pass, check_mirrored, readout_for, resolve_target
from attnmap.mil.scores import DEFAULT_CHUNK, to_numpy
from attnmap.model_state import eval_mode

METHODS: tuple[str, ...] = ("attention", "gradient_x_input", "integrated_gradients", "lrp", "occlusion")
PER_FEATURE_METHODS: tuple[str, ...] = ("gradient_x_input", "integrated_gradients", "lrp")
OPTIONS: Mapping[str, Mapping[str, object]] = {
    "attention": {},
    "gradient_x_input": {},
    "integrated_gradients": {"steps": 32},
    "lrp": {"eps": 1e-5, "gamma": 0.0},
    "occlusion": {},
}


def explain(
    model: AttentionMILBase,
    features: torch.Tensor | np.ndarray,
    method: str = "attention",
    target: int | None = None,
    *,
    per_feature: bool = False,
    chunk_size: int = DEFAULT_CHUNK,
    progress: bool = False,
    **options: object,
) -> np.ndarray:
    """Relevance of each patch (N,) — or of each feature (N, D) — for one class's bag logit.

    ``progress``: a bar over integrated gradients' steps when they take several passes."""
    if method not in METHODS:
        raise InputError(f"unknown MIL relevance method {method!r}; choose one of {list(METHODS)}")
    if per_feature and method not in PER_FEATURE_METHODS:
        raise InputError(
            f"method {method!r} gives one score per patch; per_feature=True needs one of "
            f"{list(PER_FEATURE_METHODS)}"
        )
    unknown = sorted(set(options) - set(OPTIONS[method]))
    if unknown:
        allowed = ", ".join(OPTIONS[method]) or "none"
        raise InputError(f"method {method!r} has no option(s) {', '.join(unknown)} (options: {allowed})")
    settings = {**OPTIONS[method], **options}
    if method == "lrp":
        check_lrp_options(settings["eps"], settings["gamma"])
    steps = settings.get("steps", 1)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise InputError(f"integrated_gradients needs an integer steps >= 1, got {steps!r}")
    model, features = _check_inputs(model, features, chunk_size)
    keep = method == "lrp" or (method == "gradient_x_input" and per_feature)
    with _eval_mode(model):
        readout = readout_for(model)
        check_mirrored(model, readout, features)
        if method == "gradient_x_input" and not per_feature:
            bag, local, directional = gradient_x_input_one_pass(model, features, readout, chunk_size)
            target = resolve_target(model, target, bag.prediction)
            return to_numpy(gradient_x_input_scores(bag, local, directional, readout, target))
        if method == "integrated_gradients":  # a forward only when the predicted class is needed
            if target is None:
                target = bag_pass(model, features, readout, chunk_size).prediction
            target = resolve_target(model, target, 0)
            result = integrated_gradients(model, features, readout, target, chunk_size, per_feature, steps,
                                          progress=progress)
            return to_numpy(result)
        bag = bag_pass(model, features, readout, chunk_size, keep_embeddings=keep)
        target = resolve_target(model, target, bag.prediction)
        if method == "attention":
            result = bag.raw[readout.branch[target]]
        elif method == "occlusion":
            result = _occlusion(bag, readout.branch[target], target)
        elif method == "gradient_x_input":
            result = gradient_passes(model, features, readout, bag, target, chunk_size, per_feature)
        else:
            result = lrp_relevance(model, features, readout, bag, target, chunk_size, per_feature,
                                   eps=settings["eps"], gamma=settings["gamma"])
    return to_numpy(result)


def feature_gradients(
    model: AttentionMILBase,
    features: torch.Tensor | np.ndarray,
    target: int | None = None,
    *,
    detach_attention: bool = False,
    chunk_size: int = DEFAULT_CHUNK,
) -> torch.Tensor:
    """∂y_c/∂x_i for every patch, (N, D) in the model's dtype on the features' device.

    This is the direction a patch encoder f is explained along: with x_i = f(p_i), LRP of f started
    from f(p_i) ⊙ ∂y_c/∂x_i hands the pixels of patch i the relevance the bag decision gave it.
    """
    model, features = _check_inputs(model, features, chunk_size)
    with _eval_mode(model):
        readout = readout_for(model)
        check_mirrored(model, readout, features)
        bag = bag_pass(model, features, readout, chunk_size, keep_embeddings=True)
        target = resolve_target(model, target, bag.prediction)
        return gradient_passes(model, features, readout, bag, target, chunk_size, per_feature=True,
                               detach_attention=detach_attention, times_input=False)


def _occlusion(bag: BagPass, branch: int, target: int) -> torch.Tensor:
    """y_c(all) − y_c(all but i) = e_i (v_i − ȳ) / (Z − e_i), in float64.

    With e_j = exp(s_j − max s), Z = Σ e_j and ȳ the bag's softmax-weighted mean of v: removing
    patch i changes the pooled value from T/Z to (T − e_i v_i)/(Z − e_i), whose difference is the
    formula above. Z − e_i cancels only for the patch holding the maximum (every other e_i ≤ Z/2),
    so that one patch's leave-one-out value is summed directly over the other patches.
    """
    logits = bag.raw[branch].double()
    values = bag.values[:, target].double()
    n_patches = logits.shape[0]
    if n_patches < 2:
        raise InputError("occlusion needs at least 2 patches: a bag without its only patch is empty")
    top = int(logits.argmax())
    exp = torch.exp(logits - logits[top])
    total = exp.sum()
    pooled_value = (exp @ values) / total
    scores = exp * (values - pooled_value) / (total - exp)
    # the top patch: v_top − ȳ cancels too when it holds nearly all the weight, so its score is
    # the difference of the two pooled values, the second summed over the other patches directly
    others = torch.cat([exp[:top], exp[top + 1 :]])
    other_values = torch.cat([values[:top], values[top + 1 :]])
    scores[top] = pooled_value - (others @ other_values) / others.sum()
    return scores.to(bag.values.dtype)


def _check_inputs(
    model: AttentionMILBase, features: torch.Tensor | np.ndarray, chunk_size: int
) -> tuple[AttentionMILBase, torch.Tensor]:
    readout_for(model)  # rejects models the methods do not know
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise InputError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    if isinstance(features, np.ndarray):
        features = torch.from_numpy(features)
    features = check_bag_shape(features)
    if features.shape[1] != model.embed_dim:
        raise InputError(
            f"features have {features.shape[1]} columns but the model expects {model.embed_dim}"
        )
    return model, features


class _eval_mode:  # noqa: N801 - used as a context manager, reads like one
    """Dropout off while explaining; every module's training flag is restored afterwards (one
    ``model.train(flag)`` set a caller's frozen submodules back to train mode).

    Inference mode is lifted too: inside a caller's ``torch.inference_mode()`` the attention
    gradients (``enable_grad`` cannot override it) failed with a bare autograd RuntimeError.
    """

    def __init__(self, model: torch.nn.Module):
        self.modes = eval_mode(model)
        self.grad_allowed = torch.inference_mode(False)

    def __enter__(self) -> None:
        self.grad_allowed.__enter__()
        self.modes.__enter__()

    def __exit__(self, *exc: object) -> None:
        self.modes.__exit__(*exc)
        self.grad_allowed.__exit__(*exc)
