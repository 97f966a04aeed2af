"""Robustness sweep of the attention-MIL side: checkpoints, bags, explanations and `attnmap mil`.

Run (seconds, not minutes, on a 2-core CPU; one thread)::

    PYTHONPATH=src nice python bench/mil_sweep.py [--only models,checkpoints,bags,explain,cli] [-v]

Every case is run and classified:

- ``ok``     it worked and every check on its result held;
- ``error``  a user error reported in one line (from the API an `attnmap.errors.InputError`, or a
             missing-file / folder OSError as the CLI's USER_ERRORS treat them, with a one-line
             message; from the CLI exit status 2 and a single stderr line, no Traceback);
- ``crash``  any other exception, a multi-line message, a traceback or another exit status;
- ``wrong``  it ran but a check failed (a map not finite, not one value per patch, attention not
             summing to 1, LRP not conserving the logit at ε = 0 on a bias-free model, a result
             that differs between two runs or between chunk sizes, a loaded model that does not
             reproduce the saved one, an input that should have been refused and was accepted);
- ``stale``  a rerun after one input changed differs from a fresh run with the changed input.

The cases live in one module per section (``mil_sweep_models.py``: models and checkpoints,
``mil_sweep_bags.py``, ``mil_sweep_explain.py``, ``mil_sweep_cli.py`` and ``mil_sweep_train.py``);
``mil_sweep_harness.py`` runs and classifies them.

It prints one line per case that is not ``ok`` or an expected ``error`` (all of them with -v), the
time of the 100,000-patch bag, and a table of counts per section and class. Tiny seeded models
(embed_dim 32) keep it fast; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import mil_sweep_harness as harness
import torch
from mil_sweep_bags import sweep_bags
from mil_sweep_cli import sweep_cli
from mil_sweep_explain import sweep_explain
from mil_sweep_models import sweep_checkpoints, sweep_models

RESULTS = harness.RESULTS


SECTIONS = {
    "models": sweep_models,
    "checkpoints": sweep_checkpoints,
    "bags": sweep_bags,
    "explain": sweep_explain,
    "cli": sweep_cli,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every case")
    args = parser.parse_args()
    harness.VERBOSE = args.verbose
    torch.set_num_threads(1)
    import warnings

    warnings.simplefilter("ignore")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mil-sweep-") as folder:
        for name in args.only.split(","):
            section_start = time.perf_counter()
            SECTIONS[name](Path(folder))
            print(f"  section {name}: {time.perf_counter() - section_start:.1f} s", flush=True)
    counts = Counter((section, status) for section, _, status, _, _ in RESULTS)
    statuses = ("ok", "error", "crash", "wrong", "stale")
    print(f"\n{'section':<12}" + "".join(f"{s:>8}" for s in statuses) + f"{'total':>8}")
    for section in args.only.split(","):
        row = [counts[(section, s)] for s in statuses]
        print(f"{section:<12}" + "".join(f"{n:>8}" for n in row) + f"{sum(row):>8}")
    total = Counter(status for _, _, status, _, _ in RESULTS)
    print(f"{'all':<12}" + "".join(f"{total[s]:>8}" for s in statuses) + f"{len(RESULTS):>8}")
    print(f"{time.perf_counter() - start:.0f} s")
    sys.exit(0)


if __name__ == "__main__":
    main()
