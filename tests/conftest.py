"""Fixtures shared by several test modules, and the ``gpu`` marker's skip on machines without CUDA."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def single_thread():
    """Small tensors on a shared 2-core machine: one thread avoids oversubscription stalls."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pytest_configure(config: pytest.Config) -> None:
    """Remembered file hashes (`attnmap.file_hash`) go to a folder of this session, not the user's cache
    (subprocesses the tests start inherit it)."""
    import os
    import tempfile

    from attnmap.file_hash import CACHE_ENV

    os.environ.setdefault(CACHE_ENV, tempfile.mkdtemp(prefix="attnmap-test-cache-"))
    _deliver_ctrl_c()


def _deliver_ctrl_c() -> None:
    """Ctrl-C handled as at a terminal, in this process and the commands the tests start.

    Why: a suite started in the background of a non-interactive shell (``make test &``, a CI
    runner's job) inherits SIGINT ignored, and so does every command it starts; attnmap keeps a
    signal ignored on purpose ignored, so the tests of how a command stops on Ctrl-C saw no stop."""
    import signal

    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the tests marked ``gpu`` when no CUDA GPU is present: the marker is the one statement
    that a test needs CUDA, so ``pytest -m gpu`` selects exactly those (see bench/gpu_check.sh)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)
