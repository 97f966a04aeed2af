"""mil_sweep sections: models built, saved and reloaded; checkpoints as others write them."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from mil_sweep_harness import (
    D,
    case,
    check,
    perturbed,
    rng_features,
    same_outputs,
    torch_bytes,
)

from attnmap.mil import (
    ABMIL,
    CLAM_MB,
    CLAM_SB,
    explain,
    infer_bag,
    load_mil,
)


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
        save_load(lambda s: torch_bytes(s)[: len(torch_bytes(s)) // 2], "truncated file", "error")
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
