"""Raw attention, rollout and attention Grad-CAM against the reference implementation's numbers.

Fixture: `fixtures/vit/` (see fixtures/README.md): a 4-block ViT-Tiny with seeded noisy weights, two
images, reference maps computed one image at a time in float64. We compute both images in ONE
batch, in float64 (tolerance 1e-6 of max|ref|) and in float32 with timm's fused attention left on
(1e-4).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm
import torch

import attnmap
from attnmap.vit.methods.gradients import capture_with_gradients

FIXTURES = Path(__file__).parent / "fixtures" / "vit"

CASES = [
    ("attention", {}, "ours__last_layer_attn__argmax"),
    ("rollout", {}, "baselines__rollout__start0"),
    ("rollout", {"start_layer": 1}, "baselines__rollout__start1"),
    ("attn_gradcam", {}, "baselines__attn_gradcam__argmax"),
]


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(FIXTURES / "chefer_vit_public.npz") as data:
        return {key: data[key] for key in data.files}


def fixture_model(dtype: torch.dtype) -> torch.nn.Module:
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=4, num_classes=10)
    state = torch.load(FIXTURES / "chefer_vit_weights.pt", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.to(dtype).eval()


@pytest.fixture(scope="module")
def model64() -> torch.nn.Module:
    return fixture_model(torch.float64)


@pytest.fixture(scope="module")
def model32() -> torch.nn.Module:
    model = fixture_model(torch.float32)
    for block in model.blocks:
        block.attn.fused_attn = True  # the timm default; make sure we test the fused path
    return model


def images(reference: dict[str, np.ndarray], dtype: torch.dtype) -> torch.Tensor:
    return torch.as_tensor(reference["input_images"]).to(dtype)


def relative_error(ours: torch.Tensor, ref: np.ndarray) -> float:
    expected = torch.as_tensor(ref, dtype=torch.float64).reshape(ours.shape)
    return float((ours.double() - expected).abs().max() / expected.abs().max())


def test_fixture_model_reproduces_reference_logits(model64, reference):
    with torch.no_grad():
        logits = model64(images(reference, torch.float64))
    expected = torch.as_tensor(reference["logits__timm_vit_tiny_depth4"])
    assert torch.allclose(logits, expected, atol=1e-10)
    assert logits.argmax(-1).tolist() == reference["argmax_class"].tolist()


@pytest.mark.parametrize(("name", "options", "key"), CASES)
def test_float64_batch_matches_reference(model64, reference, name, options, key):
    maps = attnmap.explain(model64, images(reference, torch.float64), name, **options)
    assert maps.shape == (2, 14, 14) and maps.dtype == torch.float64
    assert relative_error(maps, reference[key]) < 1e-6


@pytest.mark.parametrize(("name", "options", "key"), CASES)
def test_float32_fused_matches_reference(model32, reference, name, options, key):
    maps = attnmap.explain(model32, images(reference, torch.float32), name, **options)
    assert maps.dtype == torch.float32
    assert relative_error(maps, reference[key]) < 1e-4
    assert all(block.attn.fused_attn for block in model32.blocks)  # left as we found it


@pytest.mark.parametrize("name", ["attention", "rollout", "attn_gradcam", "grad_rollout"])
@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float64, 1e-12), (torch.float32, 1e-4)])
def test_batched_equals_one_by_one(model64, model32, reference, name, dtype, tolerance):
    model = model64 if dtype == torch.float64 else model32
    batch = images(reference, dtype)
    together = attnmap.explain(model, batch, name)
    alone = torch.cat([attnmap.explain(model, batch[i : i + 1], name) for i in range(2)])
    assert torch.allclose(together, alone, rtol=0, atol=tolerance * float(alone.abs().max()))


def test_attention_gradients_match_reference_intermediates(model64, reference):
    # The reference stored d(logit)/dA of image 0 in float32, from a twin whose final LayerNorm had
    # eps 1e-5 instead of timm's 1e-6 (fixtures/README.md): agreement ~1e-7 relative is expected.
    captured, gradients = capture_with_gradients(
        model64, images(reference, torch.float64), None, layers=[0, 1, 2, 3]
    )
    expected = torch.as_tensor(reference["intermediate__img0__argmax__ours__attn_grad"]).double()
    for block in range(4):
        scale = expected[block].abs().max()
        assert (gradients[block][0] - expected[block]).abs().max() / scale < 1e-5
