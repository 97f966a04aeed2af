"""Census of the whole-slide files pathologists bring, through attnmap's slide reading and the
commands that use it.

Run (a minute or two on 2 shared cores; everything in a temporary folder)::

    PYTHONPATH=src:bench nice python bench/slide_files_sweep.py [--only SUBSTRING] [--no-cli] [-v]

Each case (`bench/slide_files_cases.py`, `bench/slide_files_pixel_cases.py`; written by
`bench/slide_files_writers.py`) is one file written the way a scanner, converter or user writes it:
pyramids as pages or SubIFDs, every TIFF compression, Aperio and OME-TIFF, pixel sizes in each unit,
RGBA / grey / 16-bit / palette / CMYK / CIELab / float pixels, plain images, damaged files and odd
names. Each is read by:

- ``open``: `attnmap.wsi.open_slide`: level geometry (sizes and downsamples by OpenSlide's rule),
  µm per pixel, and every level read whole, at a planted square (located in level-0 coordinates)
  and across the bottom-right edge (outside the slide: black), against the pixels written
  (transparent pixels shown white);
- ``tissue``: `segment_tissue` (a_t 0.05, a_h 0.01), its mask against the planted tissue (IoU ≥ 0.7;
  a slide without tissue must give none);
- ``view``: the viewer's Deep Zoom tiles (`attnmap.view.deepzoom.SlideTiles`): the full-resolution
  tile at the top-left corner and the one-tile overview, against the pixels written;
- ``segment`` / ``patch`` / ``features`` / ``run``: ``attnmap wsi segment | patch | features`` and a
  one-slide ``attnmap wsi run`` as typed (64-px patches, the tests' seeded 8-d TorchScript encoder and
  CLAM), the patches checked against the planted tissue (90 % must touch it).

Classes, as `bench/wsi_config_sweep.py`: ``ok``, ``error`` (a one-line `InputError` naming the
file; exit 2 at the command line), ``slide-error`` (exit 1, the slide failed with a one-line user
error in run_report.json), ``crash`` (a traceback, another exception, exit 99, several lines),
``wrong`` (read without a word, but not what was written: pixels, pixel size, level geometry,
transparent area as tissue or black). ``!`` marks a class other than the case's expectation (``ok``,
or ``error`` / ``slide-error`` for a file that must be refused).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the tests' encoder and CLAM writers
sys.path.insert(0, str(ROOT / "bench"))

from slide_files_cases import Case, cases  # noqa: E402
from slide_files_writers import MARK, TISSUE  # noqa: E402
from sweep_common import run_cli  # noqa: E402
from synthetic_slide_files import write_clam_checkpoint, write_tiny_encoder  # noqa: E402

SEGMENT = ["--a-t", "0.05", "--a-h", "0.01"]
IOU = 0.7


def attempt(fn, name: str) -> tuple[str, str, object]:
    """(class or '', detail, result): '' when fn returned."""
    from attnmap.errors import InputError

    try:
        return "", "", fn()
    except InputError as error:
        text = str(error).strip()
        if "\n" in text:
            return "crash", "multi-line: " + text.replace("\n", " | ")[:200], None
        return "error", ("" if name in text else "(names no file) ") + text[:220], None
    except Exception:  # noqa: BLE001 - a sweep records whatever escapes
        return "crash", traceback.format_exc().strip().splitlines()[-1][:200], None


def mismatch(got: np.ndarray, want: np.ndarray, tol: float) -> str:
    if got.shape != want.shape:
        return f"shape {got.shape} != {want.shape}"
    diff = np.abs(got.astype(np.int16) - want.astype(np.int16))
    if (tol == 0 and diff.max() > 0) or diff.mean() > max(tol, 0.5):
        return f"mean |diff| {diff.mean():.1f}, max {diff.max()}"
    return ""


def check_geometry(slide, case: Case) -> list[str]:
    levels = case.expect.levels
    want = [(level.shape[1], level.shape[0]) for level in levels]
    got = [tuple(d) for d in slide.level_dimensions]
    problems = []
    if got != want:
        problems.append(f"levels {got}, written {want}")
    w0, h0 = want[0]
    for index, (w, h) in enumerate(want[: len(got)]):
        rule = (w0 / w + h0 / h) / 2
        if index < slide.level_count and abs(slide.level_downsamples[index] - rule) > 1e-3 * rule:
            problems.append(f"downsample {index} {slide.level_downsamples[index]:.4f}, sizes give {rule:.4f}")
    mpp = case.expect.mpp
    if (mpp is None) != (slide.mpp is None) or (mpp is not None and abs(slide.mpp - mpp) > 1e-3 * mpp):
        problems.append(f"mpp {slide.mpp}, written {mpp}")
    return problems


def check_pixels(slide, case: Case) -> list[str]:
    problems = []
    tol = case.expect.tol
    for index, want in enumerate(case.expect.levels[: slide.level_count]):
        if tuple(slide.level_dimensions[index]) != (want.shape[1], want.shape[0]):
            continue
        got = slide.read_region((0, 0), index, slide.level_dimensions[index])
        if bad := mismatch(got, want, tol):
            problems.append(f"level {index} pixels: {bad}")
            continue
        ds = slide.level_downsamples[index]
        x, y, side = MARK
        lx, ly = int((x + side / 2) / ds) - 2, int((y + side / 2) / ds) - 2
        if lx + 4 <= want.shape[1] and ly + 4 <= want.shape[0]:  # the square, located in level-0 coords
            centre = slide.read_region((math.ceil(lx * ds), math.ceil(ly * ds)), index, (4, 4))
            if np.abs(centre.astype(float) - want[ly : ly + 4, lx : lx + 4]).mean() > max(tol, 1) * 4:
                problems.append(f"level {index}: the planted square reads {centre[2, 2].tolist()}")
        h, w = want.shape[:2]
        edge = slide.read_region((math.ceil((w - 20) * ds), math.ceil((h - 12) * ds)), index, (32, 24))
        expected = np.zeros((24, 32, 3), np.uint8)
        expected[:12, :20] = want[h - 12 :, w - 20 :]
        if bad := mismatch(edge, expected, max(tol, 1.0) * 3):
            problems.append(f"level {index} bottom-right edge: {bad}")
    return problems


def check_open(case: Case, path: Path) -> tuple[str, str, object]:
    from attnmap.wsi import open_slide

    cls, detail, slide = attempt(lambda: open_slide(path), path.name)
    if cls:
        return cls, detail, None
    if case.expect is None:
        return "wrong", f"opened, must be refused: {slide!r}"[:200], slide
    cls, detail, problems = attempt(
        lambda: check_geometry(slide, case) + check_pixels(slide, case), path.name
    )
    if cls:
        return cls, "reading: " + detail, slide
    if problems:
        return "wrong", "; ".join(problems)[:300], slide
    return "ok", f"{slide.reader}, {slide.level_count} level(s), mpp {slide.mpp}", slide


def check_tissue(case: Case, path: Path, slide) -> tuple[str, str]:
    from attnmap.wsi import segment_tissue

    cls, detail, tissue = attempt(lambda: segment_tissue(slide, a_t=0.05, a_h=0.01), path.name)
    if cls:
        return cls, detail
    mask = tissue.mask(tissue.seg_level)
    return judge_mask(mask, case)


def check_view(case: Case, path: Path, slide) -> tuple[str, str]:
    """The viewer's Deep Zoom tiles: the full-resolution corner tile and the one-tile overview."""
    import cv2

    from attnmap.view.deepzoom import SlideTiles

    def tiles():
        source = SlideTiles(slide)
        top = source.grid.level_count - 1
        overview = max(
            level for level, (cols, rows) in enumerate(source.grid.level_tiles) if cols * rows == 1
        )
        return top, np.asarray(source.image(top, 0, 0)), overview, np.asarray(source.image(overview, 0, 0))

    cls, detail, got = attempt(tiles, path.name)
    if cls:
        return cls, detail
    top, corner, overview, small = got
    want = case.expect.levels[0]
    problems = []
    if bad := mismatch(corner, want[: corner.shape[0], : corner.shape[1]], case.expect.tol):
        problems.append(f"level {top} tile (0, 0): {bad}")
    shrunk = cv2.resize(want, (small.shape[1], small.shape[0]), interpolation=cv2.INTER_AREA)
    if bad := mismatch(small, shrunk, case.expect.tol + 6):  # the viewer's own resampling
        problems.append(f"overview tile (level {overview}): {bad}")
    return ("wrong", "; ".join(problems)) if problems else ("ok", f"tiles of levels {top} and {overview}")


def truth_at(case: Case, shape: tuple[int, int]) -> np.ndarray:
    import cv2

    truth = case.expect.tissue
    if truth is None:
        truth = TISSUE
    return cv2.resize(truth.astype(np.uint8), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST) > 0


def judge_mask(mask: np.ndarray, case: Case) -> tuple[str, str]:
    truth = truth_at(case, mask.shape)
    if not truth.any():
        share = mask.mean()
        return (
            ("ok", "no tissue")
            if share < 0.01
            else ("wrong", f"{share:.0%} found as tissue on a blank slide")
        )
    iou = (mask & truth).sum() / max((mask | truth).sum(), 1)
    outside = (mask & ~truth).sum() / max(mask.sum(), 1)
    if iou < IOU:
        return "wrong", f"tissue IoU {iou:.2f} ({outside:.0%} of what was found lies outside the tissue)"
    return "ok", f"IoU {iou:.2f}"


# --------------------------------------------------------------------------------------- command line
def classify(code: int, stderr: str, out_dir: Path | None = None) -> tuple[str, str]:
    lines = [line for line in stderr.splitlines() if line.strip() and "warning:" not in line]
    if "Traceback" in stderr or code == 99:
        return "crash", (lines[-1] if lines else "traceback")[:200]
    if code == 0:
        return "ok", ""
    if code == 2:
        if len(lines) == 1 and lines[0].startswith("attnmap: error:"):
            return "error", lines[0][:220]
        return "crash", f"exit 2, {len(lines)} lines: " + " | ".join(lines)[:200]
    report = out_dir / "run_report.json" if out_dir is not None else None
    if code == 1 and report is not None and report.is_file():
        items = json.loads(report.read_text())
        items = items.get("slides", items.get("items", [])) if isinstance(items, dict) else items
        failed = [item for item in items if isinstance(item, dict) and item.get("status") == "failed"]
        text = "; ".join(f"{item.get('error_type')}: {item.get('message')}" for item in failed)
        if failed and all(
            item.get("error_type") == "InputError" and "\n" not in str(item.get("message")) for item in failed
        ):
            return "slide-error", text[:220]
        return "crash", text[:220]
    return "crash", f"exit {code}: " + " | ".join(lines)[:200]


def patch_check(case: Case, out: Path) -> tuple[str, str]:
    """Patches on the planted tissue: 90 % of them must touch it (none on a blank slide)."""
    import h5py

    files = sorted((out / "patches").glob("*.h5"))
    if not files:
        return "wrong", "exit 0 but no patches file"
    with h5py.File(files[0], "r") as handle:
        coords = handle["coords"][:]
        size = int(handle["coords"].attrs.get("patch_size", 64)) * 2 ** int(
            handle["coords"].attrs.get("patch_level", 0)
        )
    width, height = case.expect.levels[0].shape[1], case.expect.levels[0].shape[0]
    truth = truth_at(case, (height, width))
    if not len(coords):
        return ("ok", "no patches") if not truth.any() else ("wrong", "no patches on a slide with tissue")
    integral = np.pad(truth.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    x0, y0 = np.clip(coords[:, 0], 0, width), np.clip(coords[:, 1], 0, height)
    x1, y1 = np.clip(coords[:, 0] + size, 0, width), np.clip(coords[:, 1] + size, 0, height)
    tissue = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
    inside = (tissue > 0).mean()
    if inside < 0.9:
        return "wrong", f"{len(coords)} patches, {inside:.0%} touch the tissue"
    return "ok", f"{len(coords)} patches, {inside:.0%} touch the tissue"


def check_cli(case: Case, path: Path, tools: Path, work: Path) -> dict[str, tuple[str, str]]:
    results = {}
    out = work / "out"
    code, _, err = run_cli(["wsi", "segment", path, "-o", out, *SEGMENT])
    results["segment"] = classify(code, err)
    code, _, err = run_cli(["wsi", "patch", path, "-o", out, *SEGMENT, "--patch-size", "64"])
    cls, detail = classify(code, err)
    if cls == "ok" and case.expect is not None:
        cls, detail = patch_check(case, out)
    results["patch"] = (cls, detail)
    code, _, err = run_cli(
        [
            "wsi",
            "features",
            path,
            "-o",
            out,
            *SEGMENT,
            "--patch-size",
            "64",
            "--encoder",
            f"torchscript:{tools / 'encoder.pt'}",
            "--input-size",
            "32",
            "--device",
            "cpu",
            "--no-cpu-graph",
        ]
    )
    results["features"] = classify(code, err)
    (work / "slides.csv").write_text(f'slide_path,label\n"{path}",0\n')
    config = {
        "slides": {"csv": "slides.csv"},
        "segmentation": {"a_t": 0.05, "a_h": 0.01},
        "patching": {"patch_size": 64, "level": 0},
        "features": {
            "encoder": f"torchscript:{tools / 'encoder.pt'}",
            "input_size": 32,
            "batch_size": 64,
            "cpu_graph": False,
        },
        "model": {"checkpoint": str(tools / "clam.pt"), "class_names": ["normal", "tumour"]},
        "heatmap": {"alpha": 0.5, "legend": False},
        "sampling": {"top_k": 2, "bottom_k": 1},
        "run": {"output_dir": "run_out", "device": "cpu"},
    }
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    code, _, err = run_cli(["wsi", "run", work / "config.yaml"])
    results["run"] = classify(code, err, work / "run_out")
    if case.expect is None:  # a file that must be refused, read without a word
        results = {
            name: ("wrong", "read, must be refused") if cls == "ok" else (cls, detail)
            for name, (cls, detail) in results.items()
        }
    return results


def expected(case: Case, consumer: str, cls: str) -> bool:
    if case.expect is not None:
        blank = case.expect.tissue is not None and not case.expect.tissue.any()
        # a slide without tissue is refused by the commands that need patches
        if blank and consumer in ("patch", "features", "run"):
            return cls in ("ok", "error", "slide-error")
        return cls == "ok"
    return cls == "error" or (consumer == "run" and cls == "slide-error")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="run the cases whose name contains this")
    parser.add_argument("--no-cli", action="store_true", help="only the API checks")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every detail in full")
    args = parser.parse_args()
    counts: Counter = Counter()
    surprises = 0
    start_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tools = root / "tools"
        tools.mkdir()
        write_tiny_encoder(tools / "encoder.pt")
        write_clam_checkpoint(tools / "clam.pt")
        for number, case in enumerate(c for c in cases() if args.only in c.name):
            if case.skip:
                print(f"{'skipped':8s}         {case.name[:42]:42s} {case.skip}")
                continue
            work = root / f"case{number}"
            work.mkdir()
            path = work / case.filename
            case.write(path)
            start = time.perf_counter()
            results: dict[str, tuple[str, str]] = {}
            results["open"] = check_open(case, path)[:2]
            slide = None
            if results["open"][0] in ("ok", "wrong") and case.expect is not None:
                from attnmap.wsi import open_slide

                slide = open_slide(path)
                results["tissue"] = check_tissue(case, path, slide)
                results["view"] = check_view(case, path, slide)
                slide.close()
            if case.cli and not args.no_cli:
                results.update(check_cli(case, path, tools, work))
            took = time.perf_counter() - start
            for consumer, (cls, detail) in results.items():
                counts[cls] += 1
                surprise = not expected(case, consumer, cls)
                surprises += surprise
                print(
                    f"{cls:11s}{'!' if surprise else ' '} {took:5.2f}s {case.name[:42]:42s} {consumer:8s} "
                    f"{detail if args.verbose else detail[:130]}",
                    flush=True,
                )
    print(
        "\n"
        + "  ".join(f"{name}: {counts[name]}" for name in ("ok", "error", "slide-error", "crash", "wrong"))
        + f"  (surprises: {surprises}; {time.perf_counter() - start_all:.0f} s)"
    )


if __name__ == "__main__":
    main()
