"""Loading CLAM / ABMIL checkpoints: the architecture is read off the state_dict's keys and shapes.

CLAM checkpoints are bare state_dicts; users rarely know (or record) the options a model was trained
with, so `load_clam` infers them: single or multi branch (attention output width 1 or C), the number
of classes, size small/big (attention hidden width 256/384), gated or plain attention, embed_dim (the
first Linear's input width). It repairs the historical variants CLAM's own loader copes with, and a
few more:

- ``module.`` segments from ``nn.DataParallel`` (whole model or the attention net);
- stray ``instance_loss_fn.*`` keys;
- no ``instance_classifiers.*`` at all (inference-only exports): the model loads without them and
  refuses ``instance_eval``;
- old checkpoints trained without dropout, whose Sequential had no Dropout layer, so the attention
  layer sits at ``attention_net.2`` instead of ``attention_net.3``;
- the plain attention layer's last Linear at ``module.2`` (no dropout) or ``module.3`` (dropout);
- the short-lived (2024) CLAM_MB with a single Linear(H -> C) bag classifier: row c of it is class
  c's Linear(H -> 1), which is what the per-class classifiers compute.

Files are read by `attnmap.checkpoint` (weights only, wrappers and whole-model ``module.`` prefixes
removed there); the result is loaded strictly by its `apply_state_dict`: a key that still does not
fit raises the same one-line `InputError` as any other checkpoint.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from attnmap.checkpoint import apply_state_dict, load_state_dict, read_checkpoint
from attnmap.errors import InputError, UnsupportedModelError
from attnmap.mil.abmil import ABMIL
from attnmap.mil.clam import CLAM_MB, CLAM_SB, CLAM_SIZES

CLAM_OVERRIDES = ("k_sample", "subtyping", "dropout")
StateDict = Mapping[str, torch.Tensor]


def read_state_dict(source: str | Path | StateDict) -> dict[str, torch.Tensor]:
    """A state_dict from a path or a mapping, read and unwrapped by `attnmap.checkpoint`.

    A TorchScript archive is refused with advice to save the state_dict: the MIL readers take no
    ``torchscript:`` name (attention and relevance need the model's own layers), so the generic
    advice to pass one would send the user to an option that does not exist.

    A fold's ``resume.pt`` (`mil train`'s state of an unfinished fold, whose ``model`` entry the
    generic unwrapping would take) is refused: its weights are a mid-training epoch's."""
    from attnmap.mil.fold_files import is_resume_state

    if isinstance(source, (str, Path)) and is_resume_state(
        read_checkpoint(source, scripted_ok=False, lazy=True)
    ):
        raise InputError(f"{source} is mil train's resume state of an unfinished fold, not a model: rerun "
                         "the mil train command to finish the fold, then give its checkpoint.pt")
    return load_state_dict(source, scripted_ok=False)


def _strip_data_parallel(key: str) -> str:
    parts: list[str] = []
    for part in key.split("."):
        # attention_net.3.module.* is the plain attention layer's own Sequential, not DataParallel
        legit = len(parts) == 2 and parts[0] in ("attention_net",) and parts[1].isdigit()
        legit = legit or (len(parts) == 1 and parts[0] == "attention")  # ABMIL's plain attention
        if part == "module" and not legit:
            continue
        parts.append(part)
    return ".".join(parts)


def clean_clam_keys(state: StateDict) -> dict[str, torch.Tensor]:
    """Keys with DataParallel segments, instance_loss_fn and the old dropout-less index repaired."""
    cleaned = {
        _strip_data_parallel(key): value for key, value in state.items() if "instance_loss_fn" not in key
    }
    if not any(key.startswith("attention_net.3.") for key in cleaned):
        cleaned = {
            (
                "attention_net.3." + key[len("attention_net.2.") :]
                if key.startswith("attention_net.2.")
                else key
            ): v
            for key, v in cleaned.items()
        }
    return cleaned


def _require(state: StateDict, key: str, what: str) -> torch.Tensor:
    if key not in state:
        raise UnsupportedModelError(f"not a {what} checkpoint: key {key!r} is missing")
    return state[key]


def infer_clam_config(state: StateDict) -> dict[str, object]:
    """Architecture options of a (cleaned) CLAM state_dict."""
    first = _require(state, "attention_net.0.weight", "CLAM")
    hidden, embed_dim = first.shape
    gate = "attention_net.3.attention_a.0.weight" in state
    if gate:
        attention_hidden = state["attention_net.3.attention_a.0.weight"].shape[0]
        n_branches = _require(state, "attention_net.3.attention_c.weight", "CLAM").shape[0]
        attention_dropout = False
    else:
        attention_hidden = _require(state, "attention_net.3.module.0.weight", "CLAM").shape[0]
        attention_dropout = "attention_net.3.module.3.weight" in state
        last = "attention_net.3.module.3.weight" if attention_dropout else "attention_net.3.module.2.weight"
        n_branches = _require(state, last, "CLAM").shape[0]
    sizes = {dims: name for name, dims in CLAM_SIZES.items()}
    size = sizes.get((int(hidden), int(attention_hidden)))
    if size is None:
        raise UnsupportedModelError(
            f"CLAM layer widths {hidden}/{attention_hidden} match neither size "
            + ", ".join(f"{name} ({a}/{b})" for name, (a, b) in CLAM_SIZES.items())
        )
    n_instance = sum(
        1 for key in state if key.startswith("instance_classifiers.") and key.endswith(".weight")
    )
    multi = n_branches > 1 or "classifiers.0.weight" in state
    n_classes = int(n_branches if multi else _require(state, "classifiers.weight", "CLAM_SB").shape[0])
    if n_instance and n_instance != n_classes:
        raise UnsupportedModelError(
            f"checkpoint has {n_instance} instance classifiers but {n_classes} classes"
        )
    return {
        "model": "clam_mb" if multi else "clam_sb",
        "gate": gate,
        "size": size,
        "n_classes": n_classes,
        "embed_dim": int(embed_dim),
        "dropout": 0.25 if attention_dropout else 0.0,
    }


def _fit_to_model(state: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Rename the few keys whose index depends on options (plain attention's last Linear, MB 2024)."""
    expected = set(model.state_dict())
    for prefix in ("attention_net.3.", "attention."):
        for suffix in ("weight", "bias"):
            for have, want in (("module.2", "module.3"), ("module.3", "module.2")):
                source, target = f"{prefix}{have}.{suffix}", f"{prefix}{want}.{suffix}"
                if source in state and source not in expected and target in expected:
                    state[target] = state.pop(source)
    if isinstance(model, CLAM_MB) and "classifiers.weight" in state:
        weight, bias = state.pop("classifiers.weight"), state.pop("classifiers.bias")
        for c in range(weight.shape[0]):
            state[f"classifiers.{c}.weight"] = weight[c : c + 1].clone()
            state[f"classifiers.{c}.bias"] = bias[c : c + 1].clone()
    return state


def _source_name(source: object) -> str:
    return str(source) if isinstance(source, (str, Path)) else "given as a mapping"


def _load_strict(model: torch.nn.Module, state: dict[str, torch.Tensor], source: object) -> None:
    # a diverged training run saves NaN weights; every bag would then be blamed for a NaN map
    broken = [key for key, value in state.items() if value.is_floating_point() and not value.isfinite().all()]
    if broken:
        raise InputError(
            f"checkpoint {_source_name(source)} has NaN or infinite weights in {len(broken)} tensors "
            f"(e.g. {broken[0]})"
        )
    apply_state_dict(model, state, _source_name(source))


def load_clam(source: str | Path | StateDict, **overrides: object) -> CLAM_SB | CLAM_MB:
    """A CLAM_SB / CLAM_MB in eval mode from a checkpoint path or state_dict.

    The architecture is inferred from the keys (see the module docstring). ``overrides`` may set the
    options a state_dict cannot tell: ``k_sample``, ``subtyping``, ``dropout`` (training-time only).
    The model's dtype is the checkpoint's.
    """
    unknown = sorted(set(overrides) - set(CLAM_OVERRIDES))
    if unknown:
        raise InputError(f"load_clam cannot override {unknown}; allowed: {list(CLAM_OVERRIDES)}")
    state = clean_clam_keys(read_state_dict(source))
    config = infer_clam_config(state)
    kind = config.pop("model")
    config.update(overrides)
    model = (CLAM_MB if kind == "clam_mb" else CLAM_SB)(**config)
    model.to(state["attention_net.0.weight"].dtype)  # before loading, so no precision is lost
    if not any(key.startswith("instance_classifiers.") for key in state):
        # an inference-only export: the bag model is whole; instance clustering (training only)
        # is refused by the model rather than run with untrained classifiers
        model.instance_classifiers = torch.nn.ModuleList()
    state = _fit_to_model(state, model)
    _load_strict(model, state, source)
    return model.eval()


def infer_abmil_config(state: StateDict) -> dict[str, object]:
    """Architecture options of an ABMIL state_dict written by this package."""
    hidden, embed_dim = _require(state, "feature.0.weight", "ABMIL").shape
    gate = "attention.attention_a.0.weight" in state
    if gate:
        attention_dim = state["attention.attention_a.0.weight"].shape[0]
        attention_dropout = False
    else:
        attention_dim = _require(state, "attention.module.0.weight", "ABMIL").shape[0]
        attention_dropout = "attention.module.3.weight" in state
    n_classes = _require(state, "classifier.weight", "ABMIL").shape[0]
    return {
        "embed_dim": int(embed_dim),
        "hidden_dim": int(hidden),
        "attention_dim": int(attention_dim),
        "n_classes": int(n_classes),
        "gate": gate,
        "dropout": 0.25 if attention_dropout else 0.0,
    }


def load_mil(source: str | Path | StateDict, **overrides: object) -> CLAM_SB | CLAM_MB | ABMIL:
    """Any attention-MIL checkpoint this package reads: CLAM (see `load_clam`) or ABMIL."""
    state = read_state_dict(source)
    if any(_strip_data_parallel(key).startswith("feature.0.") for key in state):
        state = {  # CLAM's training scripts save the loss module's keys with any model
            _strip_data_parallel(key): value for key, value in state.items() if "instance_loss_fn" not in key
        }
        config = infer_abmil_config(state)
        unknown = sorted(set(overrides) - {"dropout"})
        if unknown:
            raise InputError(f"ABMIL checkpoints cannot override {unknown}; allowed: ['dropout']")
        config.update(overrides)
        model = ABMIL(**config).to(state["feature.0.weight"].dtype)
        state = _fit_to_model(state, model)
        _load_strict(model, state, source)
        return model.eval()
    if not any(_strip_data_parallel(key).startswith("attention_net.") for key in state):
        prefixes = sorted({key.split(".")[0] for key in state})
        raise UnsupportedModelError(
            "not a CLAM checkpoint (no attention_net.* keys) nor an attnmap ABMIL one (no feature.* "
            "keys); its keys start with "
            + ", ".join(prefixes[:8]) + (", ..." if len(prefixes) > 8 else "")
        )
    # a path again rather than the dict: a small second read buys error messages naming the file
    return load_clam(source if isinstance(source, (str, Path)) else state, **overrides)
