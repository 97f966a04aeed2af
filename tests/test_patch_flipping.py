"""Patch flipping on a planted bag, against the model's forward on every reduced bag."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attnmap.errors import InputError
from attnmap.evaluate import FRACTIONS, patch_flipping
from attnmap.mil import ABMIL, CLAM_MB, explain

pytestmark = pytest.mark.usefixtures("single_thread")

N_SIGNAL, N_DECOY, N_BACKGROUND = 6, 24, 170


def _planted():
    """Feature 0 is the class evidence; features 0 and 1 both draw attention.

    h = ReLU(x); attention s = 4·tanh(2 h_0 + 2 h_1); logit_1 − logit_0 = 3 h_0 − 1.5. Decoy
    patches (feature 1 high) get as much attention as the signal patches but carry no evidence, so
    removing them *raises* the class-1 probability; only the signal patches hold it up.
    """
    model = ABMIL(embed_dim=8, hidden_dim=8, attention_dim=4, gate=False).double().eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        model.feature[0].weight.copy_(torch.eye(8, dtype=torch.float64))
        model.attention.module[0].weight[0, :2] = 2.0
        model.attention.module[2].weight[0, 0] = 4.0
        model.classifier.weight[1, 0] = 3.0
        model.classifier.bias[1] = -1.5
    generator = torch.Generator().manual_seed(0)
    bag = 0.05 * torch.rand(N_SIGNAL + N_DECOY + N_BACKGROUND, 8, generator=generator, dtype=torch.float64)
    bag[N_DECOY : N_DECOY + N_SIGNAL, 0] = 3.0  # decoys come first, so attention ties favour them
    bag[:N_DECOY, 1] = 3.0
    return model, bag


def test_curves_equal_the_model_on_reduced_bags():
    torch.manual_seed(0)
    model = CLAM_MB(embed_dim=12, n_classes=3).double().eval()
    bag = torch.randn(40, 12, dtype=torch.float64)
    scores = np.random.default_rng(1).normal(size=40)
    result = patch_flipping(model, bag, scores, target=2, seed=3)
    orders = {
        "most_relevant_first": np.argsort(-scores, kind="stable"),
        "least_relevant_first": np.argsort(scores, kind="stable"),
        "random_order": np.random.default_rng(3).permutation(40),
    }
    np.testing.assert_array_equal(result.removed, np.round(np.array(FRACTIONS) * 40).astype(int))
    with torch.no_grad():
        for name, order in orders.items():
            expected = [float(model(bag[torch.from_numpy(order[n:])]).probs[0, 2]) for n in result.removed]
            np.testing.assert_allclose(getattr(result, name), expected, rtol=1e-12, atol=1e-14)
    assert result.most_relevant_first[0] == pytest.approx(float(model(bag).probs[0, 2].detach()), abs=1e-12)
    x = np.array(FRACTIONS)
    curve = result.random_order
    assert result.auc_random == pytest.approx(np.trapezoid(curve, x) / 0.9)


def test_planted_bag_relevance_beats_random_and_attention():
    model, bag = _planted()
    assert int(model(bag).prediction) == 1
    methods = ("lrp", "occlusion", "gradient_x_input", "integrated_gradients", "attention")
    fractions = (0, 0.02, 0.05, 0.1, 0.2)
    results = {method: patch_flipping(model, bag, explain(model, bag, method), fractions=fractions)
               for method in methods}
    for method in methods[:-1]:
        result = results[method]
        # the 6 signal patches (3%) go first: by 5% removed the class-1 evidence is gone
        assert result.most_relevant_first[2] < 0.3 < result.most_relevant_first[0]
        assert result.auc_most_relevant_first < result.auc_random - 0.2
    # occlusion and IG see that the decoys speak against class 1 (they take its attention):
    # removing them first raises the probability well above the random floor
    for method in ("occlusion", "integrated_gradients"):
        assert results[method].auc_least_relevant_first > results[method].auc_random + 0.2
    # attention removes the decoys first: the probability rises before it falls
    attention = results["attention"]
    assert attention.most_relevant_first[1] > attention.most_relevant_first[0]
    assert results["lrp"].auc_most_relevant_first < attention.auc_most_relevant_first - 0.1


def test_inputs_are_checked():
    model, bag = _planted()
    scores = np.zeros(len(bag))
    with pytest.raises(InputError, match="one value per patch"):
        patch_flipping(model, bag, scores[:-1])
    with pytest.raises(InputError, match="NaN"):
        patch_flipping(model, bag, np.full(len(bag), np.nan))
    with pytest.raises(InputError, match="fractions"):
        patch_flipping(model, bag, scores, fractions=(0.5, 0.1))
    with pytest.raises(InputError, match="fractions"):
        patch_flipping(model, bag, scores, fractions=(0.0, 1.0))
    with pytest.raises(InputError, match="out of range"):
        patch_flipping(model, bag, scores, target=5)
    tiny = patch_flipping(model, bag[:2], np.array([1.0, 0.0]), fractions=(0.0, 0.9))
    np.testing.assert_array_equal(tiny.removed, [0, 1])  # one patch always stays
    assert tiny.to_dict()["removed"] == [0, 1]


def test_cli_evaluate_slides(tmp_path, capsys):
    import csv
    import json

    from attnmap.cli.main import main
    from attnmap.mil import write_h5_bag

    model, bag = _planted()
    torch.save(model.state_dict(), tmp_path / "abmil.pt")
    for slide in range(2):
        shuffled = bag[torch.randperm(len(bag), generator=torch.Generator().manual_seed(slide))]
        write_h5_bag(tmp_path / "bags" / f"slide_{slide}.h5", shuffled.numpy(), np.zeros((len(bag), 2)))
    main(["evaluate", "--mil-checkpoint", str(tmp_path / "abmil.pt"), "--bags", str(tmp_path / "bags"),
          "--methods", "lrp,attention", "--out", str(tmp_path / "out"), "--quiet"])
    printed = capsys.readouterr().out
    assert "lrp" in printed and "random order" in printed
    with open(tmp_path / "out" / "patch_flipping.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["slide_id"], row["method"]) for row in rows] == [
        ("slide_0", "lrp"), ("slide_0", "attention"), ("slide_1", "lrp"), ("slide_1", "attention")
    ]
    for row in rows:
        if row["method"] == "lrp":
            assert float(row["auc_most_relevant_first"]) < float(row["auc_random"]) - 0.1
    sidecar = json.loads((tmp_path / "out" / "patch_flipping.json").read_text())
    assert sidecar["provenance"]["method"] == "lrp,attention"
    assert len(sidecar["curves"]["slide_1"]["lrp"]["most_relevant_first"]) == len(FRACTIONS)
    for bad in (["--methods", "saliency"], []):
        with pytest.raises(SystemExit) as done:
            main(["evaluate", "--mil-checkpoint", str(tmp_path / "abmil.pt"), *bad,
                  "--out", str(tmp_path / "bad")] + (["--bags", str(tmp_path / "bags")] if bad else []))
        assert done.value.code == 2


def test_evaluate_slides_names_the_bag_the_model_does_not_take(tmp_path, capsys):
    """"features have 16 columns but the model expects ..." did not say which of the bags."""
    from attnmap.cli.main import main
    from attnmap.mil import write_h5_bag

    model, bag = _planted()
    torch.save(model.state_dict(), tmp_path / "abmil.pt")
    write_h5_bag(tmp_path / "bags" / "fits.h5", bag.numpy(), np.zeros((len(bag), 2)))
    wide = torch.cat([bag, bag], dim=1).numpy()
    write_h5_bag(tmp_path / "bags" / "wide.h5", wide, np.zeros((len(bag), 2)))
    with pytest.raises(SystemExit) as done:
        main(["evaluate", "--mil-checkpoint", str(tmp_path / "abmil.pt"), "--bags", str(tmp_path / "bags"),
              "--methods", "attention", "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert done.value.code == 2 and f"{tmp_path / 'bags' / 'wide.h5'}: features have" in err


def test_constant_scores_and_one_patch_bags_are_refused_not_scored():
    model, bag = _planted()
    with pytest.raises(InputError, match="constant"):
        patch_flipping(model, bag, np.zeros(len(bag)))  # most and least first would be one order
    with pytest.raises(InputError, match="at least 2 patches"):
        patch_flipping(model, bag[:1], np.array([1.0]))
    with pytest.raises(InputError, match="seed must be >= 0"):
        patch_flipping(model, bag, np.arange(len(bag), dtype=float), seed=-1)


def test_evaluate_bags_refuses_no_bags_repeated_methods_and_a_slide_given_twice():
    from pathlib import Path

    from attnmap.evaluate.slides import evaluate_bags
    from attnmap.mil.bags import Bag

    model, features = _planted()
    bag = Bag("s1", features, None, Path("s1.pt"))
    assert list(evaluate_bags(model, [bag], ["attention"]).results) == ["s1"]
    with pytest.raises(InputError, match="no bags"):
        evaluate_bags(model, [], ["attention"])
    with pytest.raises(InputError, match="each named once"):
        evaluate_bags(model, [bag], ["attention", "attention"])
    with pytest.raises(InputError, match="given twice") as error:
        evaluate_bags(model, [bag, Bag("s1", features, None, Path("other/s1.h5"))], ["attention"])
    assert "s1.pt" in str(error.value) and str(Path("other/s1.h5")) in str(error.value)  # both named


def test_a_one_patch_bag_is_skipped_with_its_reason_not_stopping_the_cohort(tmp_path, capsys):
    """`evaluate --methods all` stopped a whole cohort at a one-patch bag (occlusion refused it)."""
    import csv
    import json

    from attnmap.cli.main import main
    from attnmap.mil import write_h5_bag
    from attnmap.mil.explain import METHODS

    model, bag = _planted()
    torch.save(model.state_dict(), tmp_path / "abmil.pt")
    write_h5_bag(tmp_path / "bags" / "a_full.h5", bag.numpy(), np.zeros((len(bag), 2)))
    write_h5_bag(tmp_path / "bags" / "b_one.h5", bag[:1].numpy(), np.zeros((1, 2)))
    main(["evaluate", "--mil-checkpoint", str(tmp_path / "abmil.pt"), "--bags", str(tmp_path / "bags"),
          "--methods", "all", "--out", str(tmp_path / "out"), "--quiet"])
    printed = capsys.readouterr().out
    assert f"skipped b_one ({', '.join(METHODS)}): one patch: nothing to flip" in printed
    with open(tmp_path / "out" / "patch_flipping.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {row["slide_id"] for row in rows} == {"a_full"} and len(rows) == len(METHODS)
    sidecar = json.loads((tmp_path / "out" / "patch_flipping.json").read_text())
    assert set(sidecar["skipped"]["b_one"]) == set(METHODS)
    assert all(row["n_slides"] == 1 for row in sidecar["summary"])
    # a cohort with nothing to evaluate is an error naming why
    with pytest.raises(SystemExit) as done:
        main(["evaluate", "--mil-checkpoint", str(tmp_path / "abmil.pt"), "--bags",
              str(tmp_path / "bags" / "b_one.h5"), "--out", str(tmp_path / "none"), "--quiet"])
    assert done.value.code == 2
    assert "no slide could be evaluated: one patch: nothing to flip" in capsys.readouterr().err


def test_constant_scores_of_one_method_skip_that_method_only():
    """A model whose attention ignores the patches gives constant attention scores: that method has
    nothing to flip on that slide, while LRP (which follows the evidence) is still evaluated."""
    from pathlib import Path

    from attnmap.evaluate.slides import evaluate_bags
    from attnmap.mil.bags import Bag

    model, features = _planted()
    with torch.no_grad():
        model.attention.module[2].weight.zero_()  # every patch gets the same attention
    bags = [Bag("s1", features, None, Path("s1.pt"))]
    evaluation = evaluate_bags(model, bags, ["attention", "lrp"], target=1)  # class 1 holds the evidence
    assert list(evaluation.results["s1"]) == ["lrp"]
    assert evaluation.skipped == {"s1": {"attention": "constant scores: no patch ranks above another"}}


def test_evaluating_one_large_bag_shows_integrated_gradients_steps_unless_quiet(tmp_path, capsys):
    """One slide shows no slides bar; on a 50,000-patch bag integrated gradients then ran for
    minutes with nothing on the screen."""
    from cli_runner import run_cli

    from attnmap.mil import write_h5_bag

    torch.manual_seed(0)
    torch.save(ABMIL(embed_dim=4, hidden_dim=8, attention_dim=4).state_dict(), tmp_path / "abmil.pt")
    features = np.random.default_rng(0).normal(size=(2100, 4)).astype(np.float32)  # > 65536 / 32 rows
    write_h5_bag(tmp_path / "big.h5", features, np.zeros((2100, 2)))
    for extra, shown in (((), True), (("--quiet",), False)):
        code, _, err = run_cli(capsys, *extra, "evaluate", "--mil-checkpoint", tmp_path / "abmil.pt",
                               "--bags", tmp_path / "big.h5", "--methods", "integrated_gradients",
                               "--out", tmp_path / "out")
        assert code == 0, err
        assert ("integrated gradients" in err) == shown, err


def test_an_interrupted_slide_evaluation_leaves_no_earlier_table(tmp_path, capsys, monkeypatch):
    """patch_flipping.csv and its JSON were written over an earlier evaluation's one after the other:
    a stop before or between them left the earlier files (or a new CSV beside the old JSON)."""
    from attnmap.cli.main import main
    from attnmap.evaluate import slides
    from attnmap.mil import write_h5_bag

    model, bag = _planted()
    torch.save(model.state_dict(), tmp_path / "abmil.pt")
    write_h5_bag(tmp_path / "bags" / "slide_0.h5", bag.numpy(), np.zeros((len(bag), 2)))
    out = tmp_path / "out"
    out.mkdir()
    for name in ("patch_flipping.csv", "patch_flipping.json"):
        (out / name).write_text("an earlier evaluation's")

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(slides, "evaluate_bags", stop)
    with pytest.raises(SystemExit):
        main(["evaluate", "--mil-checkpoint", str(tmp_path / "abmil.pt"), "--bags", str(tmp_path / "bags"),
              "--methods", "attention", "--out", str(out), "--quiet"])
    assert sorted(path.name for path in out.iterdir()) == []
