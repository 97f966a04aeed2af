"""``attnmap wsi geojson`` and ``wsi evaluate``: scores out to QuPath, annotations in as ground truth."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("geojson")
@click.argument("scores", type=click.Path(path_type=Path))
@click.option(
    "-o", "--out", "out", type=click.Path(path_type=Path), required=True, help="GeoJSON file to write."
)
@click.option("--tissue", "tissue", is_flag=True, help="Add the run's tissue contours (tissue/<id>.json).")
@click.option(
    "--tissue-file", type=click.Path(path_type=Path), default=None, help="Tissue contours JSON to add."
)
def geojson_command(scores: Path, out: Path, tissue: bool, tissue_file: Path | None) -> None:
    """Write SCORES (a _blockmap.h5) as QuPath detections: one polygon per patch, level-0 pixels."""
    from attnmap.cli.options import quiet
    from attnmap.wsi.qupath import export_blockmap_geojson

    if scores.is_dir():  # "scores file not found" said of a folder that is there
        from attnmap.errors import InputError

        found = sorted(scores.glob("*_blockmap.h5")) or sorted(scores.glob("heatmaps/*/*_blockmap.h5"))
        example = f", e.g. {found[0]}" if found else ""
        raise InputError(f"{scores} is a folder: give one slide's scores file (a _blockmap.h5{example})")
    tissue_given = tissue_file if tissue_file is not None else tissue
    path = export_blockmap_geojson(scores, out, tissue_given, progress=not quiet())
    click.echo(f"wrote {path}")


@click.command("evaluate")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option(
    "--annotations",
    type=click.Path(path_type=Path),
    required=True,
    help="Folder of <slide id>.geojson|.xml (QuPath GeoJSON or ASAP XML); a slide without one is negative.",
)
@click.option("--method", default="attention", show_default=True, help="Score set to evaluate.")
@click.option(
    "-o", "--out", "out", type=click.Path(path_type=Path, dir_okay=False), default=None,
    help="JSON report to write.",
)
def evaluate_command(run_dir: Path, annotations: Path, method: str, out: Path | None) -> None:
    """Patch AUC per annotated slide and FROC lesion detection over the run's slides."""
    import shlex

    parts = ["attnmap", "wsi", "evaluate", str(run_dir), "--annotations", str(annotations),
             "--method", method]
    parts += ["-o", str(out)] if out is not None else []
    evaluate_annotated_run(run_dir, annotations, method, out, shlex.join(parts))


def run_score_sets(run_dir: Path) -> list[str]:
    """The score sets (attention, relevance methods) every slide of a run has."""
    sets = [set(slide.score_sets) for slide in find_run_slides(run_dir).slides]
    return sorted(set.intersection(*sets)) if sets else []


def find_run_slides(run_dir: Path):  # -> attnmap.view.sources.Discovery (imported late: startup time)
    """The slides of a `wsi run` folder (or a folder of runs) to evaluate. A folder without a single
    blockmap is refused here in the evaluation's own words: the viewer's "nothing to view", or its hint
    to pass a slide file with --scores, tells the user of `wsi evaluate` nothing they can do."""
    from attnmap.errors import InputError
    from attnmap.view.sources import find_slides

    needs = "needs a `wsi run` output folder (heatmaps/<id>/<id>_blockmap.h5) or a folder of such runs"
    if not run_dir.is_dir():
        state = "does not exist" if not run_dir.exists() else "is not a folder"
        raise InputError(f"{run_dir} {state}: the evaluation {needs}")
    pattern = "heatmaps/*/*_blockmap.h5"
    if next(run_dir.glob(pattern), None) is None and next(run_dir.glob(f"*/{pattern}"), None) is None:
        raise InputError(f"{run_dir} holds no slide's blockmap: the evaluation {needs}")
    return find_slides(run_dir, purpose="evaluate")


def evaluate_annotated_run(
    run_dir: Path, annotations: Path, method: str, out: Path | None, command: str
) -> dict:
    """Patch AUC per annotated slide and FROC lesion detection of one score set; echoes and returns
    the report (and writes it as JSON to ``out``, with its provenance: the run, the annotations, the
    ``command``). Shared by `attnmap wsi evaluate` and `attnmap evaluate --run`."""
    from attnmap.errors import InputError
    from attnmap.evaluate.lesions import SlideScores, froc, patch_auc, random_baseline
    from attnmap.evaluate.slides import slide_seed
    from attnmap.io_utils import check_writable, write_json_atomic
    from attnmap.provenance import provenance
    from attnmap.view.sources import check_rings_inside
    from attnmap.wsi.annotations import annotation_file, load_annotations, unmatched_annotation_files
    from attnmap.wsi.slide import open_slide

    if not annotations.is_dir():
        raise InputError(f"--annotations must be a folder of <slide id>.geojson|.xml files: {annotations}")
    if out is not None:  # before scoring every slide, not after: a file where a folder should be
        check_writable(out)
    rows, slides, files = [], [], 0
    found_slides = find_run_slides(run_dir)
    # a slide left out changes the FROC (its lesions and false positives): named, never dropped silently;
    # a layer the viewer leaves out of a slide it shows (a damaged fine-map file) is no slide left out
    left_out = [item for item in found_slides.unshown if not item.layer]
    not_evaluated = [{"slide_id": item.slide_id, "reason": item.reason} for item in left_out]
    for item in not_evaluated:
        click.echo(f"{item['slide_id']}: not evaluated: {item['reason']}", err=True)
    for slide in found_slides.slides:
        if method not in slide.score_sets:
            raise InputError(
                f"slide {slide.slide_id} has no '{method}' scores; it has {list(slide.score_sets)}"
            )
        # by the id of the run's files: a slide shown as <run>-<id> (its id held by another run of the
        # folder) has no <run>-<id>.xml, and was scored as negative
        found = annotation_file(annotations, slide.file_id)
        if found is not None and out is not None and out.exists() and out.samefile(found):
            raise InputError(f"-o {out} would overwrite {found}, the annotations of slide {slide.slide_id}")
        regions = load_annotations(found) if found is not None else []
        if regions:  # lesions beyond the slide are never found: FROC 0 would read as a result
            with open_slide(slide.slide_path) as handle:
                size = handle.dimensions
            check_rings_inside(slide.slide_id, [ring for region in regions for ring in region.rings()], size)
        score_set = slide.score_sets[method]
        item = SlideScores(score_set.coords, score_set.scores, score_set.patch_size, regions)
        slides.append(item)
        row = {"slide_id": slide.slide_id, "n_regions": len(regions)}
        files += found is not None
        try:
            row.update(patch_auc(item))
        except InputError as exc:  # all-positive or all-negative slide: no AUC
            row["note"] = str(exc)
        rows.append(row)
        auc = f"{row['auc']:.3f}" if "auc" in row else "n/a"
        click.echo(f"{slide.slide_id}: {len(regions)} region(s), patch AUC {auc}")
    if rows and files and not any(row["n_regions"] for row in rows):
        raise InputError(
            f"no annotated region for any slide of the run: the {files} annotation file(s) found in "
            f"{annotations} hold no polygon area"
        )
    if rows and not any(row["n_regions"] for row in rows):  # e.g. files named after another id
        raise InputError(
            f"no annotated region for any slide of the run in {annotations} (looked for "
            f"<slide id>.geojson|.xml with ids {', '.join(str(row['slide_id']) for row in rows[:5])})"
        )
    ids = [slide.file_id for slide in found_slides.slides] + [item.slide_id for item in left_out]
    unmatched = unmatched_annotation_files(annotations, ids)
    if unmatched:  # a misnamed file leaves its slide scored as negative: say which files were not read
        shown = ", ".join(unmatched[:5]) + (f" and {len(unmatched) - 5} more" if len(unmatched) > 5 else "")
        click.echo(f"annotation file(s) matching no slide of the run, not read: {shown}", err=True)
    result = {
        "method": method,
        "slides": rows,
        "not_evaluated": not_evaluated,
        "unmatched_annotations": unmatched,
        "froc": froc(slides),
        # the floor, seeded by each slide's id: a slide's random scores do not depend on the others
        "random": {"froc": random_baseline(slides, [slide_seed(0, row["slide_id"]) for row in rows])},
        "provenance": provenance(method=method, run=run_dir, annotations=annotations, command=command),
    }
    rates = ", ".join(f"{k:g} FP: {v:.2f}" for k, v in result["froc"]["sensitivity_at"].items())
    subset = f" over {len(rows)} of {len(rows) + len(not_evaluated)} slides" if not_evaluated else ""
    click.echo(f"FROC score {result['froc']['froc_score']:.3f}{subset} ({rates}); random patch scores: "
               f"{result['random']['froc']['froc_score']:.3f}")
    if out is not None:
        write_json_atomic(out, result)
        click.echo(f"wrote {out}")
    return result
