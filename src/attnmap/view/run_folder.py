"""The slides of one `wsi run` output folder, each shown or named with why not.

A run folder holds ``heatmaps/<id>/`` (blockmap, prediction, fine maps), ``tissue/<id>.json`` (the
contours, the slide's level sizes and the fingerprint naming the slide file the run read) and
``run_report.json`` (the slides that failed). Why per slide: in a cohort of hundreds, one slide
moved away or one damaged blockmap must not hide every other slide; `run_slides` names it instead.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePath

import numpy as np

from attnmap.errors import InputError
from attnmap.view.score_files import ScoreSet, _grid_step, read_fine_score_set, read_score_sets
from attnmap.view.sources import (
    UnshownSlide,
    ViewSlide,
    _annotation_sources,
    _check_against_slide,
    _find_annotations,
    check_inside,
)
from attnmap.wsi.pipeline.outputs import SlideOutputs


def _tissue_record(path: Path) -> dict:
    """A run's ``tissue/<id>.json`` (contours, the slide's level sizes, its fingerprint), or {}."""
    try:
        payload = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return payload if isinstance(payload, dict) else {}


def _recorded_slide(record: dict) -> tuple[Path | None, tuple[int, int] | None]:
    """The slide file the run read (absolute path, from the tissue stage's fingerprint) and its
    level-0 size then; None where the record does not say."""
    path = dimensions = None
    try:
        inputs = json.loads(record["provenance"]["attnmap_fingerprint_inputs"])
        path = Path(inputs["slide"]["path"]) if Path(inputs["slide"]["path"]).is_absolute() else None
    except (KeyError, TypeError, ValueError):
        pass
    try:
        width, height = record["level_dimensions"][0]
        dimensions = (int(width), int(height))
    except (KeyError, TypeError, ValueError, IndexError):
        pass
    return path, dimensions


def _tissue_polygons(path: Path) -> list[np.ndarray]:
    """The rings of a run's tissue file; `InputError` when it does not read as one.

    Why not an empty list: a damaged file was shown as a slide without tissue, without a word.
    """
    try:
        contours = json.loads(path.read_text())["contours"]
        if not isinstance(contours, list):
            raise TypeError(f"'contours' is a {type(contours).__name__}, not a list")
        return [
            np.asarray(ring, dtype=np.float64).reshape(-1, 2)
            for item in contours
            for ring in (item["outer"], *item["holes"])
        ]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        detail = f"no {exc}" if isinstance(exc, KeyError) else str(exc)
        raise InputError(f"{path} is not a tissue file of `wsi run`: {detail}") from None


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def run_slides(root: Path, annotations_dir: Path | None, unshown: list[UnshownSlide]) -> list[ViewSlide]:
    """The slides of one run folder; a slide that does not read is named in ``unshown``, not fatal.

    Why per slide: in a cohort of hundreds, one slide moved away or one damaged blockmap must not
    hide every other slide; the page and the command line name it with its reason instead.
    A slide folder that the last run's slide list (``run_report.json``) does not name is named,
    not shown: `wsi run` keeps the folders of slides dropped from its CSV, and their pictures are
    of an earlier run.
    """
    report = _read_report(root / "run_report.json")
    cohort = _cohort(report)
    drawn = _run_heatmap(report)
    slides = []
    heatmaps = root / "heatmaps"
    for folder in sorted(p for p in heatmaps.iterdir() if p.is_dir()) if heatmaps.is_dir() else ():
        slide_id = folder.name
        outputs = SlideOutputs(root, slide_id)  # the layout `wsi run` writes
        blockmap, prediction_file = outputs.named("blockmap.h5"), outputs.prediction
        watched = (
            root / "heatmaps",
            root / "run_report.json",
            folder,
            blockmap,
            prediction_file,
            outputs.named("fine_maps.h5"),
            outputs.named("overlap_blockmap.h5"),
            outputs.tissue,
            *_annotation_sources(annotations_dir, slide_id),
        )
        if cohort is not None and not _in_cohort(cohort, slide_id, prediction_file):
            unshown.append(UnshownSlide(slide_id, _one_line(DROPPED), False, watched))
            continue
        if not (blockmap.is_file() and prediction_file.is_file()):
            unshown.append(UnshownSlide(slide_id, "no blockmap or prediction file yet", True, watched))
            continue
        try:
            slide = _run_slide(outputs, annotations_dir, watched, drawn)
            size = _check_against_slide(slide)
        except (InputError, OSError) as exc:  # OSError: an h5 file cut short by a run writing it
            message = str(exc)
            prefix = f"slide {slide_id}: "
            message = message[len(prefix) :] if message.startswith(prefix) else message
            unshown.append(
                UnshownSlide(
                    slide_id, _one_line(message), False, watched + _slide_candidates(outputs)
                )
            )
            continue
        _add_optional_layers(slide, outputs, size, unshown, drawn)
        slides.append(slide)
    shown = {slide.slide_id for slide in slides} | {item.slide_id for item in unshown if not item.unfinished}
    for slide_id, reason in _failed_in_report(report):
        if slide_id in shown:
            continue
        unshown[:] = [item for item in unshown if item.slide_id != slide_id]  # failed, not merely unfinished
        unshown.append(
            UnshownSlide(
                slide_id, _one_line(f"failed in the run: {reason}"), sources=(root / "run_report.json",)
            )
        )
    return slides


DROPPED = (
    "not in the last run's slide list (run_report.json): its folder is left from an earlier run "
    "whose slide CSV named it"
)


def _read_report(path: Path) -> dict:
    """A run's ``run_report.json``, or {} when there is none or it does not read (a run writing it)."""
    try:
        report = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return report if isinstance(report, dict) else {}


def _report_items(report: dict) -> list[dict]:
    items = report.get("items")
    return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []


def _cohort(report: dict) -> tuple[set[str], set[str]] | None:
    """(slide ids, slide paths) the last `wsi run` was given, or None where the report names none.

    Why both: the report names each slide by its path and its id (``item_id``) from the start of
    the run (``pending``, ``skipped``; a report of an older version, by its id only once done); a
    prediction file records the same path.
    """
    items = _report_items(report)
    provenance = report.get("provenance")
    if not items or not isinstance(provenance, dict) or provenance.get("method") != "attnmap wsi run":
        return None  # only `wsi run` lists its whole slide list, from the start of the run
    paths = {str(item["item"]) for item in items if item.get("item")}
    ids = {_report_id(item) for item in items if item.get("item")}
    ids |= {
        str(item["result"]["slide_id"])
        for item in items
        if isinstance(item.get("result"), dict) and item["result"].get("slide_id")
    }
    return ids, paths


def _report_id(item: dict) -> str:
    """The slide id of a report item: the one `wsi run` records (``item_id``), else, in a report
    written before it recorded ids, the slide file's stem (a slide list's default id)."""
    recorded = item.get("item_id")
    if isinstance(recorded, str) and recorded:
        return recorded
    return PurePath(str(item.get("item", ""))).stem


def _in_cohort(cohort: tuple[set[str], set[str]], slide_id: str, prediction_file: Path) -> bool:
    ids, paths = cohort
    if slide_id in ids:
        return True
    try:
        return _read_prediction(prediction_file)["slide_path"] in paths
    except InputError:  # no prediction that reads, and not the id of any slide of the run
        return False


def _run_heatmap(report: dict) -> dict:
    """How the last run drew its heatmap PNGs (``heatmap.scale``, ``percentiles``, ``cmap``), where
    its report records it and this version can draw it; {} otherwise (the viewer's own default)."""
    try:
        heatmap = json.loads(report["provenance"]["parameters"])["heatmap"]
        from attnmap.render.colormap import get_cmap
        from attnmap.wsi.pipeline.config import HeatmapConfig
        from attnmap.wsi.pipeline.legend import RUN_SCALES

        # a key a report of an older version lacks: that version drew it at the config's default
        drawn = {
            "kind": heatmap.get("scale", HeatmapConfig.scale),
            "percentiles": heatmap.get("percentiles", HeatmapConfig.percentiles),
            "cmap": heatmap.get("cmap", HeatmapConfig.cmap),
        }
        get_cmap(drawn["cmap"])
        if drawn["kind"] not in RUN_SCALES or not isinstance(drawn["percentiles"], bool):
            return {}
    except Exception:  # noqa: BLE001 - no record, or a name this version cannot draw: the default
        return {}
    return drawn if isinstance(drawn["cmap"], str) else {}


def _png_scale(attention: ScoreSet, drawn: dict) -> None:
    """Give the attention the scale of the run's heatmap PNG (`display_scores`, the rule `wsi run`
    drew it by), so the viewer's tiles and colour bar are the PNG's, whatever ``heatmap.scale``."""
    from attnmap.wsi.pipeline.legend import display_scores

    *_, attention.scale = display_scores(
        attention.scores, None, drawn["kind"], drawn["percentiles"], drawn["cmap"]
    )
    attention.note = f"Drawn as the run's heatmap PNG (heatmap.scale: {drawn['kind']})."


def _failed_in_report(report: dict) -> list[tuple[str, str]]:
    """(slide id, error) of the slides `wsi run` recorded as failed in its ``run_report.json``.

    The id is the one the report records (`_report_id`); a report that does not read (a run writing
    it) names none: the slides themselves are still shown.
    """
    try:
        items = _report_items(report)
        failed = [item for item in items if isinstance(item, dict) and item.get("status") == "failed"]
        return [
            (
                _report_id(item),
                f"{item.get('error_type') or 'error'}: {item.get('message') or 'no message'}",
            )
            for item in failed
        ]
    except (OSError, UnicodeDecodeError, ValueError, AttributeError, TypeError):
        return []


def _slide_file(root: Path, recorded: str, prediction_file: Path, read: Path | None = None) -> Path:
    """The slide file a prediction names. A relative path is relative to where `wsi run` ran: first
    the absolute path the run read (``read``, from its tissue record), then the run folder, the
    current folder and the run folder's parents (where a run folder given as ``output_dir: out``
    sits)."""
    path = Path(recorded)
    for candidate in _candidates(root, path, read):
        if candidate.is_file():
            return candidate
    raise InputError(
        f"its file {recorded} (from {prediction_file.name}) is missing"
        + (
            ""
            if path.is_absolute()
            else f" (looked under {root} and its parents, and under the current folder)"
        )
    )


def _candidates(root: Path, path: Path, read: Path | None = None) -> list[Path]:
    if path.is_absolute():
        return [path]
    base = root.resolve()
    first = [read] if read is not None and read.name == path.name else []
    return [*first, base / path, Path.cwd() / path, *(parent / path for parent in base.parents)]


def _slide_candidates(outputs: SlideOutputs) -> tuple[Path, ...]:
    """Where the slide a prediction names may appear (watched while it is missing)."""
    try:
        read, _ = _recorded_slide(_tissue_record(outputs.tissue))
        recorded = Path(_read_prediction(outputs.prediction)["slide_path"])
        return tuple(_candidates(outputs.root, recorded, read))
    except InputError:
        return ()


def _run_slide(
    outputs: SlideOutputs, annotations_dir: Path | None, watched: tuple[Path, ...], drawn: dict | None = None
) -> ViewSlide:
    """One slide of a run folder; ``drawn``: how the run drew its heatmap PNG (`_run_heatmap`), given
    to the attention (the score set the PNG draws), so the viewer's tiles and colour bar are the PNG's."""
    root, slide_id, prediction_file = outputs.root, outputs.slide_id, outputs.prediction
    prediction = _read_prediction(prediction_file)
    record = _tissue_record(outputs.tissue)
    read, dimensions = _recorded_slide(record)
    slide_path = _slide_file(root, prediction["slide_path"], prediction_file, read)
    score_sets = read_score_sets(outputs.named("blockmap.h5"))
    if drawn and "attention" in score_sets:
        _png_scale(score_sets["attention"], drawn)
    return ViewSlide(
        slide_id,
        slide_path,
        score_sets,
        prediction,
        [],  # the tissue: `_add_optional_layers`, which names a file that does not read
        _find_annotations(annotations_dir, slide_id),
        (*watched, slide_path),
        dimensions,
    )


def _add_optional_layers(
    slide: ViewSlide, outputs: SlideOutputs, size: tuple[int, int], unshown: list[UnshownSlide],
    drawn: dict | None = None,
) -> None:
    """The overlapping grid's attention and the fine maps, added to ``slide`` where their files exist.

    Each that does not read (a file cut short, of another run's layout) or lies off the slide is
    left out and named in ``unshown`` as "<slide id> (<layer>)" with why: the slide's blockmap
    layers read, and a damaged extra layer must not hide them.
    """
    layers = (
        ("overlapping grid", outputs.named("overlap_blockmap.h5"),
         lambda path: read_overlap_score_set(path, slide.score_sets.get("attention"), drawn)),
        ("fine maps", outputs.named("fine_maps.h5"), read_fine_score_set),
    )
    if outputs.tissue.is_file():
        try:
            slide.tissue = _tissue_polygons(outputs.tissue)
        except InputError as exc:
            reason = _one_line(f"this layer is left out, the slide's other layers are shown: {exc}")
            unshown.append(UnshownSlide(f"{slide.slide_id} (tissue)", reason, False, slide.sources, "tissue"))
    for label, path, read in layers:
        if not path.is_file():
            continue
        try:
            layer = read(path)
            check_inside(slide.slide_id, layer.method, layer, size)
        except (InputError, OSError) as exc:  # OSError: an h5 file cut short
            message = str(exc).removeprefix(f"slide {slide.slide_id}: ")
            reason = _one_line(f"this layer is left out, the slide's other layers are shown: {message}")
            unshown.append(UnshownSlide(f"{slide.slide_id} ({label})", reason, False, slide.sources, label))
            continue
        slide.score_sets[layer.method] = layer


def read_overlap_score_set(path: Path, reference: ScoreSet | None, drawn: dict | None = None) -> ScoreSet:
    """The attention of a run's overlapping heatmap grid (``overlap_blockmap.h5``, written when
    ``heatmap.overlap > 0``), coloured on ``reference``'s scale (the blockmap attention's); under
    ``drawn`` (`_run_heatmap`) ``clam`` with percentiles off, ranked against it as the PNG ranks it.

    Why the blockmap's scale: CLAM ranks the overlapping patches' scores against the blockmap's
    (`attnmap.wsi.heatmap.scores.percentiles_against`), so both pictures of a slide read on one bar;
    here, as there, the denser grid's colours mean what the blockmap layer's mean.
    """
    sets = read_score_sets(path)
    if "attention" not in sets:
        raise InputError(f"{path} holds no 'attention_scores' dataset")
    found = sets["attention"]
    try:
        spacing = f" every {_grid_step(found.coords)} px"
    except InputError:  # a single patch, or patches sharing no row or column
        spacing = ""
    scale = reference.scale if reference is not None else found.scale
    if drawn and reference is not None and drawn["kind"] == "clam" and not drawn["percentiles"]:
        from attnmap.wsi.pipeline.legend import display_scores  # (the one case it is not reference's)

        *_, scale = display_scores(found.scores, reference.scores, "clam", False, drawn["cmap"])
    whose = "the blockmap attention's scale" if reference is not None else "its own scale"
    return ScoreSet(
        "attention (overlapping grid)",
        found.coords,
        found.scores,
        found.patch_size,
        scale,
        overlapping=True,
        note=(
            f"Patches of {found.patch_size} px{spacing} (level 0), averaged where they overlap "
            f"as in the heatmap PNG; coloured on {whose}."
        ),
    )


def _read_prediction(path: Path) -> dict:
    """A slide's prediction JSON, without its provenance; `InputError` when it is not one (a run
    interrupted while writing it, or a hand-edited file)."""
    try:
        prediction = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from None
    if not isinstance(prediction, dict) or not isinstance(prediction.get("slide_path"), str):
        raise InputError(f"{path} is not a prediction file of `wsi run`: it names no 'slide_path'")
    prediction.pop("provenance", None)
    return prediction
