"""attnmap.checkpoint: one safe reader for every model file, one error wording, one model cache."""

from __future__ import annotations

import collections
import os
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from attnmap.checkpoint import (
    MODEL_CACHE,
    apply_state_dict,
    cached_model,
    is_torchscript,
    load_state_dict,
    load_torchscript,
    read_checkpoint,
)
from attnmap.errors import InputError
from attnmap.mil import load_mil
from attnmap.vit.models import load_model
from attnmap.wsi.encoders import load_encoder


class Pickled:
    """A class a weights-only load refuses (it would have to run code to build it)."""


def _linear_state(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return torch.nn.Linear(3, 2).state_dict()


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message and "weights_only" not in message, message
    return message


@pytest.mark.parametrize(
    "wrap",
    [
        lambda s: s,
        lambda s: {"state_dict": s, "epoch": 3},
        lambda s: {"model": s, "optimizer": {"lr": 0.1}},
        lambda s: {"model_state_dict": s},
        lambda s: {f"module.{k}": v for k, v in s.items()},
        lambda s: {f"model.{k}": v for k, v in s.items()},
        lambda s: {"state_dict": {f"model.module.{k}": v for k, v in s.items()}},
    ],
    ids=["raw", "state_dict", "model", "model_state_dict", "module.", "model.", "nested"],
)
def test_every_wrapping_unwraps_to_the_same_state(tmp_path: Path, wrap) -> None:
    state = _linear_state()
    path = tmp_path / "w.pt"
    torch.save(wrap(state), path)
    loaded = load_state_dict(path)
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[key], state[key]) for key in state)
    assert load_state_dict(wrap(state)).keys() == state.keys()  # a mapping in memory too


def test_safetensors_and_torch_files_give_the_same_state(tmp_path: Path) -> None:
    state = _linear_state()
    save_file(state, str(tmp_path / "w.safetensors"))
    torch.save(state, tmp_path / "w.pt")
    a, b = load_state_dict(tmp_path / "w.safetensors"), load_state_dict(tmp_path / "w.pt")
    assert all(torch.equal(a[key], b[key]) for key in state)


def test_missing_unreadable_and_unsafe_files_are_one_line_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="^checkpoint not found: .*nope.pt$") as error:
        read_checkpoint(tmp_path / "nope.pt")
    _one_line(error)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(InputError, match="^cannot read checkpoint .*junk.pt: not a weights-only") as error:
        read_checkpoint(tmp_path / "junk.pt")
    _one_line(error)
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint at all")
    with pytest.raises(InputError, match="^cannot read checkpoint .*junk.safetensors: not a valid") as error:
        read_checkpoint(tmp_path / "junk.safetensors")
    _one_line(error)
    torch.save({"weight": torch.zeros(1), "object": Pickled()}, tmp_path / "pickled.pt")
    with pytest.raises(InputError, match="cannot read checkpoint .*pickled.pt: .*Pickled") as error:
        read_checkpoint(tmp_path / "pickled.pt")
    _one_line(error)
    torch.save({"epoch": 3, "counts": collections.Counter()}, tmp_path / "no_state.pt")
    with pytest.raises(InputError, match="no_state.pt holds no state_dict") as error:
        load_state_dict(tmp_path / "no_state.pt")
    _one_line(error)


def test_wrong_shape_missing_and_unexpected_keys_in_one_message(tmp_path: Path) -> None:
    state = _linear_state()
    state["weight"] = torch.zeros(5, 3)
    state["extra"] = torch.zeros(1)
    del state["bias"]
    with pytest.raises(InputError) as error:
        apply_state_dict(torch.nn.Linear(3, 2), state, "w.pt")
    message = _one_line(error)
    assert message == (
        "checkpoint w.pt does not fit Linear: missing: bias; unexpected: extra; "
        "wrong shape: weight (5, 3) vs (2, 3)"
    )
    headless = CutClassifier()
    body = {f"body.{key}": value for key, value in _linear_state().items()}
    apply_state_dict(headless, {**body, "head.weight": torch.zeros(1)}, "w", ignore_unexpected=True)
    for stray in ("neck.weight", "reg_token"):  # a layer it lacks, a parameter of its own: kept
        message = f"^checkpoint w does not fit CutClassifier: unexpected: {stray}$"
        with pytest.raises(InputError, match=message):
            apply_state_dict(headless, {**body, stray: torch.zeros(1)}, "w", ignore_unexpected=True)


class CutClassifier(torch.nn.Module):
    """A trunk whose checkpoints carry the classifier it was cut from (``dropped_layers``)."""

    dropped_layers = ("head",)

    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Linear(3, 2)


def test_the_same_wording_from_every_loader(tmp_path: Path) -> None:
    """ViT, MIL and encoder loaders all go through the module: same messages for the same faults."""
    missing, junk = tmp_path / "missing.pt", tmp_path / "junk.pt"
    junk.write_bytes(b"junk")
    loaders = [
        lambda p: load_model("timm:vit_tiny_patch16_224", p, depth=1),
        load_mil,
        lambda p: load_encoder("resnet50_trunc", p),
    ]
    for load in loaders:
        with pytest.raises(InputError, match=f"^checkpoint not found: {missing}$"):
            load(missing)
        with pytest.raises(InputError, match="^cannot read checkpoint .*junk.pt: not a weights-only"):
            load(junk)


def _scripted(path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.trace(torch.nn.Linear(3, 2), torch.zeros(1, 3)).save(str(path))
    return path


def test_torchscript_only_when_named(tmp_path: Path) -> None:
    path = _scripted(tmp_path / "scripted.pt")
    assert is_torchscript(path) and not is_torchscript(tmp_path)
    with pytest.raises(InputError, match=r"TorchScript archive, .*'torchscript:.*scripted.pt'") as error:
        read_checkpoint(path)
    _one_line(error)
    with pytest.raises(InputError, match="TorchScript archive"):
        load_encoder(str(path))  # a bare path is never run as code
    module = load_torchscript(f"torchscript:{path}")
    assert module(torch.zeros(1, 3)).shape == (1, 2)
    torch.save(_linear_state(), tmp_path / "plain.pt")
    with pytest.raises(InputError, match="plain.pt: not a TorchScript archive"):
        load_torchscript(tmp_path / "plain.pt")


def test_model_cache_reloads_a_changed_file_only(tmp_path: Path) -> None:
    MODEL_CACHE.clear()
    path = tmp_path / "w.pt"
    torch.save(_linear_state(0), path)
    calls: list[str] = []

    def load(p: str) -> dict[str, torch.Tensor]:
        calls.append(p)
        return load_state_dict(p)

    first = cached_model(load, str(path), files=(path,))
    assert cached_model(load, str(path), files=(path,)) is first and len(calls) == 1
    torch.save(_linear_state(1), path)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # a coarse clock may not tick
    second = cached_model(load, str(path), files=(path,))
    assert len(calls) == 2 and not torch.equal(second["weight"], first["weight"])


def test_a_lazy_read_gives_the_same_weights_for_either_torch_format(tmp_path: Path) -> None:
    """A configuration check maps the file instead of reading it (a ViT-H encoder is 2.5 GB)."""
    state = _linear_state(0)
    torch.save(state, tmp_path / "zip.pt")
    torch.save(state, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)  # cannot be mapped
    for name in ("zip.pt", "legacy.pt"):
        lazy = load_state_dict(tmp_path / name, lazy=True)
        assert set(lazy) == set(state) and all(torch.equal(lazy[key], state[key]) for key in state)


@pytest.mark.parametrize("name", ["empty.pt", "empty.pth", "empty.safetensors", "empty.ckpt"])
def test_an_empty_checkpoint_file_says_it_is_empty(tmp_path: Path, name: str) -> None:
    """A 0-byte file (an interrupted download or save) was 'not a weights-only torch or safetensors
    file (EOFError)', or for .safetensors the parser's header message: now it says the file is empty."""
    (tmp_path / name).write_bytes(b"")
    message = rf"^cannot read checkpoint .*{name}: the file is empty \(0 bytes\)"
    with pytest.raises(InputError, match=message) as error:
        read_checkpoint(tmp_path / name)
    _one_line(error)


@pytest.mark.parametrize("content", [b"hello world", b"<html><body>404 Not Found</body>", b"garbage\x00\x01"])
def test_a_file_that_is_no_torch_save_file_says_what_it_starts_with(tmp_path: Path, content: bytes) -> None:
    """A text file (an HTML error page saved as weights, a wrong path) was 'not a weights-only torch
    or safetensors file (101)': torch's KeyError of the byte 'e', or 'Unsupported operand 103'. The
    message now says it is no torch.save file and shows how it starts."""
    (tmp_path / "weights.pth").write_bytes(content)
    message = r"^cannot read checkpoint .*weights.pth: not a weights-only torch or safetensors file \("
    reason = r"neither torch\.save's zip archive nor its legacy format: it starts with b'"
    with pytest.raises(InputError, match=message + reason) as error:
        read_checkpoint(tmp_path / "weights.pth")
    assert repr(content[:8])[:-1] in str(error.value)
    _one_line(error)
