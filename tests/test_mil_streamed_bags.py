"""`mil attention` on h5 bags read chunk by chunk (`attnmap.mil.bag_stream.open_bag`): the same
numbers as the whole bag in memory, never more than a chunk of features read at once."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from cli_runner import run_cli

from attnmap.errors import InputError
from attnmap.mil import CLAM_MB, explain, read_bag, write_h5_bag
from attnmap.mil.bag_stream import H5FeatureRows, open_bag
from attnmap.mil.export import export_attention
from attnmap.wsi.patch_geometry import PatchGeometry, write_geometry

pytestmark = pytest.mark.usefixtures("single_thread")

N_PATCHES, DIM, CHUNK = 1000, 16, 64  # 16 chunks


@pytest.fixture
def model_and_bag(tmp_path):
    torch.manual_seed(0)
    model = CLAM_MB(embed_dim=DIM, n_classes=3).eval()
    torch.save(model.state_dict(), tmp_path / "mb.pt")
    rng = np.random.default_rng(0)
    features = rng.normal(size=(N_PATCHES, DIM)).astype(np.float32)
    coords = rng.integers(0, 10**6, size=(N_PATCHES, 2))
    bag = write_h5_bag(tmp_path / "big.h5", features, coords)
    return model, features, coords, bag


def _spy_reads(monkeypatch) -> list[int]:
    """Rows per read of the streamed features; a whole-bag read of the h5 fails the test."""
    reads: list[int] = []
    original = H5FeatureRows.__getitem__

    def counted(self, rows):
        chunk = original(self, rows)
        reads.append(chunk.shape[0])
        return chunk

    def whole_read(path):
        raise AssertionError(f"{path} was read whole")

    monkeypatch.setattr(H5FeatureRows, "__getitem__", counted)
    monkeypatch.setattr("attnmap.mil.bags._read_h5", whole_read)
    return reads


def test_streamed_attention_equals_the_whole_bag_forward(tmp_path, capsys, monkeypatch, model_and_bag):
    model, features, coords, bag = model_and_bag
    reads = _spy_reads(monkeypatch)
    code, _, err = run_cli(capsys, "mil", "attention", tmp_path / "mb.pt", bag, "-o", tmp_path / "out",
                           "--chunk-size", CHUNK, "--method", "all", "--quiet")
    assert code == 0, err
    assert reads and max(reads) <= CHUNK and sum(reads) >= N_PATCHES  # several passes, chunk by chunk
    monkeypatch.undo()

    whole = torch.from_numpy(features)
    with torch.no_grad():
        forward = model(whole)
    raw = forward.attention.numpy()  # (K, N), the whole bag at once
    predicted = int(forward.prediction)
    with h5py.File(tmp_path / "out" / "big_attention.h5") as handle:
        np.testing.assert_array_equal(handle["coords"][()], coords)
        np.testing.assert_allclose(handle["attention_raw"][()].T, raw, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(handle["attention_softmax"][()].T, torch.softmax(forward.attention, 1),
                                   rtol=1e-5, atol=1e-9)
        np.testing.assert_allclose(handle["probabilities"][()], forward.probs[0], rtol=1e-5)
        np.testing.assert_allclose(handle["logits"][()], forward.logits[0], rtol=1e-5, atol=1e-6)
        assert int(handle.attrs["prediction"]) == predicted and int(handle.attrs["n_patches"]) == N_PATCHES
        for method in ("gradient_x_input", "lrp", "occlusion", "integrated_gradients"):
            expected = explain(model, whole, method, target=predicted, chunk_size=N_PATCHES)
            np.testing.assert_allclose(handle[f"scores_{method}"][()], expected, rtol=1e-4,
                                       atol=1e-6 * np.abs(expected).max(), err_msg=method)


def test_streamed_rows_are_the_rows_read_whole(tmp_path, model_and_bag):
    """Same chunks, same arithmetic: the file read chunk by chunk gives the very same numbers."""
    model, _, _, bag = model_and_bag
    whole = export_attention(model, read_bag(bag), tmp_path / "whole", chunk_size=CHUNK, methods=("lrp",))
    with open_bag(bag) as streamed_bag:
        assert isinstance(streamed_bag.features, H5FeatureRows) and streamed_bag.n_patches == N_PATCHES
        streamed = export_attention(model, streamed_bag, tmp_path / "streamed", chunk_size=CHUNK,
                                    methods=("lrp",))
    with h5py.File(bag, "a") as handle:  # the patches' size and level, as `wsi features` records them
        write_geometry(handle["coords"], PatchGeometry(size=256, level=1, downsample=4.0))
    with open_bag(bag) as streamed_bag:
        assert streamed_bag.geometry == read_bag(bag).geometry == PatchGeometry(256, 1, 4.0)
    np.testing.assert_array_equal(streamed.result.raw, whole.result.raw)
    np.testing.assert_array_equal(streamed.result.probs, whole.result.probs)
    np.testing.assert_array_equal(streamed.relevance["lrp"], whole.relevance["lrp"])
    assert (tmp_path / "streamed" / "big_attention.csv").read_text().splitlines()[1:] == (
        tmp_path / "whole" / "big_attention.csv").read_text().splitlines()[1:]


def test_a_bad_chunk_is_named_by_its_rows_and_nothing_is_written(tmp_path, capsys, model_and_bag):
    _, features, coords, _ = model_and_bag
    features = features.copy()
    features[700, 3] = np.nan  # in the 11th chunk of 64
    bag = write_h5_bag(tmp_path / "bad.h5", features, coords)
    code, _, err = run_cli(capsys, "mil", "attention", tmp_path / "mb.pt", bag, "-o", tmp_path / "out",
                           "--chunk-size", CHUNK, "--quiet")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"{bag}: features contain NaN or infinite values (in rows 640 to 703)" in err
    assert err.count(str(bag)) == 1  # named once, not once by the reader and again by the command
    assert not (tmp_path / "out" / "bad_attention.h5").exists()


def test_streamed_bags_keep_read_bags_checks(tmp_path):
    features = np.random.default_rng(1).normal(size=(6, 4)).astype(np.float32)
    with h5py.File(tmp_path / "batched.h5", "w") as handle:  # a batch axis of one, as some extractors write
        handle["features"] = features[None]
        handle["coords"] = np.arange(12).reshape(1, 6, 2)
    with open_bag(tmp_path / "batched.h5") as bag:
        assert bag.features.shape == (6, 4) and bag.coords.shape == (6, 2)
        np.testing.assert_array_equal(bag.features[2:5].numpy(), features[2:5])
        with pytest.raises(TypeError, match="consecutive rows"):
            bag.features[::2]
    with h5py.File(tmp_path / "ints.h5", "w") as handle:
        handle["features"] = np.ones((3, 4), np.int32)
    write_h5_bag(tmp_path / "coords.h5", features, np.zeros((5, 2)))
    write_h5_bag(tmp_path / "empty.h5", np.zeros((0, 4)))
    (tmp_path / "junk.h5").write_text("junk")
    for name, message in (("ints", "floating point"), ("coords", "coords have shape"), ("empty", "empty"),
                          ("junk", "not a readable h5")):
        with pytest.raises(InputError, match=message), open_bag(tmp_path / f"{name}.h5"):
            pass


def test_a_bar_over_chunks_unless_quiet(tmp_path, capsys, model_and_bag):
    _, _, _, bag = model_and_bag
    for extra, shown in (((), True), (("--quiet",), False)):
        code, _, err = run_cli(capsys, *extra, "mil", "attention", tmp_path / "mb.pt", bag, "-o",
                               tmp_path / "out", "--chunk-size", CHUNK)
        assert code == 0, err
        assert ("chunks" in err) == shown, err


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_default_attention_reads_the_bag_once_and_equals_explain(tmp_path, capsys, monkeypatch, model_and_bag,
                                                                  dtype):
    """`mil attention` with its default method: the attention scores come from the attention pass,
    so an h5 bag is read once (before, `explain` read it again for the same numbers); every branch
    and explained class gives exactly `explain`'s scores."""
    model, features, _, bag = model_and_bag
    model = model.to(dtype)
    torch.save(model.state_dict(), tmp_path / "mb.pt")
    reads = _spy_reads(monkeypatch)
    code, _, err = run_cli(capsys, "mil", "attention", tmp_path / "mb.pt", bag, "-o", tmp_path / "out",
                           "--chunk-size", CHUNK, "--quiet")
    assert code == 0, err
    assert sum(reads) == N_PATCHES and max(reads) <= CHUNK
    monkeypatch.undo()
    bag_features = torch.from_numpy(features).to(dtype)
    for target in range(3):
        with open_bag(bag) as opened:
            export = export_attention(model, opened, tmp_path / f"t{target}", methods=("attention",),
                                      target=target, chunk_size=CHUNK)
        with h5py.File(export.h5_path) as handle:
            stored = handle["scores_attention"][:]
        expected = explain(model, bag_features, "attention", target=target, chunk_size=CHUNK)
        np.testing.assert_array_equal(stored, expected.astype(np.float32))


def test_the_patch_csv_is_written_a_block_of_rows_at_a_time(tmp_path, monkeypatch, model_and_bag):
    """The CSV was formatted a row at a time from numpy scalars: a 10^6-patch bag's CSV took two
    minutes, longer than its attention pass. Rows now go out in blocks, with the same text: each
    row is the h5's values for that patch, formatted as the column's documented %.8g."""
    import csv

    import attnmap.mil.export as export

    model, _, coords, bag = model_and_bag
    monkeypatch.setattr(export, "_CSV_BLOCK", 300, raising=False)  # blocks of 300, 300, 300 and 100 rows
    calls = {"writerow": 0, "writerows": 0}
    real_writer = csv.writer

    class Counted:
        def __init__(self, handle):
            self.writer = real_writer(handle)

        def writerow(self, row):
            calls["writerow"] += 1
            return self.writer.writerow(row)

        def writerows(self, rows):
            calls["writerows"] += 1
            return self.writer.writerows(rows)

    monkeypatch.setattr(export.csv, "writer", Counted)
    with open_bag(bag) as opened:
        export_attention(model, opened, tmp_path / "out", methods=("lrp",), chunk_size=CHUNK)
    assert calls["writerow"] == 1 and calls["writerows"] == -(-N_PATCHES // 300)  # the header, 4 blocks
    with h5py.File(tmp_path / "out" / "big_attention.h5") as handle:
        branch = int(handle.attrs["branch"])
        raw = handle["attention_raw"][()]
        columns = [raw[:, branch], handle["attention_softmax"][:, branch],
                   handle["attention_percentile"][:, branch], *raw.T, handle["scores_lrp"][()]]
    with open(tmp_path / "out" / "big_attention.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0][:2] == ["x", "y"] and rows[0][-1] == "score_lrp" and len(rows) == N_PATCHES + 1
    for i, row in enumerate(rows[1:]):
        assert row == [str(coords[i, 0]), str(coords[i, 1]), *(f"{float(c[i]):.8g}" for c in columns)]


def test_coords_given_to_export_follow_the_bag_readers_rule(tmp_path):
    """Float coordinates given to export_attention were truncated in the h5 (255.9999 -> 255, where
    a bag's own are rounded to 256) and written as floats in the CSV: two positions per patch."""
    import csv

    from attnmap.mil.bags import checked_coords

    torch.manual_seed(0)
    model = CLAM_MB(embed_dim=DIM, n_classes=3).eval()
    given = np.array([[255.9999, 511.6], [0.2, 767.5], [1e3, 2e3]])
    expected = checked_coords("given", given, 3)  # as a bag holding these coords reads them
    export_attention(model, torch.randn(3, DIM), tmp_path, coords=given, slide_id="s")
    with h5py.File(tmp_path / "s_attention.h5") as handle:
        np.testing.assert_array_equal(handle["coords"][()], expected)
    with open(tmp_path / "s_attention.csv", newline="") as handle:
        written = [[int(row["x"]), int(row["y"])] for row in csv.DictReader(handle)]
    assert written == expected.tolist() and expected[0].tolist() == [256, 512]
    with pytest.raises(InputError, match=r"slide 's': coords have shape \(2, 2\), expected \(3, 2\)"):
        export_attention(model, torch.randn(3, DIM), tmp_path, coords=given[:2], slide_id="s")
