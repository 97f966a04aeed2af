"""CLAM_SB against the numbers CLAM's own code produced (tests/fixtures/clam)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from attnmap.mil import CLAM_SB, attention_scores, infer_bag, load_clam

FIXTURES = Path(__file__).parent / "fixtures" / "clam"
TOLERANCE = {torch.float32: dict(rtol=1e-5, atol=1e-6), torch.float64: dict(rtol=1e-9, atol=1e-12)}


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    return dict(np.load(FIXTURES / "clam_sb_public.npz"))


def _model_and_bag(reference, dtype):
    model = load_clam(FIXTURES / "clam_sb_weights.pt").to(dtype)
    bag = torch.from_numpy(reference["bag_h"]).to(dtype)
    return model, bag


def _expected(reference, key, dtype):
    return reference[key + ("_f64" if dtype == torch.float64 else "")]


def _close(actual, expected, dtype):
    actual = actual.detach().cpu().numpy() if isinstance(actual, torch.Tensor) else np.asarray(actual)
    np.testing.assert_allclose(actual, expected, **TOLERANCE[dtype])


def test_architecture_is_inferred():
    model = load_clam(FIXTURES / "clam_sb_weights.pt")
    assert isinstance(model, CLAM_SB)
    assert (model.n_classes, model.embed_dim, model.size, model.gate) == (2, 1024, "small", True)
    assert not model.training


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("grad", [True, False], ids=["autograd", "no_grad"])
def test_forward_without_instance_eval(reference, dtype, grad):
    model, bag = _model_and_bag(reference, dtype)
    with torch.set_grad_enabled(grad):
        out = model(bag)
    _close(out.logits, _expected(reference, "sb_noinst_logits", dtype), dtype)
    _close(out.probs, _expected(reference, "sb_noinst_Y_prob", dtype), dtype)
    _close(out.attention, _expected(reference, "sb_noinst_A_raw", dtype), dtype)
    _close(out.attention, _expected(reference, "sb_attn_only", dtype), dtype)
    _close(out.pooled, _expected(reference, "sb_noinst_M", dtype), dtype)
    assert int(out.prediction) == int(_expected(reference, "sb_noinst_Y_hat", dtype).item())
    assert out.instance_loss is None and out.instance_targets is None and out.instance_predictions is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("label", [0, 1])
def test_forward_with_instance_eval(reference, dtype, label):
    model, bag = _model_and_bag(reference, dtype)
    out = model(bag, label=torch.tensor([label]), instance_eval=True)
    prefix = f"sb_inst_label{label}_"
    _close(out.logits, _expected(reference, prefix + "logits", dtype), dtype)
    _close(out.probs, _expected(reference, prefix + "Y_prob", dtype), dtype)
    _close(out.attention, _expected(reference, prefix + "A_raw", dtype), dtype)
    assert int(out.prediction) == int(_expected(reference, prefix + "Y_hat", dtype).item())
    _close(out.instance_loss, _expected(reference, prefix + "instance_loss", dtype), dtype)
    np.testing.assert_array_equal(
        out.instance_targets.numpy(), _expected(reference, prefix + "inst_labels", dtype)
    )
    np.testing.assert_array_equal(
        out.instance_predictions.numpy(), _expected(reference, prefix + "inst_preds", dtype)
    )


def test_instance_loss_has_gradients(reference):
    model, bag = _model_and_bag(reference, torch.float64)
    out = model(bag, label=1, instance_eval=True)
    out.instance_loss.backward()
    assert model.instance_classifiers[1].weight.grad.abs().sum() > 0
    assert model.instance_classifiers[0].weight.grad is None  # not evaluated without subtyping


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_attention_scores_match_reference(reference, dtype):
    model, bag = _model_and_bag(reference, dtype)
    raw = attention_scores(model, bag, kind="raw")
    _close(raw, _expected(reference, "sb_attn_only", dtype)[0], dtype)
    softmax = attention_scores(model, bag, kind="softmax")
    np.testing.assert_allclose(softmax, reference["sb_A_softmax"][0], rtol=1e-5)
    percentile = attention_scores(model, bag, kind="percentile")
    order = np.argsort(-percentile, kind="stable")
    assert set(order[:8]) == set(reference["sb_topk_pos_ids"][0])
    assert percentile.max() == 1.0 and percentile.min() == pytest.approx(1 / bag.shape[0])


@pytest.mark.parametrize("chunk_size", [37, 128, 10_000])
def test_chunked_inference_equals_forward(reference, chunk_size):
    model, bag = _model_and_bag(reference, torch.float64)
    result = infer_bag(model, bag, chunk_size=chunk_size)
    _close(result.raw, reference["sb_attn_only_f64"], torch.float64)
    _close(result.logits, reference["sb_noinst_logits_f64"][0], torch.float64)
    _close(result.probs, reference["sb_noinst_Y_prob_f64"][0], torch.float64)
    assert result.prediction == int(reference["sb_noinst_Y_hat_f64"].item())
