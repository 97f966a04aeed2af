"""More training and release layouts for `encoder_files_sweep.py`: Lightning, MoCo v3, SWA,
open_clip (CONCH-like), torch's legacy format, JAX .npz, a folder of weights without config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from encoder_files_layouts import TINY, Case, timm_file_case, timm_model, write_weights
from safetensors.torch import save_file


def training_files(root: Path) -> list[Case]:
    args = {"patch_size": 16, **TINY, "img_size": 64}
    name = "vit_base_patch16_224"
    ref = timm_model(name, 21, num_classes=0, **args)
    state = ref.state_dict()
    cases: list[Case] = []

    def case(
        label: str, filename: str, payload: Any, reference: Any = ref, save: Any = None, **kw: Any
    ) -> None:
        path = root / filename
        if save is not None:
            save(payload, path)
        else:
            write_weights(path, payload)
        cases.append(timm_file_case(label, name, path, args, reference, **kw))

    # a Lightning module holding the encoder as model.backbone beside a head, with its hyper-parameters
    lightning = {f"model.backbone.{k}": v for k, v in state.items()}
    lightning |= {"model.head.weight": torch.randn(2, 32), "model.head.bias": torch.zeros(2)}
    case(
        "Lightning {'state_dict': model.backbone.*, hyper_parameters}",
        "epoch=9-step=100.ckpt",
        {
            "state_dict": lightning,
            "hyper_parameters": {"lr": 1e-3, "backbone": name},
            "epoch": 9,
            "global_step": 100,
            "pytorch-lightning_version": "2.4.0",
            "optimizer_states": [],
        },
    )
    # MoCo v3: base and momentum encoders under DDP; their conversion keeps base_encoder
    moco = {f"module.base_encoder.{k}": v for k, v in state.items()}
    moco |= {f"module.momentum_encoder.{k}": v + 0.5 for k, v in state.items()}
    moco |= {"module.predictor.0.weight": torch.randn(16, 32)}
    case(
        "MoCo v3 base_encoder / momentum_encoder",
        "moco_v3.pth.tar",
        {"state_dict": moco, "arch": name, "epoch": 300},
        reference=None,
    )
    # DINOv2's model_final.pth: student and teacher (backbone + heads) in one "model" dict, block chunks
    final = {}
    for who, shift in (("student", 1.0), ("teacher", 0.0)):
        for key, value in state.items():
            final[f"{who}.backbone.{key}".replace("blocks.", "blocks.0.", 1)] = value + shift  # one chunk
        final[f"{who}.backbone.mask_token"] = torch.zeros(1, 32)
        final[f"{who}.dino_head.mlp.0.weight"] = torch.randn(8, 32)
    case(
        "DINOv2 model_final.pth (student+teacher, chunks)",
        "model_final.pth",
        {"model": final, "iteration": 1000},
    )
    # torch.optim.swa_utils.AveragedModel: module.* beside its n_averaged counter
    swa = {f"module.{k}": v for k, v in state.items()} | {"n_averaged": torch.tensor(7)}
    case("SWA AveragedModel (module.* + n_averaged)", "swa.pt", swa)
    # open_clip CoCa-like image tower (CONCH): the timm trunk under visual.trunk. beside pools and text
    conch = {f"visual.trunk.{k}": v for k, v in state.items()}
    conch |= {
        "visual.attn_pool_contrast.attn.in_proj_weight": torch.randn(96, 32),
        "text.token_embedding.weight": torch.randn(10, 32),
        "logit_scale": torch.tensor(4.6),
    }
    case("open_clip visual.trunk. (CONCH-like)", "conch_pytorch_model.bin", conch)
    case(
        "torch legacy (non-zip) format",
        "legacy.pth",
        dict(state),
        save=lambda payload, path: torch.save(payload, path, _use_new_zipfile_serialization=False),
    )
    # a timm EMA helper's state: ModelEmaV3 saved whole-module keys under module.
    ema_only = {"state_dict_ema": {f"module.{k}": v for k, v in state.items()}, "epoch": 1}
    case("timm train checkpoint with only state_dict_ema", "ema_only.pth.tar", ema_only)
    # JAX / big_vision .npz (augreg), which timm reads with its own npz loader
    npz = root / "ViT-tiny.npz"
    np.savez(npz, **{"embedding/kernel": np.zeros((16, 16, 3, 32), np.float32)})
    cases.append(
        Case(
            "JAX .npz checkpoint",
            (f"timm:{name}", str(npz), dict(args)),
            (f"timm:{name}", str(npz), dict(args)),
            None,
            64,
            None,
        )
    )
    # a Hub download folder without its config.json (weights only) given as the model
    folder = root / "download_folder"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))
    cases.append(
        Case(
            "folder with weights but no config.json as hf:",
            (f"hf:{folder}", None, {}),
            (f"hf:{folder}", None, {}),
            None,
        )
    )
    cases.append(
        Case(
            "folder given as the checkpoint",
            (f"timm:{name}", str(folder), dict(args)),
            (f"timm:{name}", str(folder), dict(args)),
            None,
            64,
            None,
            notes="a Hub download folder holding one weights file",
        )
    )
    return cases
