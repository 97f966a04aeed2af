"""CLAM_MB, subtyping, ABMIL, small bags, bad inputs and checkpoint variants."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from attnmap.errors import InputError, UnsupportedModelError
from attnmap.mil import ABMIL, CLAM_MB, CLAM_SB, attention_scores, infer_bag, load_clam, load_mil

FIXTURES = Path(__file__).parent / "fixtures" / "clam"


pytestmark = pytest.mark.usefixtures("single_thread")


def _seeded(cls, seed=0, **kwargs):
    torch.manual_seed(seed)
    model = cls(**kwargs).double().eval()
    with torch.no_grad():  # perturb so attention is far from uniform
        for parameter in model.parameters():
            parameter.add_(0.2 * torch.randn_like(parameter))
    return model


def _bag(n, d=32, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=generator, dtype=torch.float64)


def _expected_mb_forward(model: CLAM_MB, bag: torch.Tensor):
    """CLAM_MB written out from the spec with plain numpy: per-class pooling and classifier."""
    w0, b0 = (p.detach().numpy() for p in model.attention_net[0].parameters())
    gated = model.attention_net[3]
    wa, ba = (p.detach().numpy() for p in gated.attention_a[0].parameters())
    wb, bb = (p.detach().numpy() for p in gated.attention_b[0].parameters())
    wc, bc = (p.detach().numpy() for p in gated.attention_c.parameters())
    x = bag.numpy()
    h = np.maximum(x @ w0.T + b0, 0)
    a = np.tanh(h @ wa.T + ba) * (1 / (1 + np.exp(-(h @ wb.T + bb))))
    raw = (a @ wc.T + bc).T  # (C, N)
    weights = np.exp(raw - raw.max(axis=1, keepdims=True))
    weights /= weights.sum(axis=1, keepdims=True)
    pooled = weights @ h
    logits = np.array(
        [
            pooled[c] @ model.classifiers[c].weight.detach().numpy()[0] + model.classifiers[c].bias.item()
            for c in range(model.n_classes)
        ]
    )
    return h, raw, weights, pooled, logits


def _cross_entropy(logits: np.ndarray, targets: np.ndarray) -> float:
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(targets)), targets].mean())


@pytest.mark.parametrize("subtyping", [False, True])
def test_clam_mb_follows_spec(subtyping):
    model = _seeded(CLAM_MB, n_classes=3, embed_dim=32, k_sample=4, subtyping=subtyping)
    bag = _bag(40)
    h, raw, weights, pooled, logits = _expected_mb_forward(model, bag)
    out = model(bag, label=2, instance_eval=True)
    np.testing.assert_allclose(out.attention.detach().numpy(), raw, rtol=1e-10)
    np.testing.assert_allclose(out.pooled.detach().numpy(), pooled, rtol=1e-10)
    np.testing.assert_allclose(out.logits.detach().numpy()[0], logits, rtol=1e-10)
    assert int(out.prediction) == int(np.argmax(logits))
    total, targets = 0.0, []
    for branch in range(3):
        order = np.argsort(-weights[branch], kind="stable")
        w, b = (p.detach().numpy() for p in model.instance_classifiers[branch].parameters())
        if branch == 2:
            chosen, branch_targets = np.concatenate([order[:4], order[::-1][:4]]), np.array([1] * 4 + [0] * 4)
        elif subtyping:
            chosen, branch_targets = order[:4], np.zeros(4, dtype=int)
        else:
            continue
        total += _cross_entropy(h[chosen] @ w.T + b, branch_targets)
        targets.append(branch_targets)
    expected_loss = total / 3 if subtyping else total
    assert float(out.instance_loss.detach()) == pytest.approx(expected_loss, rel=1e-10)
    np.testing.assert_array_equal(out.instance_targets.numpy(), np.concatenate(targets))
    assert out.instance_predictions.shape == out.instance_targets.shape


def test_sb_subtyping_uses_the_single_branch_for_every_class():
    model = _seeded(CLAM_SB, n_classes=3, embed_dim=32, k_sample=3, subtyping=True)
    out = model(_bag(30), label=0, instance_eval=True)
    assert out.instance_targets.tolist() == [1, 1, 1, 0, 0, 0] + [0, 0, 0] * 2


def test_attention_scores_mb_defaults_to_predicted_branch():
    model = _seeded(CLAM_MB, n_classes=3, embed_dim=32)
    bag = _bag(25)
    predicted = int(model(bag).prediction)
    raw_all = model(bag).attention.detach().numpy()
    np.testing.assert_allclose(attention_scores(model, bag), raw_all[predicted], rtol=1e-10)
    for branch in range(3):
        np.testing.assert_allclose(attention_scores(model, bag, branch=branch), raw_all[branch], rtol=1e-10)
    with pytest.raises(InputError, match="branch 3"):
        attention_scores(model, bag, branch=3)
    with pytest.raises(InputError, match="score kind"):
        attention_scores(model, bag, kind="sigmoid")


@pytest.mark.parametrize("n_patches", [1, 2, 5, 8, 12, 40])
def test_instance_clustering_on_small_bags(n_patches):
    """From k_sample patches up: CLAM's top-k / bottom-k; below: k shrinks to N // 2 (disjoint sets)."""
    model = _seeded(CLAM_SB, embed_dim=32, k_sample=8, subtyping=True)
    bag = _bag(n_patches)
    out = model(bag, label=1, instance_eval=True)
    k = 8 if n_patches >= 8 else max(1, n_patches // 2)
    assert out.instance_targets.tolist() == [0] * k + [1] * k + [0] * k
    h = torch.relu(model.attention_net[0](bag)).detach().numpy()
    order = np.argsort(-out.attention.detach().numpy()[0], kind="stable")
    expected = 0.0
    for branch, (chosen, targets) in enumerate(
        [
            (order[:k], np.zeros(k, int)),
            (np.concatenate([order[:k], order[::-1][:k]]), np.array([1] * k + [0] * k)),
        ]
    ):
        w, b = (p.detach().numpy() for p in model.instance_classifiers[branch].parameters())
        expected += _cross_entropy(h[chosen] @ w.T + b, targets)
    assert float(out.instance_loss.detach()) == pytest.approx(expected / 2, rel=1e-10)


@pytest.mark.parametrize("cls", [CLAM_SB, CLAM_MB, ABMIL])
def test_bad_inputs_raise_clear_errors(cls):
    model = _seeded(cls, embed_dim=32)
    with pytest.raises(InputError, match="empty"):
        model(torch.zeros(0, 32, dtype=torch.float64))
    bad = _bag(10)
    bad[3, 4] = float("nan")
    with pytest.raises(InputError, match="NaN or infinite"):
        model(bad)
    bad[3, 4] = float("inf")
    with pytest.raises(InputError, match="NaN or infinite"):
        infer_bag(model, bad)
    with pytest.raises(InputError, match="64 columns but the model expects 32"):
        model(torch.zeros(5, 64))
    with pytest.raises(InputError, match="shape"):
        model(torch.zeros(5))
    with pytest.raises(InputError, match="empty"):
        attention_scores(model, np.zeros((0, 32)))


def test_instance_eval_needs_a_valid_label():
    model = _seeded(CLAM_SB, embed_dim=32)
    with pytest.raises(InputError, match="label"):
        model(_bag(10), instance_eval=True)
    with pytest.raises(InputError, match="out of range"):
        model(_bag(10), label=2, instance_eval=True)


def test_abmil_forward_and_chunked_inference_agree():
    model = _seeded(ABMIL, embed_dim=32, n_classes=3, gate=False)
    bag = _bag(50)
    out = model(bag)
    assert out.logits.shape == (1, 3) and out.attention.shape == (1, 50) and out.pooled.shape == (1, 512)
    assert out.instance_loss is None
    result = infer_bag(model, bag, chunk_size=16)
    np.testing.assert_allclose(result.raw, out.attention.detach().numpy(), rtol=1e-10)
    np.testing.assert_allclose(result.probs, out.probs.detach().numpy()[0], rtol=1e-10)


def _reference_state():
    return torch.load(FIXTURES / "clam_sb_weights.pt", weights_only=True)


def _same_outputs(model_a, model_b, embed_dim=1024):
    bag = _bag(20, embed_dim).to(next(model_a.parameters()).dtype)
    np.testing.assert_allclose(model_a(bag).logits.detach().numpy(), model_b(bag).logits.detach().numpy())


def test_load_clam_repairs_historical_checkpoints():
    state = _reference_state()
    reference = load_clam(state)
    data_parallel = {f"module.{key}": value for key, value in state.items()}
    data_parallel["module.instance_loss_fn.weight"] = torch.ones(2)
    _same_outputs(load_clam(data_parallel), reference)
    old_layout = {key.replace("attention_net.3.", "attention_net.2."): value for key, value in state.items()}
    old_layout = {key.replace("attention_net.", "attention_net.module."): v for key, v in old_layout.items()}
    _same_outputs(load_clam(old_layout), reference)
    model = load_clam(state, k_sample=4, subtyping=True, dropout=0.25)
    assert (model.k_sample, model.subtyping, model.dropout) == (4, True, 0.25)
    assert load_clam(state, dropout=True).dropout == 0.25  # old CLAM's boolean switch
    with pytest.raises(InputError, match="cannot override"):
        load_clam(state, n_classes=3)
    with pytest.raises(UnsupportedModelError, match="attention_net.0.weight"):
        load_clam({"foo": torch.zeros(1)})


@pytest.mark.parametrize("gate", [True, False])
@pytest.mark.parametrize("dropout", [0.0, 0.25])
@pytest.mark.parametrize("cls", [CLAM_SB, CLAM_MB])
def test_load_clam_round_trips_every_variant(tmp_path, cls, gate, dropout):
    model = _seeded(cls, gate=gate, dropout=dropout, size="big", n_classes=4, embed_dim=32).float()
    torch.save(model.state_dict(), tmp_path / "ckpt.pt")
    loaded = load_clam(tmp_path / "ckpt.pt")
    assert type(loaded) is cls
    assert (loaded.gate, loaded.size, loaded.n_classes, loaded.embed_dim) == (gate, "big", 4, 32)
    _same_outputs(loaded, model.eval(), 32)
    flipped = load_clam(tmp_path / "ckpt.pt", dropout=0.25 - dropout)  # plain net: Linear index moves
    _same_outputs(flipped, model, 32)


def test_load_clam_mb_with_single_linear_classifier():
    model = _seeded(CLAM_MB, n_classes=3, embed_dim=32)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("classifiers.")}
    state["classifiers.weight"] = torch.cat([model.classifiers[c].weight for c in range(3)])
    state["classifiers.bias"] = torch.cat([model.classifiers[c].bias for c in range(3)])
    loaded = load_clam(state)
    assert isinstance(loaded, CLAM_MB)
    _same_outputs(loaded, model, 32)


def test_load_mil_reads_abmil_and_clam(tmp_path):
    model = _seeded(ABMIL, embed_dim=32, gate=False, dropout=0.25)
    loaded = load_mil(model.state_dict())
    assert isinstance(loaded, ABMIL) and loaded.gate is False
    _same_outputs(loaded, model, 32)
    assert isinstance(load_mil(_reference_state()), CLAM_SB)
    with pytest.raises(InputError, match="checkpoint not found: .*missing.pt"):
        load_mil(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(InputError, match="cannot read checkpoint .*junk.pt: not a weights-only"):
        load_mil(tmp_path / "junk.pt")


@pytest.mark.parametrize("cls", [CLAM_SB, CLAM_MB, ABMIL])
def test_float64_features_beyond_a_float32_models_range_are_refused(cls):
    # finite in float64, 1e39 became inf in the model's float32: NaN logits and NaN maps, silently
    from attnmap.mil import explain

    torch.manual_seed(0)
    model = cls(embed_dim=8).eval()
    bag = torch.randn(4, 8, dtype=torch.float64)
    bag[1, 2] = 1e39
    with pytest.raises(InputError, match="float32"):
        model(bag)
    with pytest.raises(InputError, match="float32"):
        infer_bag(model, bag)
    for method in ("attention", "lrp", "integrated_gradients", "occlusion", "gradient_x_input"):
        with pytest.raises(InputError, match="float32"):
            explain(model, bag, method)
    bag[1, 2] = 1e30  # within range: the same as the float32 bag
    torch.testing.assert_close(model(bag).logits, model(bag.float()).logits, rtol=0, atol=0)


def test_a_half_model_takes_features_whose_half_row_sums_would_overflow():
    model = CLAM_SB(embed_dim=1024).half().eval()
    bag = torch.full((3, 1024), 100.0)  # each value fits float16; a float16 row sum (102400) would not
    assert model.check_features(bag).dtype == torch.float16


@pytest.mark.parametrize("chunk_size", [1.5, "64", None])
def test_infer_bag_refuses_a_chunk_size_that_is_not_a_positive_integer(chunk_size):
    # 1.5 raised a bare TypeError from range(); explain already refused these in one line
    model = _seeded(CLAM_SB, embed_dim=32)
    with pytest.raises(InputError, match="chunk_size"):
        infer_bag(model, _bag(5), chunk_size=chunk_size)
    with pytest.raises(InputError, match="chunk_size"):
        attention_scores(model, _bag(5), chunk_size=chunk_size)
