"""Census of attnmap on BIG inputs a pathologist brings: memory, time, progress and refusals.

Every case runs in a fresh process (`python -m attnmap ...` or `scale_sweep_cases.py`), watched
from here: its peak resident memory (``ru_maxrss`` of that one child, from ``os.wait4``), its wall
time, and the longest stretch with nothing written to its stdout or stderr (a progress bar writes).
A case is killed above `KILL_BYTES` so the sweep never takes the shared machine down.

Classes:
  ok     exit 0, peak ≤ the import baseline (a process that imports attnmap and torch, measured in
         the same run) + `BUDGET_BYTES`, no silent stretch over `SILENT_S`, and the result right
         (tissue area within 5 % of the blobs' exact area, patch count within 10 % of area / patch²)
  error  exit 2 with one line naming the problem (a refusal; it is right when the input is too big
         for the operation, and a finding when a reduced read would have served)
  slow   ok otherwise, but silent for more than `SILENT_S` once attnmap is imported (the case
         says ``started``: torch's import alone takes seconds on a loaded machine); or killed: silent
         for `SILENT_LIMIT_S`, or running past `LIMIT_S` (the detail says whether it showed progress)
  heavy  peak above the budget (or killed at `KILL_BYTES`)
  crash  a traceback, any other exit status
  wrong  ran within budget but its counts are off

Usage: ``nice python bench/scale_sweep.py [--src TREE/src] [--label NAME] [--only SUBSTR]
[--save FILE.json] [--compare BEFORE.json AFTER.json]``; inputs are built once in ``--inputs``
(default /tmp/attnmap-scale-inputs, ~0.5 GB on disk).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import scale_sweep_inputs as inputs

HERE = Path(__file__).resolve().parent
BUDGET_BYTES = 1.5 * 2**30
KILL_BYTES = 7 * 2**30
SILENT_S = 10.0
LIMIT_S = 180.0
SILENT_LIMIT_S = 60.0
PATCH = 512


@dataclass
class Case:
    name: str
    argv: list[str]
    check: str = ""  # "area", "patches" or "" (exit status and budget only)
    size: tuple[int, int] = (0, 0)
    files: dict[str, str] = field(default_factory=dict)


@dataclass
class Outcome:
    name: str
    verdict: str
    peak_mb: float
    seconds: float
    silent_s: float
    detail: str


def build(root: Path) -> dict[str, tuple[Path, tuple[int, int]]]:
    """Every input (built once; reused when present)."""
    root.mkdir(parents=True, exist_ok=True)
    specs = {
        "tiled30k": ((30000, 30000), lambda p, s: inputs.write_tiled(p, s)),
        "tiled60k": ((60000, 60000), lambda p, s: inputs.write_tiled(p, s)),
        "tiled100k": ((100000, 100000), lambda p, s: inputs.write_tiled(p, s)),
        "pyramid60k": ((60000, 60000), lambda p, s: inputs.write_tiled(p, s, (1, 4, 16, 64))),
        "gap60k": ((60000, 60000), lambda p, s: inputs.write_tiled(p, s, (1, 64))),
        "npot60k": ((60000, 60000), lambda p, s: inputs.write_tiled(p, s, (1, 3, 9, 27, 81))),
        "stripped40k": ((40000, 40000), lambda p, s: inputs.write_stripped(p, s)),
        "strip200k": ((200000, 2000), lambda p, s: inputs.write_tiled(p, s, tile=512)),
        "png20k": ((20000, 20000), lambda p, s: inputs.write_png(p, s)),
        "jpeg12k": ((12000, 12000), lambda p, s: inputs.write_jpeg(p, s)),
        "jpeg20k": ((20000, 20000), lambda p, s: inputs.write_jpeg(p, s)),
        "grey16_12k": ((12000, 12000), lambda p, s: inputs.write_grey16(p, s)),
        "grey16_20k": ((20000, 20000), lambda p, s: inputs.write_grey16(p, s)),
    }
    suffix = {"png20k": ".png", "jpeg12k": ".jpg", "jpeg20k": ".jpg"}
    made = {}
    for name, (size, write) in specs.items():
        path = root / f"{name}{suffix.get(name, '.tif')}"
        if not path.exists():
            print(f"building {path.name}", file=sys.stderr, flush=True)
            write(path.with_suffix(".part" + path.suffix), size).rename(path)
        made[name] = (path, size)
    bag = root / "bag1M.h5"
    if not bag.exists():
        inputs.write_bag(bag, 1_000_000, 1024, 64, (100000, 100000))
    scores = root / "scores2M.h5"
    if not scores.exists():
        inputs.write_scores(scores, 2_000_000, 42, (60000, 60000))
    scores30 = root / "scores500k_30k.h5"
    if not scores30.exists():
        inputs.write_scores(scores30, 500_000, 42, (30000, 30000))
    made["bag1M"], made["scores2M"] = (bag, (100000, 100000)), (scores, (60000, 60000))
    made["scores500k"] = (scores30, (30000, 30000))
    model = root / "abmil1024.pt"
    if not model.exists():
        import torch

        from attnmap.mil import CLAM_SB

        torch.manual_seed(0)
        torch.save(CLAM_SB(embed_dim=1024, n_classes=2).state_dict(), model)
    made["model"] = (model, (0, 0))
    return made


def run_config(root: Path, slide: Path, out: Path) -> Path:
    """A `wsi run` config: the tiny encoder on 2048-px patches, heatmap PNG and TIFF."""
    import torch
    import yaml

    from attnmap.mil import CLAM_SB
    from attnmap.wsi.encoders import load_encoder

    checkpoint = root / "clam_tiny.pt"
    if not checkpoint.exists():
        torch.manual_seed(0)
        torch.save(CLAM_SB(embed_dim=load_encoder("attnmap:tiny").feature_dim, n_classes=2).state_dict(),
                   checkpoint)
    (out / "list").mkdir(parents=True, exist_ok=True)
    csv = out / "list" / "slides.csv"
    csv.write_text(f"slide_path\n{slide}\n")
    config = {
        "slides": {"csv": str(csv)},
        "segmentation": {"a_t": 1, "a_h": 1},
        "patching": {"patch_size": 2048, "level": 0},
        "features": {"encoder": "attnmap:tiny", "batch_size": 8},
        "model": {"checkpoint": str(checkpoint)},
        "heatmap": {"tiff": True},
        "run": {"output_dir": str(out / "run"), "device": "cpu"},
    }
    path = out / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def cases(made: dict, scratch: Path) -> list[Case]:
    """22 cases: what reads a whole level (opening, segmentation, patching, the viewer's overview,
    a heatmap) on each big layout, the run on the smallest, a 2M-score heatmap, a 1M-patch bag, and
    `explain` on images over the decompression-bomb limit."""
    attnmap = [sys.executable, str(HERE / "scale_sweep_cases.py"), "cli"]
    api = [sys.executable, str(HERE / "scale_sweep_cases.py")]
    seg = ["--a-t", "1", "--a-h", "1"]
    found: list[Case] = []
    for name in ("tiled100k", "strip200k", "png20k"):
        found.append(Case(f"{name} open+read_region", [*api, "open", str(made[name][0])]))
    for name in ("tiled30k", "tiled60k", "tiled100k", "gap60k", "npot60k", "stripped40k", "strip200k",
                 "jpeg12k"):
        path, size = made[name]
        # the strip's blobs (2000 px tall: 135k px each) are under a_t = 1 (512² px): 0.1 there
        a_t = "0.1" if name == "strip200k" else "1"
        found.append(Case(f"{name} segment_tissue", [*api, "segment", str(path), a_t], "area", size))
    for name in ("tiled30k", "pyramid60k"):
        path, size = made[name]
        out = str(scratch / name)
        found.append(Case(f"{name} wsi patch", [*attnmap, "wsi", "patch", str(path), "-o", out, *seg,
                                                "--patch-size", str(PATCH)], "patches", size,
                          {"out": out, "slide": str(path)}))
    for name in ("tiled30k", "tiled60k", "pyramid60k"):
        found.append(Case(f"{name} viewer tiles", [*api, "tiles", str(made[name][0])]))
    config = run_config(Path(made["model"][0]).parent, made["tiled30k"][0], scratch / "run_tiled30k")
    found.append(Case("tiled30k wsi run (tiny, 2048 px)", [*attnmap, "wsi", "run", str(config)]))
    for name, scores, level in (("pyramid60k", "scores2M", "2"), ("tiled30k", "scores500k", "0")):
        found.append(Case(f"{name} wsi heatmap {scores[6:]} --tiff", [
            *attnmap, "wsi", "heatmap", str(made[name][0]), "--scores", str(made[scores][0]), "-o",
            str(scratch / f"heat_{name}"), "--patch-size", "42", "--tiff", "--tiff-level", level]))
    found.append(Case("mil attention 1M x 1024", [*attnmap, "mil", "attention", str(made["model"][0]),
                                                  str(made["bag1M"][0]), "-o", str(scratch / "mil"),
                                                  "--no-csv"]))
    for name in ("jpeg20k", "grey16_20k"):
        found.append(Case(f"explain {name}", [*attnmap, "explain", str(made[name][0]), "--model",
                                              "attnmap:shapes-vit", "-o", str(scratch / f"explain_{name}")]))
    return found


def watch(argv: list[str], env: dict[str, str], limit: float = LIMIT_S) -> dict:
    """Run ``argv``: exit status, output, peak RSS (bytes), wall seconds, longest silence."""
    import psutil

    start = time.perf_counter()
    last = [start]
    silent = [0.0]
    chunks: dict[str, list[bytes]] = {"out": [], "err": []}
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)

    def pump(stream, key: str) -> None:
        for chunk in iter(lambda: stream.read1(4096), b""):
            now = time.perf_counter()
            if chunks["out"] or chunks["err"]:  # the first output is the import's end ("started")
                silent[0] = max(silent[0], now - last[0])
            last[0] = now
            chunks[key].append(chunk)

    readers = [threading.Thread(target=pump, args=(process.stdout, "out"), daemon=True),
               threading.Thread(target=pump, args=(process.stderr, "err"), daemon=True)]
    for reader in readers:
        reader.start()
    killed, handle = "", psutil.Process(process.pid)
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        try:
            rss = handle.memory_info().rss
        except psutil.Error:
            rss = 0
        now = time.perf_counter()
        quiet = now - last[0] > SILENT_LIMIT_S
        if not killed and (rss > KILL_BYTES or now - start > limit or quiet):
            killed = "memory" if rss > KILL_BYTES else "silence" if quiet else "time"
            process.kill()
        time.sleep(0.05)
    end = time.perf_counter()
    for reader in readers:
        reader.join(timeout=5)
    process.returncode = os.waitstatus_to_exitcode(status)
    silent[0] = max(silent[0], end - last[0])
    return {"code": process.returncode, "out": b"".join(chunks["out"]).decode(errors="replace"),
            "err": b"".join(chunks["err"]).decode(errors="replace"), "peak": usage.ru_maxrss * 1024,
            "seconds": end - start, "silent": silent[0], "killed": killed}


def _result(text: str) -> dict | None:
    lines = [line for line in text.splitlines() if line.startswith("RESULT ")]
    return json.loads(lines[-1][7:]) if lines else None


def correctness(case: Case, run: dict) -> str | None:
    """Why the case's counts are wrong, or None (None also when it has nothing to check)."""
    width, height = case.size
    expected = inputs.tissue_area(width, height)
    if case.check == "area":
        found = _result(run["out"])
        if found is None:
            return "no result"
        ratio = found["area"] / expected
        return None if abs(ratio - 1) <= 0.05 else f"tissue area {ratio:.3f} × exact"
    if case.check == "patches":
        import h5py

        stem = Path(case.files["slide"]).stem
        with h5py.File(Path(case.files["out"]) / "patches" / f"{stem}.h5") as handle:
            count = len(handle["coords"])
        ratio = count / (expected / PATCH**2)
        return None if abs(ratio - 1) <= 0.10 else f"{count} patches, {ratio:.3f} × area / patch²"
    return None


def classify(case: Case, run: dict, baseline: int) -> Outcome:
    text = (run["err"] + run["out"]).strip()
    last = text.splitlines()[-1] if text else ""
    peak_mb = run["peak"] / 2**20
    heavy = run["peak"] > baseline + BUDGET_BYTES  # killed for time with such a peak: heavy too
    if run["killed"] == "memory" or (heavy and (run["code"] in (0, 2) or run["killed"])):
        kills = {"memory": f"killed at {KILL_BYTES / 2**30:.0f} GB", "time": f"killed after {LIMIT_S:.0f} s",
                 "silence": f"killed: silent for {SILENT_LIMIT_S:.0f} s"}
        verdict, detail = "heavy", kills.get(run["killed"], last)
    elif run["killed"] == "silence":
        verdict, detail = "slow", f"killed: silent for {SILENT_LIMIT_S:.0f} s"
    elif run["killed"] == "time":
        verdict, detail = "slow", f"killed after {LIMIT_S:.0f} s, progress shown (longest silence " \
            f"{run['silent']:.0f} s)"
    elif run["code"] == 2:
        refusal = [line for line in text.splitlines() if line.startswith(("Error", "REFUSED"))]
        verdict, detail = "error", (refusal[-1] if refusal else last)
    elif run["code"] != 0:
        verdict, detail = "crash", last
    else:
        wrong = correctness(case, run)
        if wrong is not None:
            verdict, detail = "wrong", wrong
        elif run["silent"] > SILENT_S:
            verdict, detail = "slow", f"silent {run['silent']:.0f} s"
        else:
            verdict, detail = "ok", (json.dumps(_result(run["out"])) if _result(run["out"]) else "")
    return Outcome(case.name, verdict, peak_mb, run["seconds"], run["silent"], detail[:160])


def table(rows: list[Outcome], before: dict[str, Outcome] | None = None) -> str:
    lines = []
    for row in rows:
        was = before.get(row.name) if before else None
        prefix = f"{was.verdict:6} {was.peak_mb:7.0f} {was.seconds:6.1f} -> " if was else ""
        lines.append(f"{row.name:38} {prefix}{row.verdict:6} {row.peak_mb:7.0f} MB {row.seconds:6.1f} s "
                     f"silent {row.silent_s:5.1f} s  {row.detail}")
    verdicts = ("ok", "error", "slow", "heavy", "crash", "wrong")
    counts = {v: sum(r.verdict == v for r in rows) for v in verdicts}
    lines.append("counts: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", default=str(HERE.parent / "src"), help="the attnmap tree's src folder")
    parser.add_argument("--label", default="after")
    parser.add_argument("--only", default="")
    parser.add_argument("--inputs", default="/tmp/attnmap-scale-inputs")
    parser.add_argument("--save", default="")
    parser.add_argument("--compare", nargs=2, default=None)
    parser.add_argument("--baseline-mb", type=float, default=None,
                        help="with --compare: rows killed for time or silence with a peak above this "
                             "baseline + the budget are heavy (as `classify` says them now)")
    args = parser.parse_args()
    if args.compare:
        before, after = ([Outcome(**row) for row in json.loads(Path(p).read_text())] for p in args.compare)
        if args.baseline_mb is not None:
            for row in (*before, *after):
                if row.verdict == "slow" and row.peak_mb > args.baseline_mb + BUDGET_BYTES / 2**20:
                    row.verdict, row.detail = "heavy", f"{row.detail}, peak above the budget"
        print(table(after, {row.name: row for row in before}))
        return
    env = {**os.environ, "PYTHONPATH": f"{args.src}{os.pathsep}{HERE}", "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1", "COLUMNS": "120"}
    made = build(Path(args.inputs))
    scratch = Path(args.inputs) / f"out-{args.label}"
    if scratch.exists():
        import shutil

        shutil.rmtree(scratch)
    scratch.mkdir()
    base = watch([sys.executable, "-c", "import torch, attnmap.wsi.slide, attnmap.cli.main"], env)
    baseline, start_s = base["peak"], base["seconds"]
    print(f"{args.label}: import baseline {baseline / 2**20:.0f} MB, {start_s:.1f} s; budget baseline + "
          f"{BUDGET_BYTES / 2**30:.1f} GB; slow: silent over {SILENT_S:.0f} s after the import; "
          f"uptime: {os.popen('uptime').read().strip()}", flush=True)
    rows = []
    for case in cases(made, scratch):
        if args.only and args.only not in case.name:
            continue
        outcome = classify(case, watch(case.argv, env), baseline)
        rows.append(outcome)
        print(table([outcome]).splitlines()[0], flush=True)
    print(table(rows))
    if args.save:
        Path(args.save).write_text(json.dumps([asdict(row) for row in rows], indent=1))


if __name__ == "__main__":
    main()
