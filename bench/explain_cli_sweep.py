"""Robustness sweep of `attnmap explain` and `attnmap evaluate` (and the `attnmap.explain` API edges
they call): every option at boundary and wrong values, odd input folders and names, output folders
in odd places, reruns with one option changed, leftovers of an interrupted run.

Run (about a minute on 2 shared cores; everything in a temporary folder)::

    PYTHONPATH=src nice python bench/explain_cli_sweep.py [--only SECTIONS] [--keep DIR] [-v]

(sections: api, explain, inputs, reruns, evaluate; all by default)

Builds tiny seeded models saved as files the CLI loads (a 2-block timm ViT at 32 px with weights
files of two seeds, a headless one and one with token outputs, the same saved as a
``timm:FOLDER``, a Hugging Face ViT folder from a tiny config, the bundled shapes ViT) and image
folders (`explain_sweep_fixtures`), then runs each case (`explain_sweep_api`; `_cases`: the
options; `_inputs`; `_reruns`; `_evaluate`) through `attnmap.cli.main.main([...])` in this
process, in its own output folder, and classifies it:

- ``ok``       exit 0, and every check on the output folder held;
- ``error``    exit 2 with one ``attnmap: error:`` line (no traceback);
- ``crash``    a traceback, an ``internal error`` (exit 1), another exit status or several lines;
- ``stale``    a rerun into the folder of a finished run, with one option changed, leaves a file
               that differs from a fresh run's with that option (a file the fresh run writes is
               missing or other), a picture whose record is not its map's (drawn for another target,
               method option, model or image than the ``.npy`` beside it), or an interrupted run's
               temporaries. Outputs of other methods or other images kept from the earlier run are
               not stale: a folder collects the maps of several runs (each its own file);
- ``ignored``  a valid option value that changed no output compared with the case's base run;
- ``wrong``    a map with NaN/inf or not 2-D, an unreadable picture, an input without maps, a
               map recorded for a file that was not given, two inputs' maps on one name (fewer maps
               than inputs × methods), an input that should be refused but ran;
- ``outside``  the case wrote a file outside its output folder (the working folder is the sweep's).

Prints one line per case (``CLASS ! seconds case detail``; ``!`` marks a class other than the one
the case expects) and a table of counts per section and class.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import explain_sweep_harness as harness  # noqa: E402
from explain_sweep_fixtures import build_images, build_models  # noqa: E402


def _is_record(name: str) -> bool:
    """Records (JSON sidecars) say how a file was made: an option that only changes them changed nothing."""
    return name.endswith(".json")


class Sweep:
    """Runs cases in ``root`` (the working folder) and records their classes."""

    def __init__(self, root: Path, models: dict, images: dict, recorder: harness.Recorder) -> None:
        self.root, self.models, self.images, self.rec = root, models, images, recorder
        self.count = 0

    def out(self, name: str | None = None) -> Path:
        self.count += 1
        return self.root / "outs" / (name or f"out_{self.count:03d}")

    def explain(
        self,
        name: str,
        inputs: list,
        args: list,
        *,
        model: str = "timm",
        out: Path | str | None = None,
        expect: str | None = "ok",
        expected_inputs: list[Path] | None = None,
        n_methods: int | None = 1,
        effect_vs: Path | None = None,
        record: bool = True,
        check=None,
    ) -> tuple[str, str, Path]:
        """One `attnmap explain` run; ``expected_inputs``: the image files whose maps it must write
        (default: ``inputs`` when they are all files); ``effect_vs``: a base run's folder that this
        run's outputs must differ from (an option that changes the pictures)."""
        out = out if out is not None else self.out()
        given = "" if out == "" else str(out)  # "": the empty string as --out
        skip = [Path(given)] if given else []
        before = harness.snapshot(self.root, skip=skip)
        argv = ["explain", *map(str, inputs), *self.models.get(model, []), *args, "--out", given]
        code, _, stderr = harness.call(argv)
        cls, detail = harness.classify_exit(code, stderr)
        after = harness.snapshot(self.root, skip=skip)
        outside = harness.written_outside(before, after, Path(given) if given else None, self.root)
        out = Path(given)
        if cls == "ok":
            if expected_inputs is None and all(Path(p).is_file() for p in inputs):
                expected_inputs = [Path(p) for p in inputs]
            problems = harness.check_explain_folder(out, expected_inputs, n_methods)
            problems += check(out) if check is not None else []
            stale = [p for p in problems if p.startswith("stale:")]
            if problems:
                cls, detail = (
                    ("stale" if stale and len(stale) == len(problems) else "wrong"),
                    "; ".join(problems),
                )
            elif effect_vs is not None and not harness.diff_folders(effect_vs, out, ignore=_is_record):
                cls, detail = "ignored", "outputs identical to the base run"
        if outside:
            cls, detail = "outside", f"wrote {', '.join(outside[:3])} outside --out"
        if self.rec.verbose and cls == "crash":
            print(stderr[-2500:])
        if record:
            self.rec.record(cls, name, detail, expect)
        return cls, detail, out

    def rerun(
        self,
        name: str,
        inputs: list,
        first: list,
        second: list,
        *,
        model: str = "timm",
        model2: str | None = None,
        n_methods: int | None = None,
        between=None,
    ) -> str:
        """Run ``first`` then ``second`` into one folder; compare it with a fresh run of ``second``."""
        folder, clean = self.out(), self.out()
        cls, detail, _ = self.explain(
            name, inputs, first, model=model, out=folder, record=False, n_methods=None
        )
        if cls != "ok":
            return self.rec.record("crash", name, f"first run: {cls} {detail}")
        if between is not None:
            between(folder)
        model2 = model2 or model
        cls, detail, _ = self.explain(
            name, inputs, second, model=model2, out=folder, record=False, n_methods=None
        )
        if cls not in ("ok", "stale"):
            return self.rec.record(cls, name, f"second run: {detail}")
        cls2, detail2, _ = self.explain(
            name, inputs, second, model=model2, out=clean, record=False, n_methods=None
        )
        if cls2 != "ok":
            return self.rec.record(cls2, name, f"fresh run: {detail2}")
        differ, kept = harness.diff_explain_folders(folder, clean)
        problems = [p for p in harness.check_explain_folder(folder, None, None) if p.startswith("stale:")]
        leftovers = [p.name for p in folder.rglob("*") if "attnmap-tmp-" in p.name]
        if differ or problems or leftovers:
            shown = [f"differs from a fresh run: {', '.join(differ[:3])}"] if differ else []
            shown += problems[:2] + ([f"temporaries left: {', '.join(leftovers[:2])}"] if leftovers else [])
            return self.rec.record("stale", name, "; ".join(shown), "ok")
        return self.rec.record("ok", name, f"(kept {kept} maps of other runs)" if kept else "", "ok")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only", default="api,explain,inputs,reruns,evaluate", help="comma-separated sections"
    )
    parser.add_argument("--keep", type=Path, default=None, help="work in this folder (kept)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print the stderr of crashes")
    args = parser.parse_args()
    import warnings

    import torch

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    start = time.perf_counter()
    root = (args.keep or Path(tempfile.mkdtemp(prefix="attnmap-explain-sweep-"))).resolve()
    root.mkdir(parents=True, exist_ok=True)
    cache = Path(tempfile.mkdtemp(prefix="attnmap-explain-sweep-cache-"))
    os.environ["ATTNMAP_CACHE_DIR"] = str(cache)  # remembered hashes: not the user's, not in root
    os.chdir(root)  # a case that writes into the working folder writes into the sweep's
    models, images = build_models(root), build_images(root)
    recorder = harness.Recorder(args.verbose)
    sweep = Sweep(root, models, images, recorder)
    from explain_sweep_api import api_cases
    from explain_sweep_cases import option_cases
    from explain_sweep_evaluate import evaluate_cases
    from explain_sweep_inputs import input_cases
    from explain_sweep_reruns import rerun_cases

    sections_by_name = {
        "api": api_cases,
        "explain": option_cases,
        "inputs": input_cases,
        "reruns": rerun_cases,
        "evaluate": evaluate_cases,
    }

    sections = [name.strip() for name in args.only.split(",") if name.strip()]
    for section in sections:
        recorder.section = section
        print(f"--- {section}", flush=True)
        sections_by_name[section](sweep)
    counts = Counter((section, cls) for cls, section, _, _ in recorder.results)
    print(f"\n{'section':<10}" + "".join(f"{c:>9}" for c in harness.CLASSES) + f"{'total':>9}")
    for section in sections:
        row = [counts[(section, c)] for c in harness.CLASSES]
        print(f"{section:<10}" + "".join(f"{n:>9}" for n in row) + f"{sum(row):>9}")
    total = Counter(cls for cls, _, _, _ in recorder.results)
    print(f"{'all':<10}" + "".join(f"{total[c]:>9}" for c in harness.CLASSES) + f"{len(recorder.results):>9}")
    print(f"{len(recorder.results)} cases in {time.perf_counter() - start:.0f} s")
    for path in root.rglob("*"):  # the unreadable fixture, so that the folder can be removed
        if path.is_file() and not path.is_symlink():
            path.chmod(0o644)
    if args.keep is None:
        shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    main()
