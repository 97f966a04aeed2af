"""Census sweep of attnmap's evaluation metrics (the numbers users publish as evidence that maps
are faithful) against independent computations.

Run (seconds; nothing written)::

    PYTHONPATH=src python bench/metrics_sweep.py [--only SUBSTRING] [-v]

Each case (`bench/metrics_sweep_cases.py`, `_pixels.py`, `_slides.py`, `_froc.py`) calls one public
function of `attnmap.evaluate` on planted or seeded random inputs, degenerate ones included, and
holds the answer against a reference written in the bench (`bench/metrics_sweep_refs.py`: scikit-
learn's ROC AUC and average precision, a brute-force Mann-Whitney AUC, trapezoids, a brute-force
pointing game with a Euclidean disc, perturbation curves of a linear model, patch flipping by the
MIL model's own forward on each reduced bag, FROC by CAMELYON16's definition, footprint fractions by
sampling). Or against the library itself: batch against single calls, shuffled patches, scaled
scores.

Classes: ``ok`` (matches the reference within the case's tolerance), ``error`` (a one-line
`InputError`; expected for the inputs that must be refused), ``crash`` (any other exception, or a
multi-line message), ``wrong`` (a number other than the definition's, or a number where a refusal
or NaN is promised, or the reverse). ``!`` marks a class other than the case's expectation.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from metrics_sweep_cases import cases  # noqa: E402

CLASSES = ("ok", "error", "crash", "wrong")


def close(a: object, b: object, tol: float) -> bool:
    """Nested dicts / sequences / numbers equal within ``tol`` (absolute), NaN equal to NaN."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k], tol) for k in a)
    a_arr = np.asarray(a, dtype=np.float64)
    b_arr = np.asarray(b, dtype=np.float64)
    return a_arr.shape == b_arr.shape and bool(np.allclose(a_arr, b_arr, rtol=0, atol=tol, equal_nan=True))


def judge(case) -> tuple[str, str]:
    """(class, detail) of one case."""
    from attnmap.errors import InputError

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            got = case.call()
        except InputError as error:
            text = str(error)
            if "\n" in text.strip():
                return "crash", "multi-line: " + text.replace("\n", " | ")[:160]
            if case.expect == "ok":
                return "error", f"refused a valid input: {text[:160]}"
            return "error", text[:180]
        except Exception:  # noqa: BLE001 - a sweep records whatever escapes
            return "crash", traceback.format_exc().strip().splitlines()[-1][:180]
        if case.expect == "error":
            return "wrong", f"answered {_short(got)} where a refusal is due ({case.why})"
        try:
            want = case.reference() if callable(case.reference) else case.reference
        except Exception:  # noqa: BLE001 - a reference that cannot be computed is the bench's bug
            return "crash", "reference: " + traceback.format_exc().strip().splitlines()[-1][:160]
        if case.check is not None:
            verdict = case.check(got, want)
            return ("ok", "") if verdict is None else ("wrong", verdict)
        if close(got, want, case.tol):
            return "ok", ""
        return "wrong", f"got {_short(got)}, definition {_short(want)}"


def _short(value: object) -> str:
    text = np.array2string(value, precision=5, threshold=8) if isinstance(value, np.ndarray) else repr(value)
    return text.replace("\n", " ")[:140]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="run the cases whose name contains this")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every case, not only surprises")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    started = time.perf_counter()
    counts: Counter[str] = Counter()
    groups: dict[str, Counter[str]] = {}
    surprises = 0
    for case in cases():
        if args.only not in case.name:
            continue
        kind, detail = judge(case)
        counts[kind] += 1
        groups.setdefault(case.name.split("/")[0], Counter())[kind] += 1
        surprise = kind != case.expect
        surprises += surprise
        if surprise or args.verbose:
            print(f"{'!' if surprise else ' '} {kind:5s} {case.name}: {detail}")
    total = sum(counts.values())
    print()
    for group, tally in groups.items():
        print(f"  {group:22s} " + " / ".join(f"{tally[c]}" for c in CLASSES))
    print(
        f"{total} cases: "
        + " / ".join(f"{counts[c]} {c}" for c in CLASSES)
        + f"; {surprises} surprises; {time.perf_counter() - started:.1f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
