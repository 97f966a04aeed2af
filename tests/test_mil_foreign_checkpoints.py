"""MIL checkpoints as other code saves them: bfloat16 weights, foreign key names, NaN weights."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from cli_runner import run_cli

from attnmap.errors import InputError
from attnmap.mil import ABMIL, CLAM_MB, CLAM_SB, infer_bag, load_mil, write_h5_bag

pytestmark = pytest.mark.usefixtures("single_thread")


def test_bfloat16_checkpoint_gives_every_score_in_float32(tmp_path, capsys):
    torch.manual_seed(0)
    model = CLAM_MB(embed_dim=16, n_classes=3).eval()
    torch.save({k: v.bfloat16() for k, v in model.state_dict().items()}, tmp_path / "bf16.pt")
    features = np.random.default_rng(0).normal(size=(9, 16)).astype(np.float32)
    write_h5_bag(tmp_path / "b.h5", features, np.zeros((9, 2)))
    code, _, err = run_cli(capsys, "mil", "attention", tmp_path / "bf16.pt", tmp_path / "b.h5",
                           "--out", tmp_path / "out", "--method", "all", "--no-csv")
    assert code == 0, err
    reference = infer_bag(load_mil(tmp_path / "bf16.pt").float(), features)
    with h5py.File(tmp_path / "out" / "b_attention.h5") as handle:
        assert handle["attention_raw"].dtype == np.float32
        for method in ("gradient_x_input", "integrated_gradients", "lrp", "occlusion"):
            name = f"scores_{method}"
            assert np.isfinite(handle[name][()]).all() and handle[name].shape[0] == 9
        raw = handle["attention_raw"][()]
        probabilities = handle["probabilities"][()]
    # the bfloat16 model's attention, within bfloat16 rounding of the same weights run in float32
    np.testing.assert_allclose(raw.reshape(reference.raw.T.shape), reference.raw.T, atol=0.05)
    np.testing.assert_allclose(probabilities.reshape(-1), reference.probs, atol=0.02)


def test_foreign_and_diverged_checkpoints_are_one_line(tmp_path, capsys):
    write_h5_bag(tmp_path / "b.h5", np.ones((3, 16), np.float32), np.zeros((3, 2)))
    # key names of an ABMIL written by other code: neither layout this package reads
    torch.save({"feature_extractor_part2.0.weight": torch.zeros(500, 16),
                "attention.0.weight": torch.zeros(128, 500)}, tmp_path / "foreign.pt")
    code, _, err = run_cli(capsys, "mil", "attention", tmp_path / "foreign.pt", tmp_path / "b.h5",
                           "--out", tmp_path / "out")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "not a CLAM checkpoint" in err and "attnmap ABMIL" in err and "feature_extractor_part2" in err
    torch.manual_seed(0)
    state = CLAM_MB(embed_dim=16, n_classes=3).state_dict()
    state["attention_net.0.weight"][0, 0] = float("nan")
    torch.save(state, tmp_path / "nan.pt")
    code, _, err = run_cli(capsys, "mil", "attention", tmp_path / "nan.pt", tmp_path / "b.h5",
                           "--out", tmp_path / "out")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "nan.pt has NaN or infinite weights" in err and "attention_net.0.weight" in err
    assert "b.h5" not in err  # the checkpoint is to blame, not the bag


@pytest.mark.parametrize(("option", "value", "message"), [("--branch", "3", "has 3 attention branch(es)"),
                                                          ("--target", "5", "has 3 classes")])
def test_out_of_range_options_name_the_option_not_the_bag(tmp_path, capsys, option, value, message):
    torch.manual_seed(0)
    torch.save(CLAM_MB(embed_dim=16, n_classes=3).state_dict(), tmp_path / "mb.pt")
    write_h5_bag(tmp_path / "b.h5", np.ones((3, 16), np.float32), np.zeros((3, 2)))
    code, _, err = run_cli(capsys, "mil", "attention", tmp_path / "mb.pt", tmp_path / "b.h5",
                           "--out", tmp_path / "out", option, value)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert option in err and f"mb.pt {message}" in err and "b.h5" not in err
    assert not (tmp_path / "out").exists()


def test_checkpoints_with_training_metadata_load(tmp_path):
    """Training scripts save their argparse args and numpy metrics beside the weights."""
    import argparse

    torch.manual_seed(0)
    model = CLAM_MB(embed_dim=16, n_classes=3).eval()
    torch.save({"model": model.state_dict(), "args": argparse.Namespace(lr=2e-4, model_type="clam_mb"),
                "best_auc": np.float64(0.91), "epoch": np.int64(7)}, tmp_path / "run.pt")
    loaded = load_mil(tmp_path / "run.pt")
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
    torch.save({"model": model.state_dict(), "sampler": torch.nn.Identity()}, tmp_path / "code.pt")
    with pytest.raises(InputError, match="not a weights-only torch"):  # other objects stay refused
        load_mil(tmp_path / "code.pt")


def test_clam_checkpoint_without_instance_classifiers_loads_for_inference(tmp_path):
    torch.manual_seed(0)
    features = torch.randn(6, 16)
    for cls in (CLAM_SB, CLAM_MB):  # inference-only exports drop the training-only instance heads
        model = cls(embed_dim=16, n_classes=3).eval()
        state = {k: v for k, v in model.state_dict().items() if not k.startswith("instance_classifiers")}
        torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "bag_only.pt")
        loaded = load_mil(tmp_path / "bag_only.pt")
        assert type(loaded) is cls and loaded.n_classes == 3
        np.testing.assert_allclose(infer_bag(loaded, features).raw, infer_bag(model, features).raw, atol=1e-6)
        torch.testing.assert_close(loaded(features).logits, model(features).logits)
        with pytest.raises(InputError, match="no instance classifiers"):
            loaded(features, label=1, instance_eval=True)


def test_abmil_checkpoint_with_clam_loss_keys_loads(tmp_path):
    torch.manual_seed(0)
    model = ABMIL(embed_dim=16, hidden_dim=32, attention_dim=8, n_classes=3, gate=False, dropout=0.25).eval()
    state = {**model.state_dict(), "instance_loss_fn.weight": torch.ones(2)}
    torch.save(state, tmp_path / "abmil.pt")
    features = torch.randn(5, 16)
    torch.testing.assert_close(load_mil(tmp_path / "abmil.pt")(features).logits, model(features).logits)


def test_a_torchscript_mil_model_is_refused_with_advice_that_works(tmp_path, capsys):
    """A scripted CLAM (torch.jit.save) cannot be read as weights; the advice must be one the MIL
    commands can follow: they take no ``torchscript:`` name, only a state_dict."""
    torch.manual_seed(0)
    scripted = tmp_path / "clam_scripted.pt"
    torch.jit.trace(torch.nn.Linear(16, 2).eval(), torch.zeros(1, 16)).save(str(scripted))
    write_h5_bag(tmp_path / "b.h5", np.ones((3, 16), np.float32), np.zeros((3, 2)))
    code, _, err = run_cli(capsys, "mil", "attention", scripted, tmp_path / "b.h5", "--out", tmp_path / "out")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "TorchScript" in err and "torchscript:" not in err and "state_dict()" in err
    with pytest.raises(InputError, match="TorchScript") as refused:
        load_mil(scripted)
    assert "torchscript:" not in str(refused.value)
