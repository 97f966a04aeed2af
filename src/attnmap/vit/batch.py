"""The per-image file work behind ``attnmap explain``: images in, overlay PNGs and raw maps out.

A plain function of paths so it can run in process or be shipped to dask workers (`explain_chunk`
loads the model itself from its spec, so only small picklable arguments travel). Every PNG carries
provenance text chunks (attnmap version, model checksum, method, parameters, source image) and a
fingerprint of them (`attnmap.fingerprint`): a rerun skips the images whose outputs are intact
and have the same fingerprint, so an interrupted run resumes.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from attnmap.checkpoint import cached_vit
from attnmap.errors import InputError
from attnmap.fingerprint import Fingerprint
from attnmap.io_utils import remove_stale_temporaries, save_png
from attnmap.provenance import model_checksum, provenance, write_sidecar
from attnmap.render import save_grid
from attnmap.render.grid import panel_pixels
from attnmap.render.legend import add_legend, describe_prediction
from attnmap.render.placement import shrink_with_box
from attnmap.vit.draw_map import draw_map, enlarge_small
from attnmap.vit.explain import FlatMapWarning, explain, warn_flat_maps
from attnmap.vit.explain_outputs import (
    GRID_SUFFIX,
    SKIPPED_KEY,
    claim_stems,
    image_done,
    image_fingerprint,
    output_files,
    recorded_refusals,
    remove_other_settings_outputs,
    remove_outdated_pictures,
    save_npy,
    skipped_record,
)
from attnmap.vit.image_targets import chunk_targets, describe_target, target_identity, target_of_image
from attnmap.vit.method_choice import Probe, resolve_methods, runnable_methods, split_options, warn_skipped
from attnmap.vit.original import class_name, crop_box, named_classes, predict
from attnmap.vit.preprocess import FirstFrameWarning, load_image, preprocess
from attnmap.vit.registry import Target
from attnmap.vit.task_warnings import recorded, say_once


def model_architecture(model: nn.Module) -> str:
    """A digest of the model's layers as printed (types, sizes, activations, norms' epsilons): two
    models with equal weights but another ``act_layer`` or ``qk_norm`` give other maps."""
    text = f"{type(model).__module__}.{type(model).__qualname__}:{model!r}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _original_picture(path: Path) -> np.ndarray:
    """The image file read again to draw on: what reading it warns about was said when it was explained."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FirstFrameWarning)
        return np.asarray(load_image(path))


class ExplainedFiles(list):
    """What `explain_paths` returns: the paths it wrote or kept, a list of Path as ever, and in
    ``kept`` how many of them were kept (made by an earlier run with the same settings, not rewritten)."""

    def __init__(self, paths: Sequence[Path], kept: int) -> None:
        super().__init__(paths)
        self.kept = kept

    def file_counts(self) -> tuple[int, int]:
        """(written, kept): the files on disk each group stands for, a map's record (its sidecar,
        not in the list: the list names the outputs) counted with its map."""

        def files(paths: Sequence[Path]) -> int:
            return sum(2 if path.suffix == ".npy" else 1 for path in paths)

        return files(self[self.kept :]), files(self[: self.kept])


def explain_paths(
    paths: Sequence[str | Path],
    model: nn.Module,
    method: str,
    target: Target,
    out_dir: str | Path,
    *,
    batch_size: int = 8,
    cmap: str | None = None,
    alpha: float = 0.5,
    model_name: str | None = None,
    progress: bool = True,
    names: Sequence[str] | None = None,
    on: str = "crop",
    legend: bool = True,
    **options: Any,
) -> ExplainedFiles:
    """Explain each image in ``paths`` with ``method`` and write the results into ``out_dir``.

    Per image and method: ``{stem}_{method}.npy`` (the raw map: (gh, gw) patches or (H, W) pixels)
    with its provenance in ``{stem}_{method}.npy.json``, and, unless ``method == "all"``,
    ``{stem}_{method}.png`` (overlay on the image as the model sees it, or with ``on="original"`` on
    the original image, the model's crop framed; with ``legend`` a title band and a colour bar around
    it). ``method="all"`` writes
    ``{stem}_all_methods.png``: one grid comparing every method, with colour bars and the predicted
    class and probability. ``cmap`` None: jet, or for signed maps (`is_signed`) a diverging map
    centred on zero. Images are preprocessed for the model and run ``batch_size`` at a time.
    "all" leaves out the methods that refuse this model or target (asked on the first readable image,
    or when every output is there read from the grids' records of the run that made them; a
    `SkippedMethodWarning` each, their earlier outputs removed); none able to run is an error.
    ``names``: the output stem of each image (default: file stems, made unique). Images whose
    outputs are intact and were made with the same model, method, options, target and drawing are
    skipped. Returns the paths written or kept (`ExplainedFiles`: its ``kept`` counts the latter).
    """
    if on not in ("crop", "original"):
        raise InputError(f"on must be 'crop' or 'original', got {on!r}")
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    methods_, grid = resolve_methods(method)
    per_method = split_options(methods_, options)
    paths = [Path(p) for p in paths]
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"output folder {out_dir} is an existing file")
    stems = list(names) if names is not None else claim_stems(out_dir, paths, methods_)
    if len(stems) != len(paths):
        raise InputError(f"got {len(stems)} output names for {len(paths)} images")
    remove_stale_temporaries(out_dir, recursive=False)  # an interrupted run's partial files
    checksum = model_checksum(model)
    architecture = model_architecture(model)
    target = named_classes(model, target)  # records hold the class index a name stands for
    per_image = [target_of_image(target, index, len(paths)) for index in range(len(paths))]
    drawing = {"cmap": cmap, "alpha": alpha, "on": on, "legend": legend}
    prints = [
        [
            image_fingerprint(
                path,
                checksum,
                architecture,
                name,
                target_identity(per_image[index]),
                per_method[name],
                drawing,
            )
            for name in methods_
        ]
        for index, path in enumerate(paths)
    ]
    probe = None  # "all" asks each method on the first readable image: its maps, kept for it
    every_print = [dict(zip(methods_, row, strict=True)) for row in prints]  # the left-out ones too
    refused: dict[str, str] | None = {}
    if grid:  # "all": the methods that can run here; the others' maps of earlier runs go
        refused = recorded_refusals(out_dir, stems, methods_, prints)
        kept_methods = [name for name in methods_ if name not in (refused or {})]
        finished = refused is not None and all(
            image_done(out_dir, stem, kept_methods, grid, [row[name] for name in kept_methods])
            for stem, row in zip(stems, every_print, strict=True)
        )
        if finished:  # a complete rerun: the grids say what was refused, the model is not asked
            warn_skipped(refused)
        else:
            kept_methods, refused, probe = _runnable(model, paths, target, methods_, per_method)
        for index, stem in enumerate(stems):
            skipped = [(n, p) for n, p in zip(methods_, prints[index], strict=True) if n not in kept_methods]
            left_out = ([n for n, _ in skipped], [p for _, p in skipped])
            remove_other_settings_outputs(out_dir, stem, *left_out, grid=False)
        prints = [[p for n, p in zip(methods_, row, strict=True) if n in kept_methods] for row in prints]
        methods_ = kept_methods
    todo = [
        i for i, path in enumerate(paths) if not image_done(out_dir, stems[i], methods_, grid, prints[i])
    ]
    written: list[Path] = [
        out_dir / f"{stems[i]}_{name}.{kind}"
        for i in sorted(set(range(len(paths))) - set(todo))
        for name, kind in output_files(methods_, grid)
    ]
    kept = len(written)
    bar = tqdm(
        total=len(paths), initial=len(paths) - len(todo), desc="explain", unit="image", disable=not progress
    )
    from attnmap.vit.lrp.weight_cache import weight_cache

    unreadable: list[str] = []
    with weight_cache():  # |W| of LRP reused across batches: the model does not change meanwhile
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            fresh = [index for index in batch if probe is None or index != probe.index]
            indices, images, views = _readable(model, paths, fresh, unreadable) if fresh else ([], None, [])
            for index in sorted(set(batch) - set(indices) - {getattr(probe, "index", None)}):
                remove_other_settings_outputs(out_dir, stems[index], methods_, prints[index])
            maps = {}
            targets = chunk_targets(target, indices, len(paths)) if indices else None
            with warnings.catch_warnings():  # said below, naming the file: "image 1" is a place in a batch
                warnings.simplefilter("ignore", FlatMapWarning)
                for name in methods_ if indices else ():
                    maps[name] = explain(model, images, name, targets, **per_method[name])
            if probe is not None and probe.index in batch:  # read and explained already: not twice
                indices, images, views, maps = _with_probe(probe, indices, images, views, maps)
            if not indices:
                continue
            chunk = [paths[i] for i in indices]
            for name in methods_:
                maps[name] = maps[name].detach()
                warn_flat_maps(maps[name], name, [str(path) for path in chunk])
            prediction = predict(model, images)  # None for a headless model
            for offset, (path, view) in enumerate(zip(chunk, views, strict=True)):
                stem = stems[indices[offset]]
                image_prints = dict(zip(methods_, prints[indices[offset]], strict=True))
                image_target = describe_target(per_image[indices[offset]])
                overlays, scales = [], []
                original, box = None, None
                if on == "original":
                    original = _original_picture(path)
                    box = crop_box(model, (original.shape[1], original.shape[0]))  # once for all its maps
                    original, box = enlarge_small(original, box, view.shape)
                    if grid:  # a panel is a few hundred pixels wide: a photo's full size only costs time
                        original, box = shrink_with_box(original, box, 2 * panel_pixels())
                if prediction is not None and (image_target is None or isinstance(image_target, int)):
                    best = int(prediction[0][offset])  # a class: say the prediction
                    guess = describe_prediction(class_name(model, best), float(prediction[1][offset]))
                    shown = best if image_target is None else image_target
                    title = f"{path.name}: {guess}; maps for {class_name(model, shown)}"
                elif image_target is None:  # a headless model's attention or rollout: no class involved
                    title = f"{path.name}: class-independent maps"
                else:  # a direction or a callable on a (possibly headless) model's output
                    title = f"{path.name}: maps for the target {image_target}"
                for name in methods_:
                    heat = maps[name][offset].float().cpu().numpy()
                    meta = provenance(
                        method=name,
                        parameters={"target": image_target, **per_method[name]},
                        model_name=model_name or type(model).__name__,
                        model_sha256=checksum,
                        image=os.path.abspath(path),  # a name a rerun from another folder can check
                        map_shape=tuple(heat.shape),
                        **image_prints[name].record(),
                    )
                    # pictures of the old map this run does not redraw go if they would show another map
                    remove_outdated_pictures(out_dir, stem, name, image_prints[name], grid)
                    # the old map goes first: a record of this run never describes an earlier run's map
                    (out_dir / f"{stem}_{name}.npy").unlink(missing_ok=True)
                    write_sidecar(out_dir / f"{stem}_{name}.npy", meta)  # first: a map never lacks its record
                    written.append(save_npy(out_dir / f"{stem}_{name}.npy", heat))
                    picture, scale = draw_map(model, view, original, heat, name, cmap, alpha, box)
                    scales.append(scale)
                    if grid:
                        overlays.append(picture)
                    else:
                        if legend:
                            picture = add_legend(picture, scale, f"{name} · {title}", label=name)
                        written.append(save_png(out_dir / f"{stem}_{name}.png", picture, meta))
                if grid:
                    joint = Fingerprint({"methods": [image_prints[name].value for name in methods_]})
                    meta = provenance(
                        method="all",
                        parameters={"target": image_target, "methods": methods_, "options": per_method},
                        model_name=model_name or type(model).__name__,
                        model_sha256=checksum,
                        image=os.path.abspath(path),  # a name a rerun from another folder can check
                        **{SKIPPED_KEY: skipped_record(refused or {}, every_print[indices[offset]])},
                        **joint.record(),
                    )
                    written.append(
                        save_grid(
                            [view if original is None else original, *overlays],
                            ["image", *methods_],
                            out_dir / f"{stem}_{GRID_SUFFIX}.png",
                            metadata=meta,
                            scales=[None, *scales],
                            suptitle=title,
                        )
                    )
                bar.update(1)
    bar.close()
    if unreadable:  # said once all the others are written: one bad file does not stop a folder
        first = unreadable[0]
        if len(unreadable) == len(todo):
            raise InputError(first)
        more = f" (and {len(unreadable) - 1} more)" if len(unreadable) > 1 else ""
        raise InputError(
            f"{len(unreadable)} of {len(paths)} images could not be explained, the others were written: "
            f"{first}{more}"
        )
    return ExplainedFiles(written, kept)


def _runnable(
    model: nn.Module, paths: Sequence[Path], target: Target, names: list[str], per_method: dict[str, Any]
) -> tuple[list[str], dict[str, str], Probe | None]:
    """The methods of "all" that run, asked on the first readable image (all of them when none is
    readable: that error is said per image), the refusals of the others, and that image as read
    and explained; each method left out is warned about once, with its reason."""
    for index in range(len(paths)):
        indices, images, views = _readable(model, paths, [index], [])
        if indices:
            kept, refused, maps = runnable_methods(
                model, images, names, chunk_targets(target, indices, len(paths)), per_method
            )
            warn_skipped(refused)
            return kept, refused, Probe(index, images, views, maps)
    return names, {}, None


def _with_probe(
    probe: Probe, indices: list[int], images: torch.Tensor | None, views: list[np.ndarray],
    maps: dict[str, torch.Tensor],
) -> tuple[list[int], torch.Tensor, list[np.ndarray], dict[str, torch.Tensor]]:
    """A batch's other images with the probed one in front: every image before it is unreadable (it
    is the first readable one), so it leads its batch."""
    images = probe.images if images is None else torch.cat([probe.images, images])
    maps = {name: torch.cat([probe.maps[name], *([maps[name]] if indices else [])]) for name in probe.maps}
    return [probe.index, *indices], images, [*probe.views, *views], maps


def _readable(
    model: nn.Module, paths: Sequence[Path], indices: list[int], unreadable: list[str]
) -> tuple[list[int], torch.Tensor | None, list[np.ndarray]]:
    """The images of ``indices`` preprocessed; those that cannot be read (not an image, cut short,
    smaller than a patch) are left out, their messages appended to ``unreadable``."""
    try:
        images, views = preprocess(model, [paths[i] for i in indices])
        return indices, images, views
    except InputError:
        pass
    kept, tensors, views = [], [], []
    for index in indices:
        try:
            image, view = preprocess(model, [paths[index]])
        except InputError as error:
            unreadable.append(str(error))
            continue
        kept.append(index)
        tensors.append(image)
        views.extend(view)
    return kept, (torch.cat(tensors) if tensors else None), views


def explain_chunk(
    paths: Sequence[str],
    *,
    model_spec: str,
    checkpoint: str | None,
    model_kwargs: tuple[tuple[str, Any], ...] = (),
    method: str,
    target: Target,
    out_dir: str,
    names: Sequence[str] | None = None,
    n_images: int | None = None,
    **settings: Any,
) -> dict[str, Any]:
    """Worker entry point for `attnmap.parallel.run_tasks`: load the model (cached), explain ``paths``.
    The warnings raised are returned (``warnings``, see `attnmap.vit.task_warnings`), not printed.

    ``paths``: file paths, or (path, output name) pairs so that names stay unique across chunks, or
    (path, output name, index) triples: then ``target`` holds one entry per image of all
    ``n_images`` (a direction row or class each) and this chunk explains its images' entries.
    """
    torch.manual_seed(0)
    try:
        with recorded() as said:  # each task would say them again: the command says each once
            model = cached_vit(model_spec, checkpoint, model_kwargs)
            if paths and not isinstance(paths[0], (str, Path)):
                items = list(paths)
                paths, names = [str(item[0]) for item in items], [str(item[1]) for item in items]
                if len(items[0]) > 2:
                    if n_images is None:
                        raise InputError("explain_chunk: image indices need n_images, the number of images")
                    target = named_classes(model, target)  # a class name: its index, before slicing
                    target = chunk_targets(target, [int(item[2]) for item in items], n_images)
            outputs = explain_paths(
                paths, model, method, target, out_dir, model_name=model_spec, progress=False, names=names,
                **settings,
            )
    except Exception:
        say_once(said)  # a failed task returns no result to carry them: said here, as before
        raise
    return {"outputs": [str(p) for p in outputs], "warnings": said}
