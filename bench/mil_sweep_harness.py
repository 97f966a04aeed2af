"""The mil_sweep harness: how a case is run and classified (see bench/mil_sweep.py), and the
small builders every section shares."""

from __future__ import annotations

import io
import traceback
from collections.abc import Callable

import numpy as np
import torch
from sweep_common import run_cli

from attnmap.errors import InputError
from attnmap.mil import (
    infer_bag,
)

D = 32
RESULTS: list[tuple[str, str, str, str, str]] = []  # section, case, status, expected, detail
VERBOSE = False


class WrongError(Exception):
    """A check on a result failed."""


class StaleError(Exception):
    """A rerun differs from a fresh run."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise WrongError(message)


def case(section: str, name: str, fn: Callable[[], object], expect: str = "ok") -> str:
    """Run one case and record its class; ``expect`` is "ok", "error" or "any" (either is fine)."""
    try:
        fn()
        status, detail = "ok", ""
    except WrongError as error:
        status, detail = "wrong", str(error)
    except StaleError as error:
        status, detail = "stale", str(error)
    except (InputError, FileNotFoundError, IsADirectoryError, NotADirectoryError) as error:
        message = str(error)  # the CLI's user errors (attnmap.cli.main.USER_ERRORS)
        status = "error" if "\n" not in message.strip() and message.strip() else "crash"
        detail = message
    except Exception as error:  # noqa: BLE001 - anything else is what the sweep looks for
        status = "crash"
        detail = f"{type(error).__name__}: {error} @ {traceback.extract_tb(error.__traceback__)[-1].name}"
    if status == "error" and expect == "ok":
        status, detail = "wrong", f"refused a valid input: {detail}"
    if status == "ok" and expect == "error":
        status, detail = "wrong", "accepted an input that should be refused"
    RESULTS.append((section, name, status, expect, detail))
    if VERBOSE or status not in ("ok", "error"):
        print(f"[{section}] {name}: {status} {detail[:300]}", flush=True)
    return status


def cli(*args: object) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of ``attnmap ARGS`` in this process."""
    return run_cli(args, quiet=False)


def cli_case(
    section: str, name: str, args: list[object], expect: str = "ok", then: Callable[[], object] | None = None
) -> str:
    def run() -> None:
        code, _, err = cli(*args)
        lines = [line for line in err.strip().splitlines() if line.strip()]
        if code == 0:
            if then is not None:
                then()
            return
        if code == 2 and len(lines) == 1 and "Traceback" not in err:
            raise InputError(lines[0])
        raise RuntimeError(f"exit {code}: {' | '.join(lines[-3:])[:300]}")

    return case(section, name, run, expect)


def rng_features(n: int, d: int = D, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def perturbed(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random non-zero weights everywhere (biases too), so attention is far from uniform."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    return model.eval()


def same_outputs(a: torch.nn.Module, b: torch.nn.Module, features: np.ndarray, atol: float = 1e-5) -> None:
    ra, rb = infer_bag(a, features), infer_bag(b, features)
    check(ra.raw.shape == rb.raw.shape, f"attention shape {ra.raw.shape} vs {rb.raw.shape}")
    check(np.allclose(ra.raw, rb.raw, atol=atol), "attention differs after reload")
    check(np.allclose(ra.logits, rb.logits, atol=atol), "logits differ after reload")


def torch_bytes(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def bias_free(model: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias") and (
                "attention_net.0" in name or "feature.0" in name or "classifier" in name
            ):
                parameter.zero_()
    return model


def clone(model: torch.nn.Module) -> torch.nn.Module:
    import copy

    return copy.deepcopy(model).eval()
