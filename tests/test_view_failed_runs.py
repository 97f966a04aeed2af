"""`attnmap view` on a folder of `wsi run` folders some of whose runs failed."""

from __future__ import annotations

from pathlib import Path

from view_fixtures import write_run_folder

from attnmap.errors import InputError
from attnmap.view import ViewerContent, find_slides


def _cannot_read(entry) -> dict:
    raise InputError(f"cannot read slide {entry.path}")


def _failed_run(out: Path, slide_ids: list[str], method: str = "attnmap wsi run") -> None:
    """A run every slide of which failed before writing anything: only its report (as `wsi run`
    writes it, `run_tasks` over its slide entries)."""
    from attnmap.parallel import run_tasks
    from attnmap.wsi.pipeline.config import SlideEntry

    entries = [SlideEntry(str(out.parent / "slides" / f"{slide_id}.svs"), slide_id) for slide_id in slide_ids]
    run_tasks(_cannot_read, entries, report=out / "run_report.json", retries=0, progress=False,
              provenance={"method": method})


def test_a_run_of_a_folder_of_runs_whose_every_slide_failed_is_listed(tmp_path: Path) -> None:
    """A run of the folder that failed on every slide writes no heatmaps/ folder, only its report;
    its slides were left out of the list without a word, as if the cohort had no such run."""
    cohort = tmp_path / "cohort"
    cohort.mkdir()
    write_run_folder(tmp_path / "good", "slide_a", fine=False).rename(cohort / "run1")
    _failed_run(cohort / "run2", ["slide_b", "slide_c"])
    _failed_run(cohort / "explained", ["image_1"], method="attnmap explain")  # not a run of slides
    content = ViewerContent(find_slides(cohort), check_interval=0)
    try:
        listed = content.slide_list()
    finally:
        content.close()
    assert [row["id"] for row in listed["slides"]] == ["slide_a"]
    reasons = {row["id"]: row["reason"] for row in listed["unshown"]}
    assert list(reasons) == ["run2/slide_b", "run2/slide_c"]
    slide_b = cohort / "slides" / "slide_b.svs"
    assert reasons["run2/slide_b"] == f"failed in the run: InputError: cannot read slide {slide_b}"
