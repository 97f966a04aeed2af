"""The CPU inference graph of convolutional encoders: used only where it agrees with the model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from synthetic_slide_files import write_test_slide, write_tiny_encoder
from torch import nn

from attnmap.wsi import features as features_module
from attnmap.wsi.encoder_graph import cpu_inference_graph
from attnmap.wsi.encoders import load_encoder
from attnmap.wsi.features import extract_features


class ResidualCNN(nn.Module):
    """Convolution, batch norm, ReLU and a residual sum: what the graph folds and fuses."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.branch = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8))
        for norm in (self.stem[1], self.branch[1]):  # statistics of a trained model, not 0 and 1
            norm.running_mean.uniform_(-0.5, 0.5)
            norm.running_var.uniform_(0.5, 2.0)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        stem = self.stem(images)
        return torch.relu(stem + self.branch(stem)).mean(dim=(2, 3))


class BranchOnData(ResidualCNN):
    """A model whose path depends on the pixels: a trace would keep one path for every patch."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.mean() > 0:
            return super().forward(images)
        return -super().forward(images)


class OneConvolution(nn.Module):
    """Shaped like a ViT's patch embedding: one convolution, nothing for the graph to gain."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, 8, 8, stride=8)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.embed(images).flatten(2).mean(-1)


def _relative(got: torch.Tensor, expected: torch.Tensor) -> float:
    return float((got - expected).abs().max() / expected.abs().max())


def test_graph_of_a_convolutional_encoder_agrees_with_it_at_every_batch_size() -> None:
    model = ResidualCNN(seed=0).eval()
    images = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        graph = cpu_inference_graph(model, images[:4])
        assert graph is not model
        for size in (1, 3, 8):
            assert _relative(graph(images[:size]), model(images[:size])) < 1e-5
        assert cpu_inference_graph(model, images[:5]) is graph  # built once per state and patch shape


def test_graph_is_rebuilt_when_the_weights_change() -> None:
    model = ResidualCNN(seed=0).eval()
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        before = cpu_inference_graph(model, images)
    model.load_state_dict(ResidualCNN(seed=5).state_dict())  # the graph holds the old weights as constants
    with torch.inference_mode():
        after = cpu_inference_graph(model, images)
        assert after is not before
        assert _relative(after(images), model(images)) < 1e-5
        assert _relative(before(images), model(images)) > 1e-2
        model.stem[2] = nn.Tanh()  # a swapped submodule without weights changes the model too
        swapped = cpu_inference_graph(model, images)
        assert swapped is not after
        assert _relative(swapped(images), model(images)) < 1e-5


def test_models_the_graph_cannot_stand_for_run_eagerly(caplog: pytest.LogCaptureFixture) -> None:
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))  # all positive
    branching = BranchOnData(seed=0).eval()
    with torch.inference_mode(), caplog.at_level("INFO", logger="attnmap.wsi.encoder_graph"):
        assert cpu_inference_graph(branching, images) is branching  # a dark patch takes the other path
        assert "trace may not fit other patches" in caplog.text
        single = OneConvolution().eval()
        assert cpu_inference_graph(single, images) is single
        model = ResidualCNN(seed=0).eval()
        assert cpu_inference_graph(model, images[:2]) is model  # too few patches to check a graph on


def test_extract_features_runs_the_graph_on_cpu_in_float32_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    slide = write_test_slide(tmp_path / "slide.tif", seed=3)
    encoder = load_encoder(write_tiny_encoder(tmp_path / "tiny.pt"), input_size=32)
    coords = np.stack(np.meshgrid(np.arange(0, 768, 128), np.arange(0, 512, 128)), -1).reshape(-1, 2)
    options = {"patch_size": 128, "batch_size": 8, "progress": False}
    built = []
    build = features_module.cpu_inference_graph

    def counted(model: torch.nn.Module, batch: torch.Tensor) -> torch.nn.Module:
        built.append(len(batch))
        return build(model, batch)

    monkeypatch.setattr(features_module, "cpu_inference_graph", counted)
    eager = extract_features(slide, coords, encoder, cpu_graph=False, **options)
    assert built == []
    graph = extract_features(slide, coords, encoder, **options)
    assert built == [8]  # once, on the first batch
    assert float(np.abs(graph - eager).max()) <= 1e-5 * float(np.abs(eager).max())
    extract_features(slide, coords, encoder, precision="bfloat16", **options)
    assert built == [8]  # autocast runs the eager model
