"""bench/gpu_check.sh, the one command for a lent GPU machine: it parses, refuses bad settings, and its
cheapest step runs here (the whole CPU dry run, `bash bench/gpu_check.sh --dry-run`, takes a minute)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.sh"
pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "OUT": str(tmp_path / "out"), "GPU_CHECK_PYTHON": sys.executable, **env}
    return subprocess.run(
        ["bash", str(SCRIPT), *args], env=environment, capture_output=True, text=True, timeout=60
    )


def test_the_script_parses_and_refuses_bad_settings(tmp_path: Path) -> None:
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    assert _run(tmp_path, "--fast").returncode == 2
    refused = _run(tmp_path, GPU_CHECK_DEVICE="tpu")
    assert refused.returncode == 2 and "GPU_CHECK_DEVICE must be cuda or cpu" in refused.stderr


def test_dry_run_records_the_environment_and_each_step_status(tmp_path: Path) -> None:
    done = _run(tmp_path, "--dry-run", GPU_CHECK_STEPS="env")
    assert done.returncode == 0, done.stderr
    out = tmp_path / "out"
    environment = (out / "env.txt").read_text()
    assert "mode: cpu" in environment and "torch 2." in environment and "cuda available:" in environment
    assert (out / "summary.txt").read_text().splitlines()[1:] == ["env 0"]
    failed = _run(tmp_path, "--dry-run", GPU_CHECK_STEPS="env,mil_explain", GPU_CHECK_PYTHON="false")
    assert failed.returncode == 0  # a failing step is recorded, the script goes on
    runs = (out / "summary.txt").read_text().split("# step")
    assert [line.split()[:2] for line in runs[-1].splitlines()[1:]] == [["env", "1"], ["mil_explain", "1"]]
    packed = _run(tmp_path, "--dry-run", GPU_CHECK_STEPS="env", GPU_CHECK_PACK="1")
    assert packed.returncode == 0, packed.stderr
    assert sorted(path.name for path in out.iterdir()) == ["env.txt", "gpu_check.tar.gz", "summary.txt"]
