"""A convolutional patch encoder on the CPU as a traced, oneDNN-optimised inference graph.

Why: eager CPU convolutions convert every activation to oneDNN's blocked layout and back, and run
batch norm and ReLU as passes of their own. `torch.jit.optimize_for_inference` folds batch norm into
the convolutions, fuses the activations and keeps the blocked layout from layer to layer, which
makes a ResNet trunk much faster on the CPU (`bench/wsi_run.py` prints the gain) at the cost of
float32 round-off (the features differ from the eager model's in the last bits, as they do between
batch sizes). A transformer has one convolution, its patch embedding, and gains nothing: it runs
eagerly, as does everything on a GPU or under autocast.

A trace records one execution of the model, so the graph is not trusted: a model the tracer warns
about (it turned a tensor into a Python value: a branch on the data or on a size, which the trace
fixes) keeps running eagerly, and the graph, built on two patches, is compared with the eager model
on three (another batch size, so a size baked into the trace shows). A failure to trace, or any
difference beyond round-off, keeps the eager model and says why in the log; a feature is never
computed by a graph that disagrees with the model. The TorchScript functions used here are
deprecated in favour of `torch.compile`, whose CPU compilation of a ResNet trunk takes longer than
encoding a slide; should they go away, the eager model is used.
"""

from __future__ import annotations

import logging
import warnings
import weakref

import torch
from torch import nn

from attnmap.model_state import model_state, weights_digest

logger = logging.getLogger(__name__)

MIN_CONVOLUTIONS = 2
"""Convolutions a model needs before it is optimised (a ViT has one: its patch embedding)."""

TOLERANCE = 1e-4
"""Largest accepted |graph − eager| relative to the eager output's largest magnitude: round-off is
about 1e-7; a graph that took another path through the model is off by order one."""

_GRAPHS: weakref.WeakKeyDictionary[nn.Module, dict[tuple, nn.Module]] = weakref.WeakKeyDictionary()


def _convolutions(model: nn.Module) -> int:
    if isinstance(model, torch.jit.ScriptModule):
        return sum("Conv" in module.original_name for module in model.modules())
    return sum(isinstance(module, nn.modules.conv._ConvNd) for module in model.modules())


def _build(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """The optimised graph, checked against ``model`` on ``example`` (≥ 3 samples), or ``model``."""
    name = type(model).__name__
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")  # recorded, not shown: TorchScript's deprecation notices
            scripted = model
            if not isinstance(model, torch.jit.ScriptModule):
                scripted = torch.jit.trace(model, example[:2])
            graph = torch.jit.optimize_for_inference(scripted.eval())
            expected, got = model(example[:3]), graph(example[:3])
    except Exception as error:  # noqa: BLE001 - any failure keeps the eager model
        logger.info("encoder %s runs eagerly: its graph could not be built (%s)", name, error)
        return model
    # The tracer warns wherever the model turned a tensor into a Python value (a branch on the
    # data, a size): the trace then holds the branch this example took, which later patches may not
    for warning in caught:
        if issubclass(warning.category, torch.jit.TracerWarning):
            reason = warning.message
            logger.info("encoder %s runs eagerly: its trace may not fit other patches (%s)", name, reason)
            return model
    if not isinstance(got, torch.Tensor) or got.shape != expected.shape or got.dtype != expected.dtype:
        logger.info("encoder %s runs eagerly: its graph returns another output than the model", name)
        return model
    scale = float(expected.abs().max()) if expected.numel() else 0.0
    difference = float((got - expected).abs().max()) if expected.numel() else 0.0
    if not difference <= TOLERANCE * max(scale, 1e-12):
        logger.info("encoder %s runs eagerly: its graph differs from the model by %.3g", name, difference)
        return model
    return graph


def cpu_inference_graph(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """``model`` as a checked oneDNN inference graph for inputs like ``example`` (a batch on the CPU),
    or ``model`` itself: for a model with fewer than `MIN_CONVOLUTIONS` convolutions, a batch of
    fewer than 3 samples to check with, or a graph that fails its check. Built once per model state
    and input shape. Call it under `torch.inference_mode` with the model in eval mode."""
    if example.device.type != "cpu" or example.shape[0] < 3 or _convolutions(model) < MIN_CONVOLUTIONS:
        return model
    # the graph holds the weights as constants: a changed weight or submodule must rebuild it
    # (the bytes too: a `p.data.copy_` update keeps every other part of the state)
    key = model_state(model), weights_digest(model), tuple(example.shape[1:]), example.dtype
    built = _GRAPHS.setdefault(model, {})
    if key not in built:
        built.clear()  # a graph of an earlier state of the weights is of no further use
        built[key] = _build(model, example)
    return built[key]
