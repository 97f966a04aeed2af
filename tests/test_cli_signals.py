"""A command stopped by Ctrl-C, SIGTERM (a scheduler's time limit) or SIGHUP (a dropped ssh session)
unwinds: its temporaries are deleted, the folder's lock released, one line said, and it exits with
128 + the signal's number, as a shell reports it.

The command runs in a forked child (torch already imported) and gets its signal once it has taken
the lock and started writing (a marker file), not after a fixed sleep.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import click
import psutil
import pytest

from attnmap.io_utils import TEMP_MARKER, atomic_path
from attnmap.lock import LOCK_NAME, folder_lock


def _run_slow_command(out: Path, ready: Path, err_path: Path) -> None:
    """In the child: `attnmap slow`, a command that locks ``out``, starts a file, says it is ready
    and waits to be stopped."""
    from attnmap.cli import main as cli_main

    # the dispositions of a command started from a terminal: a suite run under nohup hands SIGHUP down
    # ignored, and the command rightly keeps an ignored signal ignored (see the test below)
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, signal.SIG_DFL if number != signal.SIGINT else signal.default_int_handler)

    @click.command()
    def slow() -> None:
        with folder_lock(out, "attnmap slow"), atomic_path(out / "result.h5") as temporary:
            temporary.write_bytes(b"half")
            ready.write_text("ready")
            time.sleep(60)

    module = types.ModuleType("attnmap_test_slow")
    module.slow = slow
    sys.modules[module.__name__] = module
    cli_main.SUBCOMMANDS["slow"] = f"{module.__name__}:slow"
    sys.stderr = open(err_path, "w", buffering=1)  # noqa: SIM115 - the child ends with os._exit
    code = 0
    try:
        cli_main.main(["--quiet", "slow"])
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else 1
    except BaseException:  # noqa: BLE001 - an escaped exception is what the test looks for
        code = 99
    sys.stderr.flush()
    os._exit(code)


@pytest.mark.parametrize(
    ("signum", "message"),
    [
        (signal.SIGTERM, "attnmap: stopped by SIGTERM"),
        (signal.SIGHUP, "attnmap: stopped by SIGHUP"),
        (signal.SIGINT, "attnmap: interrupted"),
    ],
)
def test_a_stopped_command_cleans_up_and_says_so_in_one_line(
    tmp_path: Path, signum: signal.Signals, message: str
) -> None:
    out, ready, err_path = tmp_path / "out", tmp_path / "ready", tmp_path / "stderr.txt"
    child = multiprocessing.get_context("fork").Process(target=_run_slow_command, args=(out, ready, err_path))
    child.start()
    deadline = time.monotonic() + 30
    while not ready.exists() and child.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ready.exists(), err_path.read_text() if err_path.exists() else "the child did not start"
    os.kill(child.pid, signum)
    child.join(timeout=10)
    if child.is_alive():
        child.kill()
        pytest.fail("still running 10 s after the signal")
    assert child.exitcode == 128 + signum
    assert err_path.read_text().strip().splitlines()[-1] == message
    assert "Traceback" not in err_path.read_text()
    left = sorted(path.name for path in out.iterdir())
    assert LOCK_NAME not in left and not any(TEMP_MARKER in name for name in left) and left == []
    with folder_lock(out):  # a rerun right after takes the folder at once
        pass


def test_threads_started_while_stop_signals_are_blocked_keep_them_blocked() -> None:
    """What a local cluster's start thread and the worker processes it spawns inherit (the terminal's
    Ctrl-C must not reach a worker before its preload ignores it); this thread's mask comes back."""
    from attnmap.stop_signals import WORKER_IGNORED, blocked_stop_signals

    before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    masks: list[set[int]] = []
    with blocked_stop_signals():
        thread = threading.Thread(target=lambda: masks.append(signal.pthread_sigmask(signal.SIG_BLOCK, [])))
        thread.start()
        thread.join()
    assert set(WORKER_IGNORED) <= masks[0]
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before


def test_a_signal_ignored_on_purpose_stays_ignored() -> None:
    from attnmap.stop_signals import signals_raise

    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
    try:
        with signals_raise():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)


class _StoppedWhileCollected:
    """Where a Ctrl-C can land: in a finaliser, whose exceptions Python prints and drops."""

    def __del__(self) -> None:
        raise KeyboardInterrupt


def test_a_stop_dropped_in_a_finaliser_is_raised_again() -> None:
    from attnmap.stop_signals import signals_raise

    with signals_raise(), pytest.raises(KeyboardInterrupt):  # noqa: PT012
        _StoppedWhileCollected()  # collected at once: KeyboardInterrupt in __del__, dropped by Python
        for _ in range(200):  # the run goes on; the interrupt must reach it
            time.sleep(0.005)


def _run_the_command_line(err_path: Path) -> None:
    """In the child: ``attnmap methods`` as the console script runs it (``main()`` reading sys.argv);
    exit status 0 when the stop signals are ignored afterwards."""
    from attnmap.cli import main as cli_main

    sys.argv = ["attnmap", "--quiet", "methods"]
    sys.stdout = sys.stderr = open(err_path, "w", buffering=1)  # noqa: SIM115 - the child ends with os._exit
    with contextlib.suppress(SystemExit):
        cli_main.main()
    numbers = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    os._exit(0 if all(signal.getsignal(number) is signal.SIG_IGN for number in numbers) else 1)


def test_a_stop_after_the_work_is_written_does_not_make_a_finished_run_a_killed_one(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    child = context.Process(target=_run_the_command_line, args=(tmp_path / "out",))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0  # SIGINT, SIGTERM, SIGHUP ignored during Python's teardown


# The command line as the console script starts it, with a finder that only notes the moment torch's
# import begins (the first seconds of every command but `view`), so the signal lands inside it.
_STARTED_IMPORTING_TORCH = """
import sys
marker = sys.argv[1]
class NoteTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            open(marker, "w").close()
            sys.meta_path.remove(self)
        return None
sys.meta_path.insert(0, NoteTorch())
sys.argv = ["attnmap", "methods"]
from attnmap.cli.main import main
sys.exit(main())
"""


@pytest.mark.parametrize(
    ("signum", "message"),
    [(signal.SIGINT, "attnmap: interrupted"), (signal.SIGTERM, "attnmap: stopped by SIGTERM")],
)
def test_a_stop_while_torch_imports_is_one_line_at_once(
    tmp_path: Path, signum: signal.Signals, message: str
) -> None:
    """Before, `import attnmap` imported torch ahead of the command line's handlers: Ctrl-C printed
    Python's traceback and SIGTERM ended the process silently; a Ctrl-C inside torch's import under
    the handlers could end as an ImportError or be swallowed."""

    marker = tmp_path / "importing-torch"
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen([sys.executable, "-c", _STARTED_IMPORTING_TORCH, str(marker)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not marker.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    assert marker.exists(), child.communicate()[1]
    child.send_signal(signum)
    try:
        _, err = child.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        child.kill()
        pytest.fail(f"still running 10 s after the signal: {child.communicate()[1]}")
    assert child.returncode == 128 + signum, err
    assert err.strip().splitlines() == [message]


def test_the_resource_tracker_started_for_a_cluster_prints_no_leak_warning_after_a_stop() -> None:
    """A Ctrl-C while the local cluster started killed its workers before they released a semaphore,
    and multiprocessing's resource tracker (a process of its own, outliving the command) printed
    "UserWarning: resource_tracker: There appear to be 1 leaked semaphore objects ..." after the
    stop line, with its source line: the stop looked like a crash. It unlinks the semaphore itself."""
    code = (
        "import multiprocessing, os\n"
        "from attnmap.parallel_dask import start_resource_tracker\n"
        "start_resource_tracker()\n"
        "lock = multiprocessing.get_context('spawn').Lock()  # a semaphore the tracker follows\n"
        "os._exit(0)  # gone without releasing it, as a killed start leaves it\n"
    )
    # stderr is read to its end: the tracker holds it open until it has made its report
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr == "", done.stderr


def test_ctrl_c_while_the_local_cluster_starts_ends_the_run_at_once(tmp_path: Path) -> None:
    """Ctrl-C to the process group (as a terminal sends it) once the local cluster's start has made
    its first process (multiprocessing's resource tracker, for the nannies' queues, or a worker):
    the run says its line within a second and leaves no process behind. Before, the signal was held
    back until the whole cluster was up (2.2 s on a quiet machine, 35 s on a loaded one)."""

    import numpy as np
    import psutil
    import timm
    from PIL import Image

    pytest.importorskip("distributed")
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=1, img_size=32, num_classes=2)
    torch.save({"state_dict": model.state_dict()}, tmp_path / "weights.pt")
    (tmp_path / "images").mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "images" / "a.png")
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "attnmap", "--quiet", "explain", str(tmp_path / "images"), "--model",
               "timm:vit_tiny_patch16_224", "--model-arg", "depth=1", "--model-arg", "img_size=32",
               "--checkpoint", str(tmp_path / "weights.pt"), "--method", "attention", "--workers", "2",
               "--out", str(tmp_path / "out")]
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)  # its own process group, as a terminal's job
    watchdog = threading.Timer(120, os.killpg, (child.pid, signal.SIGKILL))
    watchdog.start()
    process, started = psutil.Process(child.pid), []
    while not started and child.poll() is None:
        with contextlib.suppress(psutil.Error):
            started = [(proc, " ".join(proc.cmdline())) for proc in process.children(recursive=True)]
            started = [(proc, line) for proc, line in started
                       if any(mark in line for mark in ("-fork", "resource_tracker"))]
        time.sleep(0.005)
    assert started, child.communicate()[1]
    os.killpg(child.pid, signal.SIGINT)
    sent = time.monotonic()
    lines = []
    for line in child.stderr:  # the line, when it comes
        lines.append(line)
        if line.strip() == "attnmap: interrupted":
            said = time.monotonic() - sent
            break
    lines.append(child.communicate()[1])
    watchdog.cancel()
    err = "".join(lines)
    assert child.returncode == 130, err
    assert said < 1.0, f"said {said:.2f} s after Ctrl-C"  # the process's own teardown comes after
    assert err.strip().splitlines()[-1] == "attnmap: interrupted", err
    for noise in ("Traceback", "distributed.", "resource_tracker", "leaked semaphore"):
        assert noise not in err, err
    # killed workers whose parent has exited may stay zombies (no init reaps them in a container):
    # dead all the same, so only a running process counts as left behind
    spawned = [proc for proc, line in started if "resource_tracker" not in line]
    deadline = time.monotonic() + 10
    while (alive := [proc for proc in spawned if _running(proc)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert alive == []


def _running(process: psutil.Process) -> bool:
    """Whether ``process`` still runs: neither gone nor a zombie."""
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:  # gone
        return False
