"""Reading feature bags (h5 / .pt, CLAM layout) and exporting per-patch attention."""

from __future__ import annotations

import csv
import json
import re

import h5py
import numpy as np
import pytest
import torch

from attnmap.errors import InputError
from attnmap.mil import (
    CLAM_MB,
    CLAM_SB,
    attention_scores,
    export_attention,
    find_bag,
    list_bags,
    read_bag,
    write_h5_bag,
)
from attnmap.render import normalize

pytestmark = pytest.mark.usefixtures("single_thread")


def _features(n=30, d=16, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def test_reads_h5_and_pt_in_clam_layout(tmp_path):
    features, coords = _features(), np.arange(60).reshape(30, 2) * 256
    write_h5_bag(tmp_path / "h5_files" / "a.h5", features, coords)
    (tmp_path / "pt_files").mkdir()
    torch.save(torch.from_numpy(features), tmp_path / "pt_files" / "b.pt")
    torch.save(
        {"features": torch.from_numpy(features), "coords": torch.from_numpy(coords)}, tmp_path / "c.pt"
    )
    assert [p.name for p in list_bags(tmp_path)] == ["a.h5", "b.pt", "c.pt"]
    bag = read_bag(find_bag(tmp_path, "a"))
    assert bag.slide_id == "a" and bag.n_patches == 30 and bag.features.dtype == torch.float32
    np.testing.assert_array_equal(bag.features.numpy(), features)
    np.testing.assert_array_equal(bag.coords, coords)
    assert read_bag(find_bag(tmp_path, "b")).coords is None
    np.testing.assert_array_equal(read_bag(find_bag(tmp_path, "c")).coords, coords)
    with pytest.raises(InputError, match="no feature bag for slide 'zz'"):
        find_bag(tmp_path, "zz")


def test_bad_bags_raise_clear_errors(tmp_path):
    with h5py.File(tmp_path / "nofeat.h5", "w") as handle:
        handle.create_dataset("coords", data=np.zeros((3, 2)))
    with pytest.raises(InputError, match="no 'features' dataset"):
        read_bag(tmp_path / "nofeat.h5")
    write_h5_bag(tmp_path / "empty.h5", np.zeros((0, 16)))
    with pytest.raises(InputError, match="empty"):
        read_bag(tmp_path / "empty.h5")
    bad = _features()
    bad[2, 3] = np.inf
    write_h5_bag(tmp_path / "inf.h5", bad)
    with pytest.raises(InputError, match="NaN or infinite"):
        read_bag(tmp_path / "inf.h5")
    write_h5_bag(tmp_path / "coords.h5", _features(), np.zeros((5, 2)))
    with pytest.raises(InputError, match="coords have shape"):
        read_bag(tmp_path / "coords.h5")
    (tmp_path / "junk.h5").write_text("junk")
    with pytest.raises(InputError, match="not a readable h5"):
        read_bag(tmp_path / "junk.h5")
    torch.save({"x": torch.zeros(2)}, tmp_path / "dict.pt")
    with pytest.raises(InputError, match="'features'"):
        read_bag(tmp_path / "dict.pt")
    with pytest.raises(FileNotFoundError):
        read_bag(tmp_path / "missing.h5")


def test_export_writes_scores_per_branch_and_provenance(tmp_path):
    torch.manual_seed(0)
    model = CLAM_MB(embed_dim=16, n_classes=3).eval()
    features, coords = _features(40), np.arange(80).reshape(40, 2)
    write_h5_bag(tmp_path / "bags" / "s1.h5", features, coords)
    exported = export_attention(model, read_bag(tmp_path / "bags" / "s1.h5"), tmp_path / "out", chunk_size=7)
    out = model(torch.from_numpy(features))
    predicted = int(out.prediction)
    assert exported.branch == predicted
    with h5py.File(exported.h5_path) as handle:
        np.testing.assert_array_equal(handle["coords"][()], coords)
        raw = handle["attention_raw"][()]
        np.testing.assert_allclose(raw.T, out.attention.detach().numpy(), rtol=1e-5, atol=1e-6)
        for branch in range(3):
            np.testing.assert_allclose(
                handle["attention_percentile"][:, branch], normalize(raw[:, branch], "percentile")
            )
        np.testing.assert_allclose(handle["attention_softmax"][()].sum(axis=0), 1.0, rtol=1e-5)
        np.testing.assert_array_equal(handle["attention_scores"][:, 0], raw[:, predicted])
        np.testing.assert_allclose(handle["probabilities"][()], out.probs.detach().numpy()[0], rtol=1e-5)
        assert int(handle.attrs["prediction"]) == predicted and handle.attrs["slide_id"] == "s1"
        assert handle.attrs["method"] == "mil-attention"
    with open(exported.csv_path) as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 40 and {"x", "y", "attention_percentile", "raw_branch2"} <= set(rows[0])
    assert float(rows[5]["attention_raw"]) == pytest.approx(float(raw[5, predicted]), rel=1e-6)
    assert json.loads(exported.csv_path.with_suffix(".json").read_text())["branch"] == str(predicted)
    chosen = export_attention(model, torch.from_numpy(features), tmp_path / "out2", slide_id="t", branch=0)
    assert chosen.branch == 0 and chosen.csv_path.name == "t_attention.csv"
    with pytest.raises(InputError, match="slide_id"):
        export_attention(model, torch.from_numpy(features), tmp_path / "out3")


def test_attention_scores_accepts_numpy_and_keeps_training_flag():
    torch.manual_seed(0)
    model = CLAM_SB(embed_dim=16, dropout=0.25).train()
    features = _features()
    scores = attention_scores(model, features, kind="softmax")
    assert model.training and scores.shape == (30,) and scores.sum() == pytest.approx(1.0, rel=1e-5)


@pytest.mark.parametrize("slide_id", ["../escape", "sub/s", ".", ".."])
def test_export_refuses_a_slide_id_that_is_a_path(tmp_path, slide_id):
    torch.manual_seed(0)
    model = CLAM_SB(embed_dim=8).eval()
    out = tmp_path / "out"
    with pytest.raises(InputError, match="cannot hold a path"):
        export_attention(model, torch.randn(4, 8), out, slide_id=slide_id)
    assert not any(tmp_path.rglob("*_attention.*"))  # nothing written, inside out or beside it


def test_export_into_a_file_is_an_input_error(tmp_path):
    (tmp_path / "taken").write_text("x")
    model, bag = CLAM_SB(embed_dim=8).eval(), torch.randn(4, 8)
    with pytest.raises(InputError, match="existing file"):
        export_attention(model, bag, tmp_path / "taken", slide_id="s")
    exported = export_attention(model, bag, tmp_path / "out", slide_id="schnitt_ä")
    assert exported.h5_path == tmp_path / "out" / "schnitt_ä_attention.h5" and exported.h5_path.exists()


@pytest.mark.parametrize("as_tensor", [False, True])
def test_write_refuses_values_beyond_float32(tmp_path, as_tensor):
    # a finite float64 value beyond float32's range was written as inf (one numpy warning), and the
    # reader then refused the bag: the bag format stores float32, so the writer refuses it instead
    features = _features().astype(np.float64)
    largest = float(np.finfo(np.float32).max) * 4
    features[1, 2] = -largest
    data = torch.from_numpy(features) if as_tensor else features
    with pytest.raises(InputError, match=re.escape(f"{largest:.3g}") + ".*float32") as caught:
        write_h5_bag(tmp_path / "big.h5", data)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "big.h5").exists()


def test_reading_a_pt_bag_beyond_float32_names_the_value_not_nan(tmp_path):
    # finite float64 values beyond float32 were reported as "NaN or infinite values" after the cast
    features = torch.from_numpy(_features().astype(np.float64))
    largest = float(np.finfo(np.float32).max) * 8
    features[0, 0] = largest
    torch.save(features, tmp_path / "big.pt")
    with pytest.raises(InputError, match=re.escape(f"{largest:.3g}") + ".*float32"):
        read_bag(tmp_path / "big.pt")


def test_two_listed_slides_finding_one_bag_are_refused(tmp_path):
    """'a' and 'a.svs' in a labels CSV both found a.h5: one bag trained (and maybe tested) twice."""
    from attnmap.mil.bags import find_bags

    write_h5_bag(tmp_path / "h5_files" / "a.h5", np.ones((3, 4), np.float32), np.zeros((3, 2)))
    write_h5_bag(tmp_path / "h5_files" / "b.h5", np.ones((3, 4), np.float32), np.zeros((3, 2)))
    assert list(find_bags(tmp_path, ["a.svs", "b"])) == ["a.svs", "b"]
    with pytest.raises(InputError, match=r"slides 'a' and 'a\.svs' both find the bag .*a\.h5"):
        find_bags(tmp_path, ["a", "b", "a.svs"])
