"""Which target each image of an `attnmap explain` run gets, and how its records name it.

Why a module of its own: a run's target may be one class, one class per image, a direction or
one direction row per image (`attnmap.vit.targets.slice_target`), and the images of one batch are
not contiguous when finished ones are skipped or the work is split into tasks; what an image's
fingerprint and provenance record of its target is decided here too, once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import replace

import torch

from attnmap.vit.readout import ReadoutDirection
from attnmap.vit.registry import Target
from attnmap.vit.targets import slice_target


def target_of_image(target: Target, index: int, total: int) -> Target:
    """The target of image ``index`` of ``total`` (see `attnmap.vit.targets.slice_target`)."""
    part = slice_target(target, index, index + 1, total)
    return part[0] if isinstance(part, list) else part


def chunk_targets(target: Target, indices: Sequence[int], total: int) -> Target:
    """The targets of images ``indices`` (not contiguous when finished images are skipped)."""
    parts = [slice_target(target, i, i + 1, total) for i in indices]
    if isinstance(parts[0], list):
        return [part[0] for part in parts]
    if isinstance(parts[0], torch.Tensor) and parts[0] is not target:  # one direction per image
        return torch.cat(parts)
    if isinstance(parts[0], ReadoutDirection) and parts[0] is not target:
        return replace(parts[0], direction=torch.cat([part.direction for part in parts]))
    return parts[0]


def target_identity(target: Target) -> object:
    """What an image's fingerprint records of its target: a direction by the digest of its values."""
    if isinstance(target, torch.Tensor):
        values = target.detach().cpu().double().contiguous().numpy().tobytes()
        return {"direction": hashlib.sha256(values).hexdigest(), "shape": list(target.shape)}
    if isinstance(target, ReadoutDirection):
        return target.identity()
    return describe_target(target)


def describe_target(target: Target) -> object:
    """What the provenance records: a class index as is, a direction or callable by its kind."""
    if isinstance(target, torch.Tensor):
        return f"direction {tuple(target.shape)}"
    if isinstance(target, ReadoutDirection):
        return target.__name__
    if callable(target):
        return f"callable {getattr(target, '__name__', type(target).__name__)}"
    return target
