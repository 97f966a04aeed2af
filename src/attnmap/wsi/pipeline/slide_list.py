"""The slide list of `attnmap wsi run`: ``slides.csv`` read into `SlideEntry` rows, checked before any work.

Why its own module: a slide list is where a new user's first run goes wrong (a column name with a
space, a legacy encoding, ids that collide, a relative path read from the wrong folder), and each
of those must be one line naming the file before any slide is touched. Paths in the CSV are
relative to ``slides.data_dir``, else to the CSV's own folder.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attnmap.errors import InputError

if TYPE_CHECKING:
    from attnmap.wsi.pipeline.config import PipelineConfig


@dataclass(frozen=True)
class SlideEntry:
    """One row of the slide list: where the slide is, its id (output names), its label if known."""

    path: str
    slide_id: str
    label: str = ""


def read_slide_list(config: PipelineConfig, check_slides: bool = True) -> list[SlideEntry]:
    """The slides named in ``slides.csv``. A slide file that is not there stays in the list (its
    task fails alone, recorded in the run report, as a slide that does not open); when none of
    them is there, the configuration is wrong: `FileNotFoundError` naming how many and one.

    ``check_slides``: also open every slide and ROI annotation to check the configuration against
    them (levels, heatmap geometry, annotations). False only names the slides, e.g. those of a run
    that has just checked them, without opening each one again.
    """
    # NumPy: `wsi run --help` imports this module, needs none
    from attnmap.io_utils import csv_dict_reader
    from attnmap.wsi.slide_files import dicom_instance, slide_name

    csv_path = Path(config.slides.csv)
    base = Path(config.slides.data_dir) if config.slides.data_dir else csv_path.parent
    reader = csv_dict_reader(csv_path, COLUMNS)
    rows = list(reader)
    if not rows:
        raise InputError(f"{csv_path} lists no slides")
    columns = {name for name in rows[0] if name is not None}
    if not columns & {"slide_path", "slide_id"}:
        raise InputError(
            f"{csv_path} needs a 'slide_path' or 'slide_id' column, has {', '.join(sorted(columns))}"
        )
    entries: list[SlideEntry] = []
    missing: list[str] = []
    for row in rows:
        name = (row.get("slide_path") or row.get("slide_id") or "").strip()
        if not name:
            raise InputError(f"{csv_path} has a row without a slide: {row}")
        path = _slide_file(Path(name).expanduser(), base, config.slides.extension)
        slide_id = (row.get("slide_id") or "").strip() or slide_name(path)
        if path.is_dir():  # a DICOM WSI: a folder of instances, read through its level-0 file
            instance = dicom_instance(path)
            if instance is None:
                raise InputError(f"{csv_path}: {path} is a folder, not a slide file")
            path = instance
        if "/" in slide_id or "\\" in slide_id or slide_id in (".", ".."):
            raise InputError(
                f"{csv_path}: slide id {slide_id!r} names output files, so it cannot hold '/' or '\\' "
                "(give the folder in slide_path or slides.data_dir)"
            )
        if not path.is_file():
            missing.append(str(path))
        entries.append(SlideEntry(str(path), slide_id, (row.get("label") or "").strip()))
    data_dir = Path(config.slides.data_dir) if config.slides.data_dir else None
    if missing and data_dir is not None and not data_dir.is_dir():  # not every slide missing: the key
        state = "is a file, not a folder" if data_dir.exists() else "does not exist"
        raise InputError(f"slides.data_dir {data_dir} {state} (the folder the slide paths and ids of "
                         "slides.csv are relative to)")
    if missing and len(missing) == len(entries):
        extension = config.slides.extension
        hint = (
            f" (slides.extension {extension!r} is appended as it is: '.{extension}'?)"
            if extension and not extension.startswith(".") else ""
        )
        raise FileNotFoundError(2, f"{len(missing)} slide(s) in {csv_path} not found{hint}, e.g.", missing[0])
    counts = Counter(entry.slide_id for entry in entries)
    duplicates = sorted(slide_id for slide_id, count in counts.items() if count > 1)
    if duplicates:
        origin = "" if "slide_id" in columns else " (ids are the file names without suffix)"
        raise InputError(
            f"{csv_path} lists slide id(s) more than once{origin}: {', '.join(duplicates)}; "
            "give each slide its own slide_id"
        )
    if check_slides:  # of the slides there: a missing one fails in its own task
        gone = set(missing)
        present = [entry for entry in entries if entry.path not in gone]
        check_slide_annotations(config, present)
        check_slide_levels(config, present)
    return entries


COLUMNS = ("slide_path", "slide_id", "label")
"""The columns of a slide list that are read (any case; others are ignored)."""


def check_slide_annotations(config: PipelineConfig, entries: list[SlideEntry]) -> None:
    """`InputError` naming the slides without ROI annotations, or the first file that does not
    read, when ``patching.roi_annotations`` is set.

    Before any work: each such slide would fail only after its tissue segmentation, one by one.
    """
    folder = config.patching.roi_annotations
    if folder is None:
        return
    from attnmap.wsi.annotations import annotation_file, load_annotations

    try:
        files = {entry.slide_id: annotation_file(folder, entry.slide_id) for entry in entries}
    except InputError as error:  # two files for one slide, or a folder named like one
        raise InputError(f"patching.roi_annotations: {error}") from error
    lacking = [slide_id for slide_id, path in files.items() if path is None]
    if lacking:
        shown = ", ".join(lacking[:5]) + (f" and {len(lacking) - 5} more" if len(lacking) > 5 else "")
        raise InputError(
            f"patching.roi_annotations: {len(lacking)} slide(s) have no <slide id>.geojson, .json or .xml "
            f"in {folder}: {shown}"
        )
    for path in files.values():
        try:
            load_annotations(path)
        except InputError as error:
            raise InputError(f"patching.roi_annotations: {error}") from error


def _slide_file(name: Path, base: Path, extension: str) -> Path:
    """The slide file a CSV row names: ``extension`` appended unless the name already ends with it.

    Not "unless it has a suffix": slide ids hold dots (TCGA's ``...-DX1.6B8C7E5C-...``), and CLAM
    appends its ``slide_ext`` to them all the same. A row naming an existing file with another
    suffix (``a.tif`` beside ``extension: .svs``) is taken as it is.
    """
    path = name if name.is_absolute() else base / name
    if not extension or path.name.lower().endswith(extension.lower()):
        return path
    extended = path.with_name(path.name + extension)
    return path if path.suffix and path.is_file() and not extended.is_file() else extended


def check_slide_levels(config: PipelineConfig, entries: list[SlideEntry]) -> None:
    """`InputError` naming the key when no slide of the list can be run with the levels or heatmap
    geometry the configuration asks for (`check_slide`).

    Run before any work, so a wrong ``heatmap.vis_level`` does not surface only after the features
    were computed. A slide that alone fails a check (one scanned without the pyramid level the
    others have) is left to its own task, which fails it with the same line at its start: one
    slide must not stop a cohort. A slide that does not open is left to its own task too.
    """
    from attnmap.wsi.slide import open_slide

    mpps: dict[str, float | None] = {}
    problems: list[str] = []
    for entry in entries:
        try:
            slide = open_slide(entry.path)
        except Exception:  # noqa: BLE001 - reported by the slide's own task
            continue
        with slide:
            mpps[entry.slide_id] = slide.mpp
            try:
                check_slide(config, entry, slide)
            except InputError as error:
                problems.append(str(error))
    if problems and len(problems) == len(mpps):  # the configuration, not a slide
        others = f"; the other {len(problems) - 1} slide(s) fail too" if len(problems) > 1 else ""
        raise InputError(problems[0] + others)
    warn_mixed_resolutions(mpps, config.patching.patch_size, config.patching.level)


def check_slide(config: PipelineConfig, entry: SlideEntry, slide: Any) -> None:
    """`InputError` (one line naming the key and the slide) when ``slide`` lacks a level the
    configuration asks for, its heatmap cannot be drawn (`_check_heatmap_geometry`) or its
    segmentation level is too large to read whole."""
    from attnmap.wsi.tissue import check_segmentation_size

    levels = {
        "segmentation.level": config.segmentation.level,
        "patching.level": config.patching.level,
        "heatmap.vis_level": config.heatmap.vis_level if config.heatmap.vis_level >= 0 else None,
        "heatmap.tiff_level": config.heatmap.tiff_level if config.heatmap.tiff else None,
    }
    count = slide.level_count
    for key, level in levels.items():
        if level is not None and level >= count:
            has = "level 0 only" if count == 1 else f"levels 0 to {count - 1}"
            raise InputError(f"{key}: level {level} does not exist in slide {entry.slide_id} (it has {has})")
    _check_heatmap_geometry(config, entry, slide)
    check_segmentation_size(slide, config.segmentation.level)  # a level it chooses is read shrunk


class MixedResolutionWarning(UserWarning):
    """The slides of one run were scanned at different pixel sizes (µm per pixel)."""


MPP_TOLERANCE = 1.1
"""Pixel sizes within this ratio count as one resolution (scanners of one magnification differ by a
few percent: 0.2465 and 0.2527 µm/px are both "40×")."""


def warn_mixed_resolutions(
    mpps: dict[str, float | None],
    patch_size: int,
    level: int,
    remedy: str = "run each resolution as its own slide list",
) -> None:
    """`MixedResolutionWarning` (one line) naming the slides of each pixel size, when the sizes the
    slides record differ by more than `MPP_TOLERANCE`. ``remedy``: what to do instead, in the words
    of the command that warns (`wsi run` takes a slide list, `wsi patch` the slides themselves).

    Why a warning and not an error: patches are pixels at a level (no magnification is read), so
    a 0.25 µm/px slide's patch covers a quarter of the tissue area a 0.5 µm/px slide's does, and
    both feed one model: a cohort mixing 20× and 40× scans is likely a mistake, but a model may
    have been trained on such a mix, and slides without a recorded size cannot be compared.
    """
    from attnmap.wsi.setting_names import setting

    known = sorted((mpp, slide_id) for slide_id, mpp in mpps.items() if mpp is not None and mpp > 0)
    if len(known) < 2 or known[-1][0] <= known[0][0] * MPP_TOLERANCE:
        return
    groups: list[list[tuple[float, str]]] = [[known[0]]]
    for mpp, slide_id in known[1:]:
        if mpp <= groups[-1][0][0] * MPP_TOLERANCE:
            groups[-1].append((mpp, slide_id))
        else:
            groups.append([(mpp, slide_id)])
    unknown = [slide_id for slide_id, mpp in mpps.items() if mpp is None or mpp <= 0]
    parts = [f"{_span(group[0][0], group[-1][0])} µm/px: {_some([slide_id for _, slide_id in group])}"
             for group in groups]
    if unknown:
        parts.append(f"not recorded: {_some(unknown)}")
    ratio = known[-1][0] / known[0][0]
    warnings.warn(
        f"slides scanned at different resolutions ({'; '.join(parts)}): {setting('patching.patch_size')} is "
        f"{patch_size} px at level {level}, so their patches cover tissue {ratio:.3g}× apart in width "
        f"and feed one model; {remedy} unless the model was trained on such a mix",
        MixedResolutionWarning,
        stacklevel=2,
    )


def _span(low: float, high: float) -> str:
    """``0.25`` or ``0.246–0.253``: the pixel sizes of one group."""
    low_text, high_text = f"{low:.3g}", f"{high:.3g}"
    return low_text if low_text == high_text else f"{low_text}–{high_text}"


def _some(names: list[str], shown: int = 3) -> str:
    """``a, b, c and 4 more``: slide ids for a one-line message."""
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def _check_heatmap_geometry(config: PipelineConfig, entry: SlideEntry, slide: Any) -> None:
    """``heatmap.roi`` outside the slide, patches smaller than a pixel at the heatmap's level, or a
    heatmap too large to draw in memory: each failed the slide only after its features and
    attention were computed."""
    from attnmap.wsi.heatmap import renderer
    from attnmap.wsi.heatmap.renderer import resolve_vis_level, vis_canvas
    from attnmap.wsi.tissue import PYRAMID_HINT

    roi = config.heatmap.roi
    width, height = slide.dimensions
    if roi is not None and (roi[0][0] >= width or roi[0][1] >= height or roi[1][0] <= 0 or roi[1][1] <= 0):
        raise InputError(
            f"heatmap.roi {[list(corner) for corner in roi]} lies outside slide {entry.slide_id} "
            f"({width}×{height} at level 0)"
        )
    vis_level = resolve_vis_level(slide, config.heatmap.vis_level)
    patch = round(config.patching.patch_size * float(slide.level_downsamples[config.patching.level]))
    # a level too large is drawn shrunk; the canvas is the renderer's (`vis_canvas`)
    (scale_x, scale_y), canvas = vis_canvas(slide, config.heatmap.vis_level, roi)
    vis = max(scale_x, scale_y)
    if patch < vis:
        raise InputError(
            f"heatmap.vis_level: a {config.patching.patch_size}-px patch at level {config.patching.level} "
            f"is smaller than one pixel at level {vis_level} (downsample {vis:g}) of slide {entry.slide_id}: "
            "choose a finer vis_level or larger patches"
        )
    if canvas[0] * canvas[1] > renderer.MAX_CANVAS_PIXELS:
        hint = ("choose a coarser vis_level or a heatmap.roi" if vis_level < slide.level_count - 1
                else f"choose a heatmap.roi, or as the slide has no coarser level, {PYRAMID_HINT}")
        raise InputError(
            f"heatmap.vis_level: the heatmap of slide {entry.slide_id} at level {vis_level} would be "
            f"{canvas[0]}×{canvas[1]} px, more than the {renderer.MAX_CANVAS_PIXELS} drawn in memory: {hint}"
        )
    try:
        renderer.downscaled_size(canvas, config.heatmap.downscale)
    except InputError as error:
        raise InputError(f"heatmap.{error} (slide {entry.slide_id}, level {vis_level})") from None
