"""``attnmap demo --device``: checked before any work, and handed to every section of the demo.

The full demo run is the README test's (`tests/test_readme.py`, on this machine's ``auto``); here the
four sections are replaced by recorders, so these tests cost milliseconds.
"""

from __future__ import annotations

import json

import pytest
import torch
from cli_runner import run_cli

import attnmap.demo as demo_module

SECTIONS = ("_shapes_section", "_evaluation_section", "_slide_section", "_hard_slide_section")


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> dict[str, torch.device]:
    """Replace the demo's sections by functions recording the device each one was given."""
    seen: dict[str, torch.device] = {}
    for name in SECTIONS:

        def record(*args: object, _name: str = name) -> str:
            devices = [arg for arg in args if isinstance(arg, torch.device)]
            assert len(devices) == 1, (_name, args)
            seen[_name] = devices[0]
            return f"<p>{_name}</p>"

        monkeypatch.setattr(demo_module, name, record)
    return seen


@pytest.mark.parametrize("flag", ["cpu", "auto"])
def test_demo_hands_its_device_to_every_section(capsys, tmp_path, recorded, flag: str) -> None:
    code, out, err = run_cli(capsys, "demo", "--device", flag, "-o", tmp_path / "demo")
    assert code == 0, err
    expected = torch.device("cuda" if flag == "auto" and torch.cuda.is_available() else "cpu")
    assert recorded == dict.fromkeys(SECTIONS, expected)
    record = json.loads((tmp_path / "demo" / "demo_run.json").read_text())
    assert record["device"] == str(expected)
    assert f"(device {expected})" in (tmp_path / "demo" / "index.html").read_text()


def test_demo_device_defaults_to_auto(capsys, tmp_path, recorded) -> None:
    code, _, err = run_cli(capsys, "demo", "-o", tmp_path / "demo")
    assert code == 0, err
    assert set(recorded.values()) == {torch.device("cuda" if torch.cuda.is_available() else "cpu")}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_demo_on_cuda_without_a_gpu_is_one_line_and_exit_2(capsys, tmp_path, recorded) -> None:
    code, out, err = run_cli(capsys, "demo", "--device", "cuda", "-o", tmp_path / "demo")
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "cuda" in err and "Traceback" not in err
    assert not recorded and not (tmp_path / "demo").exists()  # refused before any work


def test_demo_refuses_an_unknown_device(capsys, tmp_path, recorded) -> None:
    code, _, err = run_cli(capsys, "demo", "--device", "tpu", "-o", tmp_path / "demo")
    assert code == 2 and "tpu" in err and not recorded
