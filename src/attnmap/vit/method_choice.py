"""Which methods an ``attnmap explain`` run computes: the names asked for, each method's options,
and for ``--method all`` the methods this model and target can run.

Why a module of its own: "all" means every method that can run. A headless model without a
direction has no score for the gradient and LRP methods, and a NaFlexViT or hybrid-stem ViT has no
LRP twin; those refusals come from the methods themselves, so `runnable_methods` asks each method
on one image and leaves out the ones that refuse (their messages say why), so that the others are
still written and a rerun expects only their files.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from attnmap.errors import InputError
from attnmap.vit.explain import FlatMapWarning, check_option_types, explain
from attnmap.vit.registry import Target, get_method, methods


class SkippedMethodWarning(UserWarning):
    """A method of ``--method all`` cannot run on this model or target and is left out."""


@dataclass
class Probe:
    """The image "all" asked each method on: its index among the run's images, its preprocessed
    tensor (1, C, H, W) and view, and the maps of the methods that ran. They are its explanation:
    the run writes them instead of reading and explaining the image a second time."""

    index: int
    images: torch.Tensor
    views: list[np.ndarray]
    maps: dict[str, torch.Tensor]


def resolve_methods(method: str) -> tuple[list[str], bool]:
    """ "all" → every registered method (and a comparison grid); "a,b" → those; "a" → one."""
    if method.strip() == "all":
        return list(methods()), True
    names = [name.strip() for name in method.split(",") if name.strip()]
    if not names:
        raise InputError("no method given")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise InputError(f"method {', '.join(repeated)} is named more than once")
    for name in names:
        get_method(name)  # raises InputError listing the available ones
    return names, False


def split_options(names: Sequence[str], options: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Give each method the options it accepts; an option no chosen method accepts is an error."""
    per_method = {name: {} for name in names}
    for key, value in options.items():
        takers = [name for name in names if key in get_method(name).options()]
        if not takers:
            raise InputError(f"option {key!r} is not accepted by any of: {', '.join(names)}")
        for name in takers:
            per_method[name][key] = value
    for name in names:  # a value of the wrong kind fails here, before any model is loaded
        check_option_types(name, get_method(name).options(), per_method[name])
    return per_method


def runnable_methods(
    model: nn.Module,
    image: torch.Tensor,
    names: Sequence[str],
    target: Target,
    per_method: Mapping[str, Mapping[str, Any]],
) -> tuple[list[str], dict[str, str], dict[str, torch.Tensor]]:
    """The methods of ``names`` that run on ``image`` (one preprocessed image, (1, C, H, W)) with
    ``target`` (that image's), the refusal message of each one that does not, and the maps of those
    that ran (the image's explanation: the caller need not compute them again). When none runs,
    the first refusal is raised: "all" then asks for nothing that can be done."""
    kept, refused, maps = [], {}, {}
    for name in names:
        try:
            with warnings.catch_warnings():  # a flat map is said when the image's maps are written
                warnings.simplefilter("ignore", FlatMapWarning)
                maps[name] = explain(model, image, name, target, **per_method[name]).detach()
        except InputError as error:
            refused[name] = str(error)
            continue
        kept.append(name)
    if not kept:
        raise InputError(next(iter(refused.values())))
    return kept, refused, maps


def warn_skipped(refused: Mapping[str, str]) -> None:
    """One `SkippedMethodWarning` per method left out of "all", with the method's own reason, the
    method named once (the reasons often start with its name already)."""
    for name, reason in refused.items():
        reason = _without_name(reason, name)
        warnings.warn(f"method {name} skipped: {reason}", SkippedMethodWarning, stacklevel=3)


def _without_name(reason: str, name: str) -> str:
    """``reason`` without a leading ``method 'name'``, ``method name`` or ``name`` (and its colon)."""
    for start in (f"method {name!r}", f"method {name}", name):
        if reason.startswith(start) and reason[len(start) : len(start) + 1] in (":", " "):
            return reason[len(start) :].removeprefix(":").strip()
    return reason
