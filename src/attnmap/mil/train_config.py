"""What `attnmap mil train` trains: its options (`TrainConfig`, defaults CLAM's) and the model they
build. Why apart from the training loop: the CLI checks options against the model kind, and a fold
builds its model, from the same definitions."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from attnmap.errors import InputError
from attnmap.mil.abmil import ABMIL
from attnmap.mil.base import AttentionMILBase
from attnmap.mil.clam import CLAM_MB, CLAM_SB

MODELS = ("clam_sb", "clam_mb", "abmil")
CLAM_ONLY = ("size", "k_sample", "subtyping", "bag_weight")  # options ABMIL has no use for


@dataclass
class TrainConfig:
    """Options of `train_mil`; defaults are CLAM's (README learning rate)."""

    model: str = "clam_sb"
    folds: int = 5
    max_epochs: int = 200
    lr: float = 2e-4
    weight_decay: float = 1e-5
    optimizer: str = "adam"
    bag_weight: float = 0.7
    k_sample: int = 8
    subtyping: bool = False
    size: str = "small"
    gate: bool = True
    dropout: float = 0.25
    early_stopping: bool = True
    patience: int = 20
    stop_epoch: int = 50
    weighted_sample: bool = False
    val_fraction: float = 0.1
    seed: int = 1
    device: str = "cpu"
    cache_gb: float = 4.0

    def check(self) -> None:
        if self.model not in MODELS:
            raise InputError(f"unknown model {self.model!r}; choose one of {list(MODELS)}")
        if self.optimizer not in ("adam", "sgd"):
            raise InputError(f"unknown optimizer {self.optimizer!r}; choose 'adam' or 'sgd'")
        if not 0.0 <= self.bag_weight <= 1.0:
            raise InputError(f"bag_weight must be in [0, 1], got {self.bag_weight}")
        if self.max_epochs < 1:
            raise InputError(f"max_epochs must be at least 1, got {self.max_epochs}")
        try:
            device = torch.device(self.device)
        except RuntimeError as error:
            raise InputError(f"unknown torch device {self.device!r}") from error
        if device.type == "cuda" and not torch.cuda.is_available():
            raise InputError(f"device {self.device!r} asked for, but CUDA is not available here")



def build_model(config: TrainConfig, embed_dim: int, n_classes: int) -> AttentionMILBase:
    """A fresh model of the configured kind (seed the RNG first for reproducible weights)."""
    if config.model == "abmil":
        return ABMIL(embed_dim=embed_dim, n_classes=n_classes, gate=config.gate, dropout=config.dropout)
    cls = CLAM_MB if config.model == "clam_mb" else CLAM_SB
    return cls(
        gate=config.gate,
        size=config.size,
        dropout=config.dropout,
        k_sample=config.k_sample,
        n_classes=n_classes,
        subtyping=config.subtyping,
        embed_dim=embed_dim,
    )
