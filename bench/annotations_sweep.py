"""Robustness sweep of the annotation files pathologists bring (QuPath GeoJSON, ASAP XML, Aperio
ImageScope XML, damaged files, odd names), fed to every place attnmap reads them.

Run (seconds; everything in a temporary folder)::

    PYTHONPATH=src python bench/annotations_sweep.py [--only SUBSTRING] [-v]

Each case (`bench/annotations_sweep_cases.py`) is a folder holding one slide's annotation files and
the regions planted in them. Each is read by:

- ``read``: `attnmap.wsi.annotations.load_annotations` on the file (when the case is one file);
- ``roi``: `roi_filter`, what `wsi run` does with ``patching.roi_annotations`` (16-px patches);
- ``evaluate``: the ground truth of `wsi evaluate` (`annotation_file`, `load_annotations`, then the
  lesion mask of `patch_auc` and the lesion count of `froc`);
- ``view``: the outlines of the viewer's annotation layer (`attnmap.view.sources._find_annotations`);
- ``cli``: `attnmap wsi evaluate RUN --annotations FOLDER` as typed (`bench/annotations_sweep_cli.py`),
  its error and warning lines as the user reads them;

and one more case writes `wsi geojson` output (patch detections + tissue) and reads it back.

Classes, as `bench/wsi_config_sweep.py`: ``ok`` (the inside-test / mask / rings match the planted
truth, computed by an even-odd ray casting written in the bench; what the file holds that is not a
region was named in a warning), ``error`` (an `InputError` of one line naming the file or slide),
``crash`` (any other exception, or a multi-line message), ``wrong`` (read, but not as the tool
meant: a hole filled, a part dropped, a label lost, points or detections counted as regions),
``ignored`` (a file or annotation dropped without a warning). ``!`` marks a class other than the
case's expectation (``ok`` or ``error``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from annotations_sweep_cases import SIZE, Case, Truth, cases, rect, truth_inside  # noqa: E402
from annotations_sweep_cli import build_run, check_cli, expected  # noqa: E402

GRID = np.stack(
    np.meshgrid(np.arange(-61, SIZE[0] + 64, 8.0), np.arange(-59, SIZE[1] + 64, 8.0)), -1
).reshape(-1, 2)
PATCH = 16
PATCHES = np.stack(np.meshgrid(np.arange(3, SIZE[0], PATCH), np.arange(3, SIZE[1], PATCH)), -1).reshape(-1, 2)
DOWNSAMPLE = 4.0
TOLERANCE = 30  # grid points on a slanted edge may fall either way


def attempt(fn, names: list[str]) -> tuple[str, str, object, list[str]]:
    """(class or '', detail, result, warnings): '' when fn returned a result to be compared."""
    from attnmap.errors import InputError

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = fn()
        except InputError as error:
            text = str(error)
            said = [str(w.message) for w in caught]
            if "\n" in text.strip():
                return "crash", "multi-line: " + text.replace("\n", " | ")[:160], None, said
            if not any(n in text for n in names):
                return "error", f"(names no file) {text[:160]}", None, said
            return "error", text[:180], None, said
        except Exception:  # noqa: BLE001 - a sweep records whatever escapes
            return "crash", traceback.format_exc().strip().splitlines()[-1][:180], None, []
    return "", "", result, [str(w.message) for w in caught]


def judge(
    case: Case, mismatches: int, labels_ok: bool, said: list[str], empty: bool, what: str
) -> tuple[str, str]:
    if case.expect == "error":
        return ("ignored" if empty and not said else "wrong"), f"read without error ({what})"
    if mismatches > TOLERANCE or not labels_ok:
        if empty and not said:
            return "ignored", f"nothing read ({what})"
        return "wrong", f"{mismatches} points differ{'' if labels_ok else ', labels differ'} ({what})"
    if case.skipped and not said:
        return "ignored", f"non-regions dropped without a warning ({what})"
    return "ok", ("; ".join(said)[:150] if said else "")


def expected_labels(truth: list[Truth]) -> list[str]:
    return sorted(t.label for t in truth)


def check_read(case: Case, folder: Path) -> tuple[str, str]:
    from attnmap.wsi.annotations import inside_regions, load_annotations

    files = [folder / n for n in case.files if not n.endswith("/")]
    if len(case.files) != 1 or not files:
        return "n/a", ""
    cls, detail, regions, said = attempt(lambda: load_annotations(files[0]), [files[0].name])
    if cls:
        return cls, detail
    mismatches = int(np.count_nonzero(inside_regions(GRID, regions) != truth_inside(GRID, case.truth)))
    labels_ok = sorted(r.label for r in regions) == expected_labels(case.truth)
    return judge(case, mismatches, labels_ok, said, not regions, f"{len(regions)} regions")


def check_roi(case: Case, folder: Path) -> tuple[str, str]:
    from attnmap.wsi.annotations import roi_filter

    names = [*(n.rstrip("/") for n in case.files), case.slide_id]
    cls, detail, kept, said = attempt(lambda: roi_filter(PATCHES, PATCH, folder, case.slide_id), names)
    if cls:
        return cls, detail
    want = truth_inside(PATCHES + PATCH / 2, case.truth)
    got = np.zeros(len(PATCHES), bool)
    index = {tuple(p): i for i, p in enumerate(PATCHES.tolist())}
    for p in np.asarray(kept).tolist():
        got[index[tuple(p)]] = True
    return judge(case, int(np.count_nonzero(got != want)), True, said, not got.any(), f"{got.sum()} patches")


def check_evaluate(case: Case, folder: Path) -> tuple[str, str]:
    from attnmap.wsi.annotations import annotation_file, load_annotations, regions_mask

    def ground_truth():
        found = annotation_file(folder, case.slide_id)
        return load_annotations(found) if found is not None else []

    names = [*(n.rstrip("/") for n in case.files), case.slide_id]
    cls, detail, regions, said = attempt(ground_truth, names)
    if cls:
        return cls, detail
    mask = regions_mask(regions, SIZE, DOWNSAMPLE)
    h, w = mask.shape
    centres = np.stack(np.meshgrid(np.arange(w) * DOWNSAMPLE + 2, np.arange(h) * DOWNSAMPLE + 2), -1).reshape(
        -1, 2
    )
    want = truth_inside(centres, case.truth).reshape(h, w)
    mismatches = int(np.count_nonzero(mask != want))
    # boundary pixels of a DOWNSAMPLE grid: tolerate one pixel's width along every edge
    perimeter = sum(
        np.hypot(*np.diff(np.r_[t.outer, t.outer[:1]], axis=0).T).sum()
        for t in [Truth(np.asarray(r, float)) for tr in case.truth for r in [tr.outer, *tr.holes]]
    )
    slack = int(perimeter / DOWNSAMPLE) + TOLERANCE
    lesions = sum(not r.exclusion for r in regions)
    labels_ok = lesions == sum(not t.exclusion for t in case.truth)
    return judge(
        case,
        max(0, mismatches - slack),
        labels_ok,
        said,
        not regions,
        f"{lesions} lesions, {mismatches} px differ",
    )


def check_view(case: Case, folder: Path) -> tuple[str, str]:
    from attnmap.view.sources import _find_annotations

    names = [*(n.rstrip("/") for n in case.files), case.slide_id]
    cls, detail, rings, said = attempt(lambda: _find_annotations(folder, case.slide_id), names)
    if cls:
        return cls, detail
    want = sum(1 + len(t.holes) for t in case.truth)
    return judge(case, 0, len(rings) == want, said, not rings, f"{len(rings)} rings, want {want}")


def check_geojson_out(root: Path) -> tuple[str, str]:
    """`wsi geojson` output (patch detections + a tissue polygon with a hole) read back."""
    from attnmap.wsi.annotations import load_annotations
    from attnmap.wsi.qupath import write_scores_geojson

    coords = PATCHES[:40]
    outer, hole = np.array(rect(64, 64, 960, 704), float), np.array(rect(320, 320, 448, 448), float)
    path = write_scores_geojson(
        root / "s1_scores.geojson", coords, PATCH, {"attention": np.arange(40.0)}, "tumour", [(outer, [hole])]
    )
    case = Case(
        "wsi geojson read back", {}, truth=[Truth(outer.tolist(), [hole.tolist()], "Tissue")], skipped=True
    )
    cls, detail, regions, said = attempt(lambda: load_annotations(path), [path.name])
    if cls:
        return cls, detail
    from attnmap.wsi.annotations import inside_regions

    mismatches = int(np.count_nonzero(inside_regions(GRID, regions) != truth_inside(GRID, case.truth)))
    labels_ok = sorted(r.label for r in regions) == ["Tissue"]
    return judge(case, mismatches, labels_ok, said, not regions, f"{len(regions)} regions")


def materialise(case: Case, folder: Path) -> None:
    folder.mkdir(parents=True)
    for name, data in case.files.items():
        if name.endswith("/"):
            (folder / name).mkdir(parents=True)
        else:
            (folder / name).write_bytes(data)


CHECKS = {"read": check_read, "roi": check_roi, "evaluate": check_evaluate, "view": check_view}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="run the cases whose name contains this")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every detail in full")
    args = parser.parse_args()
    counts: Counter = Counter()
    surprises = 0
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run = build_run(root / "run_root")
        checks = {
            **CHECKS,
            "cli": lambda case, folder: check_cli(case, run, folder.with_name(folder.name + "_cli")),
        }
        for i, case in enumerate(c for c in cases() if args.only in c.name):
            folder = root / f"case{i}"
            materialise(case, folder)
            for consumer, check in checks.items():
                start = time.perf_counter()
                cls, detail = check(case, folder)
                if cls == "n/a":
                    continue
                counts[cls] += 1
                surprise = cls != (expected(case) if consumer == "cli" else case.expect)
                surprises += surprise
                took = time.perf_counter() - start
                print(
                    f"{cls:8s}{'!' if surprise else ' '} {took:5.2f}s {case.name[:40]:40s} {consumer:8s} "
                    f"{detail if args.verbose else detail[:110]}",
                    flush=True,
                )
        if not args.only or args.only in "wsi geojson read back":
            start = time.perf_counter()
            cls, detail = check_geojson_out(root)
            counts[cls] += 1
            surprises += cls != "ok"
            print(
                f"{cls:8s}{'!' if cls != 'ok' else ' '} {time.perf_counter() - start:5.2f}s "
                f"{'wsi geojson read back':40s} {'read':8s} {detail[:110]}"
            )
    print(
        "\n"
        + "  ".join(f"{name}: {counts[name]}" for name in ("ok", "error", "crash", "wrong", "ignored"))
        + f"  (surprises: {surprises})"
    )


if __name__ == "__main__":
    main()
