"""The LRP methods reproduce the reference implementation's outputs (float64, both images in one batch)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm
import torch

import attnmap

FIXTURES = Path(__file__).parent / "fixtures" / "vit"


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(FIXTURES / "chefer_vit_public.npz") as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    vit = timm.create_model("vit_tiny_patch16_224", depth=4, num_classes=10, pretrained=False)
    vit.load_state_dict(torch.load(FIXTURES / "chefer_vit_weights.pt", weights_only=True))
    return vit.double().eval()


@pytest.fixture(scope="module")
def images(reference: dict[str, np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(reference["input_images"]).double()


CASES = [
    ("transformer_attribution", {"start_layer": 0}, "ours__transformer_attribution__start0__argmax", 1e-5),
    ("transformer_attribution", {"start_layer": 1}, "ours__transformer_attribution__start1__argmax", 1e-5),
    ("lrp", {}, "ours__full__argmax", 1e-4),
    ("lrp_rollout", {"start_layer": 0}, "ours__rollout__start0__argmax", 1e-5),
    ("lrp_rollout", {"start_layer": 1}, "ours__rollout__start1__argmax", 1e-5),
    ("lrp_attention", {"layer": -1}, "ours__last_layer__argmax", 1e-5),
    ("lrp_attention", {"layer": -1, "grad": True}, "ours__last_layer__ablation__argmax", 1e-5),
    ("lrp_attention", {"layer": 1}, "ours__second_layer__argmax", 1e-5),
    ("lrp_attention", {"layer": 1, "grad": True}, "ours__second_layer__ablation__argmax", 1e-5),
]


@pytest.mark.parametrize(("method", "options", "key", "tolerance"), CASES, ids=[c[2] for c in CASES])
def test_matches_reference(model, images, reference, method, options, key, tolerance) -> None:
    maps = attnmap.explain(model, images, method, **options)
    expected = reference[key].reshape(maps.shape)
    assert maps.dtype == torch.float64
    error = np.abs(maps.numpy() - expected).max() / np.abs(expected).max()
    assert error <= tolerance, f"{method} {options}: max error {error:.3g} of max|ref|"


@pytest.mark.gpu
@pytest.mark.parametrize(("method", "options", "key", "tolerance"), CASES, ids=[c[2] for c in CASES])
def test_float64_on_cuda_gives_the_cpu_maps(
    model, images, reference, method, options, key, tolerance
) -> None:
    import copy

    on_cpu = attnmap.explain(model, images, method, **options)
    maps = attnmap.explain(copy.deepcopy(model).cuda(), images.cuda(), method, **options)
    assert maps.device.type == "cuda" and maps.dtype == torch.float64
    maps = maps.cpu()
    difference = (maps - on_cpu).abs().max() / on_cpu.abs().max()
    assert difference <= 1e-6, f"{method} {options}: CUDA differs from CPU by {difference:.3g} of max|map|"
    expected = reference[key].reshape(maps.shape)
    error = np.abs(maps.numpy() - expected).max() / np.abs(expected).max()
    assert error <= tolerance, f"{method} {options} on CUDA: max error {error:.3g} of max|ref|"


def test_targets_are_the_reference_argmax(model, images, reference) -> None:
    with torch.no_grad():
        logits = model(images)
    np.testing.assert_allclose(
        logits.numpy(), reference["logits__timm_vit_tiny_depth4"], rtol=1e-10, atol=1e-10
    )
    assert logits.argmax(1).tolist() == reference["argmax_class"].tolist()


def test_explicit_target_equals_argmax_default(model, images, reference) -> None:
    target = torch.as_tensor(reference["argmax_class"])
    default = attnmap.explain(model, images, "lrp_rollout")
    explicit = attnmap.explain(model, images, "lrp_rollout", target=target)
    torch.testing.assert_close(default, explicit, rtol=0, atol=0)
