"""The `attnmap wsi evaluate` leg of `bench/annotations_sweep.py`: each case's files, renamed for
the one slide of a small run folder (the tests' `view_fixtures.write_run_folder`), through the
command as a user types it, so its one-line errors and its ``attnmap: warning:`` lines are checked
where the user reads them.

``ok``: exit 0 with the planted number of lesions in the report, and a warning line when the file
holds things that are not areas. A case with no lesion at all is expected to be refused (the
command will not score a run with none) in one line.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from annotations_sweep_cases import Case
from sweep_common import ESCAPED, run_cli

ROOT = Path(__file__).resolve().parents[1]
SLIDE = "slide_a"


def build_run(root: Path) -> Path:
    sys.path.insert(0, str(ROOT / "tests"))
    from view_fixtures import write_run_folder

    return write_run_folder(root, SLIDE, fine=False)


def _renamed(name: str) -> str:
    """``s1.geojson`` → ``slide_a.geojson`` (``S1.GeoJSON`` → ``SLIDE_A.GeoJSON``: case kept)."""
    head, sep, tail = name.partition(".")
    if head == "s1":
        head = SLIDE
    elif head == "S1":
        head = SLIDE.upper()
    return head + sep + tail


def expected(case: Case) -> str:
    lesions = sum(not t.exclusion for t in case.truth)
    return "error" if case.expect == "error" or lesions == 0 else "ok"


def check_cli(case: Case, run: Path, folder: Path) -> tuple[str, str]:

    folder.mkdir(parents=True)
    for name, data in case.files.items():
        target = folder / _renamed(name.rstrip("/"))
        target.mkdir() if name.endswith("/") else target.write_bytes(data)
    report = folder.parent / f"{folder.name}.json"
    code, _, stderr = run_cli(["wsi", "evaluate", run, "--annotations", folder, "-o", report])
    warned = [line for line in stderr.splitlines() if line.startswith("attnmap: warning:")]
    lines = [line for line in stderr.splitlines() if line.strip() and line not in warned]
    if "Traceback" in stderr or code == ESCAPED:
        return "crash", (lines[-1] if lines else "traceback")[:180]
    if code != 0:
        if len(lines) == 1 and lines[0].startswith("attnmap: error:"):
            return "error", lines[0][:180]
        return "crash", f"exit {code}: " + " | ".join(lines)[:180]
    lesions = json.loads(report.read_text())["froc"]["n_lesions"]
    want = sum(not t.exclusion for t in case.truth)
    if case.expect == "error":
        return ("ignored" if lesions == 0 and not warned else "wrong"), f"ran: {lesions} lesions"
    if lesions != want:
        kind = "ignored" if lesions == 0 and not warned else "wrong"
        return kind, f"{lesions} lesions, planted {want}"
    if case.skipped and not warned:
        return "ignored", "non-regions dropped without a warning line"
    return "ok", (warned[0][:150] if warned else "")
