"""Feature extraction: encoders (truncated ResNet50, timm, files), batched patch loading, CLAM h5/.pt."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from synthetic_slide_files import write_test_slide, write_tiny_encoder

from attnmap.errors import InputError, UnsupportedModelError
from attnmap.wsi.encoders import PatchTransform, load_encoder
from attnmap.wsi.features import (
    extract_features,
    features_complete,
    load_features,
    read_patch_rgb,
    save_features,
)

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def slide_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_test_slide(tmp_path_factory.mktemp("slides") / "slide.tif", seed=3)


@pytest.mark.slow
def test_resnet50_trunc_is_torchvision_resnet50_up_to_layer3_pooled(tmp_path: Path) -> None:
    from torchvision.models import resnet50

    torch.manual_seed(1)
    full = resnet50(weights=None).eval()
    checkpoint = tmp_path / "resnet50.pth"
    torch.save(full.state_dict(), checkpoint)  # includes layer4 and fc: the encoder must ignore them
    encoder = load_encoder("resnet50_trunc", checkpoint)
    assert encoder.feature_dim == 1024
    images = torch.randn(2, 3, 64, 64)
    captured = {}
    full.layer3.register_forward_hook(lambda module, args, output: captured.update(layer3=output))
    with torch.inference_mode():
        full(images)
        expected = captured["layer3"].mean(dim=(2, 3))
        assert torch.allclose(encoder.model(images), expected, atol=1e-6)


def test_random_encoders_are_seeded_and_timm_names_work() -> None:
    first = load_encoder("timm:test_resnet", input_size=64, seed=5)
    second = load_encoder("timm:test_resnet", input_size=64, seed=5)
    other = load_encoder("timm:test_resnet", input_size=64, seed=6)
    assert first.feature_dim == 96 and first.transform.size == 64
    default = load_encoder("timm:test_resnet").transform  # from timm's data config of the model
    assert (default.size, default.mean, default.std) == (160, (0.5,) * 3, (0.5,) * 3)
    images = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        assert torch.equal(first.model(images), second.model(images))
        assert not torch.equal(first.model(images), other.model(images))


def test_timm_checkpoint_with_classifier_head_loads(tmp_path: Path) -> None:
    import timm

    torch.manual_seed(2)
    classifier = timm.create_model("test_resnet", pretrained=False, num_classes=7).eval()
    checkpoint = tmp_path / "test_resnet.pth"
    torch.save({"arch": "test_resnet", "state_dict": classifier.state_dict()}, checkpoint)
    named = load_encoder("timm:test_resnet", checkpoint, input_size=64)
    from_file = load_encoder(checkpoint, input_size=64)  # the architecture is read from "arch"
    images = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        expected = classifier.forward_head(classifier.forward_features(images), pre_logits=True)
        assert torch.allclose(named.model(images), expected, atol=1e-6)
        assert torch.equal(from_file.model(images), named.model(images))


def test_encoder_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown encoder 'no_such_encoder'"):
        load_encoder("no_such_encoder")
    with pytest.raises(InputError, match="timm has no model"):
        load_encoder("timm:definitely_not_a_model")
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv1.weight": torch.zeros(3)}, wrong)
    with pytest.raises(InputError, match=r"does not fit TruncatedResNet50: missing: .*wrong shape: conv1"):
        load_encoder("resnet50_trunc", wrong)
    with pytest.raises(InputError, match="cannot tell which architecture"):
        load_encoder(wrong)
    with pytest.raises(InputError, match="checkpoint not found: .*missing.pth"):
        load_encoder("resnet50_trunc", tmp_path / "missing.pth")
    with pytest.raises(UnsupportedModelError, match="fails on a 50×50 patch"):
        load_encoder("timm:test_vit", input_size=50)  # not a multiple of the ViT's 16-px patches


def test_patch_transform_resizes_and_normalises() -> None:
    transform = PatchTransform(32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "bilinear")
    patch = np.full((64, 64, 3), 255, dtype=np.uint8)
    tensor = transform(patch)
    assert tensor.shape == (3, 32, 32) and torch.allclose(tensor, torch.full_like(tensor, 2.0))


def test_extract_features_matches_patch_by_patch_encoding(slide_path: Path, tmp_path: Path) -> None:
    from attnmap.wsi.slide import open_slide

    encoder = load_encoder(write_tiny_encoder(tmp_path / "tiny.pt"), input_size=32)
    assert encoder.feature_dim == 8
    coords = np.array([[0, 0], [256, 128], [512, 384], [900, 700], [128, 640]], dtype=np.int64)
    features = extract_features(
        slide_path, coords, encoder, patch_size=128, level=0, batch_size=2, progress=False
    )
    assert features.shape == (5, 8) and features.dtype == np.float32
    slide = open_slide(slide_path)
    with torch.inference_mode():
        for row, (x, y) in enumerate(coords):
            patch = encoder.transform(read_patch_rgb(slide, x, y, 0, 128))
            np.testing.assert_allclose(features[row], encoder.model(patch[None])[0].numpy(), atol=1e-6)
    # level-1 patches are read at level 1 from level-0 coordinates
    level1 = extract_features(slide, coords[:2], encoder, patch_size=64, level=1, progress=False)
    with torch.inference_mode():
        patch = encoder.transform(read_patch_rgb(slide, 256, 128, 1, 64))
        np.testing.assert_allclose(level1[1], encoder.model(patch[None])[0].numpy(), atol=1e-6)


def test_loader_workers_give_the_same_features(slide_path: Path, tmp_path: Path) -> None:
    encoder = load_encoder(write_tiny_encoder(tmp_path / "tiny.pt"), input_size=32)
    coords = np.stack(np.meshgrid(np.arange(0, 1024, 128), np.arange(0, 768, 128)), -1).reshape(-1, 2)
    serial = extract_features(slide_path, coords, encoder, patch_size=128, batch_size=8, progress=False)
    parallel = extract_features(
        slide_path, coords, encoder, patch_size=128, batch_size=8, num_workers=2, progress=False
    )
    np.testing.assert_array_equal(serial, parallel)


def test_extract_features_rejects_bad_inputs(slide_path: Path, tmp_path: Path) -> None:
    encoder = load_encoder(write_tiny_encoder(tmp_path / "tiny.pt"), input_size=32)
    with pytest.raises(InputError, match="coords must be N×2"):
        extract_features(slide_path, np.zeros((3, 3)), encoder)
    with pytest.raises(InputError, match="level 5 does not exist"):
        extract_features(slide_path, np.zeros((1, 2)), encoder, level=5, progress=False)
    assert extract_features(slide_path, np.zeros((0, 2)), encoder).shape == (0, 8)


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_half_precision_features_are_close_to_float32_and_stored_as_float32(
    slide_path: Path, tmp_path: Path, precision: str
) -> None:
    encoder = load_encoder(write_tiny_encoder(tmp_path / "tiny.pt"), input_size=32)
    coords = np.stack(np.meshgrid(np.arange(0, 1024, 256), np.arange(0, 768, 256)), -1).reshape(-1, 2)
    options = {"patch_size": 128, "batch_size": 4, "progress": False}
    reference = extract_features(slide_path, coords, encoder, **options)
    half = extract_features(slide_path, coords, encoder, precision=precision, **options)
    assert half.dtype == np.float32 and half.shape == reference.shape
    assert not np.array_equal(half, reference)  # autocast did run the encoder in half precision
    # bfloat16 keeps 8 significant bits (float16 11, with a narrower range): each rounding is within
    # 2^-8 relative and a few layers compound to about 1% of the largest feature; 3% leaves margin
    # while a wrong row, a missed cast or an overflow is far outside it.
    np.testing.assert_allclose(half, reference, rtol=0, atol=0.03 * np.abs(reference).max())


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["float32", "bfloat16", "float16"])
def test_features_on_cuda_are_close_to_the_cpu_float32_ones(
    slide_path: Path, tmp_path: Path, precision: str
) -> None:
    coords = np.stack(np.meshgrid(np.arange(0, 1024, 256), np.arange(0, 768, 256)), -1).reshape(-1, 2)
    options = {"patch_size": 128, "batch_size": 4, "progress": False}
    encoders = {
        "tiny": load_encoder(write_tiny_encoder(tmp_path / "tiny.pt"), input_size=32),
        "resnet50_trunc": load_encoder("resnet50_trunc", input_size=64),
    }
    for name, encoder in encoders.items():
        reference = extract_features(slide_path, coords, encoder, device="cpu", **options)
        on_gpu = extract_features(slide_path, coords, encoder, device="cuda", precision=precision, **options)
        assert on_gpu.dtype == np.float32 and on_gpu.shape == reference.shape
        # float32 on CUDA: cuDNN may run convolutions in TF32 (10-bit significand) by default, so 1%;
        # half precision: the 3% of the CPU test above (8 significant bits, a few layers).
        tolerance = 0.01 if precision == "float32" else 0.03
        np.testing.assert_allclose(
            on_gpu, reference, rtol=0, atol=tolerance * np.abs(reference).max(), err_msg=name
        )


def test_unknown_precision_is_refused_before_any_patch_is_read(slide_path: Path, tmp_path: Path) -> None:
    encoder = load_encoder(write_tiny_encoder(tmp_path / "tiny.pt"), input_size=32)
    with pytest.raises(InputError, match="precision must be one of float32, bfloat16, float16, got 'half'"):
        extract_features(slide_path, np.zeros((1, 2)), encoder, precision="half", progress=False)


def test_save_features_writes_clam_h5_and_pt_with_provenance(tmp_path: Path) -> None:
    from attnmap.provenance import provenance, read_sidecar

    features = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    coords = np.arange(12, dtype=np.int64).reshape(6, 2) * 256
    h5_path, pt_path = tmp_path / "h5_files" / "s1.h5", tmp_path / "pt_files" / "s1.pt"
    save_features(
        h5_path, features, coords, provenance(method="features", model_name="tiny"), pt_path=pt_path
    )
    with h5py.File(h5_path, "r") as handle:
        assert handle["features"].dtype == np.float32 and handle["coords"].dtype == np.int32
        assert handle.attrs["model"] == "tiny" and "attnmap_version" in handle.attrs
    read_features, read_coords = load_features(h5_path)
    np.testing.assert_array_equal(read_features, features)
    np.testing.assert_array_equal(read_coords, coords)
    assert torch.equal(torch.load(pt_path, weights_only=True), torch.from_numpy(features))
    assert features_complete(h5_path, n_patches=6, feature_dim=4)
    assert not features_complete(h5_path, n_patches=7)
    assert not features_complete(tmp_path / "missing.h5")
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(h5_path.read_bytes()[:200])
    assert not features_complete(truncated)
    sidecar = read_sidecar(pt_path)  # the .pt holds CLAM's bare tensor; its record sits beside it
    assert sidecar["model"] == "tiny" and sidecar["attnmap_version"]
    names = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert names == ["s1.h5", "s1.pt", "s1.pt.json", "truncated.h5"]


def test_patching_and_features_end_to_end_on_the_real_slide(tmp_path: Path) -> None:
    from attnmap.wsi.patching import patch_grid
    from attnmap.wsi.slide import open_slide
    from attnmap.wsi.tissue import segment_tissue

    slide = open_slide(DATA / "cmu_small_region.svs")
    tissue = segment_tissue(slide, level=0, a_t=1)
    coords = patch_grid(slide, tissue, patch_size=256, step=256)
    assert 10 < len(coords) < 200
    encoder = load_encoder(write_tiny_encoder(tmp_path / "tiny.pt"), input_size=32)
    features = extract_features(slide, coords, encoder, patch_size=256, batch_size=32, progress=False)
    assert features.shape == (len(coords), 8) and np.isfinite(features).all()
    assert np.unique(features.round(5), axis=0).shape[0] > len(coords) // 2  # real, varied tissue


def test_registered_encoders_load_by_name() -> None:
    from attnmap.wsi.encoders import register_encoder

    transform = PatchTransform(2, (0.0,) * 3, (1.0,) * 3, "bilinear")
    register_encoder("test:flatten", lambda: (torch.nn.Flatten(), transform, 12))
    encoder = load_encoder("test:flatten")
    assert encoder.feature_dim == 12 and encoder.transform is transform and not encoder.model.training
    assert encoder.model(torch.ones(1, 3, 2, 2)).shape == (1, 12)


def test_input_size_applies_to_registered_encoders_too() -> None:
    """`input_size` resizes the patches of a registered encoder as it does for the others (it was
    ignored: a config asking for 128-px inputs silently got the encoder's own 64)."""
    from attnmap.data.tiny_encoder import TINY_INPUT_SIZE

    native = load_encoder("attnmap:tiny")
    resized = load_encoder("attnmap:tiny", input_size=2 * TINY_INPUT_SIZE)
    assert native.transform.size == TINY_INPUT_SIZE and resized.transform.size == 2 * TINY_INPUT_SIZE
    assert (resized.transform.mean, resized.transform.std) == (native.transform.mean, native.transform.std)
    patch = np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    assert resized.transform(patch).shape == (3, 2 * TINY_INPUT_SIZE, 2 * TINY_INPUT_SIZE)
    assert resized.feature_dim == native.feature_dim
    assert load_encoder("attnmap:tiny", input_size=TINY_INPUT_SIZE).transform is not None
    from attnmap.wsi.encoders import register_encoder

    register_encoder("test:fixed", lambda: (torch.nn.Flatten(), lambda patch: torch.zeros(12), 12))
    with pytest.raises(InputError, match="test:fixed.*no input_size"):
        load_encoder("test:fixed", input_size=32)


def test_extract_features_closes_the_slide_it_opened(
    slide_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The patch reader's slide was left to the garbage collector (a ResourceWarning on tiffslide
    slides), also when encoding failed part-way."""
    import attnmap.wsi.slide as slide_module

    opened, closed = [], []
    real_open = slide_module.open_slide

    def tracked(path: object) -> object:
        slide = real_open(path)
        real_close = slide.close
        slide.close = lambda: (closed.append(slide), real_close())  # type: ignore[method-assign]
        opened.append(slide)
        return slide

    monkeypatch.setattr(slide_module, "open_slide", tracked)
    encoder = load_encoder(write_tiny_encoder(tmp_path / "tiny.pt"), input_size=32)
    coords = np.array([[0, 0], [256, 128], [512, 384]])
    extract_features(slide_path, coords, encoder, patch_size=64, batch_size=2, progress=False)
    assert len(opened) == 1 and closed == opened
    model, transform, dim = encoder

    class Failing(torch.nn.Module):
        def forward(self, batch: torch.Tensor) -> torch.Tensor:
            raise InputError("encoder failed")

    with pytest.raises(InputError, match="encoder failed"):
        extract_features(slide_path, coords, (Failing(), transform, dim), patch_size=64, batch_size=1,
                         progress=False, cpu_graph=False)
    assert len(opened) == 2 and closed == opened


def test_fractional_coords_are_rounded_to_the_pixel_as_a_bag_reader_does(
    slide_path: Path, tmp_path: Path
) -> None:
    """Float coordinates (a rescaled grid) were truncated without a word: 300.7 read pixel 300."""
    from attnmap.mil.bags import checked_coords

    encoder = load_encoder(write_tiny_encoder(tmp_path / "tiny.pt"), input_size=32)
    fractional = np.array([[300.7, 200.4], [511.5, 383.6]])
    rounded = checked_coords("bag", fractional, len(fractional))
    options = {"patch_size": 64, "progress": False}
    features = extract_features(slide_path, fractional, encoder, **options)
    np.testing.assert_array_equal(features, extract_features(slide_path, rounded, encoder, **options))
    truncated = extract_features(slide_path, np.floor(fractional), encoder, **options)
    assert not np.array_equal(features, truncated)  # the test tells rounding from truncating
    with pytest.raises(InputError, match="NaN"):
        extract_features(slide_path, np.array([[np.nan, 0.0]]), encoder, **options)
    path = save_features(tmp_path / "f.h5", features, fractional)  # stored as read, not truncated
    np.testing.assert_array_equal(load_features(path)[1], rounded)
