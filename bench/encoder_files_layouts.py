"""The weight files of `encoder_files_sweep.py`: published layouts rebuilt with tiny seeded models.

Each builder writes files into a folder and returns a `Case`: how the file is loaded (the spec,
checkpoint and arguments a user gives), the reference model holding the same weights (None when the
file must be refused), and the normalisation the published config states. Layouts follow the model
cards and timm / transformers save formats (key names, nesting, dtypes, file names); only the sizes
are shrunk (width 32, depth 2, a 4 x 4 patch grid).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import timm
import torch
from safetensors.torch import save_file
from timm.layers import SwiGLUPacked
from torch import nn

IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
HOPTIMUS = ([0.707223, 0.578729, 0.703617], [0.211883, 0.230117, 0.177517])
LUNIT = ([0.70322989, 0.53606487, 0.66096631], [0.21716536, 0.26081574, 0.20723464])
TINY = {"embed_dim": 32, "depth": 2, "num_heads": 2}


@dataclass
class Case:
    """One file and the ways it is loaded. ``api``: (spec, checkpoint, model kwargs) for
    `attnmap.load_model` (also the CLI's loader); ``wsi``: (encoder, checkpoint, encoder_args) for
    `load_encoder`; None: not loaded that way. ``reference``: the model computing what the loaded one
    must (``wsi_reference`` for the encoder when its output differs); None: the file must be refused."""

    name: str
    api: tuple[str, str | None, dict[str, Any]] | None
    wsi: tuple[str, str | None, dict[str, Any]] | None
    reference: nn.Module | None
    size: int = 0
    mean_std: tuple[list[float], list[float]] | None = None
    wsi_reference: Callable[[torch.Tensor], torch.Tensor] | None = None
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def write_weights(path: Path, payload: Any) -> Path:
    """``payload`` saved as its file name says: safetensors, else torch.save."""
    if path.name.endswith(".safetensors"):
        save_file(payload, str(path))
    else:
        torch.save(payload, path)
    return path


def timm_file_case(
    label: str, name: str, path: Path, args: dict[str, Any], reference: nn.Module | None, **kw: Any
) -> Case:
    """A weights file for timm architecture ``name`` with ``args``, loaded both ways at 64 px."""
    spec, checkpoint = f"timm:{name}", str(path)
    api, wsi = (spec, checkpoint, dict(args)), (spec, checkpoint, dict(args))
    return Case(label, api, wsi, reference, 64, None, **kw)


def timm_model(name: str, seed: int, **args: Any) -> nn.Module:
    """A seeded timm model with random weights everywhere (LayerScale and registers included)."""
    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False, **args).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)
    return model


def hub_config(architecture: str, model_args: dict[str, Any], size: int, mean_std: tuple) -> dict[str, Any]:
    """config.json as timm's push_to_hf_hub writes it (architecture, num_features, model_args,
    pretrained_cfg), with JSON-able layer names as the published files spell them."""
    return {
        "architecture": architecture,
        "num_classes": 0,
        "num_features": TINY["embed_dim"],
        "global_pool": model_args.get("global_pool", "token"),
        "model_args": model_args,
        "pretrained_cfg": {
            "tag": "tiny",
            "custom_load": False,
            "input_size": [3, size, size],
            "fixed_input_size": True,
            "interpolation": "bicubic",
            "crop_pct": 1.0,
            "crop_mode": "center",
            "mean": mean_std[0],
            "std": mean_std[1],
            "num_classes": 0,
            "pool_size": None,
            "first_conv": "patch_embed.proj",
            "classifier": "head",
        },
    }


def _json_args(args: dict[str, Any]) -> dict[str, Any]:
    names = {SwiGLUPacked: "timm.layers.SwiGLUPacked", nn.SiLU: "torch.nn.modules.activation.SiLU"}
    return {key: names.get(value, value) for key, value in args.items()}


def _save_weights(state: dict[str, torch.Tensor], folder: Path, files: tuple[str, ...]) -> None:
    state = {key: value.contiguous() for key, value in state.items()}
    for name in files:
        if name.endswith(".safetensors"):
            save_file(state, str(folder / name), metadata={"format": "pt"})
        else:
            torch.save(state, folder / name)


# the foundation models published as timm hub folders: (architecture, args, mean/std, files)
HUB_FOLDERS: dict[str, tuple[str, dict[str, Any], tuple, tuple[str, ...]]] = {
    "UNI": (
        "vit_large_patch16_224",
        {"patch_size": 16, "init_values": 1e-5, "dynamic_img_size": True},
        IMAGENET,
        ("model.safetensors", "pytorch_model.bin"),
    ),
    "UNI2-h": (
        "vit_giant_patch14_224",
        {
            "patch_size": 14,
            "init_values": 1e-5,
            "mlp_ratio": 5.33334,
            "mlp_layer": SwiGLUPacked,
            "act_layer": nn.SiLU,
            "reg_tokens": 8,
            "no_embed_class": True,
            "dynamic_img_size": True,
        },
        IMAGENET,
        ("pytorch_model.bin",),
    ),
    "Virchow": (
        "vit_huge_patch14_224",
        {
            "patch_size": 14,
            "init_values": 1e-5,
            "mlp_ratio": 5.3375,
            "global_pool": "",
            "mlp_layer": SwiGLUPacked,
            "act_layer": nn.SiLU,
            "dynamic_img_size": True,
        },
        IMAGENET,
        ("pytorch_model.bin",),
    ),
    "Virchow2": (
        "vit_huge_patch14_224",
        {
            "patch_size": 14,
            "init_values": 1e-5,
            "mlp_ratio": 5.3375,
            "global_pool": "",
            "mlp_layer": SwiGLUPacked,
            "act_layer": nn.SiLU,
            "reg_tokens": 4,
            "dynamic_img_size": True,
        },
        IMAGENET,
        ("model.safetensors", "pytorch_model.bin"),
    ),
    "H-optimus-0": (
        "vit_giant_patch14_reg4_dinov2",
        {"patch_size": 14, "init_values": 1e-5, "global_pool": "token", "dynamic_img_size": False},
        HOPTIMUS,
        ("model.safetensors",),
    ),
    "H-optimus-1": (
        "vit_giant_patch14_reg4_dinov2",
        {"patch_size": 14, "init_values": 1e-5, "global_pool": "token", "dynamic_img_size": False},
        HOPTIMUS,
        ("model.safetensors",),
    ),
    "Prov-GigaPath": (
        "vit_giant_patch14_dinov2",
        {"patch_size": 16, "init_values": 1e-5, "mlp_ratio": 5.33334, "in_chans": 3},
        IMAGENET,
        ("pytorch_model.bin",),
    ),
    "Lunit-DINO": ("vit_small_patch8_224", {"patch_size": 8}, LUNIT, ("model.safetensors",)),
}


def _pool_ref(model: nn.Module, how: str) -> Callable[[torch.Tensor], torch.Tensor]:
    def run(images: torch.Tensor) -> torch.Tensor:
        tokens = model.forward_features(images)
        cls, patches = tokens[:, 0], tokens[:, model.num_prefix_tokens :]
        return torch.cat([cls, patches.mean(1)], 1) if how == "concat" else cls

    return run


def hub_folder(root: Path, label: str, dtype: torch.dtype | None = None) -> Case:
    """A timm hub folder as `label` publishes it (``dtype``: weights saved in half precision)."""
    architecture, args, mean_std, files = HUB_FOLDERS[label]
    size = 4 * args["patch_size"]
    full = {**args, **TINY, "img_size": size, "num_classes": 0}
    reference = timm_model(architecture, len(label), **full)
    folder = root / label
    folder.mkdir()
    state = reference.state_dict()
    if dtype is not None:
        state = {key: value.to(dtype) for key, value in state.items()}
        reference.load_state_dict({key: value.float() for key, value in state.items()})
    (folder / "config.json").write_text(
        json.dumps(hub_config(architecture, _json_args(full), size, mean_std))
    )
    _save_weights(state, folder, files)
    concat = args.get("global_pool") == ""
    wsi_args = {"global_pool": "class_and_patch_mean"} if concat else {}
    return Case(
        f"hub folder {label}" + (f" {dtype}" if dtype else ""),
        (f"timm:{folder}", None, {}),
        (f"timm:{folder}", None, wsi_args),
        reference,
        size,
        mean_std,
        wsi_reference=_pool_ref(reference, "concat" if concat else "cls"),
        extra={"interpolation": "bicubic"},
    )


def bare_files(root: Path) -> list[Case]:
    """Bare state_dicts and training checkpoints of a UNI-like ViT (LayerScale), loaded by name."""
    args = {"patch_size": 16, "init_values": 1e-5, **TINY, "img_size": 64}
    name = "vit_large_patch16_224"
    ref = timm_model(name, 7, num_classes=0, **args)
    state = ref.state_dict()
    cases: list[Case] = []

    def case(label: str, filename: str, payload: Any, reference: nn.Module | None = ref, **kw: Any) -> None:
        path = write_weights(root / filename, payload)
        cases.append(timm_file_case(label, name, path, kw.pop("model_args", args), reference, **kw))

    case("bare state_dict .bin", "uni_pytorch_model.bin", dict(state))
    case("bare state_dict .safetensors", "bare.safetensors", dict(state))
    case("{'model': ...} .pth", "model.pth", {"model": dict(state), "epoch": 3})
    case(
        "{'state_dict': module.*} DDP",
        "ddp.pth",
        {"state_dict": {f"module.{k}": v for k, v in state.items()}},
    )
    dino = {f"backbone.{k}": v for k, v in state.items()}
    head = {
        "head.mlp.0.weight": torch.randn(64, 32),
        "head.last_layer.weight_g": torch.ones(65536 // 1024, 1),
    }
    case(
        "DINO {'teacher','student'} backbone.",
        "dino_checkpoint.pth",
        {
            "student": {f"module.{k}": v * 2 for k, v in {**dino, **head}.items()},
            "teacher": {**dino, **head},
            "epoch": 100,
        },
    )
    case(
        "EMA {'state_dict','state_dict_ema'}",
        "ema.pth.tar",
        {"state_dict": dict(state), "state_dict_ema": {k: v + 1 for k, v in state.items()}, "arch": name},
    )
    case(
        "fp16 .safetensors",
        "half.safetensors",
        {k: v.half() for k, v in state.items()},
        reference=_rounded(ref, torch.float16),
    )
    case(
        "bf16 .pth",
        "bf16.pth",
        {k: v.bfloat16() for k, v in state.items()},
        reference=_rounded(ref, torch.bfloat16),
    )
    # DINOv2's own training layout: teacher backbone, FSDP block chunks, mask_token, ls*.gamma
    chunked = {}
    for key, value in state.items():
        key = re.sub(r"^blocks\.(\d+)\.", r"blocks.\1.\1.", key)  # a chunk per block, global index
        chunked[f"backbone.{key}"] = value
    chunked["backbone.mask_token"] = torch.zeros(1, 32)
    case(
        "DINOv2 teacher_checkpoint (chunked blocks)",
        "teacher_checkpoint.pth",
        {"teacher": {**chunked, "dino_head.mlp.0.weight": torch.randn(8, 32)}, "iteration": 9},
    )
    # near misses
    case(
        "UNI file without init_values",
        "no_ls.bin",
        dict(state),
        reference=None,
        model_args={k: v for k, v in args.items() if k != "init_values"},
    )
    case(
        "UNI file as another width",
        "wrong_width.bin",
        dict(state),
        reference=None,
        model_args={**args, "embed_dim": 64},
    )
    classifier = {**state, "head.weight": torch.randn(5, 32), "head.bias": torch.randn(5)}
    cls_ref = timm_model(name, 7, num_classes=5, **args)
    cls_ref.load_state_dict(classifier)
    case(
        "classifier with head (num_classes from file)",
        "classifier.pth",
        {"model": classifier},
        reference=cls_ref,
        wsi_reference=ref,
    )
    grid = timm_model(name, 7, num_classes=0, **{**args, "img_size": 32})
    case(
        "pos_embed of another grid (resampled)",
        "grid32.bin",
        grid.state_dict(),
        reference=_resampled(grid, name, args),
    )
    split = {}
    for key, value in state.items():
        if key.endswith("attn.qkv.weight") or key.endswith("attn.qkv.bias"):
            stem, kind = key.rsplit(".qkv.", 1)
            for part, chunk in zip("qkv", value.chunk(3), strict=True):
                split[f"{stem}.{part}_proj.{kind}"] = chunk
        else:
            split[key] = value
    case("qkv split into q/k/v", "split_qkv.bin", split)
    return cases


def _rounded(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    import copy

    copied = copy.deepcopy(model)
    copied.load_state_dict({k: v.to(dtype).float() for k, v in model.state_dict().items()})
    return copied


def _resampled(source: nn.Module, name: str, args: dict[str, Any]) -> nn.Module:
    """The model timm's own filter gives from ``source``'s weights at ``args``' size."""
    from timm.models.vision_transformer import checkpoint_filter_fn

    model = timm_model(name, 0, num_classes=0, **args)
    model.load_state_dict(checkpoint_filter_fn(source.state_dict(), model))
    return model
