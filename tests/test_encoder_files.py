"""Weight files as they are published (shards, DINOv2 training checkpoints, LFS pointers, pickles),
loaded by `attnmap.load_model` and `load_encoder` (bench/encoder_files_sweep.py runs the whole set)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from attnmap import load_model
from attnmap.errors import InputError
from attnmap.wsi.encoders import load_encoder

SPEC = "timm:vit_small_patch16_224"
SMALL = {"embed_dim": 32, "depth": 2, "num_heads": 2, "img_size": 32}


def _vit(seed: int, **args: object) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = timm.create_model(SPEC[5:], pretrained=False, num_classes=0, **{**SMALL, **args}).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)
    return model


def _same_output(model: torch.nn.Module, reference: torch.nn.Module, size: int = 32) -> None:
    images = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(images), reference(images), rtol=1e-5, atol=1e-6)


def _shard(state: dict[str, torch.Tensor], folder: Path, stem: str = "model") -> Path:
    keys = sorted(state)
    index: dict[str, object] = {"metadata": {}, "weight_map": {}}
    for number, part in enumerate((keys[: len(keys) // 2], keys[len(keys) // 2 :]), 1):
        name = f"{stem}-0000{number}-of-00002.safetensors"
        save_file({key: state[key].contiguous() for key in part}, str(folder / name))
        index["weight_map"].update(dict.fromkeys(part, name))  # type: ignore[union-attr]
    path = folder / f"{stem}.safetensors.index.json"
    path.write_text(json.dumps(index))
    return path


def test_sharded_safetensors_load_as_one_checkpoint(tmp_path: Path) -> None:
    reference = _vit(0)
    index = _shard(reference.state_dict(), tmp_path)
    _same_output(load_model(SPEC, index, **SMALL), reference)
    _same_output(load_encoder(SPEC, index, model_args=SMALL).model, reference)
    (tmp_path / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(InputError, match=r"index .*model.safetensors.index.json names shard "
                       r"model-00002-of-00002.safetensors, which is not beside it \(2 shards in all\)$"):
        load_model(SPEC, index, **SMALL)


def test_a_timm_hub_folder_with_sharded_weights(tmp_path: Path) -> None:
    reference = _vit(1)
    config = {"architecture": "vit_small_patch16_224", "model_args": {**SMALL, "num_classes": 0}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    _shard(reference.state_dict(), tmp_path)
    _same_output(load_model(f"timm:{tmp_path}"), reference)


def test_dinov2_training_checkpoint_with_block_chunks(tmp_path: Path) -> None:
    """DINOv2's teacher_checkpoint.pth: the teacher's backbone. beside its heads, blocks nested in
    FSDP chunks (blocks.CHUNK.BLOCK.) and a mask_token timm's filter drops."""
    reference = _vit(2, init_values=1e-5)
    # two chunks of one block each: blocks.0.0. and blocks.1.1. (the block index stays global)
    teacher = {"backbone." + re.sub(r"^blocks\.(\d+)\.", r"blocks.\1.\1.", key): value
               for key, value in reference.state_dict().items()}
    teacher |= {"backbone.mask_token": torch.zeros(1, 32), "dino_head.mlp.0.weight": torch.randn(8, 32)}
    torch.save({"teacher": teacher, "iteration": 5}, tmp_path / "teacher_checkpoint.pth")
    _same_output(load_model(SPEC, tmp_path / "teacher_checkpoint.pth", init_values=1e-5, **SMALL), reference)


def test_patches_of_another_size_are_refused_with_the_argument(tmp_path: Path) -> None:
    """timm would resample a 16-pixel patch embedding to 8 pixels: another model, never loaded."""
    torch.save(_vit(3, img_size=64).state_dict(), tmp_path / "p16.bin")
    with pytest.raises(InputError, match=r"wrong shape: patch_embed.proj.weight \(32, 3, 16, 16\) vs "
                       r"\(32, 3, 8, 8\); its patches are 16×16 pixels: build the model with patch_size=16$"):
        load_model(SPEC, tmp_path / "p16.bin", **{**SMALL, "patch_size": 8})


def test_layerscale_near_miss_names_init_values(tmp_path: Path) -> None:
    torch.save(_vit(4, init_values=1e-5).state_dict(), tmp_path / "uni.bin")
    with pytest.raises(InputError, match=r"it has LayerScale \(ls1/ls2.gamma\): build the model with "
                       r"init_values=1e-5 \(the file's gammas replace it\)$"):
        load_model(SPEC, tmp_path / "uni.bin", **SMALL)
    with pytest.raises(InputError, match=r"it has no LayerScale: leave init_values out$"):
        load_model(SPEC, _saved(_vit(4), tmp_path / "plain.bin"), init_values=1e-5, **SMALL)


def _saved(model: torch.nn.Module, path: Path) -> Path:
    torch.save(model.state_dict(), path)
    return path


class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_runs_code_is_refused_unrun(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    torch.save({"state_dict": _vit(5).state_dict(), "hook": _RunsCode(marker)}, tmp_path / "evil.pth")
    with pytest.raises(InputError) as error:
        load_model(SPEC, tmp_path / "evil.pth", **SMALL)
    message = str(error.value)
    assert "holds a pickled posix.system object (unpickling runs code)" in message
    assert "weights_only" not in message and "\n" not in message  # torch's advice to turn it off
    assert not marker.exists()


def test_git_lfs_pointer_is_named(tmp_path: Path) -> None:
    pointer = "version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 1\n"
    for name in ("pytorch_model.bin", "model.safetensors"):
        (tmp_path / name).write_text(pointer)
        with pytest.raises(InputError, match=rf"{name} is a Git LFS pointer, not the weights: fetch them "
                           r"\(git lfs pull\)"):
            load_model(SPEC, tmp_path / name, **SMALL)


def test_a_transformers_folder_given_as_timm(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "dinov2", "hidden_size": 32}))
    with pytest.raises(InputError, match=r"without a timm config.json naming an \"architecture\": it holds "
                       r"a Hugging Face transformers model, given as hf:FOLDER$"):
        load_model(f"timm:{tmp_path}")


def test_an_ema_copy_alone_loads_and_beside_the_model_is_left(tmp_path: Path) -> None:
    """timm's train checkpoints hold state_dict and state_dict_ema: the first is the model; a file
    that kept only the EMA copy (DeiT's model_ema) gives that copy."""
    model, ema = _vit(6), _vit(7)
    torch.save({"state_dict": model.state_dict(), "state_dict_ema": ema.state_dict()}, tmp_path / "both.pth")
    _same_output(load_model(SPEC, tmp_path / "both.pth", **SMALL), model)
    wrapped = {f"module.{key}": value for key, value in ema.state_dict().items()}
    torch.save({"model_ema": wrapped, "epoch": 3}, tmp_path / "ema.pth")
    _same_output(load_encoder(SPEC, tmp_path / "ema.pth", model_args=SMALL).model, ema)


def test_npz_and_a_folder_given_as_the_checkpoint(tmp_path: Path) -> None:
    import numpy as np

    np.savez(tmp_path / "ViT-B_16.npz", **{"embedding/kernel": np.zeros((16, 16, 3, 32), np.float32)})
    with pytest.raises(InputError, match=r"ViT-B_16.npz: a NumPy / JAX .npz archive .*save its state_dict$"):
        load_model(SPEC, tmp_path / "ViT-B_16.npz", **SMALL)
    (tmp_path / "download").mkdir()
    save_file(_vit(8).state_dict(), str(tmp_path / "download" / "model.safetensors"))
    with pytest.raises(InputError, match=r"download is a folder, not a weights file: give the weights file "
                       r"inside it, .*download/model.safetensors$"):
        load_model(SPEC, tmp_path / "download", **SMALL)


def test_an_encoder_giving_tokens_names_its_pooling(tmp_path: Path) -> None:
    """Virchow's config builds the ViT with global_pool='': as a patch encoder it needs its pooling."""
    from attnmap.errors import UnsupportedModelError

    args = {**SMALL, "global_pool": "", "num_classes": 0}
    config = {"architecture": "vit_small_patch16_224", "model_args": args}
    (tmp_path / "config.json").write_text(json.dumps(config))
    save_file(_vit(9, global_pool="").state_dict(), str(tmp_path / "model.safetensors"))
    with pytest.raises(UnsupportedModelError, match=r"gives tokens \(1, 5, 32\), not one feature vector per "
                       r"patch: name its pooling, e.g. global_pool='class_and_patch_mean'"):
        load_encoder(f"timm:{tmp_path}")
    encoder = load_encoder(f"timm:{tmp_path}", model_args={"global_pool": "class_and_patch_mean"})
    assert encoder.feature_dim == 64


def test_a_shard_saved_again_is_a_new_model(tmp_path: Path) -> None:
    """The index alone does not make the weights: the checksum, the fingerprint and the model cache
    follow each shard."""
    from attnmap.checkpoint import cached_vit
    from attnmap.fingerprint import file_identity
    from attnmap.provenance import model_checksum

    first, second = _vit(10), _vit(11)
    index = _shard(first.state_dict(), tmp_path)
    before = (model_checksum(index), file_identity(index))
    args = tuple(sorted(SMALL.items()))
    _same_output(cached_vit(SPEC, str(index), args), first)
    weight_map = json.loads(index.read_text())["weight_map"]
    state = second.state_dict()
    for name in set(weight_map.values()):  # the shards saved again, the index left as it is
        save_file({key: state[key].contiguous() for key, file in weight_map.items() if file == name},
                  str(tmp_path / name))
    assert model_checksum(index) != before[0] and file_identity(index) != before[1]
    _same_output(cached_vit(SPEC, str(index), args), second)


def test_a_timm_hub_folder_named_hf_loads_as_an_encoder(tmp_path: Path) -> None:
    """UNI's Hub address (hf-hub:...) leads users to write hf:FOLDER for its timm folder."""
    reference = _vit(12)
    config = {"architecture": "vit_small_patch16_224", "model_args": {**SMALL, "num_classes": 0},
              "pretrained_cfg": {"mean": [0.1, 0.2, 0.3], "std": [0.4, 0.5, 0.6], "input_size": [3, 32, 32]}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    save_file(reference.state_dict(), str(tmp_path / "model.safetensors"))
    encoder = load_encoder(f"hf:{tmp_path}")
    _same_output(encoder.model, reference)
    assert encoder.transform.mean == (0.1, 0.2, 0.3) and encoder.transform.std == (0.4, 0.5, 0.6)


def test_separate_q_k_v_projections_are_packed_into_qkv(tmp_path: Path) -> None:
    reference = _vit(13)
    split: dict[str, torch.Tensor] = {}
    for key, value in reference.state_dict().items():
        stem, dot, kind = key.rpartition(".qkv.")
        if dot:
            parts = zip("qkv", value.chunk(3), strict=True)
            split |= {f"{stem}.{part}_proj.{kind}": chunk for part, chunk in parts}
        else:
            split[key] = value
    torch.save({"model": {f"backbone.{key}": value for key, value in split.items()}}, tmp_path / "split.pth")
    _same_output(load_model(SPEC, tmp_path / "split.pth", **SMALL), reference)
    del split["blocks.1.attn.v_proj.weight"]  # a part missing: nothing is packed, the keys are named
    torch.save(split, tmp_path / "part.pth")
    with pytest.raises(InputError, match=r"missing: blocks.1.attn.qkv.weight; unexpected: "
                       r"blocks.1.attn.k_proj.weight, blocks.1.attn.q_proj.weight$"):
        load_model(SPEC, tmp_path / "part.pth", **SMALL)
