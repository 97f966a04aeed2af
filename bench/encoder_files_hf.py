"""Hugging Face folders and broken files for `encoder_files_sweep.py` (see `encoder_files_layouts`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from encoder_files_layouts import IMAGENET, TINY, Case, hub_folder, timm_file_case, timm_model
from safetensors.torch import save_file


def _seeded(cls: Any, config: Any, seed: int, **kw: Any) -> Any:
    torch.manual_seed(seed)
    model = cls(config, **kw).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)
    return model


def _hf_run(model: Any, readout: str) -> Any:
    def run(images: torch.Tensor) -> torch.Tensor:
        out = model(pixel_values=images)
        if readout == "embeds":
            return out.image_embeds
        tokens = out.last_hidden_state
        skip = 1 + int(getattr(model.config, "num_register_tokens", 0) or 0)
        return torch.cat([tokens[:, 0], tokens[:, skip:].mean(1)], 1) if readout == "concat" else tokens[:, 0]

    return run


def hf_folders(root: Path) -> list[Case]:
    import transformers as tf

    common = {
        "hidden_size": TINY["embed_dim"],
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "image_size": 32,
        "patch_size": 8,
    }
    cases: list[Case] = []

    def add(
        label: str,
        model: Any,
        processor: Any,
        readout: str = "cls",
        dtype: Any = None,
        shard: bool = False,
        reference_out: Any = None,
    ) -> Path:
        folder = root / label.replace(" ", "_")
        model.save_pretrained(
            folder, max_shard_size="40KB" if shard else "5GB", **({} if dtype is None else {})
        )
        if dtype is not None:  # saved in half precision, as some hubs publish
            model.to(dtype).save_pretrained(folder)
            model.float()
            model.load_state_dict({k: v.to(dtype).float() for k, v in model.state_dict().items()})
        if processor is not None:
            processor.save_pretrained(folder)
        mean_std = None if processor is None else (list(processor.image_mean), list(processor.image_std))
        ref = reference_out or _hf_run(model, {"cls_and_patch_mean": "concat"}.get(readout, readout))
        cases.append(
            Case(
                f"HF {label}",
                (f"hf:{folder}", None, {}),
                (f"hf:{folder}", None, {"readout": readout}),
                model,
                32,
                mean_std,
                wsi_reference=ref,
            )
        )
        return folder

    vit_proc = tf.ViTImageProcessor(
        size={"height": 32, "width": 32}, image_mean=IMAGENET[0], image_std=IMAGENET[1]
    )
    bit_proc = tf.BitImageProcessor(
        size={"shortest_edge": 32},
        crop_size={"height": 32, "width": 32},
        image_mean=IMAGENET[0],
        image_std=IMAGENET[1],
    )
    phikon = _seeded(tf.ViTModel, tf.ViTConfig(**common), 1, add_pooling_layer=False)
    add("Phikon ViTModel (no pooler)", phikon, vit_proc)
    add("Phikon-v2 Dinov2Model", _seeded(tf.Dinov2Model, tf.Dinov2Config(**common), 2), bit_proc)
    add(
        "Midnight Dinov2Model cls+mean",
        _seeded(tf.Dinov2Model, tf.Dinov2Config(**common), 3),
        bit_proc,
        readout="cls_and_patch_mean",
    )
    add(
        "Dinov2Model without preprocessor_config", _seeded(tf.Dinov2Model, tf.Dinov2Config(**common), 4), None
    )
    add(
        "Dinov2Model sharded safetensors",
        _seeded(tf.Dinov2Model, tf.Dinov2Config(**common), 5),
        bit_proc,
        shard=True,
    )
    add(
        "Dinov2Model bf16",
        _seeded(tf.Dinov2Model, tf.Dinov2Config(**common), 6),
        bit_proc,
        dtype=torch.bfloat16,
    )
    if hasattr(tf, "Dinov2WithRegistersModel"):
        reg = tf.Dinov2WithRegistersConfig(**common, num_register_tokens=4)
        add("Hibou-like Dinov2WithRegisters", _seeded(tf.Dinov2WithRegistersModel, reg, 7), bit_proc)
    clip_cfg = tf.CLIPConfig(
        text_config={
            "hidden_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "intermediate_size": 64,
        },
        vision_config={k: v for k, v in common.items()},
        projection_dim=16,
    )
    clip = _seeded(tf.CLIPModel, clip_cfg, 8)
    clip_proc = tf.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    tower = tf.CLIPVisionModelWithProjection(clip_cfg.vision_config)
    tower.config.projection_dim = 16
    tower = tf.CLIPVisionModelWithProjection._from_config(tower.config).eval()
    own = tower.state_dict()
    tower.load_state_dict({k: v for k, v in clip.state_dict().items() if k in own}, strict=True)
    folder = add(
        "PLIP CLIPModel (embeds)", clip, clip_proc, readout="embeds", reference_out=_hf_run(tower, "embeds")
    )
    cases[-1].reference = tower
    # a Hugging Face folder handed to the timm loader, and its weights given as a timm checkpoint
    cases.append(
        Case("HF folder as timm:FOLDER", (f"timm:{folder}", None, {}), (f"timm:{folder}", None, {}), None)
    )
    weights = root / "Phikon-v2_Dinov2Model" / "model.safetensors"
    cases.append(
        Case(
            "HF weights as a timm checkpoint",
            ("timm:vit_small_patch16_224", str(weights), TINY),
            ("timm:vit_small_patch16_224", str(weights), TINY),
            None,
        )
    )
    cases += _damaged_hf(root, tf, common)
    # a fine-tuned copy of a Hugging Face encoder saved by Lightning, given beside its folder
    tuned = _seeded(tf.Dinov2Model, tf.Dinov2Config(**common), 12)
    state = {f"model.backbone.{k}": v for k, v in tuned.state_dict().items()}
    state |= {"model.head.weight": torch.randn(2, 32)}
    torch.save({"state_dict": state, "epoch": 4}, root / "finetuned.ckpt")
    base = f"hf:{root / 'Phikon-v2_Dinov2Model'}"
    cases.append(
        Case(
            "HF folder + Lightning fine-tuned checkpoint",
            (base, str(root / "finetuned.ckpt"), {}),
            (base, str(root / "finetuned.ckpt"), {"readout": "cls"}),
            tuned,
            32,
            (list(IMAGENET[0]), list(IMAGENET[1])),
            wsi_reference=_hf_run(tuned, "cls"),
        )
    )
    return cases


def _damaged_hf(root: Path, tf: Any, common: dict[str, Any]) -> list[Case]:
    """HF folders whose weights do not match their config: partly random, or weights dropped."""
    import json

    from safetensors.torch import load_file

    cases = []
    partial = root / "Dinov2_missing_layernorm"
    _seeded(tf.Dinov2Model, tf.Dinov2Config(**common), 9).save_pretrained(partial)
    state = load_file(str(partial / "model.safetensors"))
    save_file(
        {k: v for k, v in state.items() if not k.startswith("layernorm.")},
        str(partial / "model.safetensors"),
        metadata={"format": "pt"},
    )
    cases.append(
        Case(
            "HF folder missing weights (partly random)",
            (f"hf:{partial}", None, {}),
            (f"hf:{partial}", None, {"readout": "cls"}),
            None,
        )
    )
    if hasattr(tf, "Dinov2WithRegistersModel"):
        registers = root / "registers_saved_as_dinov2"
        reg = tf.Dinov2WithRegistersConfig(**common, num_register_tokens=4)
        _seeded(tf.Dinov2WithRegistersModel, reg, 10).save_pretrained(registers)
        config = json.loads((registers / "config.json").read_text())
        config.update(model_type="dinov2", architectures=["Dinov2Model"])
        (registers / "config.json").write_text(json.dumps(config))
        cases.append(
            Case(
                "HF registers' weights under a Dinov2Model config",
                (f"hf:{registers}", None, {}),
                (f"hf:{registers}", None, {"readout": "cls"}),
                None,
            )
        )
    return cases


class _Evil:
    """A pickle that runs code when loaded without weights_only."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def broken_files(root: Path) -> list[Case]:
    """Files that must be refused in one line (and a sharded checkpoint that must load)."""
    args = {"patch_size": 16, **TINY, "img_size": 64}
    name = "vit_small_patch16_224"
    ref = timm_model(name, 11, num_classes=0, **args)
    state = ref.state_dict()
    cases: list[Case] = []

    def case(label: str, path: Path, reference: Any = None, **kw: Any) -> None:
        cases.append(timm_file_case(label, name, path, args, reference, **kw))

    save_file(dict(state), str(root / "full.safetensors"))
    data = (root / "full.safetensors").read_bytes()
    (root / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    case("truncated .safetensors", root / "truncated.safetensors")
    torch.save(dict(state), root / "full.bin")
    data = (root / "full.bin").read_bytes()
    (root / "truncated.bin").write_bytes(data[: len(data) // 2])
    case("truncated .bin", root / "truncated.bin")
    (root / "empty.pth").write_bytes(b"")
    case("empty .pth", root / "empty.pth")
    (root / "a_folder.pth").mkdir()
    case("folder where a file is expected", root / "a_folder.pth")
    case("file not found", root / "missing.pth")
    torch.save(ref, root / "whole_model.pth")
    case("torch.save(model) pickle", root / "whole_model.pth")
    marker = root / "EXECUTED"
    torch.save({"state_dict": dict(state), "hook": _Evil(marker)}, root / "evil.pth")
    case("pickle running code", root / "evil.pth", extra={"marker": marker})
    (root / "text.bin").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 1\n")
    case("git-lfs pointer instead of weights", root / "text.bin")
    # sharded safetensors with their index, as save_pretrained / huggingface_hub split big files
    keys = sorted(state)
    half = len(keys) // 2
    shards = {
        "model-00001-of-00002.safetensors": keys[:half],
        "model-00002-of-00002.safetensors": keys[half:],
    }
    sharded = root / "sharded"
    sharded.mkdir()
    index: dict[str, Any] = {"metadata": {"total_size": 0}, "weight_map": {}}
    for file, names in shards.items():
        save_file({k: state[k].contiguous() for k in names}, str(sharded / file))
        index["weight_map"].update(dict.fromkeys(names, file))
    import json

    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    case("sharded safetensors index.json", sharded / "model.safetensors.index.json", reference=ref)
    missing_shard = root / "sharded_missing"
    missing_shard.mkdir()
    (missing_shard / "model.safetensors.index.json").write_text(json.dumps(index))
    case("index.json without its shards", missing_shard / "model.safetensors.index.json")
    # a timm hub folder whose weights are sharded, and one without weights
    hub = hub_folder(root, "Lunit-DINO")
    folder = Path(hub.api[0][5:])
    state_hub = {k: v.contiguous() for k, v in hub.reference.state_dict().items()}
    (folder / "model.safetensors").unlink()
    keys = sorted(state_hub)
    index = {"metadata": {}, "weight_map": {}}
    for i, part in enumerate((keys[: len(keys) // 2], keys[len(keys) // 2 :]), 1):
        file = f"model-0000{i}-of-00002.safetensors"
        save_file({k: state_hub[k] for k in part}, str(folder / file))
        index["weight_map"].update(dict.fromkeys(part, file))
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    hub.name = "hub folder Lunit-DINO sharded"
    cases.append(hub)
    empty_hub = root / "hub_no_weights"
    empty_hub.mkdir()
    (empty_hub / "config.json").write_text((folder / "config.json").read_text())
    cases.append(
        Case(
            "hub folder without weights",
            (f"timm:{empty_hub}", None, {}),
            (f"timm:{empty_hub}", None, {}),
            None,
        )
    )
    return cases
