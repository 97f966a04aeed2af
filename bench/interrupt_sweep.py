"""What attnmap's long-running commands do when they are stopped: Ctrl-C, a scheduler's SIGTERM, an
ssh session's SIGHUP, a closed stdout pipe.

Usage: ``python bench/interrupt_sweep.py [--seed 0] [--only NAME,...] [--keep DIR]``

Each command runs as a user runs it (``python -m attnmap``, niced, in its own process group, with
progress bars) on tiny inputs: two synthetic slides, the bundled tiny encoder (``attnmap:tiny``), a
seeded CLAM_SB, six shape images. It gets one signal at one moment:

- SIGINT to the process group (a terminal's Ctrl-C), SIGTERM to the process alone (Kubernetes, or
  ``kill``), SIGTERM to the group (SLURM at the time limit), SIGHUP to the group (the ssh session
  dropped);
- ``early`` (0.3 s after start, while importing), ``mid`` (a seeded random fraction of the command's
  work after it started working, the work's length taken from a fresh run of the same command in
  this sweep), ``writing`` (as soon as a temporary output file appears).

Then (`interrupt_sweep_harness`): its exit status and how long it took to stop, its stderr, the
processes it started, what it left in the output folder, and a rerun right after, whose outputs are
held against the fresh run's. Commands that print are also read with ``| head -1``. The table gives
each case's classes (ok / noisy / hang / orphan / leftover / stale / crash) and the counts.

Run it on another checkout by putting its src first on PYTHONPATH (bench/README.md).
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from interrupt_sweep_harness import (  # noqa: E402
    LOCK_NAME,
    Command,
    Outcome,
    base_command,
    interrupt,
    pipe_case,
    reference_run,
)

CLASSES = ("ok", "noisy", "hang", "orphan", "leftover", "stale", "crash")


def has(pattern: str) -> callable:
    """A marker: a file matching ``pattern`` (glob) exists in the output folder."""
    return lambda out, _text: out.exists() and any(True for _ in out.glob(pattern))


def says(text: str) -> callable:
    """A marker: stderr holds ``text``."""
    return lambda _out, stderr: text in stderr


def started(_out: Path, _text: str) -> bool:
    """A marker for commands whose work is short beside their imports: the process started."""
    return True


def locked(out: Path, _text: str) -> bool:
    return (out / LOCK_NAME).exists()


def make_inputs(root: Path) -> dict[str, Path]:
    """Slides, models, images: everything the commands read."""
    from common import write_run_config
    from PIL import Image

    from attnmap.data.shapes import make_shapes

    config = write_run_config(root, "attnmap:tiny", n_slides=4, size=1024, batch_size=8,
                              sections={"segmentation": {"a_t": 0.1, "a_h": 0.1}})
    images = root / "images"
    images.mkdir()
    pictures, _, _ = make_shapes(6, size=64, seed=3)
    for index, picture in enumerate(pictures):
        Image.fromarray(picture).save(images / f"shape_{index}.png")
    return {"config": config, "images": images, "slides": root / "slides", "clam": root / "clam.pt"}


def commands(inputs: dict[str, Path], features: Path) -> list[Command]:
    slides = sorted(str(path) for path in inputs["slides"].glob("*.tif"))
    labels = inputs["slides"] / "cohort.csv"
    return [
        Command("wsi run (1 worker)", lambda out: ["wsi", "run", str(inputs["config"]), "-o", str(out),
                                                   "--workers", "1"], locked),
        Command("wsi run (2 workers)", lambda out: ["wsi", "run", str(inputs["config"]), "-o", str(out),
                                                    "--workers", "2"], says("slides:")),
        Command("wsi features", lambda out: ["wsi", "features", *slides, "-o", str(out), "--encoder",
                                             "attnmap:tiny", "--batch-size", "8", "--a-t", "0.1"],
                has("tissue/*")),
        Command("wsi heatmap", lambda out: ["wsi", "heatmap", slides[0], "--features",
                                            str(features / "h5_files" / (Path(slides[0]).stem + ".h5")),
                                            "--model", str(inputs["clam"]), "-o", str(out), "--tiff"],
                started),
        Command("explain", lambda out: ["explain", str(inputs["images"]), "--model", "attnmap:shapes-vit",
                                        "--method", "all", "-o", str(out)], locked),
        Command("mil attention", lambda out: ["mil", "attention", str(inputs["clam"]),
                                              str(features / "h5_files"),
                                              "--method", "all", "-o", str(out)], started),
        Command("mil train", lambda out: ["mil", "train", str(features), str(labels), "--folds", "2",
                                          "--max-epochs", "30", "--model", "clam_sb", "-o", str(out)],
                locked),
        Command("evaluate", lambda out: ["evaluate", "--n", "16", "-o", str(out)], says("evaluate methods")),
        Command("demo", lambda out: ["demo", "--n-eval", "10", "--device", "cpu", "-o", str(out)],
                says("%"), compare=False),
        Command("view", lambda out: ["view", str(out.parent / "wsi run (1 worker)-reference"), "--port", "0",
                                     "--no-browser"], says("http://"), server=True),
    ]


def cases(command: Command, rng: np.random.Generator) -> list[tuple[str, str, str, float]]:
    """(signal, target, moment, fraction) for one command: each signal mid-work, SIGTERM to the group
    while writing; for `wsi run` also Ctrl-C while writing and while importing."""
    mid = lambda: float(rng.uniform(0.1, 0.8))  # noqa: E731
    if command.server:
        return [("SIGINT", "group", "mid", 0.5), ("SIGTERM", "pid", "mid", 0.5),
                ("SIGHUP", "group", "mid", 0.5)]
    chosen = [
        ("SIGINT", "group", "mid", mid()),
        ("SIGTERM", "pid", "mid", mid()),
        ("SIGHUP", "group", "mid", mid()),
        ("SIGTERM", "group", "writing", 0.0),
    ]
    if command.name.startswith("wsi run"):
        chosen += [("SIGINT", "group", "writing", 0.0), ("SIGINT", "group", "early", 0.0)]
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default="", help="Comma-separated command names (prefixes).")
    parser.add_argument("--keep", type=Path, default=None,
                        help="Work here and keep it (default: a temp folder).")
    args = parser.parse_args()
    # a sweep started in the background (`&`, nohup) ignores SIGINT or SIGHUP, and its commands would
    # inherit that: give them the dispositions a terminal's foreground command has
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for number in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, signal.SIG_DFL)
    root = args.keep or Path(tempfile.mkdtemp(prefix="attnmap-interrupt-"))
    root.mkdir(parents=True, exist_ok=True)
    argv0, env = base_command(None)
    rng = np.random.default_rng(args.seed)
    began = time.monotonic()
    import attnmap

    print(f"attnmap from {Path(attnmap.__file__).parent}; seed {args.seed}; work in {root}", flush=True)
    inputs = make_inputs(root / "inputs")
    scratch = root / "logs"
    scratch.mkdir(exist_ok=True)
    all_commands = commands(inputs, root / "wsi run (1 worker)-reference" / "features")
    wanted = [name.strip() for name in args.only.split(",") if name.strip()]
    outcomes: list[Outcome] = []
    for command in all_commands:
        needed = command.name == "wsi run (1 worker)"  # its reference run makes the others' inputs
        if wanted and not needed and not any(command.name.startswith(name) for name in wanted):
            continue
        if not command.server:
            try:
                reference_run(command, argv0, env, root / f"{command.name}-reference", scratch)
            except RuntimeError as error:
                print(f"{command.name}: skipped ({error})", flush=True)
                continue
        if wanted and not any(command.name.startswith(name) for name in wanted):
            continue
        for index, (signame, target, moment, fraction) in enumerate(cases(command, rng)):
            out = root / f"{command.name}-{index}"
            outcome = interrupt(command, argv0, env, out, scratch, signame, target, moment, fraction)
            outcomes.append(outcome)
            print(row(outcome), flush=True)
            shutil.rmtree(out, ignore_errors=True)
    for name, argv, folder in pipe_commands(inputs, root):
        if wanted and not any(name.startswith(prefix) for prefix in wanted):
            continue
        outcome = pipe_case(name, argv, argv0, env, folder, scratch)
        outcomes.append(outcome)
        print(row(outcome), flush=True)
    counts = Counter(kind for outcome in outcomes for kind in (outcome.classes or ["ok"]))
    print(f"\n{len(outcomes)} cases in {time.monotonic() - began:.0f} s; "
          + ", ".join(f"{kind} {counts.get(kind, 0)}" for kind in CLASSES))
    if args.keep is None:
        shutil.rmtree(root, ignore_errors=True)


def pipe_commands(inputs: dict[str, Path], root: Path) -> list[tuple[str, list[str], Path | None]]:
    return [
        ("methods", ["methods"], None),
        ("wsi run (1 worker)", ["wsi", "run", str(inputs["config"]), "-o", str(root / "pipe-run")],
         root / "pipe-run"),
        ("evaluate", ["evaluate", "--n", "16", "--quiet", "-o", str(root / "pipe-evaluate")],
         root / "pipe-evaluate"),
    ]


def row(outcome: Outcome) -> str:
    kinds = "+".join(outcome.classes) or "ok"
    return (f"{outcome.command:20s} {outcome.signal:7s} {outcome.target:6s} {outcome.moment:9s} "
            f"exit {outcome.status!s:>4s} in {outcome.after:4.1f}s  {kinds:15s} "
            f"{'; '.join(outcome.notes)[:150]}")


if __name__ == "__main__":
    main()
