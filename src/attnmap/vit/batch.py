"""The per-image file work behind ``attnmap explain``: images in, overlay PNGs and raw maps out.

A plain function of paths so it can run in process or be shipped to dask workers (`explain_chunk`
loads the model itself from its spec, so only small picklable arguments travel). Every PNG carries
provenance text chunks (attnmap version, model checksum, method, parameters, source image).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from attnmap.errors import InputError
from attnmap.io_utils import atomic_path, save_png
from attnmap.provenance import model_checksum, provenance
from attnmap.render import overlay, save_grid
from attnmap.vit.explain import explain
from attnmap.vit.preprocess import IMAGE_SUFFIXES, preprocess
from attnmap.vit.registry import Target, get_method, methods
from attnmap.vit.targets import slice_target


def expand_image_paths(inputs: Sequence[str | Path]) -> list[Path]:
    """Files as given, directories expanded to the PNG/JPEG/TIFF files inside (sorted, not recursive)."""
    paths: list[Path] = []
    for entry in map(Path, inputs):
        if entry.is_dir():
            found = sorted(p for p in entry.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise InputError(f"no PNG/JPEG/TIFF images in directory {entry}")
            paths.extend(found)
        elif entry.exists():
            paths.append(entry)
        else:
            raise InputError(f"image file not found: {entry}")
    if not paths:
        raise InputError("no images given")
    return paths


def resolve_methods(method: str) -> tuple[list[str], bool]:
    """ "all" → every registered method (and a comparison grid); "a,b" → those; "a" → one."""
    if method.strip() == "all":
        return list(methods()), True
    names = [name.strip() for name in method.split(",") if name.strip()]
    if not names:
        raise InputError("no method given")
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
    return per_method


def _output_stems(paths: Sequence[Path]) -> list[str]:
    """File stems, made unique (name_2, name_3, ...) when two inputs share one."""
    seen: dict[str, int] = {}
    stems = []
    for path in paths:
        count = seen.get(path.stem, 0) + 1
        seen[path.stem] = count
        stems.append(path.stem if count == 1 else f"{path.stem}_{count}")
    return stems


def _targets_for(target: Target, start: int, stop: int, total: int) -> Target:
    """The targets of images start..stop (see `attnmap.vit.targets.slice_target`)."""
    return slice_target(target, start, stop, total)


def _describe_target(target: Target) -> object:
    """What the provenance records: a class index as is, a direction or callable by its kind."""
    if isinstance(target, torch.Tensor):
        return f"direction {tuple(target.shape)}"
    if callable(target):
        return f"callable {getattr(target, '__name__', type(target).__name__)}"
    return target


def _save_npy(path: Path, array: np.ndarray) -> Path:
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        np.save(handle, array)
    return path


def explain_paths(
    paths: Sequence[str | Path],
    model: nn.Module,
    method: str,
    target: Target,
    out_dir: str | Path,
    *,
    batch_size: int = 8,
    cmap: str = "jet",
    alpha: float = 0.5,
    model_name: str | None = None,
    progress: bool = True,
    **options: Any,
) -> list[Path]:
    """Explain each image in ``paths`` with ``method`` and write the results into ``out_dir``.

    Per image and method: ``{stem}_{method}.npy`` (the raw map: (gh, gw) patches or (H, W) pixels)
    and, unless ``method == "all"``, ``{stem}_{method}.png`` (overlay on the image as the model sees
    it). ``method="all"`` writes ``{stem}_all_methods.png``: one grid comparing every method.
    Images are preprocessed for the model and run ``batch_size`` at a time. Returns written paths.
    """
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    names, grid = resolve_methods(method)
    per_method = split_options(names, options)
    paths = [Path(p) for p in paths]
    out_dir = Path(out_dir)
    stems = _output_stems(paths)
    checksum = model_checksum(model)
    written: list[Path] = []
    bar = tqdm(total=len(paths), desc="explain", unit="image", disable=not progress)
    for start in range(0, len(paths), batch_size):
        chunk = paths[start : start + batch_size]
        images, views = preprocess(model, chunk)
        targets = _targets_for(target, start, start + len(chunk), len(paths))
        maps = {name: explain(model, images, name, targets, **per_method[name]).detach() for name in names}
        for offset, (path, view) in enumerate(zip(chunk, views, strict=True)):
            stem = stems[start + offset]
            image_target = _describe_target(targets[offset] if isinstance(targets, list) else targets)
            overlays = []
            for name in names:
                heat = maps[name][offset].float().cpu().numpy()
                written.append(_save_npy(out_dir / f"{stem}_{name}.npy", heat))
                picture = overlay(view, heat, cmap=cmap, alpha=alpha)
                meta = provenance(
                    method=name,
                    parameters={"target": image_target, **per_method[name]},
                    model_name=model_name or type(model).__name__,
                    model_sha256=checksum,
                    image=str(path),
                    map_shape=tuple(heat.shape),
                )
                if grid:
                    overlays.append(picture)
                else:
                    written.append(save_png(out_dir / f"{stem}_{name}.png", picture, meta))
            if grid:
                meta = provenance(
                    method="all",
                    parameters={"target": image_target, "methods": names, "options": per_method},
                    model_name=model_name or type(model).__name__,
                    model_sha256=checksum,
                    image=str(path),
                )
                written.append(
                    save_grid(
                        [view, *overlays],
                        ["image", *names],
                        out_dir / f"{stem}_all_methods.png",
                        metadata=meta,
                    )
                )
            bar.update(1)
    bar.close()
    return written


@functools.lru_cache(maxsize=2)
def _cached_model(spec: str, checkpoint: str | None, model_kwargs: tuple[tuple[str, Any], ...]) -> nn.Module:
    from attnmap.vit.models import load_model

    return load_model(spec, checkpoint, **dict(model_kwargs))


def explain_chunk(
    paths: Sequence[str],
    *,
    model_spec: str,
    checkpoint: str | None,
    model_kwargs: tuple[tuple[str, Any], ...] = (),
    method: str,
    target: Target,
    out_dir: str,
    **settings: Any,
) -> dict[str, Any]:
    """Worker entry point for `attnmap.parallel.run_tasks`: load the model (cached), explain ``paths``."""
    torch.manual_seed(0)
    model = _cached_model(model_spec, checkpoint, model_kwargs)
    outputs = explain_paths(
        paths, model, method, target, out_dir, model_name=model_spec, progress=False, **settings
    )
    return {"outputs": [str(p) for p in outputs]}
