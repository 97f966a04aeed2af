"""Census sweep of the drawing and whole-slide Python API a user calls directly (not the CLI).

Run (seconds; everything in a temporary folder)::

    PYTHONPATH=src python bench/drawing_api_sweep.py [--only SUBSTRING] [-v]

Cases (`bench/drawing_api_cases_render.py`: `attnmap.normalize`, `upsample`,
`attnmap.render.apply_colormap`; `_overlay.py`: `overlay`, `save_grid`; `_slides.py`: `ArraySlide`,
`segment_tissue`, `patch_grid`, `heatmap_center_shift`, `to_percentiles`, `percentiles_against`;
`_wsi.py`: `render_heatmap`, `HeatmapRenderer`, `HeatmapStyle`, `write_heatmap_tiff`,
`write_pyramid_tiff`; `_files.py`: `save_scores_h5` / `load_scores_h5`, `sample_patches`,
`save_patch_samples`, `save_features` / `load_features`; `_more.py`: a two-level slide, the
drawing options, reduced TIFF pages, odd sizes) feed each function what users pass: maps
as numpy and torch in every dtype and layout, NaN and infinities, signed relevance, images as PIL
modes, tensors and floats, scores and coordinates that do not fit, slides of odd pixels, paths
that are folders or whose folder is missing.

Classes: ``ok`` (a result, and it matches an expectation the sweep computes itself: a planted hot
patch is hottest where it was planted, an upsampled map keeps its argmax, NaN is not drawn as the
maximum, a file reads back equal), ``error`` (an `attnmap.InputError` of one line naming the
problem), ``crash`` (any other exception, or a multi-line `InputError`), ``wrong`` (a result that is
not what the call promised, or a silently accepted input that can only be drawn wrong). ``!`` marks
a class the case does not accept (each case lists what it accepts: usually ``ok``, or ``error``
for inputs with no right picture).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

CLASSES = ("ok", "error", "crash", "wrong")


@dataclass
class Case:
    """One call: ``call(folder)`` returns a result that ``check(result)`` judges (None: right;
    else what is wrong). ``accept``: the classes that are right for this input."""

    api: str
    name: str
    call: Callable[[Path], object]
    check: Callable[[object], str | None]
    accept: tuple[str, ...] = ("ok",)


def refuse(result: object) -> str:
    """The check of an input with no right result: any result is wrong."""
    shape = getattr(result, "shape", None)
    return f"accepted silently ({type(result).__name__}{'' if shape is None else ' ' + str(tuple(shape))})"


def run_case(case: Case, folder: Path) -> tuple[str, str]:
    from attnmap.errors import InputError

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = case.call(folder)
        except InputError as error:
            text = str(error).strip()
            if "\n" in text or "Traceback" in text:
                return "crash", "multi-line InputError: " + text.replace("\n", " | ")[:150]
            return "error", text
        except Exception:  # noqa: BLE001 - a sweep records whatever escapes
            return "crash", traceback.format_exc().strip().splitlines()[-1]
    try:
        problem = case.check(result)
    except Exception:  # noqa: BLE001 - a result the check cannot even read is wrong
        problem = "result unreadable: " + traceback.format_exc().strip().splitlines()[-1]
    said = "; ".join(str(w.message).splitlines()[0] for w in caught)[:100]
    if problem:
        return "wrong", problem
    return "ok", f"(warned: {said})" if said else ""


def main() -> None:
    import torch

    torch.set_num_threads(1)
    from drawing_api_cases_more import more_cases
    from drawing_api_cases_render import render_cases
    from drawing_api_cases_wsi import wsi_cases

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="run the cases whose api or name contains this")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every detail in full")
    args = parser.parse_args()
    counts: Counter = Counter()
    by_api: dict[str, Counter] = {}
    surprises = 0
    start_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cases = [*render_cases(), *wsi_cases(root / "shared"), *more_cases()]
        for index, case in enumerate(c for c in cases if args.only in f"{c.api} {c.name}"):
            folder = root / f"case{index}"
            folder.mkdir(parents=True)
            start = time.perf_counter()
            cls, detail = run_case(case, folder)
            counts[cls] += 1
            by_api.setdefault(case.api, Counter())[cls] += 1
            surprise = cls not in case.accept
            surprises += surprise
            print(
                f"{cls:6s}{'!' if surprise else ' '} {time.perf_counter() - start:5.2f}s {case.api[:20]:20s} "
                f"{case.name[:44]:44s} {detail if args.verbose else detail[:100]}",
                flush=True,
            )
    print()
    for api, counter in by_api.items():
        print(f"  {api:22s} " + "  ".join(f"{name}: {counter[name]}" for name in CLASSES))
    print(
        "\n"
        + "  ".join(f"{name}: {counts[name]}" for name in CLASSES)
        + f"  (cases: {sum(counts.values())}, surprises: {surprises}, "
        f"{time.perf_counter() - start_all:.1f} s)"
    )


if __name__ == "__main__":
    main()
