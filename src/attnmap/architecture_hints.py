"""What a checkpoint that does not fit its architecture says about the arguments it was built with,
spelt the way the caller gives them.

Why: "wrong shape: blocks.0.mlp.fc2.weight (384, 1020) vs (384, 2040)" names the symptom, not the
fix. Some mismatches read unambiguously as an architecture argument (a register-token count, a
packed gated MLP as Virchow2's), and the user can only act on the hint in the form they give
arguments in: ``load_model`` keywords, ``--model-arg`` / ``--encoder-arg`` on the command line, or
``features.encoder_args`` in a `wsi run` configuration. The caller says which (`argument_form`);
`spell_model_arguments` is the one place that spells them.
"""

from __future__ import annotations

import ast
import contextlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from typing import Any

import torch

FORMS = ("keywords", "--model-arg", "--encoder-arg", "features.encoder_args")
_FORM: ContextVar[str] = ContextVar("attnmap_argument_form", default="keywords")


@contextlib.contextmanager
def argument_form(form: str) -> Iterator[None]:
    """Within this block, hints spell model arguments as ``form`` (one of `FORMS`)."""
    if form not in FORMS:
        raise ValueError(f"argument form {form!r} is not one of {', '.join(FORMS)}")
    token = _FORM.set(form)
    try:
        yield
    finally:
        _FORM.reset(token)


def call_in_argument_form(form: str, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``function(*args, **kwargs)`` within `argument_form` ``form``: picklable with
    `functools.partial`, so a task run by another process spells its hints as its caller would."""
    with argument_form(form):
        return function(*args, **kwargs)


def spell_model_arguments(arguments: Mapping[str, str]) -> str:
    """``arguments`` (name → value as the user would type it) as the current caller takes them."""
    form = _FORM.get()
    if form == "keywords":
        return ", ".join(f"{key}={_keyword_value(value)}" for key, value in arguments.items())
    if form == "features.encoder_args":
        return "features.encoder_args: {" + ", ".join(f"{k}: {v}" for k, v in arguments.items()) + "}"
    return " ".join(f"{form} {key}={value}" for key, value in arguments.items())


def _keyword_value(value: str) -> str:
    """``value`` as Python source: a number or True/False as it is, anything else quoted."""
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return repr(value)
    return value if isinstance(parsed, (int, float, bool)) else repr(value)


def architecture_hints(
    own: Mapping[str, tuple[int, ...]],
    state: Mapping[str, torch.Tensor],
    *,
    extra: Sequence[str],
    missing: Sequence[str],
) -> list[str]:
    """The arguments a mismatch between a model's shapes (``own``) and a checkpoint's (``state``)
    points to, each a clause of the "does not fit" message; empty when none does."""
    hints = []
    registers = state.get("reg_token")
    if "reg_token" in extra and isinstance(registers, torch.Tensor) and registers.ndim == 3:
        count = str(registers.shape[1])
        hints.append(f"it has {count} register tokens: build the model with "
                     + spell_model_arguments({"reg_tokens": count}))
    elif "reg_token" in missing:
        hints.append("it has no register tokens")
    patches, theirs = own.get("patch_embed.proj.weight"), state.get("patch_embed.proj.weight")
    other_patches = isinstance(theirs, torch.Tensor) and theirs.ndim == 4 and patches is not None
    if other_patches and tuple(theirs.shape[-2:]) != tuple(patches[-2:]):
        size = str(theirs.shape[-1])
        hints.append(f"its patches are {theirs.shape[-2]}×{size} pixels: build the model with "
                     + spell_model_arguments({"patch_size": size}))
    if any(key.endswith((".ls1.gamma", ".ls2.gamma")) for key in extra):
        hints.append("it has LayerScale (ls1/ls2.gamma): build the model with "
                     + spell_model_arguments({"init_values": "1e-5"}) + " (the file's gammas replace it)")
    elif any(key.endswith((".ls1.gamma", ".ls2.gamma")) for key in missing):
        hints.append("it has no LayerScale: leave init_values out")
    return hints + _position_hint(own, state) + _gated_mlp_hint(own, state) + _classifier_hint(own, state)


def _classifier_hint(own: Mapping[str, tuple[int, ...]], state: Mapping[str, torch.Tensor]) -> list[str]:
    """A classifier of another number of classes (timm ``head``, Hugging Face ``classifier``):
    ``num_classes``, which left out takes the checkpoint's."""
    for name in ("head.weight", "classifier.weight"):
        mine, theirs = own.get(name), state.get(name)
        if mine is None or len(mine) != 2 or not isinstance(theirs, torch.Tensor) or theirs.ndim != 2:
            continue
        if mine[0] != theirs.shape[0] and mine[1] == theirs.shape[1]:
            count = str(theirs.shape[0])
            return [f"its classifier has {count} classes: build the model with "
                    + spell_model_arguments({"num_classes": count}) + " or leave num_classes out"]
    return []


def _position_hint(own: Mapping[str, tuple[int, ...]], state: Mapping[str, torch.Tensor]) -> list[str]:
    """Position embeddings for the patches only (UNI2-h, DINOv2 with registers in timm) against
    ones that also cover the class and register tokens, or the reverse: ``no_embed_class``."""
    mine, theirs = own.get("pos_embed"), state.get("pos_embed")
    if mine is None or not isinstance(theirs, torch.Tensor) or theirs.ndim != 3 or len(mine) != 3:
        return []
    registers = own.get("reg_token")
    prefix = int("cls_token" in own) + (int(registers[1]) if registers and len(registers) == 3 else 0)
    if prefix and mine[1] - theirs.shape[1] == prefix and math.isqrt(theirs.shape[1]) ** 2 == theirs.shape[1]:
        return ["its position embeddings cover the patches only: build the model with "
                + spell_model_arguments({"no_embed_class": "True"})]
    if prefix and theirs.shape[1] - mine[1] == prefix and math.isqrt(mine[1]) ** 2 == mine[1]:
        return ["its position embeddings also cover the class token: leave no_embed_class out"]
    return []


def _gated_mlp_hint(own: Mapping[str, tuple[int, ...]], state: Mapping[str, torch.Tensor]) -> list[str]:
    """What to give when the checkpoint's MLPs are packed gated ones (Virchow2's SwiGLUPacked:
    ``fc1`` makes value and gate, twice the inputs of ``fc2``) and the model's are plain, or the
    reverse. The activation is named, never guessed: SwiGLUPacked's default (sigmoid) is not
    Virchow2's (SiLU), and a wrong one loads without a word and gives other features."""

    def gated(shapes: Mapping[str, tuple[int, ...]], fc1: str) -> bool | None:
        fc2 = fc1[: -len("fc1.weight")] + "fc2.weight"
        if fc1 not in shapes or fc2 not in shapes or len(shapes[fc1]) != 2 or len(shapes[fc2]) != 2:
            return None
        return shapes[fc1][0] == 2 * shapes[fc2][1]

    theirs = {key: tuple(value.shape) for key, value in state.items() if isinstance(value, torch.Tensor)}
    for fc1 in sorted(key for key in own if key.endswith("mlp.fc1.weight")):
        mine, checkpoint = gated(own, fc1), gated(theirs, fc1)
        if mine is None or checkpoint is None or mine == checkpoint:
            continue
        if checkpoint:
            layer = spell_model_arguments({"mlp_layer": "SwiGLUPacked"})
            activation = spell_model_arguments({"act_layer": "silu"})
            return [f"the checkpoint's MLP is gated (fc1 has twice fc2's inputs): give {layer} and the "
                    f"activation it was trained with ({activation} for Virchow2)"]
        return ["the checkpoint's MLP is not gated (fc1 has as many outputs as fc2 has inputs): "
                "leave mlp_layer out"]
    return []
