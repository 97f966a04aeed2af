"""Robustness sweep of the attention-MIL side: checkpoints, bags, explanations and `attnmap mil`.

Run (a few minutes on a 2-core CPU; one thread)::

    PYTHONPATH=src nice python bench/mil_sweep.py [--only models,checkpoints,bags,explain,cli] [-v]

Every case is run and classified:

- ``ok``     it worked and every check on its result held;
- ``error``  a user error reported in one line (an `attnmap.errors.InputError` with a one-line
             message from the API; exit status 2 and a single stderr line, no Traceback, from the CLI);
- ``crash``  any other exception, a multi-line message, a traceback or another exit status;
- ``wrong``  it ran but a check failed (a map not finite, not one value per patch, attention not
             summing to 1, LRP not conserving the logit at ε = 0 on a bias-free model, a result
             that differs between two runs or between chunk sizes, a loaded model that does not
             reproduce the saved one, an input that should have been refused and was accepted);
- ``stale``  a rerun after one input changed differs from a fresh run with the changed input.

It prints one line per case that is not ``ok`` or an expected ``error`` (all of them with -v), the
time of the 100,000-patch bag, and a table of counts per section and class. Tiny seeded models
(embed_dim 32) keep it fast; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import math
import shutil
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import torch

from attnmap.errors import InputError
from attnmap.mil import (
    ABMIL,
    CLAM_MB,
    CLAM_SB,
    RELEVANCE_METHODS,
    explain,
    feature_gradients,
    infer_bag,
    load_mil,
    read_bag,
    write_h5_bag,
)
from attnmap.mil.explain import PER_FEATURE_METHODS

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
    from attnmap.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(arg) for arg in args])
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
        except Exception:  # noqa: BLE001 - an escaped exception is a crash with a traceback
            traceback.print_exc()
            code = -1
    return code, out.getvalue(), err.getvalue()


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


# ---------------------------------------------------------------------------------------- models
def model_grid() -> list[tuple[str, Callable[[], torch.nn.Module]]]:
    grid: list[tuple[str, Callable[[], torch.nn.Module]]] = []
    for cls in (CLAM_SB, CLAM_MB):
        for size in ("small", "big"):
            for n_classes in (2, 3, 4, 5):
                for gate in (True, False):
                    for dropout in (0.0, 0.25):
                        subtyping = n_classes > 2 and gate

                        def build(cls=cls, size=size, n=n_classes, gate=gate, p=dropout, sub=subtyping):
                            return cls(
                                gate=gate, size=size, n_classes=n, dropout=p, subtyping=sub, embed_dim=D
                            )

                        grid.append(
                            (
                                f"{cls.__name__}-{size}-c{n_classes}-{'gated' if gate else 'plain'}"
                                f"-p{dropout}{'-sub' if subtyping else ''}",
                                build,
                            )
                        )
    for gate in (True, False):
        for dropout in (0.0, 0.25):
            for hidden, attention, n_classes in ((64, 16, 2), (128, 32, 4)):

                def build(g=gate, p=dropout, h=hidden, a=attention, n=n_classes):
                    return ABMIL(embed_dim=D, hidden_dim=h, attention_dim=a, n_classes=n, gate=g, dropout=p)

                grid.append(
                    (
                        f"ABMIL-h{hidden}-a{attention}-c{n_classes}-{'gated' if gate else 'plain'}"
                        f"-p{dropout}",
                        build,
                    )
                )
    return grid


def same_outputs(a: torch.nn.Module, b: torch.nn.Module, features: np.ndarray, atol: float = 1e-5) -> None:
    ra, rb = infer_bag(a, features), infer_bag(b, features)
    check(ra.raw.shape == rb.raw.shape, f"attention shape {ra.raw.shape} vs {rb.raw.shape}")
    check(np.allclose(ra.raw, rb.raw, atol=atol), "attention differs after reload")
    check(np.allclose(ra.logits, rb.logits, atol=atol), "logits differ after reload")


def sweep_models(tmp: Path) -> None:
    features = rng_features(17)
    for name, build in model_grid():

        def run(build=build, name=name):
            torch.manual_seed(0)
            model = perturbed(build())
            out = model(torch.from_numpy(features), label=1, instance_eval=not isinstance(model, ABMIL))
            check(torch.isfinite(out.logits).all(), "non-finite logits")
            path = tmp / f"{name}.pt"
            torch.save(model.state_dict(), path)
            loaded = load_mil(path)
            check(type(loaded) is type(model), f"loaded as {type(loaded).__name__}")
            check(loaded.n_classes == model.n_classes, "class count not inferred")
            check(getattr(loaded, "gate", None) == model.gate, "gate not inferred")
            if hasattr(model, "size"):
                check(loaded.size == model.size, "size not inferred")
            same_outputs(model, loaded, features)
            # softmax attention sums to 1 per branch
            soft = np.exp(
                infer_bag(loaded, features).raw - infer_bag(loaded, features).raw.max(1, keepdims=True)
            )
            check(np.allclose((soft / soft.sum(1, keepdims=True)).sum(1), 1), "softmax does not sum to 1")

        case("models", name, run)
    torch.manual_seed(0)
    for model in (CLAM_SB(n_classes=3, embed_dim=D), CLAM_MB(n_classes=3, embed_dim=D, subtyping=True)):
        name = type(model).__name__
        for n in (1, 2, 3, 16, 17):

            def forward(model=model, n=n):
                model.train()
                out = model(torch.from_numpy(rng_features(n)), label=2, instance_eval=True)
                check(torch.isfinite(out.instance_loss), "instance loss not finite")
                out.instance_loss.backward()

            case("models", f"{name} instance_eval on {n} patch(es)", forward)
        case(
            "models",
            f"{name} instance_eval label=3",
            lambda m=model: m(torch.ones(4, D), label=3, instance_eval=True),
            "error",
        )
        case(
            "models",
            f"{name} instance_eval without label",
            lambda m=model: m(torch.ones(4, D), instance_eval=True),
            "error",
        )
        case("models", f"{name} forward on 0 patches", lambda m=model: m(torch.ones(0, D)), "error")
        case(
            "models",
            f"{name} forward on float64 features",
            lambda m=model: check(
                torch.isfinite(m(torch.ones(4, D, dtype=torch.float64)).logits).all(), "nan"
            ),
            "any",
        )
        case(
            "models",
            f"{name} forward on NaN features",
            lambda m=model: m(torch.full((4, D), float("nan"))),
            "error",
        )
    case("models", "CLAM_SB custom size 'huge'", lambda: CLAM_SB(size="huge", embed_dim=D), "error")
    case("models", "CLAM_SB n_classes=1", lambda: CLAM_SB(n_classes=1, embed_dim=D), "error")
    case("models", "CLAM_MB dropout=1.0", lambda: CLAM_MB(dropout=1.0, embed_dim=D), "error")
    case("models", "ABMIL n_classes=1", lambda: ABMIL(n_classes=1, embed_dim=D), "error")
    case("models", "CLAM_SB k_sample=0", lambda: CLAM_SB(k_sample=0, embed_dim=D), "error")


# ----------------------------------------------------------------------------------- checkpoints
def sweep_checkpoints(tmp: Path) -> None:
    features = rng_features(11)
    torch.manual_seed(1)
    models = {
        "sb": perturbed(CLAM_SB(n_classes=3, embed_dim=D, dropout=0.25)),
        "mb": perturbed(CLAM_MB(n_classes=4, embed_dim=D, gate=False, dropout=0.25)),
        "abmil": perturbed(ABMIL(embed_dim=D, n_classes=3, gate=False, dropout=0.25)),
    }
    for key, model in models.items():
        state = model.state_dict()

        def save_load(transform, name, expect="ok", atol=1e-5, model=model, state=state, key=key):
            path = tmp / f"{key}_{name}.pt"
            payload = transform({k: v.clone() for k, v in state.items()})
            if isinstance(payload, bytes):
                path.write_bytes(payload)
            else:
                torch.save(payload, path)

            def run():
                loaded = load_mil(path)
                same_outputs(model, loaded.float(), features, atol=atol)

            case("checkpoints", f"{key}: {name}", run, expect)

        save_load(lambda s: s, "plain state_dict")
        save_load(lambda s: {f"module.{k}": v for k, v in s.items()}, "DataParallel module. prefix")
        save_load(
            lambda s: {k: v for k, v in s.items() if not k.startswith("instance_classifiers")},
            "no instance classifiers",
            "ok" if key != "abmil" else "any",
        )
        save_load(lambda s: {**s, "instance_loss_fn.weight": torch.ones(2)}, "instance_loss_fn key")
        save_load(lambda s: {**s, "extra.layer.weight": torch.ones(3)}, "unknown extra key", "any")
        save_load(lambda s: {"state_dict": s, "epoch": 3}, "wrapped in {'state_dict'}")
        save_load(lambda s: {"model": s}, "wrapped in {'model'}")
        save_load(lambda s: {k: v.half() for k, v in s.items()}, "float16", atol=2e-2)
        save_load(lambda s: {k: v.bfloat16() for k, v in s.items()}, "bfloat16", atol=1e-1)
        save_load(lambda s: {k: v.double() for k, v in s.items()}, "float64")
        save_load(
            lambda s: {
                k: (v[:, :16] if k.endswith(("attention_net.0.weight", "feature.0.weight")) else v)
                for k, v in s.items()
            },
            "embed dim 16 (inferred)",
            "any",
        )
        save_load(
            lambda s: {k: v for k, v in s.items() if "classifier" not in k or "instance" in k},
            "no bag classifier",
            "error",
        )
        save_load(lambda s: {}, "empty state_dict", "error")
        save_load(lambda s: {"weights": torch.zeros(3)}, "foreign keys", "error")
        save_load(lambda s: io.BytesIO().getvalue(), "empty file", "error")
        save_load(lambda s: _torch_bytes(s)[: len(_torch_bytes(s)) // 2], "truncated file", "error")
        save_load(lambda s: b"not a torch file at all", "text file", "error")
        save_load(lambda s: [s], "a list of state_dicts", "error")

        save_load(lambda s: {"model_state_dict": s, "optimizer": {}}, "wrapped in {'model_state_dict'}")

        def safetensors(model=model, key=key, state=state):
            from safetensors.torch import save_file

            path = tmp / f"{key}.safetensors"
            save_file({k: v.contiguous() for k, v in state.items()}, str(path))
            same_outputs(model, load_mil(path), features)

        case("checkpoints", f"{key}: safetensors file", safetensors)

        def full_pickle(model=model, key=key):
            path = tmp / f"{key}_full.pt"
            torch.save(model, path)
            loaded = load_mil(path)
            same_outputs(model, loaded, features)

        case("checkpoints", f"{key}: full pickled model", full_pickle, "any")

        def wrong_dim(model=model, key=key):
            path = tmp / f"{key}_plain.pt"
            loaded = load_mil(path)
            explain(loaded, rng_features(5, D + 3), "lrp")

        case("checkpoints", f"{key}: features of another width", wrong_dim, "error")

    # shape mismatches between layers: a bag classifier for 3 classes, 4 instance classifiers
    sb = models["sb"].state_dict()
    extra = {
        **sb,
        "instance_classifiers.3.weight": torch.zeros(2, 512),
        "instance_classifiers.3.bias": torch.zeros(2),
    }
    torch.save(extra, tmp / "sb_extra_instance.pt")
    case(
        "checkpoints",
        "sb: 4 instance classifiers for 3 classes",
        lambda: load_mil(tmp / "sb_extra_instance.pt"),
        "error",
    )
    bad = {**sb, "classifiers.weight": torch.zeros(3, 256)}
    torch.save(bad, tmp / "sb_bad_shape.pt")
    case(
        "checkpoints", "sb: classifier of the wrong width", lambda: load_mil(tmp / "sb_bad_shape.pt"), "error"
    )
    mb_state = models["mb"].state_dict()
    fewer = {
        k: v for k, v in mb_state.items() if not k.startswith(("classifiers.3.", "instance_classifiers.3."))
    }
    torch.save(fewer, tmp / "mb_fewer_classifiers.pt")
    case(
        "checkpoints",
        "mb: 4 attention branches, 3 classifiers",
        lambda: load_mil(tmp / "mb_fewer_classifiers.pt"),
        "error",
    )
    fewer_inst = {k: v for k, v in mb_state.items() if not k.startswith("instance_classifiers.3.")}
    torch.save(fewer_inst, tmp / "mb_fewer_instance.pt")
    case(
        "checkpoints",
        "mb: 4 classes, 3 instance classifiers",
        lambda: load_mil(tmp / "mb_fewer_instance.pt"),
        "error",
    )
    # old CLAM without dropout: attention at attention_net.2
    old = CLAM_SB(n_classes=2, embed_dim=D, dropout=0.0)
    perturbed(old)
    old_state = {k.replace("attention_net.3.", "attention_net.2."): v for k, v in old.state_dict().items()}
    torch.save(old_state, tmp / "old_layout.pt")
    case(
        "checkpoints",
        "sb: old layout attention_net.2",
        lambda: same_outputs(old, load_mil(tmp / "old_layout.pt"), features),
    )
    # the 2024 CLAM_MB: one Linear(H -> C) bag classifier
    mb = perturbed(CLAM_MB(n_classes=3, embed_dim=D))
    state = mb.state_dict()
    weight = torch.cat([state.pop(f"classifiers.{c}.weight") for c in range(3)])
    bias = torch.cat([state.pop(f"classifiers.{c}.bias") for c in range(3)])
    torch.save({**state, "classifiers.weight": weight, "classifiers.bias": bias}, tmp / "mb2024.pt")
    case(
        "checkpoints",
        "mb: 2024 single-Linear classifiers",
        lambda: same_outputs(mb, load_mil(tmp / "mb2024.pt"), features),
    )
    (tmp / "a_dir.pt").mkdir(exist_ok=True)
    case("checkpoints", "a directory", lambda: load_mil(tmp / "a_dir.pt"), "error")
    case("checkpoints", "a missing file", lambda: load_mil(tmp / "missing.pt"), "error")
    # NaN weights
    nan_state = {k: v.clone() for k, v in sb.items()}
    nan_state["classifiers.weight"][0, 0] = float("nan")
    torch.save(nan_state, tmp / "nan.pt")
    case("checkpoints", "NaN weights", lambda: load_mil(tmp / "nan.pt"), "error")
    # load_mil on a mapping given directly, with module. prefixes
    case(
        "checkpoints",
        "mapping with module. prefixes",
        lambda: same_outputs(
            models["mb"], load_mil({f"module.{k}": v for k, v in models["mb"].state_dict().items()}), features
        ),
    )


def _torch_bytes(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------ bags
def sweep_bags(tmp: Path) -> None:
    torch.manual_seed(2)
    model = perturbed(CLAM_MB(n_classes=3, embed_dim=D))
    folder = tmp / "bags"
    folder.mkdir(exist_ok=True)

    def read_and_run(path: Path, n: int, with_coords: bool) -> None:
        bag = read_bag(path)
        check(bag.features.shape == (n, D), f"features {tuple(bag.features.shape)}")
        check(bag.features.dtype == torch.float32, f"features dtype {bag.features.dtype}")
        check((bag.coords is not None) == with_coords, "coords presence")
        if with_coords:
            check(bag.coords.shape == (n, 2), f"coords {bag.coords.shape}")
        result = infer_bag(model, bag.features)
        check(result.raw.shape == (3, n) and np.isfinite(result.raw).all(), "attention shape/finite")
        for method in RELEVANCE_METHODS:
            if method == "occlusion" and n < 2:
                continue
            scores = explain(model, bag.features, method)
            check(scores.shape == (n,) and np.isfinite(scores).all(), f"{method} map")

    for n in (1, 2, 7):
        f = rng_features(n)
        path = write_h5_bag(folder / f"h5_{n}.h5", f, np.arange(2 * n).reshape(n, 2) * 256)
        case("bags", f"h5 with {n} patch(es)", lambda p=path, n=n: read_and_run(p, n, True))
    f = rng_features(5)
    case("bags", "h5 without coords", lambda: read_and_run(write_h5_bag(folder / "nocoords.h5", f), 5, False))
    with h5py.File(folder / "short_coords.h5", "w") as handle:
        handle["features"] = f
        handle["coords"] = np.zeros((4, 2), np.int64)
    case("bags", "coords of another length", lambda: read_bag(folder / "short_coords.h5"), "error")
    with h5py.File(folder / "fp16.h5", "w") as handle:
        handle["features"] = f.astype(np.float16)
        handle["coords"] = np.zeros((5, 2), np.int64)
    case("bags", "h5 float16 features", lambda: read_and_run(folder / "fp16.h5", 5, True))
    with h5py.File(folder / "extra.h5", "w") as handle:
        handle["features"] = f
        handle["coords"] = np.zeros((5, 2), np.int64)
        handle["annotations"] = np.ones(5)
        handle.create_group("meta")["x"] = 1
        handle["coords"].attrs["patch_size"] = 256
    case("bags", "h5 with extra datasets", lambda: read_and_run(folder / "extra.h5", 5, True))
    with h5py.File(folder / "trident.h5", "w") as handle:  # TRIDENT: float coords with attributes
        handle["features"] = f
        coords = handle.create_dataset("coords", data=np.arange(10).reshape(5, 2).astype(np.float64) * 224)
        coords.attrs["patch_size_level0"] = 224
        coords.attrs["patch_size"] = 224
        coords.attrs["level0_magnification"] = 40
    case(
        "bags", "TRIDENT layout (float coords + attrs)", lambda: read_and_run(folder / "trident.h5", 5, True)
    )
    with h5py.File(folder / "batched.h5", "w") as handle:  # (1, N, D) as some extractors write
        handle["features"] = f[None]
        handle["coords"] = np.zeros((1, 5, 2), np.int64)
    case(
        "bags",
        "h5 (1, N, D) features and (1, N, 2) coords",
        lambda: read_and_run(folder / "batched.h5", 5, True),
        "ok",
    )
    for name, values in (("nan", np.nan), ("inf", np.inf)):
        bad = f.copy()
        bad[2, 3] = values
        path = write_h5_bag(folder / f"{name}.h5", bad, np.zeros((5, 2)))
        case("bags", f"{name} feature", lambda p=path: read_bag(p), "error")
        case("bags", f"{name} feature straight to explain", lambda b=bad: explain(model, b, "lrp"), "error")
        case("bags", f"{name} feature straight to infer_bag", lambda b=bad: infer_bag(model, b), "error")
    with h5py.File(folder / "empty.h5", "w") as handle:
        handle["features"] = np.zeros((0, D), np.float32)
    case("bags", "empty bag (h5)", lambda: read_bag(folder / "empty.h5"), "error")
    case("bags", "empty bag to explain", lambda: explain(model, np.zeros((0, D), np.float32)), "error")
    case("bags", "empty bag to infer_bag", lambda: infer_bag(model, np.zeros((0, D), np.float32)), "error")
    case("bags", "1-D features to explain", lambda: explain(model, np.zeros(D, np.float32)), "error")
    case("bags", "features of another width", lambda: infer_bag(model, rng_features(4, D + 1)), "error")
    case(
        "bags",
        "integer features (h5)",
        lambda: read_bag(write_h5_bag(folder / "ints.h5", np.ones((3, D)))),
        "any",
    )
    with h5py.File(folder / "int.h5", "w") as handle:
        handle["features"] = np.ones((3, D), np.int32)
    case("bags", "int32 features", lambda: read_bag(folder / "int.h5"), "error")
    with h5py.File(folder / "nofeat.h5", "w") as handle:
        handle["feats"] = f
    case("bags", "h5 without 'features'", lambda: read_bag(folder / "nofeat.h5"), "error")
    (folder / "junk.h5").write_bytes(b"junk")
    case("bags", "h5 that is not h5", lambda: read_bag(folder / "junk.h5"), "error")
    torch.save(torch.from_numpy(f), folder / "tensor.pt")
    case("bags", ".pt tensor", lambda: read_and_run(folder / "tensor.pt", 5, False))
    torch.save({"features": torch.from_numpy(f), "coords": torch.zeros(5, 2)}, folder / "dict.pt")
    case("bags", ".pt dict with coords", lambda: read_and_run(folder / "dict.pt", 5, True))
    torch.save({"feats": torch.from_numpy(f)}, folder / "dict_nofeat.pt")
    case("bags", ".pt dict without 'features'", lambda: read_bag(folder / "dict_nofeat.pt"), "error")
    torch.save(torch.from_numpy(f).bfloat16(), folder / "bf16.pt")
    case("bags", ".pt bfloat16", lambda: read_and_run(folder / "bf16.pt", 5, False))
    torch.save(torch.from_numpy(f).half(), folder / "fp16.pt")
    case("bags", ".pt float16", lambda: read_and_run(folder / "fp16.pt", 5, False))
    torch.save(f, folder / "numpy.pt")
    case("bags", ".pt numpy array", lambda: read_bag(folder / "numpy.pt"), "any")
    torch.save({"features": torch.from_numpy(f), "coords": torch.zeros(3, 2)}, folder / "dict_short.pt")
    case("bags", ".pt coords of another length", lambda: read_bag(folder / "dict_short.pt"), "error")
    torch.save(torch.zeros(2, 5, D), folder / "3d.pt")
    case("bags", ".pt (2, N, D)", lambda: read_bag(folder / "3d.pt"), "error")
    (folder / "empty.pt").write_bytes(b"")
    case("bags", "empty .pt file", lambda: read_bag(folder / "empty.pt"), "error")
    case(
        "bags",
        "unknown suffix",
        lambda: read_bag(Path(write_h5_bag(folder / "x.h5", f)).rename(folder / "x.npy")),
        "error",
    )
    (folder / "dir.h5").mkdir(exist_ok=True)
    case("bags", "a directory named .h5", lambda: read_bag(folder / "dir.h5"), "error")
    case("bags", "a missing bag", lambda: read_bag(folder / "missing.h5"), "error")

    def huge() -> None:
        features = torch.from_numpy(rng_features(100_000, seed=5))
        start = time.perf_counter()
        result = infer_bag(model, features)
        elapsed = time.perf_counter() - start
        start = time.perf_counter()
        lrp = explain(model, features, "lrp")
        lrp_time = time.perf_counter() - start
        print(f"  100k-patch bag: infer_bag {elapsed:.2f} s, lrp {lrp_time:.2f} s", flush=True)
        check(np.isfinite(result.raw).all() and np.isfinite(lrp).all(), "non-finite on 100k patches")
        check(lrp.shape == (100_000,), "lrp shape")
        chunked = explain(model, features, "lrp", chunk_size=30_000)
        check(np.allclose(chunked, lrp, rtol=1e-4, atol=1e-7), "lrp depends on chunk size at 100k")

    case("bags", "100k patches", huge)


# ----------------------------------------------------------------------------------------- explain
def bias_free(model: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias") and (
                "attention_net.0" in name or "feature.0" in name or "classifier" in name
            ):
                parameter.zero_()
    return model


def sweep_explain(tmp: Path) -> None:
    features = rng_features(13, seed=3)
    torch.manual_seed(3)
    models = {
        "CLAM_SB-c2": perturbed(CLAM_SB(n_classes=2, embed_dim=D)),
        "CLAM_SB-c4-plain": perturbed(CLAM_SB(n_classes=4, embed_dim=D, gate=False, size="big")),
        "CLAM_MB-c3": perturbed(CLAM_MB(n_classes=3, embed_dim=D)),
        "CLAM_MB-c5-plain-drop": perturbed(CLAM_MB(n_classes=5, embed_dim=D, gate=False, dropout=0.25)),
        "ABMIL-c3": perturbed(ABMIL(embed_dim=D, hidden_dim=64, attention_dim=16, n_classes=3)),
    }
    for key, model in models.items():
        c = model.n_classes
        reference = infer_bag(model, features)
        for method in RELEVANCE_METHODS:
            for target in (None, 0, c - 1, c, -1, 1.5, True):
                expect = (
                    "ok"
                    if target is None
                    or (isinstance(target, int) and not isinstance(target, bool) and 0 <= target < c)
                    else "error"
                )

                def run(model=model, method=method, target=target, reference=reference, expect=expect):
                    model.train()  # dropout on: explain must switch it off and restore the flag
                    first = explain(model, features, method, target)
                    if expect == "error":  # it should have raised; the checks below need a class index
                        return
                    check(model.training, "training flag not restored")
                    model.eval()
                    check(first.shape == (13,), f"shape {first.shape}")
                    check(np.isfinite(first).all(), "non-finite map")
                    second = explain(model, features, method, target)
                    check(np.array_equal(first, second), "not deterministic")
                    chunked = explain(model, features, method, target, chunk_size=4)
                    check(np.allclose(first, chunked, rtol=1e-4, atol=1e-6), "depends on chunk size")
                    cls = reference.prediction if target is None else target
                    branch = cls if isinstance(model, CLAM_MB) else 0
                    if method == "attention":
                        check(
                            np.allclose(first, reference.raw[branch], atol=1e-6), "not the branch's attention"
                        )
                    # one patch's score must not depend on which other bag it is in when the method
                    # is local (attention); for the others: permutation equivariance
                    order = np.random.default_rng(0).permutation(13)
                    permuted = explain(model, features[order], method, cls)
                    check(
                        np.allclose(permuted, first[order], rtol=1e-4, atol=1e-6),
                        "not permutation-equivariant",
                    )
                    if method == "occlusion":
                        brute = []
                        logit = float(infer_bag(model, features).logits[cls])
                        for i in range(13):
                            rest = np.delete(features, i, axis=0)
                            brute.append(logit - float(infer_bag(model, rest).logits[cls]))
                        check(np.allclose(first, brute, rtol=1e-3, atol=1e-5), "occlusion != leave-one-out")
                    if method in PER_FEATURE_METHODS:
                        per_feature = explain(model, features, method, target, per_feature=True)
                        check(per_feature.shape == (13, D), f"per-feature shape {per_feature.shape}")
                        check(
                            np.allclose(per_feature.sum(1), first, rtol=1e-4, atol=1e-5),
                            "per-feature rows do not sum to the patch scores",
                        )
                    if method == "integrated_gradients" and target is not None:
                        first = explain(model, features, method, target, steps=512)
                        zero = float(infer_bag(model, np.zeros_like(features)).logits[cls])
                        total = float(reference.logits[cls]) - zero
                        check(
                            abs(first.sum() - total) <= 0.01 * (abs(total) + 0.1),
                            f"IG completeness {first.sum():.4f} vs {total:.4f}",
                        )

                case("explain", f"{key} {method} target={target}", run, expect)

        def conservation(model=model):
            free = bias_free(_clone(model)).double()
            x = torch.from_numpy(features).double()
            result = infer_bag(free, x)
            for cls in range(free.n_classes):
                total = explain(free, x, "lrp", cls, eps=0.0).sum()
                check(
                    math.isclose(total, float(result.logits[cls]), rel_tol=1e-6, abs_tol=1e-9),
                    f"class {cls}: Σ R = {total:.8f}, logit {result.logits[cls]:.8f}",
                )
            gx = (feature_gradients(free, x, 0, detach_attention=True) * x).sum(1).numpy()
            check(
                np.allclose(explain(free, x, "lrp", 0, eps=0.0), gx, rtol=1e-8, atol=1e-10),
                "LRP-0 != detached gradient x input",
            )

        case("explain", f"{key} lrp conservation (bias-free, eps=0, float64)", conservation)

        def dtypes(model=model):
            for dtype in (torch.float16, torch.bfloat16):
                low = _clone(model).to(dtype)
                for method in RELEVANCE_METHODS:
                    scores = explain(low, features, method)
                    check(scores.shape == (13,) and np.isfinite(scores).all(), f"{dtype} {method}")
                    check(scores.dtype == np.float32, f"{dtype} {method} gives {scores.dtype}")

        case("explain", f"{key} float16/bfloat16 models", dtypes)
        case("explain", f"{key} unknown method", lambda m=model: explain(m, features, "gradcam"), "error")
        case(
            "explain",
            f"{key} attention per_feature",
            lambda m=model: explain(m, features, "attention", per_feature=True),
            "error",
        )
        case(
            "explain",
            f"{key} ig steps=0",
            lambda m=model: explain(m, features, "integrated_gradients", steps=0),
            "error",
        )
        case("explain", f"{key} lrp eps=-1", lambda m=model: explain(m, features, "lrp", eps=-1), "error")
        case(
            "explain",
            f"{key} lrp unknown option",
            lambda m=model: explain(m, features, "lrp", alpha=1),
            "error",
        )
        case("explain", f"{key} chunk_size=0", lambda m=model: explain(m, features, chunk_size=0), "error")
        case(
            "explain",
            f"{key} feature_gradients target=C",
            lambda m=model: feature_gradients(m, features, m.n_classes),
            "error",
        )
        case(
            "explain",
            f"{key} occlusion on 1 patch",
            lambda m=model: explain(m, features[:1], "occlusion"),
            "error",
        )
    odd_bags = {
        "identical patches": np.repeat(features[:1], 9, axis=0),
        "all-zero patches": np.zeros((9, D), np.float32),
        "huge values (1e4)": features[:9] * 1e4,
        "tiny values (1e-20)": features[:9] * 1e-20,
        "one dominant patch": np.concatenate([features[:8], features[8:9] * 200]),
    }
    for key, model in models.items():
        for bag_name, bag in odd_bags.items():
            for method in RELEVANCE_METHODS:

                def odd(model=model, bag=bag, method=method):
                    scores = explain(model, bag, method)
                    check(scores.shape == (9,) and np.isfinite(scores).all(), "non-finite or misshapen map")
                    result = infer_bag(model, bag)
                    check(np.isfinite(result.probs).all() and abs(result.probs.sum() - 1) < 1e-5, "probs")
                    for kind in ("softmax", "percentile"):
                        values = result.scores(kind)
                        check(np.isfinite(values).all(), f"{kind} not finite")
                    if method == "occlusion":
                        cls = result.prediction
                        brute = [
                            float(result.logits[cls])
                            - float(infer_bag(model, np.delete(bag, i, 0)).logits[cls])
                            for i in range(9)
                        ]
                        scale = max(1.0, float(np.abs(brute).max()))
                        check(
                            np.allclose(scores, brute, atol=1e-4 * scale, rtol=1e-3),
                            "occlusion != leave-one-out",
                        )

                case("explain", f"{key} {bag_name} {method}", odd)

        def local_attention(model=model):
            # the attention method is a per-patch function: a patch's score does not depend on its bag
            alone = explain(model, features[:5], "attention", 0)
            inside = explain(model, features, "attention", 0)[:5]
            check(np.allclose(alone, inside, atol=1e-6), "attention depends on the other patches")

        case("explain", f"{key} attention is batch-independent", local_attention)

    from attnmap.mil import export_attention

    exporter = models["CLAM_MB-c3"]
    out = tmp / "export"

    def export(**kwargs):
        return lambda: export_attention(
            exporter, kwargs.pop("bag", features), kwargs.pop("out", out), **kwargs
        )

    def export_checked():
        result = export_attention(exporter, features, out, slide_id="s", methods=RELEVANCE_METHODS, target=1)
        with h5py.File(result.h5_path) as handle:
            for method in RELEVANCE_METHODS:
                values = handle[f"scores_{method}"][()]
                check(
                    np.allclose(values, explain(exporter, features, method, 1), atol=1e-6),
                    f"{method} differs",
                )
            check(np.allclose(handle["attention_softmax"][()].sum(0), 1, atol=1e-5), "softmax columns")

    case("explain", "export every method", export_checked)
    case("explain", "export slide_id with a slash", export(slide_id="../escape"), "error")
    case("explain", "export slide_id non-ASCII", export(slide_id="Schnitt_ä_切片"))
    case("explain", "export without slide_id", export(), "error")
    case("explain", "export target out of range", export(slide_id="s", methods=("lrp",), target=3), "error")
    case("explain", "export coords of another length", export(slide_id="s", coords=np.zeros((3, 2))), "error")
    case("explain", "export unknown method", export(slide_id="s", methods=("saliency",)), "error")
    case(
        "explain",
        "export occlusion on 1 patch",
        export(slide_id="s", bag=features[:1], methods=("occlusion",)),
        "error",
    )
    case("explain", "export duplicated methods", export(slide_id="s", methods=("lrp", "lrp")))
    (tmp / "export_file").write_text("x")
    case("explain", "export out_dir is a file", export(slide_id="s", out=tmp / "export_file"), "error")

    from attnmap.evaluate import patch_flipping

    for key, model in models.items():
        for method in RELEVANCE_METHODS:

            def flipping(model=model, method=method):
                scores = explain(model, features, method)
                result = patch_flipping(model, features, scores)
                again = patch_flipping(model, features, scores)
                for name in ("auc_most_relevant_first", "auc_random"):
                    value = getattr(result, name)
                    check(np.isfinite(value) and 0 <= value <= 1, f"{name} = {value}")
                    check(value == getattr(again, name), f"{name} not deterministic")

            case("explain", f"{key} patch flipping of {method}", flipping)
        case(
            "explain",
            f"{key} patch flipping, 2 patches",
            lambda m=model: patch_flipping(m, features[:2], explain(m, features[:2], "lrp")),
            "any",
        )
        case(
            "explain",
            f"{key} patch flipping, 1 patch",
            lambda m=model: patch_flipping(m, features[:1], np.ones(1)),
            "error",
        )
        case(
            "explain",
            f"{key} patch flipping, NaN scores",
            lambda m=model: patch_flipping(m, features, np.full(13, np.nan)),
            "error",
        )
        case(
            "explain",
            f"{key} patch flipping, target 1.5",
            lambda m=model: patch_flipping(m, features, np.arange(13.0), target=1.5),
            "error",
        )
        case(
            "explain",
            f"{key} patch flipping, scores of another length",
            lambda m=model: patch_flipping(m, features, np.arange(12.0)),
            "error",
        )

    sb = models["CLAM_SB-c2"]
    x64 = features.astype(np.float64)
    case(
        "explain",
        "float64 numpy features, float32 model",
        lambda: check(
            np.allclose(explain(sb, x64, "lrp"), explain(sb, features, "lrp"), atol=1e-5), "differs"
        ),
    )
    case(
        "explain",
        "non-contiguous features",
        lambda: check(
            np.allclose(explain(sb, np.asfortranarray(features), "lrp"), explain(sb, features, "lrp")),
            "differs",
        ),
    )
    grad_x = torch.from_numpy(features).requires_grad_(True)
    case(
        "explain",
        "features that require grad",
        lambda: check(
            np.allclose(explain(sb, grad_x, "gradient_x_input"), explain(sb, features, "gradient_x_input")),
            "differs",
        ),
    )
    case("explain", "features as a list", lambda: explain(sb, features.tolist(), "lrp"), "any")
    case("explain", "features (1, N, D)", lambda: explain(sb, features[None], "lrp"), "any")
    case(
        "explain",
        "feature_gradients shape",
        lambda: check(tuple(feature_gradients(sb, features).shape) == features.shape, "shape"),
    )
    case(
        "explain",
        "integer target as numpy int64",
        lambda: check(
            np.allclose(explain(sb, features, "lrp", np.int64(1)), explain(sb, features, "lrp", 1)), "differs"
        ),
    )
    from attnmap.mil import attention_scores

    mb = models["CLAM_MB-c3"]
    for kind in ("raw", "softmax", "percentile"):
        for branch in (None, 0, 2, 3, -1):

            def scores(kind=kind, branch=branch):
                values = attention_scores(mb, features, kind=kind, branch=branch)
                check(values.shape == (13,) and np.isfinite(values).all(), "map")
                if kind == "softmax":
                    check(abs(values.sum() - 1) < 1e-5, f"softmax sums to {values.sum()}")
                if kind == "percentile":
                    check(values.min() >= 0 and values.max() <= 100, "percentile range")

            case(
                "explain",
                f"attention_scores {kind} branch={branch}",
                scores,
                "ok" if branch in (None, 0, 2) else "error",
            )
    case("explain", "a torch Linear as model", lambda: explain(torch.nn.Linear(D, 2), features), "error")


def _clone(model: torch.nn.Module) -> torch.nn.Module:
    import copy

    return copy.deepcopy(model).eval()


# ---------------------------------------------------------------------------------------------- cli
def make_cohort(
    root: Path, n_slides: int = 8, n_patches: int = 12, seed: int = 0, ids: list[str] | None = None
) -> Path:
    rng = np.random.default_rng(seed)
    rows = []
    ids = ids or [f"s{i:02d}" for i in range(n_slides)]
    for i, slide in enumerate(ids):
        label = i % 2
        features = rng.normal(size=(n_patches, D)).astype(np.float32)
        if label:
            features[:4, :4] += 3.0
        write_h5_bag(
            root / "h5_files" / f"{slide}.h5",
            features,
            np.stack([np.arange(n_patches) * 256, np.zeros(n_patches)], 1),
        )
        rows.append((slide, "tumour" if label else "normal", f"case_{i:02d}"))
    write_labels(root / "labels.csv", rows)
    return root / "labels.csv"


def write_labels(path: Path, rows: list[tuple]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["slide_id", "label", "case_id"][: len(rows[0]) if rows else 3])
        writer.writerows(rows)
    return path


def folder_snapshot(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, object]:
    """Numbers of every h5 dataset and CSV under a folder (provenance/time columns left out)."""
    snapshot: dict[str, object] = {}
    for path in sorted(folder.rglob("*")):
        rel = str(path.relative_to(folder))
        if any(part in rel for part in skip):
            continue
        if path.suffix == ".h5":
            with h5py.File(path, "r") as handle:
                handle.visititems(
                    lambda name, obj, rel=rel: snapshot.__setitem__(
                        f"{rel}:{name}", obj[()].tolist() if isinstance(obj, h5py.Dataset) else None
                    )
                )
        elif path.suffix == ".csv":
            snapshot[rel] = path.read_text().splitlines()[:50]
    return snapshot


def sweep_cli(tmp: Path) -> None:
    root = tmp / "cli"
    labels = make_cohort(root)
    torch.manual_seed(4)
    model = perturbed(CLAM_MB(n_classes=2, embed_dim=D))
    ckpt = tmp / "cli_mb.pt"
    torch.save(model.state_dict(), ckpt)
    bag = root / "h5_files" / "s01.h5"
    out = tmp / "att"

    def attention_checks(folder: Path, names: tuple[str, ...] = ("s01",)) -> None:
        for name in names:
            with h5py.File(folder / f"{name}_attention.h5") as handle:
                keys = set(handle)
                for key in keys:
                    data = handle[key]
                    if isinstance(data, h5py.Dataset) and np.issubdtype(data.dtype, np.floating):
                        check(np.isfinite(data[()]).all(), f"{key} not finite")

    cli_case(
        "cli",
        "attention one bag",
        ["mil", "attention", ckpt, bag, "-o", out, "--quiet"],
        then=lambda: attention_checks(out),
    )
    cli_case(
        "cli",
        "attention --method all",
        ["mil", "attention", ckpt, bag, "-o", tmp / "att_all", "--method", "all", "--quiet"],
        then=lambda: attention_checks(tmp / "att_all"),
    )
    cli_case(
        "cli",
        "attention a folder of bags",
        ["mil", "attention", ckpt, root, "-o", tmp / "att_dir", "--quiet"],
    )
    cli_case(
        "cli",
        "attention --target 2 (2 classes)",
        ["mil", "attention", ckpt, bag, "-o", out, "--method", "lrp", "--target", "2"],
        "error",
    )
    cli_case(
        "cli", "attention --branch 5", ["mil", "attention", ckpt, bag, "-o", out, "--branch", "5"], "error"
    )
    cli_case(
        "cli",
        "attention --chunk-size 1 --method all",
        [
            "mil",
            "attention",
            ckpt,
            bag,
            "-o",
            tmp / "att_chunk",
            "--method",
            "all",
            "--chunk-size",
            "1",
            "--quiet",
        ],
        then=lambda: check(
            _same_h5(tmp / "att_all" / "s01_attention.h5", tmp / "att_chunk" / "s01_attention.h5", 1e-4),
            "--chunk-size 1 differs from the default",
        ),
    )
    one = write_h5_bag(tmp / "one.h5", rng_features(1), np.zeros((1, 2)))
    cli_case(
        "cli",
        "attention 1-patch bag --method all",
        ["mil", "attention", ckpt, one, "-o", tmp / "att_one", "--method", "all", "--quiet"],
    )
    cli_case(
        "cli",
        "attention 1-patch bag --method occlusion",
        ["mil", "attention", ckpt, one, "-o", tmp / "att_one2", "--method", "occlusion"],
        "error",
    )
    wide = write_h5_bag(tmp / "wide.h5", rng_features(4, D + 2), np.zeros((4, 2)))
    cli_case(
        "cli", "attention features of another width", ["mil", "attention", ckpt, wide, "-o", out], "error"
    )
    empty = tmp / "empty_ckpt.pt"
    empty.write_bytes(b"")
    cli_case("cli", "attention empty checkpoint", ["mil", "attention", empty, bag, "-o", out], "error")
    cli_case(
        "cli", "attention checkpoint is a directory", ["mil", "attention", root, bag, "-o", out], "error"
    )
    (tmp / "nobags").mkdir(exist_ok=True)
    cli_case(
        "cli", "attention folder without bags", ["mil", "attention", ckpt, tmp / "nobags", "-o", out], "error"
    )
    nan_bag = rng_features(4)
    nan_bag[0, 0] = np.nan
    nan_path = write_h5_bag(tmp / "nanbag.h5", nan_bag, np.zeros((4, 2)))
    cli_case("cli", "attention NaN bag", ["mil", "attention", ckpt, nan_path, "-o", out], "error")
    half = tmp / "half.pt"
    torch.save({k: v.half() for k, v in model.state_dict().items()}, half)
    cli_case(
        "cli",
        "attention float16 checkpoint --method all",
        ["mil", "attention", half, bag, "-o", tmp / "att_half", "--method", "all", "--quiet"],
        then=lambda: attention_checks(tmp / "att_half"),
    )
    uni = write_h5_bag(tmp / "schnitt ä 切片.h5", rng_features(5), np.zeros((5, 2)))
    cli_case(
        "cli",
        "attention non-ASCII bag name with spaces",
        ["mil", "attention", ckpt, uni, "-o", tmp / "att ü", "--method", "all", "--quiet"],
        then=lambda: check((tmp / "att ü" / "schnitt ä 切片_attention.csv").exists(), "no CSV"),
    )
    torch.save(
        {"features": torch.from_numpy(rng_features(6)), "coords": torch.zeros(6, 2)}, tmp / "dictbag.pt"
    )
    cli_case(
        "cli",
        "attention a .pt dict bag",
        ["mil", "attention", ckpt, tmp / "dictbag.pt", "-o", out, "--quiet"],
    )
    same_name = tmp / "other" / "h5_files"
    write_h5_bag(same_name / "s01.h5", rng_features(6, seed=9), np.zeros((6, 2)))
    cli_case(
        "cli",
        "attention two bags with one name",
        ["mil", "attention", ckpt, bag, same_name / "s01.h5", "-o", tmp / "att_twins", "--quiet"],
        then=lambda: check((tmp / "att_twins" / "s01_2_attention.h5").exists(), "second bag overwrote"),
    )

    # rerun after changing one input: must equal a fresh run
    def rerun_attention(
        change: Callable[[Path, Path], tuple[Path, Path]],
        what: str,
        first: tuple[str, ...] = ("--method", "lrp"),
        second: tuple[str, ...] = ("--method", "lrp"),
    ) -> None:
        def run() -> None:
            work = tmp / f"rerun_{what.replace(' ', '_')}"
            shutil.rmtree(work, ignore_errors=True)
            (work / "bags").mkdir(parents=True)
            b = write_h5_bag(work / "bags" / "s.h5", rng_features(9, seed=1), np.zeros((9, 2)))
            c = work / "m.pt"
            torch.save(model.state_dict(), c)
            code, _, err = cli("mil", "attention", c, b, "-o", work / "out", *first, "--quiet")
            check(code == 0, err)
            c2, b2 = change(c, b)
            code, _, err = cli("mil", "attention", c2, b2, "-o", work / "out", *second, "--quiet")
            check(code == 0, err)
            code, _, err = cli("mil", "attention", c2, b2, "-o", work / "fresh", *second, "--quiet")
            check(code == 0, err)
            if not _same_h5(
                work / "out" / "s_attention.h5", work / "fresh" / "s_attention.h5", 0, skip_attrs=True
            ):
                raise StaleError(f"rerun after changing the {what} differs from a fresh run")
            listing = sorted(p.name for p in (work / "out").iterdir())
            fresh = sorted(p.name for p in (work / "fresh").iterdir())
            if listing != fresh:
                raise StaleError(f"rerun leaves {listing}, a fresh run {fresh}")
            for name in fresh:
                if name.endswith(".csv"):
                    a = (work / "out" / name).read_text().splitlines()
                    b_ = (work / "fresh" / name).read_text().splitlines()
                    if [r for r in a if not r.startswith("#")] != [r for r in b_ if not r.startswith("#")]:
                        raise StaleError(f"{name} differs from a fresh run's")

        case("cli", f"attention rerun after changing the {what}", run)

    def unchanged(c: Path, b: Path) -> tuple[Path, Path]:
        return c, b

    def new_bag(c: Path, b: Path) -> tuple[Path, Path]:
        write_h5_bag(b, rng_features(9, seed=2), np.zeros((9, 2)))
        return c, b

    def new_model(c: Path, b: Path) -> tuple[Path, Path]:
        torch.manual_seed(7)
        torch.save(perturbed(CLAM_MB(n_classes=2, embed_dim=D), 7).state_dict(), c)
        return c, b

    def fewer_patches(c: Path, b: Path) -> tuple[Path, Path]:
        write_h5_bag(b, rng_features(5, seed=3), np.zeros((5, 2)))
        return c, b

    rerun_attention(new_bag, "bag")
    rerun_attention(new_model, "checkpoint")
    rerun_attention(fewer_patches, "bag size")
    rerun_attention(unchanged, "method (all -> lrp)", ("--method", "all"), ("--method", "lrp"))
    rerun_attention(
        unchanged, "target", ("--method", "lrp", "--target", "0"), ("--method", "lrp", "--target", "1")
    )
    rerun_attention(
        unchanged, "csv option (csv -> --no-csv)", ("--method", "lrp"), ("--method", "lrp", "--no-csv")
    )
    rerun_attention(unchanged, "branch", ("--branch", "0"), ("--branch", "1"))

    # ---- train
    fast = [
        "--folds",
        "2",
        "--max-epochs",
        "2",
        "--k-sample",
        "2",
        "--seed",
        "3",
        "--quiet",
        "--dropout",
        "0",
    ]
    cli_case("cli", "train tiny cohort", ["mil", "train", root, labels, "-o", tmp / "tr_ok", *fast])
    cli_case(
        "cli",
        "train abmil",
        ["mil", "train", root, labels, "-o", tmp / "tr_abmil", "--model", "abmil", *fast],
    )
    cli_case(
        "cli",
        "train clam_mb --subtyping --size big --no-gate",
        [
            "mil",
            "train",
            root,
            labels,
            "-o",
            tmp / "tr_mb",
            "--model",
            "clam_mb",
            "--subtyping",
            "--size",
            "big",
            "--no-gate",
            *fast,
        ],
    )
    cli_case(
        "cli",
        "train --folds 20 (more than slides)",
        ["mil", "train", root, labels, "-o", tmp / "tr_k", *fast, "--folds", "20"],
        "error",
    )
    cli_case(
        "cli",
        "train --weighted-sample --no-early-stopping",
        ["mil", "train", root, labels, "-o", tmp / "tr_w", *fast, "--weighted-sample", "--no-early-stopping"],
    )
    tiny = tmp / "tiny"
    tiny_labels = make_cohort(tiny, n_slides=4)
    cli_case(
        "cli",
        "train 4 slides, 2 folds",
        ["mil", "train", tiny, tiny_labels, "-o", tmp / "tr_tiny", *fast],
        "any",
    )
    cli_case(
        "cli",
        "train --val-fraction 0.9",
        ["mil", "train", root, labels, "-o", tmp / "tr_val", *fast, "--val-fraction", "0.9"],
        "any",
    )
    rows = list(csv.reader(labels.read_text(encoding="utf-8").splitlines()))[1:]
    unknown = write_labels(tmp / "unknown.csv", [*rows, ("ghost", "tumour", "case_99")])
    cli_case(
        "cli",
        "train labels with an unknown slide",
        ["mil", "train", root, unknown, "-o", tmp / "tr_unk", *fast],
        "error",
    )
    dup = write_labels(tmp / "dup.csv", [*rows, rows[0]])
    cli_case(
        "cli",
        "train labels with a duplicated id",
        ["mil", "train", root, dup, "-o", tmp / "tr_dup", *fast],
        "error",
    )
    conflict = write_labels(
        tmp / "conflict.csv",
        [*rows, (rows[0][0], "tumour" if rows[0][1] == "normal" else "normal", rows[0][2])],
    )
    cli_case(
        "cli",
        "train labels with one id labelled twice differently",
        ["mil", "train", root, conflict, "-o", tmp / "tr_conf", *fast],
        "error",
    )
    single = write_labels(tmp / "single.csv", [(r[0], "tumour", r[2]) for r in rows])
    cli_case(
        "cli",
        "train labels with one class only",
        ["mil", "train", root, single, "-o", tmp / "tr_single", *fast],
        "error",
    )
    uni = tmp / "uni"
    uni_labels = make_cohort(uni, ids=["schnitt_ä", "切片_1", "slide é 2", "Ω-3", "s_4", "s_5", "ß6", "s7"])
    cli_case("cli", "train non-ASCII ids", ["mil", "train", uni, uni_labels, "-o", tmp / "tr_uni", *fast])
    missing = tmp / "missing"
    shutil.copytree(root, missing)
    (missing / "h5_files" / "s03.h5").unlink()
    cli_case(
        "cli",
        "train a missing feature file",
        ["mil", "train", missing, missing / "labels.csv", "-o", tmp / "tr_miss", *fast],
        "error",
    )
    empty_labels = write_labels(tmp / "empty.csv", [])
    cli_case(
        "cli",
        "train an empty labels CSV",
        ["mil", "train", root, empty_labels, "-o", tmp / "tr_empty", *fast],
        "error",
    )
    (tmp / "nohead.csv").write_text("s00,normal\ns01,tumour\n")
    cli_case(
        "cli",
        "train a labels CSV without a header",
        ["mil", "train", root, tmp / "nohead.csv", "-o", tmp / "tr_nohead", *fast],
        "error",
    )
    bom = tmp / "bom.csv"
    bom.write_text("\ufeff" + labels.read_text(encoding="utf-8"), encoding="utf-8")
    cli_case("cli", "train a labels CSV with a BOM", ["mil", "train", root, bom, "-o", tmp / "tr_bom", *fast])
    mixed = tmp / "mixed"
    shutil.copytree(root, mixed)
    write_h5_bag(mixed / "h5_files" / "s02.h5", rng_features(12, D + 1), np.zeros((12, 2)))
    cli_case(
        "cli",
        "train bags of two widths",
        ["mil", "train", mixed, mixed / "labels.csv", "-o", tmp / "tr_mixed", *fast],
        "error",
    )

    def rerun_train(change: Callable[[Path], None], what: str) -> None:
        def run() -> None:
            work = tmp / f"trerun_{what}"
            shutil.rmtree(work, ignore_errors=True)
            shutil.copytree(root, work / "data")
            lab = work / "data" / "labels.csv"
            code, _, err = cli("mil", "train", work / "data", lab, "-o", work / "out", *fast)
            check(code == 0, err)
            change(work / "data")
            code, _, err = cli("mil", "train", work / "data", lab, "-o", work / "out", *fast)
            if code == 2:  # refusing to mix is fine, if said in one line
                raise InputError(err.strip().splitlines()[-1])
            check(code == 0, err)
            code, _, err = cli("mil", "train", work / "data", lab, "-o", work / "fresh", *fast)
            check(code == 0, err)
            a = folder_snapshot(work / "out", skip=("log", "state", ".json"))
            b = folder_snapshot(work / "fresh", skip=("log", "state", ".json"))
            if {k: v for k, v in a.items()} != b:
                diff = [k for k in set(a) | set(b) if a.get(k) != b.get(k)]
                raise StaleError(
                    f"rerun after changing the {what} differs from a fresh run: {sorted(diff)[:4]}"
                )
            for fold in sorted((work / "out").glob("fold_*/checkpoint.pt")):
                fresh = work / "fresh" / fold.parent.name / "checkpoint.pt"
                sa, sb = torch.load(fold, weights_only=True), torch.load(fresh, weights_only=True)
                sa = sa.get("model", sa) if isinstance(sa, dict) else sa
                sb = sb.get("model", sb) if isinstance(sb, dict) else sb
                if any(not torch.equal(sa[k], sb[k]) for k in sb if isinstance(sb[k], torch.Tensor)):
                    raise StaleError(f"{fold.parent.name} checkpoint differs from a fresh run's")

        case("cli", f"train rerun after changing the {what}", run, "any")

    def change_bag(data: Path) -> None:
        write_h5_bag(data / "h5_files" / "s02.h5", rng_features(12, seed=11), np.zeros((12, 2)))

    def change_label(data: Path) -> None:
        lab = data / "labels.csv"
        rows = list(csv.reader(lab.read_text(encoding="utf-8").splitlines()))
        rows[1][1], rows[2][1] = rows[2][1], rows[1][1]
        write_labels(lab, [tuple(r) for r in rows[1:]])

    rerun_train(change_bag, "bag")
    sweep_train_inputs(tmp, root, labels, fast)
    rerun_train(change_label, "labels")

    def drop_slide(data: Path) -> None:
        lab = data / "labels.csv"
        rows = list(csv.reader(lab.read_text(encoding="utf-8").splitlines()))
        write_labels(lab, [tuple(r) for r in rows[1:-2]])

    rerun_train(drop_slide, "slide list (two fewer)")

    def trained_checkpoint() -> None:
        for fold in sorted((tmp / "tr_ok").glob("fold_*/checkpoint.pt")):
            code, _, err = cli(
                "mil", "attention", fold, bag, "-o", tmp / "att_trained", "--method", "all", "--quiet"
            )
            check(code == 0, err)
            loaded = load_mil(fold)
            check(loaded.embed_dim == D and loaded.n_classes == 2, "trained checkpoint misread")

    case("cli", "attention with a checkpoint `mil train` wrote", trained_checkpoint)
    cli_case(
        "cli",
        "train rerun with another --max-epochs",
        ["mil", "train", root, labels, "-o", tmp / "tr_ok", *fast[:2], "--max-epochs", "3", *fast[4:]],
        "any",
    )


def sweep_train_inputs(tmp: Path, root: Path, labels: Path, fast: list[str]) -> None:
    """`mil train` on labels CSVs and bags written in the ways people write them."""
    rows = list(csv.reader(labels.read_text(encoding="utf-8").splitlines()))

    def variant(name: str, text: str, expect: str = "ok", extra: tuple[str, ...] = ()) -> None:
        path = tmp / f"labels_{len(RESULTS)}.csv"
        path.write_bytes(text.encode("utf-8"))
        cli_case(
            "cli",
            f"train labels {name}",
            ["mil", "train", root, path, "-o", tmp / f"tv_{len(RESULTS)}", *fast, *extra],
            expect,
        )

    body = "\n".join(",".join(r) for r in rows) + "\n"
    variant("with CRLF line endings", body.replace("\n", "\r\n"))
    variant("with spaces around cells", "\n".join(", ".join(r) for r in rows) + "\n")
    variant(
        "as integers 0/1",
        "\n".join(
            ",".join(r) if i == 0 else f"{r[0]},{int(r[1] == 'tumour')},{r[2]}" for i, r in enumerate(rows)
        )
        + "\n",
    )
    variant(
        "with an extra column",
        "\n".join(",".join([*r, "x" if i else "notes"]) for i, r in enumerate(rows)) + "\n",
    )
    variant("without case_id", "\n".join(",".join(r[:2]) for r in rows) + "\n")
    variant(
        "with empty case ids",
        "\n".join(",".join(r if i == 0 else [r[0], r[1], ""]) for i, r in enumerate(rows)) + "\n",
        "any",
    )
    variant("with a blank line", body + "\n")
    variant("with an empty label", body + "s_x,,case_x\n", "error")
    variant("with columns in another order", "\n".join(",".join([r[1], r[0], r[2]]) for r in rows) + "\n")
    variant(
        "with 3 classes, one of 2 cases, 3 folds",
        body.replace("s07,tumour", "s07,other").replace("s06,normal", "s06,other"),
        "error",
        ("--folds", "3"),
    )
    # bags people write
    data = tmp / "odd_bags"
    shutil.copytree(root, data)
    write_h5_bag(data / "h5_files" / "s00.h5", rng_features(1, seed=20), np.zeros((1, 2)))
    with h5py.File(data / "h5_files" / "s01.h5", "w") as handle:
        handle["features"] = rng_features(12, seed=21).astype(np.float16)
        handle["coords"] = np.zeros((12, 2))
    (data / "h5_files" / "s02.h5").unlink()
    (data / "pt_files").mkdir()
    torch.save(
        {"features": torch.from_numpy(rng_features(12, seed=22)), "coords": torch.zeros(12, 2)},
        data / "pt_files" / "s02.pt",
    )
    cli_case(
        "cli",
        "train 1-patch, float16 and .pt dict bags",
        ["mil", "train", data, labels, "-o", tmp / "tr_odd", *fast, "--k-sample", "8"],
    )
    nan = tmp / "nan_bags"
    shutil.copytree(root, nan)
    bad = rng_features(12, seed=23)
    bad[3, 3] = np.nan
    write_h5_bag(nan / "h5_files" / "s04.h5", bad, np.zeros((12, 2)))
    cli_case(
        "cli", "train with a NaN bag", ["mil", "train", nan, labels, "-o", tmp / "tr_nan", *fast], "error"
    )
    empty = tmp / "empty_bags"
    shutil.copytree(root, empty)
    with h5py.File(empty / "h5_files" / "s05.h5", "w") as handle:
        handle["features"] = np.zeros((0, D), np.float32)
    cli_case(
        "cli",
        "train with an empty bag",
        ["mil", "train", empty, labels, "-o", tmp / "tr_emptybag", *fast],
        "error",
    )
    cli_case(
        "cli",
        "train rerun with another option (--lr)",
        ["mil", "train", root, labels, "-o", tmp / "tr_ok", *fast, "--lr", "1e-3"],
        "any",
    )
    cli_case("cli", "train --out is a file", ["mil", "train", root, labels, "-o", labels, *fast], "error")


def _same_h5(a: Path, b: Path, atol: float, skip_attrs: bool = True) -> bool:
    with h5py.File(a) as ha, h5py.File(b) as hb:
        if set(ha) != set(hb):
            return False
        for key in ha:
            if not isinstance(ha[key], h5py.Dataset):
                continue
            x, y = ha[key][()], hb[key][()]
            if getattr(x, "shape", None) != getattr(y, "shape", None):
                return False
            if np.issubdtype(np.asarray(x).dtype, np.floating):
                if not np.allclose(x, y, atol=atol, rtol=max(atol, 0), equal_nan=True):
                    return False
            elif not np.array_equal(x, y):
                return False
        if not skip_attrs:
            return dict(ha.attrs) == dict(hb.attrs)
        for name in ("target", "prediction", "n_patches"):
            if name in ha.attrs and not np.array_equal(ha.attrs[name], hb.attrs.get(name)):
                return False
    return True


SECTIONS = {
    "models": sweep_models,
    "checkpoints": sweep_checkpoints,
    "bags": sweep_bags,
    "explain": sweep_explain,
    "cli": sweep_cli,
}


def main() -> None:
    global VERBOSE
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every case")
    args = parser.parse_args()
    VERBOSE = args.verbose
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
