"""Robustness sweep of the whole-slide command line: `attnmap wsi run` and the single-slide commands
over many configurations nobody tried (boundary and wrong values of every key, odd paths, reruns).

Run (about 5-8 minutes on 2 shared cores; everything in a temporary folder)::

    PYTHONPATH=src nice python bench/wsi_config_sweep.py [--only SUBSTRING] [--keep DIR] [-v]

Builds a tiny cohort (three 1024×768 synthetic TIFF slides: one with fewer levels, one without a
pixel size; a seeded 8-d TorchScript encoder; a seeded CLAM), then runs each case through
`attnmap.cli.main.main([...])` in this process, catching SystemExit and capturing stdout/stderr.

Each case is classified:

- ``ok``: exit 0 (for a case that changes a valid key, its outputs are also compared with the base
  run's: identical outputs are ``ignored`` unless the case says the key is documented not to change
  them).
- ``error``: exit 2 with a single ``attnmap: error:`` line on stderr, no traceback. A run where every
  failing slide failed with a one-line user error (exit 1, run_report.json) is ``slide-error``.
- ``crash``: a traceback, an ``internal error``, a slide failed with an unexpected exception type,
  or a multi-line message.
- ``stale``: a rerun into a copy of a complete run, after one key changed, gives other files than a
  fresh run with the new configuration (h5 datasets, PNG/TIFF pixels, JSON minus timestamps and the
  output folder's path).
- ``ignored``: a valid key change that changed no output (the three left are documented as such:
  percentiles with a non-clam scale, threshold < 0 without binarize, canvas_color without
  blank_canvas).
- ``wrong``: a run that wrote its outputs into the working folder instead of an output folder.

``--records`` also compares h5 attributes and PNG text. Off by default: those records say how the
file was made, and a file kept on a rerun (e.g. features after ``features.save_pt`` changed, a
heatmap PNG after ``heatmap.tiff`` changed) keeps the record of the run that made it.

Prints one line per case (``CLASS  seconds  case  detail``) and a table of counts per class at the end.
``expect`` in a case is only what the sweep reports beside it (``!`` marks a surprise): a key that
should be refused but ran, or a valid one that was refused.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the tests' slide writers

from sweep_common import equal, normalise, run_cli  # noqa: E402
from synthetic_slide_files import write_clam_checkpoint, write_test_slide, write_tiny_encoder  # noqa: E402

SKIP_FILES = {"run_report.json", ".attnmap.lock"}


def build_cohort(root: Path) -> dict:
    """Slides (3 levels; 2 levels; 3 levels without mpp), CSV, encoder, CLAM; the base config dict."""
    write_test_slide(root / "slides" / "a.tif", seed=0, n_levels=3)
    write_test_slide(root / "slides" / "b.tif", seed=1, n_levels=2)
    write_test_slide(root / "slides" / "c.tif", seed=2, n_levels=3, mpp=None)
    (root / "slides.csv").write_text("slide_id,label\na,0\nb,1\nc,0\n")
    write_tiny_encoder(root / "encoder.pt")
    write_clam_checkpoint(root / "clam.pt")
    return {
        "slides": {"csv": "slides.csv", "data_dir": "slides", "extension": ".tif"},
        "segmentation": {"level": 1, "a_t": 0.05, "a_h": 0.01},
        "patching": {"patch_size": 64, "level": 0},
        "features": {"encoder": "torchscript:encoder.pt", "input_size": 32, "batch_size": 32},
        "model": {"checkpoint": "clam.pt", "class_names": ["normal", "tumour"]},
        "heatmap": {"vis_level": 1, "alpha": 0.5, "legend": False},
        "sampling": {"top_k": 3, "bottom_k": 2},
        "run": {"output_dir": "out_base", "device": "cpu"},
    }


def call(argv: list[str]) -> tuple[int, str, str]:
    """Run the CLI in this process: (exit status, stdout, stderr)."""
    return run_cli(argv)


def classify(code: int, stdout: str, stderr: str, out_dir: Path | None) -> tuple[str, str]:
    lines = [line for line in stderr.splitlines() if line.strip() and "warning:" not in line]
    if "Traceback" in stderr or code == 99:
        return "crash", (lines[-1] if lines else "traceback")[:200]
    if code == 0:
        return "ok", ""
    if code == 2 or (code != 1 and code != 0):
        if len(lines) == 1 and lines[0].startswith("attnmap: error:"):
            return "error", lines[0][:200]
        return "crash", f"exit {code}, {len(lines)} line(s): " + " | ".join(lines)[:200]
    if "internal error" in stderr:
        return "crash", next(line for line in lines if "internal error" in line)[:200]
    report = out_dir / "run_report.json" if out_dir is not None else None
    if report is not None and report.is_file():
        failed = [
            item for item in _report_items(json.loads(report.read_text())) if item.get("status") == "failed"
        ]
        kinds = {item.get("error_type") for item in failed}
        text = "; ".join(
            f"{item.get('item')}: {item.get('error_type')}: {item.get('message')}" for item in failed
        )
        if failed and kinds <= {"InputError", "FileNotFoundError", "IsADirectoryError", "NotADirectoryError"}:
            return "slide-error", text[:200]
        return "crash", text[:200]
    return "crash", f"exit {code}: " + " | ".join(lines)[:200]


def _report_items(report: object) -> list[dict]:
    if isinstance(report, dict):
        for key in ("items", "slides", "results"):
            if isinstance(report.get(key), list):
                return report[key]
        return [value for value in report.values() if isinstance(value, dict) and "status" in value]
    return report if isinstance(report, list) else []


# --- comparing two output folders ------------------------------------------------------------------


RECORDS = False  # --records: also compare h5 attributes and PNG text (provenance records)


def _records(values: dict) -> dict:
    """Attribute values as plain data, JSON text decoded (a provenance record's nested keys)."""
    plain: dict = {}
    for key, value in values.items():
        value = value.tolist() if isinstance(value, np.ndarray | np.generic) else value
        value = value.decode() if isinstance(value, bytes) else value
        if isinstance(value, str) and value[:1] in "{[":
            with contextlib.suppress(ValueError):
                value = json.loads(value)
        plain[key] = value
    return plain


def _content(path: Path, folder: str) -> object:
    suffix = path.suffix.lower()
    if suffix == ".h5":
        import h5py

        found: dict = {}
        with h5py.File(path, "r") as handle:

            def visit(name: str, item: object) -> None:
                if isinstance(item, h5py.Dataset):
                    found[name] = np.asarray(item[()])
                if RECORDS:
                    found[name + "@attrs"] = normalise(_records(dict(item.attrs)), folder)

            handle.visititems(visit)
            if RECORDS:
                found["@attrs"] = normalise(_records(dict(handle.attrs)), folder)
        return found
    if suffix == ".png":
        from PIL import Image

        with Image.open(path) as image:
            pixels = np.asarray(image)
            text = dict(getattr(image, "text", {}))
        return [pixels, normalise(_records(text), folder)] if RECORDS else pixels
    if suffix in (".tif", ".tiff"):
        import tifffile

        with tifffile.TiffFile(path) as tif:
            return [page.asarray() for page in tif.pages]
    if suffix in (".json", ".geojson"):
        return normalise(json.loads(path.read_text()), folder)
    if suffix == ".pt":
        import torch

        data = torch.load(path, map_location="cpu", weights_only=False)
        return data.numpy() if hasattr(data, "numpy") else data
    if suffix == ".csv":
        return path.read_text().replace(folder, "<OUT>")
    return path.read_bytes()


def diff_folders(one: Path, two: Path) -> list[str]:
    """Relative paths whose content differs (or exists on one side only)."""

    def files(folder: Path) -> set[str]:
        return {
            str(p.relative_to(folder))
            for p in folder.rglob("*")
            if p.is_file() and p.name not in SKIP_FILES and ".tmp" not in p.name
        }

    left, right = files(one), files(two)
    differ = sorted(left ^ right)
    for name in sorted(left & right):
        try:
            if not equal(_content(one / name, str(one)), _content(two / name, str(two))):
                differ.append(name)
        except Exception as error:  # noqa: BLE001
            differ.append(f"{name} (unreadable: {error})")
    return differ


# --- the cases -------------------------------------------------------------------------------------


class Sweep:
    def __init__(self, root: Path, base: dict, verbose: bool) -> None:
        self.root, self.base, self.verbose = root, base, verbose
        self.results: list[tuple[str, str, str]] = []
        self.count = 0
        self.last = time.perf_counter()

    def config(self, changes: dict | None = None, raw: object = None, name: str = "") -> tuple[Path, Path]:
        """Write a config (the base with ``changes``: section -> {key: value | DELETE}) beside the cohort."""
        self.count += 1
        out = f"out_{self.count:03d}"
        if raw is None:
            data = json.loads(json.dumps(self.base))
            data["run"]["output_dir"] = out
            for section, values in (changes or {}).items():
                if values is DELETE:
                    data.pop(section, None)
                elif not isinstance(values, dict):
                    data[section] = values
                else:
                    target = data.setdefault(section, {})
                    if not isinstance(target, dict):
                        data[section] = target = {}
                    for key, value in values.items():
                        if value is DELETE:
                            target.pop(key, None)
                        else:
                            target[key] = value
            text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
        else:
            text = raw if isinstance(raw, str) else yaml.safe_dump(raw)
        path = self.root / f"config_{self.count:03d}.yaml"
        path.write_text(text, encoding="utf-8")
        return path, self.root / out

    def record(self, cls: str, name: str, detail: str, expect: str | None = None) -> None:
        surprise = expect is not None and cls != expect and not (expect == "error" and cls == "slide-error")
        self.results.append((cls, name, detail))
        now = time.perf_counter()
        took, self.last = now - self.last, now
        print(f"{cls:11s} {'!' if surprise else ' '} {took:5.1f}s {name:50s} {detail}", flush=True)

    def run(
        self,
        name: str,
        changes: dict | None = None,
        *,
        raw: object = None,
        expect: str | None = None,
        effect: bool | None = None,
        extra: tuple = (),
    ) -> tuple[str, Path]:
        """One `wsi run`; ``effect``: True if the change must alter some output (checked against base)."""
        path, out = self.config(changes, raw)
        code, stdout, stderr = call(["wsi", "run", str(path), *extra])
        cls, detail = classify(code, stdout, stderr, out)
        if cls == "ok" and effect is not None and self.base_out is not None:
            differ = diff_folders(self.base_out, out)
            if effect and not differ:
                cls, detail = "ignored", "outputs identical to the base run"
            elif not effect and differ:
                detail = f"(differs: {', '.join(differ[:3])})"
        strays = [
            part for part in ("tissue", "patches", "features", "heatmaps") if (self.root / part).exists()
        ]
        if strays:  # the run wrote into the working folder, not an output folder of its own
            cls, detail = "wrong", f"wrote {', '.join(strays)} into the working folder"
            for part in strays:
                shutil.rmtree(self.root / part)
        if self.verbose and cls == "crash":
            print(stderr[-2000:])
        self.record(cls, name, detail, expect)
        return cls, out

    def rerun(self, name: str, changes: dict) -> None:
        """Copy the complete base run, rerun with ``changes``; compare against a fresh run."""
        path, out = self.config(changes)
        shutil.copytree(self.base_out, out)
        code, stdout, stderr = call(["wsi", "run", str(path)])
        cls, detail = classify(code, stdout, stderr, out)
        if cls == "ok":
            fresh_path, fresh = self.config(changes)
            code2, out2, err2 = call(["wsi", "run", str(fresh_path)])
            cls2, detail2 = classify(code2, out2, err2, fresh)
            if cls2 != "ok":
                cls, detail = cls2, "fresh: " + detail2
            else:
                differ = diff_folders(out, fresh)
                if differ:
                    cls, detail = (
                        "stale",
                        ", ".join(differ[:4]) + (f" (+{len(differ) - 4})" if len(differ) > 4 else ""),
                    )
                elif not diff_folders(self.base_out, fresh):
                    cls, detail = "ignored", "rerun and fresh both equal the base run"
        self.record(cls, "rerun " + name, detail)

    def cli(self, name: str, argv: list[str], expect: str | None = None) -> None:
        code, stdout, stderr = call(argv)
        cls, detail = classify(code, stdout, stderr, None)
        if self.verbose and cls == "crash":
            print(stderr[-2000:])
        self.record(cls, name, detail, expect)


DELETE = object()
HUGE = 10**9


def section_cases(s: Sweep) -> None:
    r = s.run
    # top level
    r("empty file", raw="", expect="error")
    r("list at top", raw="- 1\n- 2\n", expect="error")
    r("scalar at top", raw="42\n", expect="error")
    r("unknown section", {"sampler": {"top_k": 1}}, expect="error")
    r("section is a list", {"sampling": [1, 2]}, expect="error")
    r("section is a string", {"export": "geojson"}, expect="error")
    r("section null (defaults)", {"export": None}, expect="ok")
    r("duplicate key", raw="slides: {csv: slides.csv}\nslides: {csv: x.csv}\n", expect="error")
    r("tab-indented yaml", raw="slides:\n\tcsv: slides.csv\n", expect="error")
    # slides
    r("slides.csv missing", {"slides": {"csv": DELETE}}, expect="error")
    r("slides.csv nonexistent", {"slides": {"csv": "nope.csv"}}, expect="error")
    r("slides.csv a directory", {"slides": {"csv": "slides"}}, expect="error")
    r("slides.csv number", {"slides": {"csv": 5}}, expect="error")
    r("slides.csv null", {"slides": {"csv": None}}, expect="error")
    r("slides.csv empty file", {"slides": {"csv": "empty.csv"}}, expect="error")
    r("slides.csv header only", {"slides": {"csv": "header.csv"}}, expect="error")
    r("slides.csv wrong columns", {"slides": {"csv": "wrongcols.csv"}}, expect="error")
    r("slides.csv duplicate ids", {"slides": {"csv": "dups.csv"}}, expect="error")
    r("slides.csv missing slide", {"slides": {"csv": "missing.csv"}}, expect="error")
    r("slides.csv binary file", {"slides": {"csv": "clam.pt"}}, expect="error")
    r(
        "slides.csv path with spaces+unicode",
        {"slides": {"csv": "dir é ü/slides list.csv", "data_dir": "slides"}},
        expect="ok",
    )
    r("slides.data_dir nonexistent", {"slides": {"data_dir": "nowhere"}}, expect="error")
    r("slides.data_dir a file", {"slides": {"data_dir": "slides.csv"}}, expect="error")
    r("slides.data_dir absolute", {"slides": {"data_dir": str(s.root / "slides")}}, expect="ok")
    r("slides.extension without dot", {"slides": {"extension": "tif"}}, expect="error")
    r("slides.extension wrong", {"slides": {"extension": ".svs"}}, expect="error")
    r("slides.extension number", {"slides": {"extension": 1}}, expect="error")
    r("slides typo key", {"slides": {"datadir": "slides"}}, expect="error")
    # segmentation
    for key, values in {
        "level": [0, -1, 99, "1", 1.0, None],
        "sthresh": [0, -1, 255, HUGE, "8", None],
        "mthresh": [1, 2, 0, -3, 9999, 7.0],
        "close": [0, -1, HUGE],
        "use_otsu": [True, "yes", 1],
        "a_t": [0, -1, 1e9, "x"],
        "a_h": [0, -0.5, 1e9],
        "max_n_holes": [0, -1, HUGE],
        "preset": ["tcga", "bwh_biopsy", "nope", 3],
    }.items():
        for value in values:
            r(f"segmentation.{key}={value!r}", {"segmentation": {key: value}})
    r("segmentation typo key", {"segmentation": {"sthres": 8}}, expect="error")
    r("segmentation preset conflict", {"segmentation": {"preset": "tcga", "sthresh": 200}}, expect="error")
    # patching
    for key, values in {
        "patch_size": [0, -64, 1, 16, 2048, HUGE, "64", 64.0, None],
        "step": [0, -1, 16, 32, 128, HUGE, None],
        "level": [1, 2, 99, -1],
        "contour_check": ["four_pt_hard", "center", "basic", "nope", None],
        "padding": [False, "no"],
    }.items():
        for value in values:
            r(f"patching.{key}={value!r}", {"patching": {key: value}})
    r("patching.roi_annotations missing folder", {"patching": {"roi_annotations": "noroi"}}, expect="error")
    r("patching.roi_annotations a file", {"patching": {"roi_annotations": "slides.csv"}}, expect="error")
    r("patching.roi_annotations empty folder", {"patching": {"roi_annotations": "emptydir"}}, expect="error")
    r(
        "patching.roi_annotations geojson",
        {"patching": {"roi_annotations": "roi é"}},
        expect="ok",
        effect=True,
    )
    r("patching.roi_annotations broken geojson", {"patching": {"roi_annotations": "roibad"}}, expect="error")
    r("patching typo key", {"patching": {"patchsize": 64}}, expect="error")
    # features
    for key, values in {
        "encoder": [
            "",
            "nope",
            "timm:not_a_model",
            "encoder.pt",
            "slides",
            "torchscript:missing.pt",
            "torchscript:slides",
            3,
        ],
        "checkpoint": ["missing.pt", "clam.pt", "slides"],
        "input_size": [0, 7, 8, 9, 33, "32", 32.5],
        "encoder_args": [[], "x", {"a": 1}, None],
        "batch_size": [0, -1, 1, HUGE, "32"],
        "num_workers": [-1, 1, "0"],
        "seed": [-1, 1, HUGE * HUGE, "0", 1.5],
        "precision": ["bfloat16", "float16", "float64", "half"],
        "cpu_graph": [False, "false"],
        "save_pt": [False, 0],
    }.items():
        for value in values:
            r(f"features.{key}={value!r}", {"features": {key: value}})
    r("features typo key", {"features": {"batchsize": 4}}, expect="error")
    # model
    r("model.checkpoint missing", {"model": {"checkpoint": "nope.pt"}}, expect="error")
    r("model.checkpoint a directory", {"model": {"checkpoint": "slides"}}, expect="error")
    r("model.checkpoint the encoder", {"model": {"checkpoint": "encoder.pt"}}, expect="error")
    r("model.checkpoint a csv", {"model": {"checkpoint": "slides.csv"}}, expect="error")
    r("model.checkpoint 16-d CLAM", {"model": {"checkpoint": "clam16.pt"}}, expect="error")
    r("model.checkpoint MB", {"model": {"checkpoint": "clam_mb.pt"}}, expect="ok")
    r("model.class_names 3 names", {"model": {"class_names": ["a", "b", "c"]}}, expect="error")
    r("model.class_names empty", {"model": {"class_names": []}}, expect="ok")
    r("model.class_names numbers", {"model": {"class_names": [1, 2]}}, expect="error")
    r("model.class_names string", {"model": {"class_names": "a,b"}}, expect="error")
    r("model.class_names duplicates", {"model": {"class_names": ["a", "a"]}}, expect="error")
    r(
        "model.class_names unicode",
        {"model": {"class_names": ["gesund é", "Tumör, 腫瘍"]}},
        expect="ok",
        effect=True,
    )
    # heatmap
    from attnmap.wsi.pipeline.config import HeatmapConfig

    defaults = {
        key: list(value) if isinstance(value, tuple) else value
        for key, value in HeatmapConfig().__dict__.items()
    }
    for key, values in {
        "vis_level": [-1, 0, 2, 99, -2, "1"],
        "cmap": ["viridis", "opencv:jet", "opencv:nope", "nope", "", None],
        "alpha": [0, 1, 1.5, -0.1, "0.5"],
        "percentiles": [False],
        "scale": ["minmax", "clam", "nope"],
        "blur": [True],
        "binarize": [True],
        "threshold": [0.5, -1, 2.0],
        "blank_canvas": [True],
        "canvas_color": [[0, 0, 0], [256, 0, 0], [1, 2], "red"],
        "use_tissue_mask": [False],
        "overlap": [0.0, 0.5, 0.99, 1.0, -0.5],
        "roi": [
            [[0, 0], [512, 512]],
            [[512, 512], [0, 0]],
            [[0, 0], [99999, 99999]],
            [[2000, 2000], [3000, 3000]],
            [0, 0, 512, 512],
        ],
        "downscale": [0.5, 1, 2, 1000],
        "save_original": [True],
        "tiff": [True],
        "tiff_level": [1, 2, 99, -1],
        "legend": [True],
        "fine": [{}, {"method": "nope"}, {"method": "lrp", "top_k": 2}, "lrp"],
    }.items():
        for value in values:
            default = {"vis_level": 1, "alpha": 0.5, "legend": False}.get(key, defaults.get(key))
            r(
                f"heatmap.{key}={value!r}",
                {"heatmap": {key: value}},
                effect=None if value == default else True,
            )
    for level in (0, 1, 2):
        r(f"heatmap tiff on, tiff_level={level}", {"heatmap": {"tiff": True, "tiff_level": level}})
    r("heatmap binarize+threshold 0.9", {"heatmap": {"binarize": True, "threshold": 0.9}}, effect=True)
    r("heatmap binarize+threshold 0", {"heatmap": {"binarize": True, "threshold": 0.0}}, effect=True)
    r("heatmap blur+overlap 0.5", {"heatmap": {"blur": True, "overlap": 0.5}}, effect=True)
    r("heatmap typo key", {"heatmap": {"vislevel": 1}}, expect="error")
    # sampling
    for key, values in {"top_k": [0, 1, HUGE, -1, "3", None], "bottom_k": [0, HUGE, -1]}.items():
        for value in values:
            r(f"sampling.{key}={value!r}", {"sampling": {key: value}})
    # export
    r("export.geojson on", {"export": {"geojson": True}}, effect=True)
    r("export.geojson on, no tissue", {"export": {"geojson": True, "geojson_tissue": False}}, effect=True)
    r("export.geojson_tissue alone", {"export": {"geojson_tissue": False}}, effect=False)
    r("export.geojson 'yes'", {"export": {"geojson": "yes"}}, expect="error")
    # run
    r("run.device cuda:x", {"run": {"device": "cuda:x"}}, expect="error")
    r("run.device gpu", {"run": {"device": "gpu"}}, expect="error")
    r("run.device cuda (none here)", {"run": {"device": "cuda"}}, expect="error")
    r("run.workers 0", {"run": {"workers": 0}}, expect="error")
    r("run.output_dir spaces+unicode", {"run": {"output_dir": "out dir é"}}, expect="ok")
    r("run.output_dir is a file", {"run": {"output_dir": "slides.csv"}}, expect="error")
    r("run.output_dir empty", {"run": {"output_dir": ""}}, expect="error")
    r("run.scheduler bogus", {"run": {"scheduler": "not-an-address"}}, expect="error")
    r("run typo key", {"run": {"worker": 2}}, expect="error")
    r("--device gpu on the line", None, extra=("--device", "gpu"), expect="error")
    r("--workers 0 on the line", None, extra=("--workers", "0"), expect="error")


def rerun_cases(s: Sweep) -> None:
    for name, changes in [
        ("patching.patch_size 64->128", {"patching": {"patch_size": 128}}),
        ("patching.step 32", {"patching": {"step": 32}}),
        ("patching.contour_check center", {"patching": {"contour_check": "center"}}),
        ("segmentation.sthresh 20", {"segmentation": {"sthresh": 20}}),
        ("features.seed 1", {"features": {"seed": 1}}),
        ("features.input_size 16", {"features": {"input_size": 16}}),
        ("features.save_pt off", {"features": {"save_pt": False}}),
        ("model.class_names", {"model": {"class_names": ["x", "y"]}}),
        ("model.checkpoint other seed", {"model": {"checkpoint": "clam_seed1.pt"}}),
        ("heatmap.cmap viridis", {"heatmap": {"cmap": "viridis"}}),
        ("heatmap.overlap 0.5", {"heatmap": {"overlap": 0.5}}),
        ("heatmap.tiff on", {"heatmap": {"tiff": True}}),
        ("heatmap.save_original on", {"heatmap": {"save_original": True}}),
        ("heatmap.legend on", {"heatmap": {"legend": True}}),
        ("heatmap.vis_level 0", {"heatmap": {"vis_level": 0}}),
        ("heatmap.roi", {"heatmap": {"roi": [[0, 0], [512, 512]]}}),
        ("sampling.top_k 5", {"sampling": {"top_k": 5}}),
        ("sampling.bottom_k 0", {"sampling": {"bottom_k": 0}}),
        ("export.geojson on", {"export": {"geojson": True}}),
        ("patching.roi_annotations", {"patching": {"roi_annotations": "roi é"}}),
    ]:
        s.rerun(name, changes)


def single_cases(s: Sweep) -> None:
    slide = str(s.root / "slides" / "a.tif")
    one = str(s.root / "slides" / "b.tif")
    out = str(s.root / "single")
    tiny = ["--a-t", "0.05", "--a-h", "0.01", "--seg-level", "1"]

    def c(name: str, argv: list[str], expect: str | None = None) -> None:
        if argv[1] in ("segment", "patch", "features") and "--a-t" not in argv:
            argv = [*argv[:2], *tiny, *argv[2:]]  # before the case's own options: those win
        s.cli(name, argv, expect)

    c("segment ok", ["wsi", "segment", slide, "--out", out, "--seg-level", "1"], expect="ok")
    c(
        "segment --seg-level 99",
        ["wsi", "segment", slide, "--out", out + "2", "--seg-level", "99"],
        expect="error",
    )
    c("segment --mthresh 4", ["wsi", "segment", slide, "--out", out + "2", "--mthresh", "4"], expect="error")
    c(
        "segment --preset nope",
        ["wsi", "segment", slide, "--out", out + "2", "--preset", "nope"],
        expect="error",
    )
    c(
        "segment --out is a file",
        ["wsi", "segment", slide, "--out", str(s.root / "slides.csv")],
        expect="error",
    )
    c(
        "segment a non-slide file",
        ["wsi", "segment", str(s.root / "slides.csv"), "--out", out + "3"],
        expect="error",
    )
    c("segment a folder", ["wsi", "segment", str(s.root / "emptydir"), "--out", out + "3"], expect="error")
    c("segment missing slide", ["wsi", "segment", "nope.tif", "--out", out + "3"], expect="error")
    c("segment same slide twice", ["wsi", "segment", slide, slide, "--out", out + "3"], expect="error")
    c(
        "patch ok",
        ["wsi", "patch", slide, "--out", out, "--seg-level", "1", "--patch-size", "64"],
        expect="ok",
    )
    c(
        "patch --patch-size 0",
        ["wsi", "patch", slide, "--out", out + "4", "--patch-size", "0"],
        expect="error",
    )
    c(
        "patch --patch-level 2 (b has 2 levels)",
        ["wsi", "patch", one, "--out", out + "4", "--patch-size", "32", "--patch-level", "2"],
        expect="error",
    )
    c(
        "patch --step 1 tiny",
        [
            "wsi",
            "patch",
            slide,
            "--out",
            out + "5",
            "--patch-size",
            "512",
            "--step",
            "512",
            "--seg-level",
            "1",
        ],
        expect="ok",
    )
    c(
        "patch --patch-size 4096",
        ["wsi", "patch", slide, "--out", out + "6", "--patch-size", "4096"],
        expect=None,
    )
    c(
        "patch --roi-annotations missing",
        ["wsi", "patch", slide, "--out", out + "6", "--roi-annotations", "nope"],
        expect="error",
    )
    enc = f"torchscript:{s.root / 'encoder.pt'}"
    features = ["wsi", "features", slide, "--out", out, "--encoder", enc, "--input-size", "32",
                "--seg-level", "1", "--patch-size", "64", "--device", "cpu"]
    c("features ok", features, expect="ok")
    c("features --no-pt rerun", [*features, "--no-pt"], expect="ok")
    c(
        "features --encoder nope",
        ["wsi", "features", slide, "--out", out + "7", "--encoder", "nope"],
        expect="error",
    )
    c(
        "features --encoder-arg bad",
        ["wsi", "features", slide, "--out", out + "7", "--encoder", enc, "--encoder-arg", "novalue"],
        expect="error",
    )
    c(
        "features --batch-size 0",
        ["wsi", "features", slide, "--out", out + "7", "--encoder", enc, "--batch-size", "0"],
        expect="error",
    )
    c(
        "features --precision float64",
        ["wsi", "features", slide, "--out", out + "7", "--precision", "float64"],
        expect="error",
    )
    c(
        "features --device gpu",
        ["wsi", "features", slide, "--out", out + "7", "--device", "gpu"],
        expect="error",
    )
    c(
        "features --checkpoint with torchscript",
        [
            "wsi",
            "features",
            slide,
            "--out",
            out + "7",
            "--encoder",
            enc,
            "--checkpoint",
            str(s.root / "clam.pt"),
        ],
        expect="error",
    )
    feats = f"{out}/features/h5_files/a.h5"
    tissue = f"{out}/tissue/a.json"
    base_h = [
        "wsi",
        "heatmap",
        slide,
        "--features",
        feats,
        "--model",
        str(s.root / "clam.pt"),
        "--device",
        "cpu",
    ]
    c("heatmap ok", [*base_h, "--out", out + "/hm", "--tissue", tissue], expect="ok")
    c("heatmap --vis-level 99", [*base_h, "--out", out + "/hm", "--vis-level", "99"], expect="error")
    c("heatmap --vis-level 2 (ok)", [*base_h, "--out", out + "/hm", "--vis-level", "2"], expect="ok")
    c("heatmap --overlap 1", [*base_h, "--out", out + "/hm", "--overlap", "1"], expect="error")
    c("heatmap --cmap nope", [*base_h, "--out", out + "/hm", "--cmap", "nope"], expect="error")
    c(
        "heatmap --threshold w/o binarize",
        [*base_h, "--out", out + "/hm", "--threshold", "0.5"],
        expect="error",
    )
    c(
        "heatmap --binarize --threshold 0.5",
        [*base_h, "--out", out + "/hm", "--binarize", "--threshold", "0.5"],
        expect="ok",
    )
    c(
        "heatmap --roi reversed",
        [*base_h, "--out", out + "/hm", "--roi", "500", "500", "0", "0"],
        expect="error",
    )
    c(
        "heatmap --roi outside slide",
        [*base_h, "--out", out + "/hm", "--roi", "5000", "5000", "6000", "6000"],
        expect="error",
    )
    c(
        "heatmap --tiff --tiff-level 5",
        [*base_h, "--out", out + "/hm", "--tiff", "--tiff-level", "5"],
        expect="error",
    )
    c(
        "heatmap --tiff --tiff-level 1",
        [*base_h, "--out", out + "/hm", "--tiff", "--tiff-level", "1"],
        expect="ok",
    )
    c("heatmap --downscale 0.5", [*base_h, "--out", out + "/hm", "--downscale", "0.5"], expect="error")
    c("heatmap --downscale 10000", [*base_h, "--out", out + "/hm", "--downscale", "10000"], expect=None)
    c(
        "heatmap --patch-size disagrees",
        [*base_h, "--out", out + "/hm", "--patch-size", "100"],
        expect="error",
    )
    c(
        "heatmap scores+features",
        ["wsi", "heatmap", slide, "--scores", feats, "--features", feats, "--out", out + "/hm"],
        expect="error",
    )
    c(
        "heatmap --scores is a features h5",
        ["wsi", "heatmap", slide, "--scores", feats, "--out", out + "/hm"],
        expect="error",
    )
    c(
        "heatmap --features a png",
        [
            "wsi",
            "heatmap",
            slide,
            "--features",
            str(s.root / "roi é" / "a.geojson"),
            "--model",
            str(s.root / "clam.pt"),
            "--out",
            out + "/hm",
        ],
        expect="error",
    )
    c(
        "heatmap --model the encoder",
        [
            "wsi",
            "heatmap",
            slide,
            "--features",
            feats,
            "--model",
            str(s.root / "encoder.pt"),
            "--out",
            out + "/hm",
        ],
        expect="error",
    )
    c(
        "heatmap on another slide",
        [
            "wsi",
            "heatmap",
            one,
            "--features",
            feats,
            "--model",
            str(s.root / "clam.pt"),
            "--out",
            out + "/hm",
        ],
        expect=None,
    )
    blockmap = s.base_out / "heatmaps" / "a" / "a_blockmap.h5"
    c("geojson ok", ["wsi", "geojson", str(blockmap), "--out", out + "/a.geojson"], expect="ok")
    c(
        "geojson --tissue",
        ["wsi", "geojson", str(blockmap), "--tissue", "--out", out + "/a2.geojson"],
        expect="ok",
    )
    c("geojson missing scores", ["wsi", "geojson", "nope.h5", "--out", out + "/x.geojson"], expect="error")
    c("geojson a features h5", ["wsi", "geojson", feats, "--out", out + "/x.geojson"], expect="error")
    c("geojson --out a folder", ["wsi", "geojson", str(blockmap), "--out", out], expect="error")
    roi = str(s.root / "roi é")
    c("evaluate ok", ["wsi", "evaluate", str(s.base_out), "--annotations", roi], expect="ok")
    c(
        "evaluate --method nope",
        ["wsi", "evaluate", str(s.base_out), "--annotations", roi, "--method", "nope"],
        expect="error",
    )
    c(
        "evaluate missing annotations",
        ["wsi", "evaluate", str(s.base_out), "--annotations", "nope"],
        expect="error",
    )
    c(
        "evaluate empty annotations",
        ["wsi", "evaluate", str(s.base_out), "--annotations", str(s.root / "emptydir")],
        expect="error",
    )
    c("evaluate not a run", ["wsi", "evaluate", str(s.root / "slides"), "--annotations", roi], expect="error")
    c(
        "evaluate --out a folder",
        ["wsi", "evaluate", str(s.base_out), "--annotations", roi, "--out", str(s.root / "slides")],
        expect="error",
    )


def extra_files(root: Path, base: dict) -> None:
    (root / "empty.csv").write_text("")
    (root / "header.csv").write_text("slide_id,label\n")
    (root / "wrongcols.csv").write_text("name,label\na,0\n")
    (root / "dups.csv").write_text("slide_id,label\na,0\na,1\n")
    (root / "missing.csv").write_text("slide_id,label\na,0\nzz,1\n")
    spaced = root / "dir é ü"
    spaced.mkdir()
    (spaced / "slides list.csv").write_text("slide_path,label\n../slides/a.tif,0\n../slides/c.tif,1\n")
    (root / "emptydir").mkdir()
    write_clam_checkpoint(root / "clam16.pt", embed_dim=16)
    write_clam_checkpoint(root / "clam_mb.pt", multi_branch=True)
    write_clam_checkpoint(root / "clam_seed1.pt", seed=1)
    for folder, text in (("roi é", None), ("roibad", "{not json")):
        (root / folder).mkdir()
        for slide in ("a", "b", "c"):
            polygon = [[[64, 64], [600, 64], [600, 500], [64, 500], [64, 64]]]
            feature = {
                "type": "Feature",
                "properties": {"classification": {"name": "Tumor"}},
                "geometry": {"type": "Polygon", "coordinates": polygon},
            }
            body = text or json.dumps({"type": "FeatureCollection", "features": [feature]})
            (root / folder / f"{slide}.geojson").write_text(body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only", default="", help="run the groups whose name contains this: sections, reruns, single"
    )
    parser.add_argument("--keep", type=Path, default=None, help="work in this folder (kept)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print the stderr of crashes")
    parser.add_argument(
        "--records", action="store_true", help="also compare h5 attributes and PNG text (provenance)"
    )
    args = parser.parse_args()
    global RECORDS
    RECORDS = args.records
    import torch

    torch.set_num_threads(1)
    start = time.perf_counter()
    root = args.keep or Path(tempfile.mkdtemp(prefix="attnmap-sweep-"))
    root.mkdir(parents=True, exist_ok=True)
    import os

    os.chdir(root)  # a case that writes into the working folder writes into the sweep's
    base = build_cohort(root)
    extra_files(root, base)
    sweep = Sweep(root, base, args.verbose)
    sweep.base_out = None
    cls, base_out = sweep.run("base run", expect="ok")
    if cls != "ok":
        raise SystemExit("the base configuration does not run: nothing to compare against")
    sweep.base_out = base_out
    for name, group in (("sections", section_cases), ("reruns", rerun_cases), ("single", single_cases)):
        if args.only in name:
            group(sweep)
    counts = Counter(cls for cls, _, _ in sweep.results)
    print(
        f"\n{len(sweep.results)} cases in {time.perf_counter() - start:.0f} s: "
        + ", ".join(
            f"{name} {counts[name]}"
            for name in ("ok", "error", "slide-error", "crash", "stale", "ignored", "wrong")
        )
    )
    if args.keep is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
