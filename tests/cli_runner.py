"""Run the ``attnmap`` command line in this process and capture what it printed."""

from __future__ import annotations

import pytest

from attnmap.cli.main import main


def run_cli(capsys: pytest.CaptureFixture, *args: object) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of ``attnmap ARGS``."""
    try:
        main([str(arg) for arg in args])
        code = 0
    except SystemExit as done:
        code = int(done.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err
