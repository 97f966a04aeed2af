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
from typing import Any

import torch
from torch import nn

from attnmap.errors import InputError
from attnmap.vit.explain import FlatMapWarning, check_option_types, explain
from attnmap.vit.registry import Target, get_method, methods


class SkippedMethodWarning(UserWarning):
    """A method of ``--method all`` cannot run on this model or target and is left out."""


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
) -> tuple[list[str], dict[str, str]]:
    """The methods of ``names`` that run on ``image`` (one preprocessed image, (1, C, H, W)) with
    ``target`` (that image's), and the refusal message of each one that does not. When none runs,
    the first refusal is raised: "all" then asks for nothing that can be done."""
    kept, refused = [], {}
    for name in names:
        try:
            with warnings.catch_warnings():  # a flat map is said when the image itself is explained
                warnings.simplefilter("ignore", FlatMapWarning)
                explain(model, image, name, target, **per_method[name])
        except InputError as error:
            refused[name] = str(error)
            continue
        kept.append(name)
    if not kept:
        raise InputError(next(iter(refused.values())))
    return kept, refused


def warn_skipped(refused: Mapping[str, str]) -> None:
    """One `SkippedMethodWarning` per method left out of "all", with the method's own reason."""
    for name, reason in refused.items():
        warnings.warn(f"method {name} skipped: {reason}", SkippedMethodWarning, stacklevel=3)
