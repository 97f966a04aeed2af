"""The command line shell: help, version, and user errors as one line with exit status 2."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest

from attnmap import __version__
from attnmap.cli import main as cli_main
from attnmap.errors import InputError


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "attnmap", *args], capture_output=True, text=True, timeout=120
    )


def test_version_and_help_via_python_m():
    done = run("--version")
    assert done.returncode == 0 and __version__ in done.stdout
    done = run("--help")
    assert done.returncode == 0
    for name in ("demo", "explain", "mil", "wsi", "evaluate"):
        assert name in done.stdout


def test_unknown_subcommand_is_one_line_exit_2():
    done = run("frobnicate")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "frobnicate" in lines[0] and "Traceback" not in done.stderr


def test_bad_option_is_one_line_exit_2():
    done = run("--no-such-option")
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "--no-such-option" in done.stderr


@pytest.fixture
def failing_command(monkeypatch):
    @click.command()
    def boom() -> None:
        raise InputError("the slide 'x.svs' does not exist")

    monkeypatch.setattr(
        cli_main.LazyGroup, "get_command", lambda self, ctx, name: boom if name == "boom" else None
    )
    return boom


def test_input_error_prints_one_line_and_exits_2(failing_command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main.main(["boom"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["attnmap: error: the slide 'x.svs' does not exist"]


def test_debug_shows_the_traceback(failing_command):
    with pytest.raises(InputError):
        cli_main.main(["--debug", "boom"])


def test_missing_file_error_names_the_file(monkeypatch, capsys):
    @click.command()
    def opener() -> None:
        with open("/nonexistent/attnmap-input.png"):
            pass

    monkeypatch.setattr(cli_main.LazyGroup, "get_command", lambda self, ctx, name: opener)
    with pytest.raises(SystemExit) as exit_info:
        cli_main.main(["opener"])
    assert exit_info.value.code == 2
    assert "/nonexistent/attnmap-input.png" in capsys.readouterr().err
