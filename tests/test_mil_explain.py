"""MIL relevance (`attnmap.mil.explain`): conformance of every method in float64, then behaviour."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attnmap.errors import InputError
from attnmap.mil import (
    ABMIL,
    CLAM_MB,
    CLAM_SB,
    RELEVANCE_METHODS,
    attention_scores,
    explain,
    feature_gradients,
    load_clam,
)

pytestmark = pytest.mark.usefixtures("single_thread")

D = 24


def _seeded(cls, seed=0, **kwargs):
    torch.manual_seed(seed)
    model = cls(embed_dim=D, **kwargs).double().eval()
    with torch.no_grad():  # perturb so attention is far from uniform and biases matter
        for parameter in model.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    return model


def _bag(n=30, seed=1, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, D, generator=generator, dtype=torch.float64).to(dtype)


MODELS = {
    "abmil_gated": lambda: _seeded(ABMIL, hidden_dim=16, attention_dim=8, gate=True),
    "abmil_plain": lambda: _seeded(ABMIL, hidden_dim=16, attention_dim=8, gate=False, n_classes=3),
    # CLAM as load_clam builds it from a checkpoint's state_dict
    "clam_sb_gated": lambda: load_clam(_seeded(CLAM_SB, gate=True).state_dict()).double(),
    "clam_sb_plain": lambda: load_clam(_seeded(CLAM_SB, gate=False).state_dict()).double(),
    "clam_mb_gated": lambda: load_clam(_seeded(CLAM_MB, gate=True, n_classes=3).state_dict()).double(),
    "clam_mb_plain": lambda: load_clam(_seeded(CLAM_MB, gate=False).state_dict()).double(),
}


@pytest.fixture(params=sorted(MODELS))
def model(request):
    return MODELS[request.param]()


def _logit(model, features, target):
    return model(features).logits[0, target]


def _detached_logit(model, features, target):
    """The model with its attention weights detached (constants), written from its three steps."""
    h = model.embed(features)
    _, weights, _ = model.pool(h)
    return model.classify(weights.detach() @ h)[0, target]


def _input_gradient(fn, model, features, target):
    leaf = features.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(fn(model, leaf, target), leaf)
    return grad


def test_occlusion_is_exact_leave_one_out(model):
    bag = _bag()
    for target in range(model.n_classes):
        scores = explain(model, bag, "occlusion", target=target)
        with torch.no_grad():
            full = _logit(model, bag, target)
            brute = [full - _logit(model, torch.cat([bag[:i], bag[i + 1 :]]), target)
                     for i in range(len(bag))]
        np.testing.assert_allclose(scores, torch.stack(brute).numpy(), rtol=0, atol=1e-8)


def test_occlusion_when_one_patch_dominates():
    """One patch holds nearly all the attention: Z − e_i cancels for it; the result stays exact."""
    model = _seeded(ABMIL, hidden_dim=16, attention_dim=8, gate=False)
    bag = _bag(12)
    with torch.no_grad():  # sharpen the attention until the top patch's logit leads by ~25
        raw = model(bag).attention[0]
        gap = (raw.max() - raw.topk(2).values[1]).item()
        model.attention.module[2].weight.mul_(25.0 / gap)
        weights = torch.softmax(model(bag).attention[0], dim=0)
    top = int(weights.argmax())
    assert 1e-12 < 1 - weights[top] < 1e-9  # a naive Z − e_top would keep only ~4 digits
    scores = explain(model, bag, "occlusion", target=1)
    with torch.no_grad():
        full = _logit(model, bag, 1)
        brute = torch.stack([full - _logit(model, torch.cat([bag[:i], bag[i + 1 :]]), 1) for i in range(12)])
    assert abs(brute[top]) > 1e-3
    np.testing.assert_allclose(scores, brute.numpy(), rtol=1e-9, atol=1e-8)


def test_gradient_x_input_equals_autograd(model):
    bag = _bag()
    for target in range(model.n_classes):
        grad = _input_gradient(_logit, model, bag, target)
        np.testing.assert_allclose(
            explain(model, bag, "gradient_x_input", target=target, per_feature=True),
            (bag * grad).numpy(), rtol=1e-10, atol=1e-12,
        )
        np.testing.assert_allclose(
            explain(model, bag, "gradient_x_input", target=target),
            (bag * grad).sum(dim=1).numpy(), rtol=1e-10, atol=1e-12,
        )
        np.testing.assert_allclose(feature_gradients(model, bag, target).numpy(), grad.numpy(),
                                   rtol=1e-10, atol=1e-12)


def test_lrp_zero_equals_detached_gradient_x_input(model):
    bag = _bag()
    for target in range(model.n_classes):
        expected = bag * _input_gradient(_detached_logit, model, bag, target)
        lrp = explain(model, bag, "lrp", target=target, eps=0.0, per_feature=True)
        np.testing.assert_allclose(lrp, expected.numpy(), rtol=1e-10, atol=1e-12)
        direction = feature_gradients(model, bag, target, detach_attention=True)
        np.testing.assert_allclose((bag * direction).numpy(), expected.numpy(), rtol=1e-10, atol=1e-12)
        # the default ε = 1e-5 is a small perturbation of the same thing
        small = explain(model, bag, "lrp", target=target, eps=1e-9)
        np.testing.assert_allclose(small, expected.sum(dim=1).numpy(), rtol=1e-5, atol=1e-7)


def _relevance_total(model, bag, target, gamma):
    """y_c minus the biases' share, from the parameters (docs/mil-relevance.md), at ε = 0."""
    with torch.no_grad():
        out = model(bag)
        branch = target if isinstance(model, CLAM_MB) else 0
        weights = torch.softmax(out.attention[branch], dim=0)
        embedding = model.feature[0] if isinstance(model, ABMIL) else model.attention_net[0]
        if isinstance(model, CLAM_MB):
            w, b = model.classifiers[target].weight[0], model.classifiers[target].bias[0]
        else:
            head = model.classifier if isinstance(model, ABMIL) else model.classifiers
            w, b = head.weight[target], head.bias[target]
        logit = out.logits[0, target]
        z = bag @ embedding.weight.t() + embedding.bias
        h = z.clamp(min=0)
        pooled = weights @ h
        w1, b1 = w + gamma * w.clamp(min=0), b + gamma * b.clamp(min=0)
        b_emb = embedding.bias + gamma * embedding.bias.clamp(min=0)
        z_mod = bag @ (embedding.weight + gamma * embedding.weight.clamp(min=0)).t() + b_emb
        relevance_pooled = pooled * w1 * logit / (pooled @ w1 + b1)
        relevance_h = weights[:, None] * h * relevance_pooled / pooled
        share = logit * b1 / (pooled @ w1 + b1) + (relevance_h * b_emb / z_mod).sum()
        if gamma == 0:  # the simple form: b_c + Σ_k w_k b_k Σ_i a_i [z_ik > 0]
            simple = b + (weights[:, None] * (z > 0) * (w * embedding.bias)).sum()
            torch.testing.assert_close(share, simple, rtol=1e-10, atol=1e-12)
        return float(logit - share)


@pytest.mark.parametrize("gamma", [0.0, 0.25])
def test_lrp_total_relevance_is_logit_minus_bias_share(model, gamma):
    bag = _bag()
    for target in range(model.n_classes):
        scores = explain(model, bag, "lrp", target=target, eps=0.0, gamma=gamma)
        assert scores.sum() == pytest.approx(_relevance_total(model, bag, target, gamma), rel=1e-9, abs=1e-10)
        per_feature = explain(model, bag, "lrp", target=target, eps=0.0, gamma=gamma, per_feature=True)
        np.testing.assert_allclose(per_feature.sum(axis=1), scores, rtol=1e-9, atol=1e-12)


def test_integrated_gradients_completeness(model):
    bag = _bag()
    for target in range(model.n_classes):
        scores = explain(model, bag, "integrated_gradients", target=target, steps=128)
        with torch.no_grad():
            gap = float(_logit(model, bag, target) - _logit(model, torch.zeros_like(bag), target))
        assert scores.sum() == pytest.approx(gap, abs=0.02 * max(1.0, abs(gap)))


def test_integrated_gradients_batching_and_single_step():
    model = MODELS["clam_mb_gated"]()
    bag = _bag(20)
    batched = explain(model, bag, "integrated_gradients", target=2, steps=8, per_feature=True)
    one_by_one = explain(model, bag, "integrated_gradients", target=2, steps=8, per_feature=True,
                         chunk_size=7)
    np.testing.assert_allclose(batched, one_by_one, rtol=1e-10, atol=1e-13)
    # a single midpoint step: x ⊙ ∇f(x/2)
    grad = _input_gradient(_logit, model, bag / 2, 1)
    single = explain(model, bag, "integrated_gradients", target=1, steps=1, per_feature=True)
    np.testing.assert_allclose(single, (bag * grad).numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("method", RELEVANCE_METHODS)
def test_chunking_float32_and_default_target(method):
    model = MODELS["clam_mb_gated"]()
    bag = _bag(25)
    whole = explain(model, bag, method)
    assert whole.shape == (25,) and whole.dtype == np.float64
    np.testing.assert_allclose(explain(model, bag, method, chunk_size=4), whole, rtol=1e-10, atol=1e-12)
    predicted = int(model(bag).prediction)
    np.testing.assert_array_equal(explain(model, bag, method, target=predicted), whole)
    single = explain(model.float(), bag.float(), method)
    assert single.dtype == np.float32
    np.testing.assert_allclose(single, whole, rtol=2e-3, atol=2e-4 * np.abs(whole).max())


def test_attention_method_is_the_target_branch():
    model = MODELS["clam_mb_plain"]()
    bag = _bag()
    for target in range(2):
        np.testing.assert_array_equal(
            explain(model, bag, "attention", target=target), attention_scores(model, bag, branch=target)
        )


def test_model_mode_restored_and_dropout_ignored():
    model = _seeded(CLAM_SB, dropout=0.25).train()
    bag = _bag()
    scores = explain(model, bag, "lrp")
    assert model.training
    np.testing.assert_array_equal(scores, explain(model.eval(), bag, "lrp"))


def test_errors():
    model = MODELS["abmil_gated"]()
    bag = _bag()
    with pytest.raises(InputError, match="unknown MIL relevance method"):
        explain(model, bag, "saliency")
    with pytest.raises(InputError, match="per_feature"):
        explain(model, bag, "occlusion", per_feature=True)
    with pytest.raises(InputError, match="no option"):
        explain(model, bag, "lrp", steps=3)
    with pytest.raises(InputError, match="out of range"):
        explain(model, bag, "lrp", target=2)
    with pytest.raises(InputError, match="eps"):
        explain(model, bag, "lrp", eps=-1.0)
    with pytest.raises(InputError, match="steps"):
        explain(model, bag, "integrated_gradients", steps=0)
    with pytest.raises(InputError, match="at least 2 patches"):
        explain(model, bag[:1], "occlusion")
    with pytest.raises(InputError, match="columns"):
        explain(model, bag[:, :5], "attention")
    with pytest.raises(InputError, match="NaN"):
        explain(model, torch.full((3, D), float("nan"), dtype=torch.float64), "lrp")
    with pytest.raises(InputError, match="attnmap.mil model"):
        explain(torch.nn.Linear(D, 2), bag, "lrp")


def test_cli_attention_writes_every_method(tmp_path):
    import csv

    import h5py

    from attnmap.cli.main import main
    from attnmap.mil import write_h5_bag

    model = _seeded(CLAM_MB, gate=True, n_classes=3).float()
    torch.save(model.state_dict(), tmp_path / "clam_mb.pt")
    bag = _bag(30, dtype=torch.float32)
    write_h5_bag(tmp_path / "bags" / "s1.h5", bag.numpy(), np.arange(60).reshape(30, 2))
    main(["mil", "attention", str(tmp_path / "clam_mb.pt"), str(tmp_path / "bags"),
          "-o", str(tmp_path / "out"), "--method", "all", "--target", "1", "--quiet"])
    with h5py.File(tmp_path / "out" / "s1_attention.h5") as handle:
        assert int(handle.attrs["target"]) == 1
        for method in RELEVANCE_METHODS:
            np.testing.assert_allclose(handle[f"scores_{method}"][()], explain(model, bag, method, target=1),
                                       rtol=1e-5, atol=1e-6)
        assert handle["attention_raw"].shape == (30, 3)  # the existing datasets stay
    with open(tmp_path / "out" / "s1_attention.csv") as handle:
        row = next(csv.DictReader(handle))
    assert {"x", "y", "attention_raw", "score_lrp", "score_occlusion"} <= set(row)
    with pytest.raises(SystemExit) as done:
        main(["mil", "attention", str(tmp_path / "clam_mb.pt"), str(tmp_path / "bags"), "-o",
              str(tmp_path / "bad"), "--method", "lrp", "--target", "7", "--quiet"])
    assert done.value.code == 2


@pytest.mark.gpu
def test_cuda_model_with_features_on_the_cpu():
    model = MODELS["clam_mb_gated"]()
    bag = _bag()
    on_gpu = MODELS["clam_mb_gated"]().cuda()
    for method in RELEVANCE_METHODS:
        expected = explain(model, bag, method)
        np.testing.assert_allclose(explain(on_gpu, bag, method), expected, rtol=1e-8, atol=1e-9)
    expected = explain(model, bag, "lrp", per_feature=True)
    np.testing.assert_allclose(explain(on_gpu, bag, "lrp", per_feature=True), expected, rtol=1e-8, atol=1e-9)
    assert feature_gradients(on_gpu, bag).device.type == "cpu"


@pytest.mark.parametrize("target", [1.5, True, "1", np.array([0, 1])])
def test_a_target_that_is_not_one_integer_is_refused(target):
    model, bag = MODELS["abmil_gated"](), _bag()
    for method in RELEVANCE_METHODS:  # truncating 1.5 to class 1 would explain a class not asked for
        with pytest.raises(InputError, match="class index"):
            explain(model, bag, method, target=target)


def test_integer_targets_of_any_kind_are_one_class():
    model, bag = MODELS["abmil_gated"](), _bag()
    expected = explain(model, bag, "lrp", target=1)
    for target in (np.int64(1), torch.tensor(1), torch.tensor([1]), 1.0):
        np.testing.assert_array_equal(explain(model, bag, "lrp", target=target), expected)


def test_half_precision_models_give_float32_scores_for_every_method():
    torch.manual_seed(0)
    bag = torch.randn(7, D)
    for dtype in (torch.float16, torch.bfloat16):
        model = CLAM_MB(embed_dim=D, n_classes=3).to(dtype).eval()
        for method in RELEVANCE_METHODS:
            scores = explain(model, bag, method)
            assert scores.dtype == np.float32 and scores.shape == (7,) and np.isfinite(scores).all()
        assert attention_scores(model, bag).dtype == np.float32


@pytest.mark.parametrize(
    "options",
    [{"eps": float("inf")}, {"gamma": float("inf")}, {"eps": float("nan")}, {"eps": "a"},
     {"eps": None}, {"gamma": True}],
)
def test_lrp_options_that_are_not_finite_numbers_are_refused(options):
    # eps = inf zeroed every score and gamma = inf gave NaN: silently wrong maps, not errors
    model, bag = MODELS["abmil_gated"](), _bag()
    with pytest.raises(InputError, match="eps|gamma"):
        explain(model, bag, "lrp", **options)


def test_a_subclass_whose_layers_the_methods_do_not_mirror_is_refused_not_explained():
    # a user's ABMIL with a deeper embedding (or its own classify) was explained as if it were
    # ReLU(W x + b) and a linear read-out: occlusion differed from the model's own leave-one-out
    from attnmap.errors import UnsupportedModelError
    from attnmap.evaluate import patch_flipping

    class Deeper(ABMIL):
        def embed(self, features):
            return torch.relu(super().embed(features) - 0.1)

    class Squashed(CLAM_SB):
        def classify(self, pooled):
            return torch.tanh(super().classify(pooled))

    bag = _bag(8)
    for cls, part in ((Deeper, "embed"), (Squashed, "classify")):
        model = _seeded(cls).train()
        for method in RELEVANCE_METHODS:
            with pytest.raises(UnsupportedModelError, match=f"{cls.__name__}.*{part}"):
                explain(model, bag, method)
        with pytest.raises(UnsupportedModelError, match=part):
            feature_gradients(model, bag)
        with pytest.raises(UnsupportedModelError, match=part):
            patch_flipping(model, bag, np.arange(8.0))
        assert model.training

    class OwnAttention(CLAM_SB):  # the attention layer is the model's own call: still explained
        def attention_logits(self, h):
            return torch.tanh(super().attention_logits(h))

    model = _seeded(OwnAttention)
    x = bag.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(x).logits[0, 1], x)
    np.testing.assert_allclose(explain(model, bag, "gradient_x_input", target=1),
                               (grad * bag).sum(dim=1).numpy(), rtol=1e-9, atol=1e-12)


def test_every_method_runs_inside_inference_mode():
    # a caller's torch.inference_mode() made the gradient methods fail with a bare autograd
    # RuntimeError ("element 0 of tensors does not require grad"): enable_grad does not lift it
    model, bag = MODELS["clam_mb_gated"](), _bag()
    expected = {method: explain(model, bag, method) for method in RELEVANCE_METHODS}
    direction = feature_gradients(model, bag)
    with torch.inference_mode():
        for method in RELEVANCE_METHODS:
            np.testing.assert_array_equal(explain(model, bag, method), expected[method])
        torch.testing.assert_close(feature_gradients(model, bag), direction, rtol=0, atol=0)


def test_a_mixed_train_eval_state_is_given_back_as_it_was():
    # model.train(was_training) after explaining set every submodule to train mode, undoing a
    # caller's frozen (eval) part of a model being fine-tuned
    from attnmap.evaluate import patch_flipping
    from attnmap.mil import infer_bag

    model, bag = _seeded(CLAM_SB, dropout=0.25).train(), _bag(8)
    model.attention_net[3].eval()
    modes = [module.training for module in model.modules()]
    for method in RELEVANCE_METHODS:
        explain(model, bag, method)
        assert [module.training for module in model.modules()] == modes, method
    for run in (feature_gradients, infer_bag, lambda m, b: patch_flipping(m, b, np.arange(8.0))):
        run(model, bag)
        assert [module.training for module in model.modules()] == modes


def test_integrated_gradients_shows_a_bar_over_its_steps_unless_quiet(tmp_path, capsys):
    """On a 50,000-patch bag integrated gradients takes about 50 attention passes' time (a bag larger
    than --chunk-size: two passes per step), and `mil attention` showed nothing after the
    attention pass's bar."""
    from cli_runner import run_cli

    from attnmap.mil import write_h5_bag

    torch.save(_seeded(CLAM_SB, gate=True).float().state_dict(), tmp_path / "clam.pt")
    write_h5_bag(tmp_path / "s1.h5", _bag(30, dtype=torch.float32).numpy(), np.arange(60).reshape(30, 2))
    for extra, shown in (((), True), (("--quiet",), False)):
        code, _, err = run_cli(capsys, *extra, "mil", "attention", tmp_path / "clam.pt", tmp_path / "s1.h5",
                               "-o", tmp_path / "out", "--method", "integrated_gradients",
                               "--chunk-size", "8")
        assert code == 0, err
        assert ("integrated gradients" in err and "/32 [" in err) == shown, err
    code, _, err = run_cli(capsys, "mil", "attention", tmp_path / "clam.pt", tmp_path / "s1.h5", "-o",
                           tmp_path / "out", "--method", "integrated_gradients")  # all steps in one pass
    assert code == 0 and "integrated gradients" not in err, err


def test_non_finite_features_are_counted_over_the_whole_bag():
    """A NaN among the first rows was reported by the model check that runs on 8 rows: "(1 of 8
    patches)" for a bag of 20 patches, 2 of them not finite."""
    from attnmap.evaluate import patch_flipping

    torch.manual_seed(0)
    model = CLAM_MB(embed_dim=8, n_classes=3).eval()
    features = torch.randn(20, 8)
    features[0, 0], features[15, 3] = float("nan"), float("inf")
    calls = [lambda method=method: explain(model, features, method) for method in RELEVANCE_METHODS]
    calls += [lambda: feature_gradients(model, features),
              lambda: patch_flipping(model, features, np.arange(20.0))]
    for call in calls:
        with pytest.raises(InputError, match=r"\(2 of 20 patches\)"):
            call()
