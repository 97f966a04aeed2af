"""What the sweeps share: the command line run in this process, and output folders compared.

`run_cli` gives a case's exit status and output as a user sees them, with an escaped exception
recorded (a crash) rather than stopping the sweep. When a rerun's output folder is held against a
fresh run's, times, dates, hosts and versions differ between any two runs and each run writes its
own folder's path into its records; everything else must be equal (`normalise`, `equal`).
"""

from __future__ import annotations

import contextlib
import io
import re
import traceback
from collections.abc import Sequence

import numpy as np

ESCAPED = 99  # run_cli's exit status when an exception escaped the command line


def run_cli(argv: Sequence[object], quiet: bool = True) -> tuple[int, str, str]:
    """``attnmap ARGV`` in this process: (exit status, stdout, stderr); `ESCAPED` with the traceback
    on stderr when an exception escaped ``main``."""
    from attnmap.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([*(["--quiet"] if quiet else []), *map(str, argv)])
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
        except BaseException:  # noqa: BLE001 - a sweep records whatever escapes
            err.write(traceback.format_exc())
            code = ESCAPED
    return code, out.getvalue(), err.getvalue()

TIME_KEYS = re.compile(r"time|date|created|elapsed|duration|seconds|host|pid|started|finished|version", re.I)


def normalise(value: object, folder: str) -> object:
    """``value`` (decoded JSON) without time-like keys, ``folder`` written as ``<OUT>``."""
    if isinstance(value, dict):
        return {k: normalise(v, folder) for k, v in value.items() if not TIME_KEYS.search(str(k))}
    if isinstance(value, list):
        return [normalise(v, folder) for v in value]
    if isinstance(value, str):
        return value.replace(folder, "<OUT>")
    return value


def equal(a: object, b: object, float_tolerance: bool = False) -> bool:
    """Nested dicts, lists and arrays equal; arrays exactly, or, with ``float_tolerance``, float
    arrays to the round-off of another batching (rtol 1e-5, atol 1e-6 of the largest value)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(equal(a[k], b[k], float_tolerance) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(equal(x, y, float_tolerance) for x, y in zip(a, b, strict=True))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape:
            return False
        if float_tolerance and a.dtype.kind == "f" and b.dtype.kind == "f":
            scale = float(np.nanmax(np.abs(a))) if a.size and np.isfinite(a).any() else 1.0
            return bool(np.allclose(a, b, rtol=1e-5, atol=1e-6 * max(scale, 1e-30), equal_nan=True))
        return a.dtype == b.dtype and bool(np.array_equal(a, b, equal_nan=a.dtype.kind == "f"))
    return a == b
