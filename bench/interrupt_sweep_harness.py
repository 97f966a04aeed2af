"""One interrupted command of `interrupt_sweep`: started in its own process group, signalled at a
moment, watched until it exits (and its children with it), then judged as the user sees it.

What is judged (one or more classes per case; ``ok`` when none):

- ``hang``: the command is still running 10 s after the signal (it is then killed);
- ``orphan``: a process it started (a Dask worker, a loader) is alive 10 s after it exited;
- ``noisy``: stderr holds a traceback, library log lines (distributed, tornado, asyncio,
  multiprocessing's resource tracker) or its last line is not one ``attnmap: ...`` message on a
  line of its own (a progress bar left mid-line);
- ``crash``: an exit status that is neither the signal's (128 + n, or killed by it) nor a finished
  run's 0, or a rerun that fails;
- ``leftover``: temporaries or the lock file left in the output folder;
- ``stale``: a rerun right after is refused (the lock) or finishes with outputs that differ from a
  fresh run's (a half-written output taken as done).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil

SIGNAL_GRACE = 10.0  # seconds a command (and its children) may take to stop after a signal
TEMP_MARKER = ".attnmap-tmp-"
LOCK_NAME = ".attnmap.lock"
NOISE = re.compile(
    r"Traceback|Exception ignored|distributed\.|tornado|asyncio|resource_tracker|leaked semaphore"
    r"|internal error|BrokenPipeError|KeyboardInterrupt"
)


@dataclass
class Command:
    """One command line of the sweep. ``argv(out)`` gives its arguments for output folder ``out``;
    ``marker(out, stderr_text)`` says the command is at work (mid-work signals wait for it)."""

    name: str
    argv: Callable[[Path], list[str]]
    marker: Callable[[Path, str], bool]
    compare: bool = True  # rerun and compare with a fresh run's outputs
    server: bool = False  # runs until stopped (no reference duration, no rerun)
    reference: dict | None = None  # a fresh run's outputs, and when the marker came and when it ended
    work_seconds: float = 5.0


@dataclass
class Outcome:
    command: str
    signal: str
    target: str
    moment: str
    status: object = None
    after: float = 0.0
    classes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, kind: str, note: str) -> None:
        if kind not in self.classes:
            self.classes.append(kind)
        self.notes.append(note)


def base_command(extra_path: str | None) -> tuple[list[str], dict[str, str]]:
    env = dict(os.environ)
    if extra_path:
        env["PYTHONPATH"] = extra_path
    env.pop("COLUMNS", None)
    return ["nice", "-n", "5", sys.executable, "-m", "attnmap"], env


def start(
    argv: Sequence[str], env: dict[str, str], err_path: Path, stdout: int | None = None
) -> subprocess.Popen:
    err = err_path.open("wb")
    try:
        return subprocess.Popen(
            list(argv),
            stdout=subprocess.DEVNULL if stdout is None else stdout,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # its own process group: the terminal's Ctrl-C reaches all of it
        )
    finally:
        err.close()


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def reference_run(command: Command, argv0: list[str], env: dict[str, str], out: Path, scratch: Path) -> None:
    """A fresh, uninterrupted run: its outputs, and how long it worked after its marker."""
    err_path = scratch / f"{command.name}.reference.err"
    began = time.monotonic()
    process = start([*argv0, "--quiet", *command.argv(out)], env, err_path)
    marked = None
    while process.poll() is None:
        if marked is None and command.marker(out, err_path.read_text(errors="replace")):
            marked = time.monotonic()
        time.sleep(0.01)
    ended = time.monotonic()
    if process.returncode != 0:
        raise RuntimeError(f"{command.name}: reference run failed: {err_path.read_text()[-400:]}")
    command.work_seconds = max(0.2, ended - (marked or began))
    command.reference = snapshot(out)


def interrupt(
    command: Command,
    argv0: list[str],
    env: dict[str, str],
    out: Path,
    scratch: Path,
    signame: str,
    target: str,
    moment: str,
    fraction: float,
) -> Outcome:
    """Run ``command`` into ``out``, send ``signame`` to its process (``pid``) or its process group
    (``group``) at ``moment`` (``early``: 0.3 s after start; ``mid``: ``fraction`` of its work after
    its marker; ``writing``: when a temporary output appears), then judge what it left."""
    outcome = Outcome(command.name, signame, target, moment if moment != "mid" else f"mid {fraction:.2f}")
    err_path = scratch / f"{command.name}-{signame}-{target}-{moment}-{fraction:.2f}.err"
    process = start([*argv0, *command.argv(out)], env, err_path)
    seen: dict[int, psutil.Process] = {}
    began = time.monotonic()
    deadline = began + 120
    marked: float | None = None
    fire_at = began + 0.3 if moment == "early" else None
    while process.poll() is None and time.monotonic() < deadline:
        for child in descendants(process.pid):
            seen.setdefault(child.pid, child)
        now = time.monotonic()
        if fire_at is None and marked is None and command.marker(out, err_path.read_text(errors="replace")):
            marked = now
            if moment == "mid":
                fire_at = now + fraction * command.work_seconds
        if moment == "writing" and marked is not None and any(TEMP_MARKER in p.name for p in out.rglob("*")):
            fire_at = now
        if fire_at is not None and now >= fire_at:
            break
        time.sleep(0.002 if moment == "writing" else 0.01)
    if process.poll() is not None:
        outcome.status = process.returncode
        outcome.notes.append("finished before the signal")
    else:
        number = getattr(signal, signame)
        sent = time.monotonic()
        if target == "group":
            os.killpg(process.pid, number)
        else:
            os.kill(process.pid, number)
        try:
            process.wait(timeout=SIGNAL_GRACE)
            outcome.after = time.monotonic() - sent
        except subprocess.TimeoutExpired:
            outcome.add("hang", f"still running {SIGNAL_GRACE:.0f} s after {signame}")
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        outcome.status = process.returncode
        if outcome.status == 0:  # the signal came as it finished (Python ignores it while exiting)
            outcome.notes.append("finished as the signal came")
        expected = {128 + number, -number}
        if outcome.status not in expected | {0} and "hang" not in outcome.classes:
            outcome.add("crash", f"exit status {outcome.status}")
    judge_children(outcome, seen, process.pid)
    judge_stderr(outcome, err_path.read_text(errors="replace"), finished=outcome.status == 0)
    if command.server:
        return outcome
    leftovers = sorted(p.name for p in out.rglob("*") if TEMP_MARKER in p.name or p.name == LOCK_NAME)
    if leftovers:
        outcome.add("leftover", "left " + ", ".join(leftovers[:3]) + (" ..." if len(leftovers) > 3 else ""))
    if command.compare and outcome.status != 0:
        judge_rerun(outcome, command, argv0, env, out, err_path.with_suffix(".rerun.err"))
    return outcome


def judge_children(outcome: Outcome, seen: dict[int, psutil.Process], pid: int) -> None:
    seen.update({child.pid: child for child in descendants(pid)})
    until = time.monotonic() + SIGNAL_GRACE
    while time.monotonic() < until and any(alive(child) for child in seen.values()):
        time.sleep(0.1)
    left = [child for child in seen.values() if alive(child)]
    if left:
        names = {" ".join(child.cmdline()[-2:])[-40:] for child in left if alive(child)}
        names = ", ".join(sorted(names))[:80]
        outcome.add("orphan", f"{len(left)} process(es) alive {SIGNAL_GRACE:.0f} s later: {names}")
        for child in left:
            with contextlib.suppress(psutil.Error):
                child.kill()


def last_line(text: str) -> str:
    """What a terminal shows on the last line: the text after the last carriage return."""
    lines = text.rstrip("\n").split("\n")
    return lines[-1].split("\r")[-1] if lines else ""


def judge_stderr(outcome: Outcome, text: str, finished: bool) -> None:
    found = NOISE.search(text)
    if found:
        line = next(line for line in text.splitlines() if found.group(0) in line)
        outcome.add("noisy", f"stderr: {line.strip()[:70]}")
    elif finished:
        return
    elif text and not text.endswith("\n"):
        outcome.add("noisy", "stderr left mid-line")
    elif not last_line(text).startswith("attnmap: "):
        outcome.add("noisy", f"no one-line message (last line {last_line(text)[:50]!r})")
    else:
        outcome.notes.append(last_line(text))


def judge_rerun(outcome: Outcome, command: Command, argv0: list[str], env: dict[str, str], out: Path,
                err_path: Path) -> None:
    began = time.monotonic()
    process = start([*argv0, "--quiet", *command.argv(out)], env, err_path)
    try:
        process.wait(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    text = err_path.read_text(errors="replace")
    if "in use by another run" in text:
        outcome.add("stale", "rerun refused: " + text.strip().splitlines()[-1][:80])
        return
    if process.returncode != 0:
        outcome.add("crash", f"rerun exit {process.returncode}: {text.strip()[-80:]}")
        return
    outcome.notes.append(f"rerun {time.monotonic() - began:.1f} s")
    difference = compare(command.reference or {}, snapshot(out))
    if difference:
        outcome.add("stale", f"rerun differs from a fresh run: {difference}")


def snapshot(out: Path) -> dict[str, object]:
    """Every output's content, without what differs between any two runs (times, hosts, paths)."""
    import h5py
    import tifffile
    from PIL import Image
    from sweep_common import normalise

    content: dict[str, object] = {}
    for path in sorted(out.rglob("*")):
        name = str(path.relative_to(out))
        if not path.is_file() or path.name in (LOCK_NAME, "run_report.json") or TEMP_MARKER in path.name:
            continue
        try:
            if path.suffix == ".h5":
                with h5py.File(path, "r") as handle:
                    content[name] = {key: np.asarray(handle[key][()]) for key in handle if key in handle}
            elif path.suffix == ".png":
                content[name] = np.asarray(Image.open(path))
            elif path.suffix in (".tif", ".tiff"):
                content[name] = [page.asarray() for page in tifffile.TiffFile(path).pages]
            elif path.suffix == ".pt":
                import torch

                loaded = torch.load(path, weights_only=True)
                content[name] = (
                    {key: value.numpy() for key, value in loaded.items()} if isinstance(loaded, dict)
                    else loaded.numpy()
                )
            elif path.suffix == ".json":  # NaN (an empty validation set's loss) as text: NaN != NaN
                content[name] = normalise(json.loads(path.read_text(), parse_constant=str), str(out))
            elif path.suffix in (".npy",):
                content[name] = np.load(path)
            elif path.suffix == ".csv":  # without timing columns (evaluate's `seconds`)
                import csv

                from sweep_common import TIME_KEYS

                rows = list(csv.reader(path.read_text().replace(str(out), "<OUT>").splitlines()))
                keep = [i for i, name in enumerate(rows[0] if rows else []) if not TIME_KEYS.search(name)]
                content[name] = [[row[i] for i in keep if i < len(row)] for row in rows]
            elif path.suffix in (".txt", ".md", ".html", ".yaml"):
                content[name] = path.read_text().replace(str(out), "<OUT>")
            else:
                content[name] = path.stat().st_size > 0
        except Exception as error:  # noqa: BLE001 - an unreadable output is what the sweep looks for
            content[name] = f"unreadable: {type(error).__name__}"
    return content


def compare(reference: dict[str, object], found: dict[str, object]) -> str:
    from sweep_common import equal

    missing = sorted(reference.keys() - found.keys())
    extra = sorted(found.keys() - reference.keys())
    if missing or extra:
        return f"missing {missing[:2]} extra {extra[:2]}"
    different = [name for name in reference if not equal(reference[name], found[name], float_tolerance=True)]
    return f"{different[:2]}" if different else ""


def pipe_case(name: str, argv: list[str], argv0: list[str], env: dict[str, str], out: Path | None,
              scratch: Path) -> Outcome:
    """``attnmap ARGV | head -1``: the reader goes after the first line."""
    outcome = Outcome(name, "EPIPE", "stdout", "| head -1")
    err_path = scratch / f"{name}-pipe.err"
    process = start([*argv0, *argv], env, err_path, stdout=subprocess.PIPE)
    assert process.stdout is not None
    first = process.stdout.readline()
    process.stdout.close()
    try:
        process.wait(timeout=300)
    except subprocess.TimeoutExpired:
        outcome.add("hang", "still running after its reader left")
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    outcome.status = process.returncode
    if not first:
        outcome.notes.append("printed nothing")
    text = err_path.read_text(errors="replace")
    found = NOISE.search(text)
    if found:
        line = next(line for line in text.splitlines() if found.group(0) in line)
        outcome.add("noisy", f"stderr: {line.strip()[:70]}")
    if outcome.status not in (0, 141, -signal.SIGPIPE) and "hang" not in outcome.classes:
        outcome.add("crash", f"exit status {outcome.status}")
    if out is not None:
        leftovers = sorted(p.name for p in out.rglob("*") if TEMP_MARKER in p.name or p.name == LOCK_NAME)
        if leftovers:
            outcome.add("leftover", "left " + ", ".join(leftovers[:3]))
    return outcome
