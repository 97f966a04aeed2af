"""How an attnmap process stops when it is told to: SIGTERM (a cluster scheduler at the time limit,
``kill``, Kubernetes) and SIGHUP (the ssh session dropped) take the same path as Ctrl-C.

Why: Python's default for SIGTERM and SIGHUP ends the process on the spot, so no ``finally`` runs:
the run's lock and its half-written temporaries stay in the output folder, a Dask cluster's
workers are left to notice by themselves, progress bars stay mid-line and multiprocessing warns
about leaked semaphores. Raised as an exception instead, the signal unwinds the run like Ctrl-C
does: temporaries are deleted, the lock is released, the cluster is closed, and the command line
prints one line and exits with 128 + the signal's number, as a shell reports a process the signal
killed. A second signal while that cleanup runs is ignored (a scheduler follows with SIGKILL if it
will not wait).

Dask workers of a local cluster (`attnmap.parallel_dask`) share the terminal's process group, so a
Ctrl-C (or SLURM's SIGTERM to the whole job) reaches them too: each would print a traceback and the
nanny would restart it. They ignore these signals instead (`attnmap.dask_worker`, loaded as a
worker preload): their parent stops them, and they end with it if it is killed (Dask's parent-alive pipe).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
WORKER_IGNORED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived. A KeyboardInterrupt, so that whatever cleans up after Ctrl-C
    (here, in click, in Dask, in torch) cleans up after it too, and ``except Exception`` (a failed
    slide recorded and the run going on) does not catch it."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


def stopped_by(error: BaseException | None) -> Terminated | None:
    """The `Terminated` behind ``error`` (click turns a KeyboardInterrupt into an Abort), if any."""
    seen = 0
    while error is not None and seen < 10:
        if isinstance(error, Terminated):
            return error
        error = error.__cause__ or error.__context__
        seen += 1
    return None


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise `Terminated` in the main thread (once; later ones
    are ignored while the first unwinds). Previous handlers come back after. One that was ignored
    (``nohup``) stays ignored; outside the main thread (an embedding application), nothing changes.
    A stop (Ctrl-C too) that Python dropped in a finaliser is raised again."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired: list[int] = []

    def handler(signum: int, _frame: FrameType | None) -> None:
        if fired:
            return
        fired.append(signum)
        raise Terminated(signum)

    # a signal ignored on purpose (nohup, or a shell's background job) stays ignored
    previous = {
        number: signal.signal(number, handler)
        for number in STOP_SIGNALS
        if signal.getsignal(number) is not signal.SIG_IGN
    }
    previous_hook = sys.unraisablehook

    def unraisable(info: Any) -> None:
        """A stop raised inside a ``__del__`` or a weakref callback (the garbage collector's) is
        dropped by Python, with an "Exception ignored" traceback, and the run goes on as if never
        stopped: raise the signal again, to land in the run's own code."""
        if not isinstance(info.exc_value, KeyboardInterrupt):
            previous_hook(info)
            return
        signum = getattr(info.exc_value, "signum", signal.SIGINT)
        if signum in previous or signal.getsignal(signum) is signal.default_int_handler:
            fired.clear()
            # sent from another thread a moment later: raised here, it would be dropped again
            threading.Timer(0.01, os.kill, (os.getpid(), signum)).start()

    sys.unraisablehook = unraisable
    try:
        yield
    finally:
        sys.unraisablehook = previous_hook
        for number, old in previous.items():
            signal.signal(number, old)


def stop_line(signum: int) -> tuple[str, int]:
    """What the command line says when ``signum`` stops it, and its exit status (128 + the number,
    as a shell reports a process the signal killed)."""
    if signum == signal.SIGINT:
        return "attnmap: interrupted", 128 + signum
    return f"attnmap: stopped by {signal.Signals(signum).name}", 128 + signum


@contextlib.contextmanager
def stop_signals_exit() -> Iterator[None]:
    """Within the block, Ctrl-C, SIGTERM and SIGHUP end the process on the spot, saying their line
    (`stop_line`). For the command line's imports, before its command has done anything: there is
    nothing to unwind, and an exception raised inside a C extension's import does not unwind
    cleanly (a Ctrl-C during ``import torch`` was seen to end as ImportError "cannot load module more
    than once per process", as a RecursionError, or to be swallowed and the command run to the end).
    Handlers ignored on purpose stay ignored; the previous ones come back after the block."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def leave(signum: int, _frame: FrameType | None) -> None:
        line, status = stop_line(signum)
        with contextlib.suppress(OSError):  # the terminal may be gone (SIGHUP)
            os.write(2, f"{line}\n".encode())
        os._exit(status)

    previous = {
        number: signal.signal(number, leave)
        for number in WORKER_IGNORED
        if signal.getsignal(number) is not signal.SIG_IGN
    }
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


@contextlib.contextmanager
def blocked_stop_signals() -> Iterator[None]:
    """Block Ctrl-C, SIGTERM and SIGHUP in this thread's signal mask during the block, which the
    threads and processes started in it inherit (a local Dask cluster's: its worker processes must
    not take the terminal's Ctrl-C before their preload ignores it). A signal sent to the process
    meanwhile goes to a thread that does not block it, and Python runs its handler in the main
    thread all the same."""
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, WORKER_IGNORED)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def ignore_stop_signals() -> None:
    """In a worker process whose parent stops it: ignore Ctrl-C, SIGTERM and SIGHUP."""
    if threading.current_thread() is threading.main_thread():
        for number in WORKER_IGNORED:
            signal.signal(number, signal.SIG_IGN)

