"""`bench/view_sweep.py`'s command line cases: `attnmap view` options at odd values, in subprocesses."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

from view_sweep_harness import (
    Sweep,
    base_run,
    request,
)


def _cli(args: list[str], timeout: float = 60.0, wait_for_url: bool = False) -> tuple[int, str, str]:
    import attnmap

    here = str(Path(attnmap.__file__).resolve().parents[1])  # the attnmap this sweep measures, not another
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([here, os.environ.get("PYTHONPATH", "")])}
    command = [
        sys.executable,
        "-c",
        "import sys; from attnmap.cli.main import main; main(sys.argv[1:])",
        *args,
    ]
    if not wait_for_url:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
        return done.returncode, done.stdout, done.stderr
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = process.stdout.readline()
        found = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        if not found:
            process.kill()
            out, err = process.communicate(timeout=timeout)
            return process.returncode, line + out, err
        answer = request(int(found.group(1)), "/data/slides.js")
        process.terminate()
        out, err = process.communicate(timeout=timeout)
        return (0 if answer.status == 200 else 1), line + out, err
    finally:
        if process.poll() is None:
            process.kill()


def cli_classify(code: int, stdout: str, stderr: str) -> tuple[str, str]:
    lines = [line for line in stderr.splitlines() if line.strip() and "warning:" not in line.lower()]
    if "Traceback" in stderr or "internal error" in stderr:
        return "crash", (lines[-1] if lines else "traceback")[:200]
    if code == 0:
        return "ok", stdout.strip().splitlines()[0][:150] if stdout.strip() else ""
    errors = [line for line in lines if line.startswith("attnmap: error:") or line.startswith("Error:")]
    if code == 2 and len(errors) == 1:
        return "error", errors[0][:200]
    return "crash", f"exit {code}: " + " | ".join(lines)[:200]


def cli_cases(s: Sweep) -> None:
    root = s.root / "cli"
    run = base_run(root)
    (root / "empty").mkdir()
    (root / "norun" / "sub").mkdir(parents=True)
    (root / "heatmaps_only" / "heatmaps").mkdir(parents=True)
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    busy = taken.getsockname()[1]
    cases = [
        ("--help", ["view", "--help"], "ok", False),
        ("port 0", ["view", str(run), "--port", "0", "--no-browser"], "ok", True),
        ("port in use", ["view", str(run), "--port", str(busy), "--no-browser"], "error", False),
        ("port 65536", ["view", str(run), "--port", "65536", "--no-browser"], "error", False),
        ("port -1", ["view", str(run), "--port", "-1", "--no-browser"], "error", False),
        ("port abc", ["view", str(run), "--port", "abc", "--no-browser"], "error", False),
        ("cache-mb 0", ["view", str(run), "--cache-mb", "0", "--no-browser"], "error", False),
        ("cache-mb 1", ["view", str(run), "--cache-mb", "1", "--port", "0", "--no-browser"], "ok", True),
        ("nonexistent folder", ["view", str(root / "nope"), "--no-browser"], "error", False),
        ("empty folder", ["view", str(root / "empty"), "--no-browser"], "error", False),
        ("folder with no runs", ["view", str(root / "norun"), "--no-browser"], "error", False),
        (
            "run folder with empty heatmaps/",
            ["view", str(root / "heatmaps_only"), "--no-browser"],
            "error",
            False,
        ),
        (
            "a file that is no slide",
            ["view", str(root / "secret.txt"), "--scores", str(run), "--no-browser"],
            "error",
            False,
        ),
        ("--scores with a folder", ["view", str(run), "--scores", str(run), "--no-browser"], "error", False),
        (
            "--annotations missing",
            ["view", str(run), "--annotations", str(root / "nope"), "--no-browser"],
            "error",
            False,
        ),
        ("--export onto a file", ["view", str(run), "--export", str(root / "secret.txt")], "error", False),
    ]
    try:
        for name, args, expect, serve in cases:

            def one(args=args, serve=serve) -> tuple[str, str]:
                try:
                    return cli_classify(*_cli(["--quiet", *args], wait_for_url=serve))
                except subprocess.TimeoutExpired:
                    return "crash", "no exit within the timeout"

            s.case(f"cli {name}", one, expect)
    finally:
        taken.close()
