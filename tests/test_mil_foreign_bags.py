"""Feature bags written by other tools (CLAM, TRIDENT layouts) through `wsi heatmap --features`
and `mil attention`: what they record is used, and what is wrong with them is one line."""

from __future__ import annotations

import pickle
import re

import h5py
import numpy as np
import pytest
import torch
from cli_runner import run_cli
from synthetic_slide_files import write_test_slide

from attnmap.errors import InputError
from attnmap.mil import CLAM_SB, load_mil, read_bag
from attnmap.wsi.pipeline.stage_files import features_patch_size

pytestmark = pytest.mark.usefixtures("single_thread")

GRID = np.stack(np.meshgrid(np.arange(4) * 256, np.arange(3) * 256), -1).reshape(-1, 2)


def _h5(path, features, coords=None, coord_attrs=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as handle:
        if features is not None:
            handle["features"] = features
        if coords is not None:
            handle["coords"] = coords
            handle["coords"].attrs.update(coord_attrs or {})
    return path


@pytest.fixture(scope="module")
def slide_and_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("foreign")
    torch.manual_seed(0)
    torch.save(CLAM_SB(embed_dim=16, n_classes=2).state_dict(), root / "clam.pt")
    return write_test_slide(root / "s.tif", 0, size=(1024, 768)), root / "clam.pt"


def test_patch_size_is_read_from_trident_and_clam_coords_attributes(tmp_path):
    features = np.zeros((12, 16), np.float32)
    downsamples = (1.0, 4.0)
    trident = {"patch_size": 224, "patch_size_level0": 448, "target_magnification": 20}
    assert features_patch_size(_h5(tmp_path / "t.h5", features, GRID, trident), downsamples) == 448
    clam = {"patch_size": 256, "patch_level": 1}
    assert features_patch_size(_h5(tmp_path / "c.h5", features, GRID, clam), downsamples) == 1024
    # a patch size without its level (TRIDENT's is at the target magnification) tells nothing
    unsized = _h5(tmp_path / "n.h5", features, GRID, {"patch_size": 224})
    assert features_patch_size(unsized, downsamples) is None


def test_heatmap_of_trident_features_needs_no_patch_size(tmp_path, capsys, slide_and_model):
    slide, model = slide_and_model
    features = np.random.default_rng(0).normal(size=(12, 16)).astype(np.float16)  # half precision
    bag = _h5(tmp_path / "t.h5", features, GRID, {"patch_size_level0": 256, "patch_size": 256})
    code, out, err = run_cli(capsys, "wsi", "heatmap", slide, "--features", bag, "--model", model,
                             "--out", tmp_path / "out")
    assert code == 0, err
    assert (tmp_path / "out" / "s_heatmap.png").is_file()
    code, _, err = run_cli(capsys, "wsi", "heatmap", slide, "--features", bag, "--model", model,
                           "--out", tmp_path / "out", "--patch-size", "512")
    assert code == 2 and "disagrees with the 256-px" in err


@pytest.mark.parametrize(
    ("name", "features", "coords", "message"),
    [
        ("junk", "junk", None, "not a readable h5 file"),
        ("nocoords", np.ones((12, 16), np.float32), None, "no 'coords' dataset"),
        ("short", np.ones((12, 16), np.float32), GRID[:5], r"coords have shape \(5, 2\), expected \(12, 2\)"),
        ("empty", np.ones((0, 16), np.float32), np.zeros((0, 2), int), "empty"),
        ("nan", np.full((12, 16), np.nan, np.float32), GRID, "NaN or infinite"),
        ("ints", np.ones((12, 16), np.int32), GRID, "floating point"),
        ("width", np.ones((12, 8), np.float32), GRID, "8 columns but the model expects 16"),
    ],
)
def test_heatmap_of_a_bad_features_file_is_one_line(tmp_path, capsys, slide_and_model, name, features,
                                                    coords, message):
    slide, model = slide_and_model
    path = tmp_path / f"{name}.h5"
    if isinstance(features, str):
        path.write_text(features)
    else:
        _h5(path, features, coords)
    code, _, err = run_cli(capsys, "wsi", "heatmap", slide, "--features", path, "--model", model,
                           "--out", tmp_path / "out", "--patch-size", "256")
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0]
    assert re.search(message, lines[0])
    assert not (tmp_path / "out" / "s_heatmap.png").exists()


def test_h5_groups_in_place_of_datasets_are_named(tmp_path):
    with h5py.File(tmp_path / "g.h5", "w") as handle:
        handle.create_group("features")
    with pytest.raises(InputError, match="'features' is an h5 group"):
        read_bag(tmp_path / "g.h5")
    with h5py.File(tmp_path / "c.h5", "w") as handle:
        handle["features"] = np.ones((3, 4), np.float32)
        handle.create_group("coords")
    with pytest.raises(InputError, match="'coords' is an h5 group"):
        read_bag(tmp_path / "c.h5")


def test_float_coords_are_rounded_and_non_finite_ones_refused(tmp_path):
    features = np.ones((3, 4), np.float32)
    coords = np.array([[0.0, 0.0], [255.9999, 0.2], [511.6, 256.0]])
    bag = read_bag(_h5(tmp_path / "f.h5", features, coords))
    np.testing.assert_array_equal(bag.coords, [[0, 0], [256, 0], [512, 256]])
    coords[1, 0] = np.nan
    with pytest.raises(InputError, match="coords contain NaN or infinite"):
        read_bag(_h5(tmp_path / "n.h5", features, coords))


def test_heatmap_of_a_pt_bag_with_coords(tmp_path, capsys, slide_and_model):
    slide, model = slide_and_model
    bag = tmp_path / "bag.pt"
    torch.save({"features": torch.randn(12, 16), "coords": torch.from_numpy(GRID)}, bag)
    code, _, err = run_cli(capsys, "wsi", "heatmap", slide, "--features", bag, "--model", model,
                           "--out", tmp_path / "out", "--patch-size", "256")
    assert code == 0, err
    assert (tmp_path / "out" / "s_heatmap.png").is_file()
    code, _, err = run_cli(capsys, "wsi", "heatmap", slide, "--features", bag, "--model", model,
                           "--out", tmp_path / "out")
    assert code == 2 and "bag.pt does not record the patch size" in err


def test_slide_ids_with_a_slide_extension_find_their_bag(tmp_path):
    from attnmap.mil import find_bag

    _h5(tmp_path / "h5_files" / "TCGA-01.h5", np.ones((2, 4), np.float32), np.zeros((2, 2)))
    for slide_id in ("TCGA-01", "TCGA-01.svs", "TCGA-01.NDPI"):
        assert find_bag(tmp_path, slide_id) == tmp_path / "h5_files" / "TCGA-01.h5"
    with pytest.raises(InputError, match="no feature bag for slide 'TCGA-01.txt'"):
        find_bag(tmp_path, "TCGA-01.txt")  # not a slide file name: not guessed at


def test_slide_ids_written_as_their_bag_file_find_it(tmp_path):
    """A labels CSV made from the feature folder's listing ('TCGA-01.h5') found no bag, where
    'TCGA-01.svs' did."""
    from attnmap.mil import find_bag

    _h5(tmp_path / "h5_files" / "TCGA-01.h5", np.ones((2, 4), np.float32), np.zeros((2, 2)))
    torch.save(torch.ones(2, 4), tmp_path / "TCGA-02.pt")
    for slide_id, bag in (("TCGA-01.h5", "h5_files/TCGA-01.h5"), ("TCGA-01.pt", "h5_files/TCGA-01.h5"),
                          ("TCGA-02.PT", "TCGA-02.pt")):
        assert find_bag(tmp_path, slide_id) == tmp_path / bag


def test_a_one_patch_bag_gets_every_score_but_occlusion(tmp_path, capsys):
    import csv

    torch.manual_seed(0)
    torch.save(CLAM_SB(embed_dim=16, n_classes=2).state_dict(), tmp_path / "m.pt")
    _h5(tmp_path / "one.h5", np.ones((1, 16), np.float32), np.zeros((1, 2)))
    code, out, err = run_cli(capsys, "mil", "attention", tmp_path / "m.pt", tmp_path / "one.h5",
                             "--out", tmp_path / "out", "--method", "all")
    assert code == 0, err
    assert "1 patch, so no occlusion scores" in err
    with open(tmp_path / "out" / "one_attention.csv", newline="") as handle:
        row = next(csv.DictReader(handle))
    assert "score_occlusion" not in row and float(row["attention_softmax"]) == 1.0
    for method in ("gradient_x_input", "integrated_gradients", "lrp"):
        assert np.isfinite(float(row[f"score_{method}"]))
    code, _, err = run_cli(capsys, "mil", "attention", tmp_path / "m.pt", tmp_path / "one.h5",
                           "--out", tmp_path / "out2", "--method", "occlusion")
    assert code == 2 and "occlusion needs at least 2 patches" in err  # asked for by name: refused


def test_unreadable_pt_bags_are_one_line_and_say_why(tmp_path, capsys):
    torch.save(np.ones((3, 4), np.float32), tmp_path / "numpy.pt")  # torch.save of a numpy array
    with pytest.raises(InputError, match=r"pickled Python objects \(numpy.*not only tensors") as caught:
        read_bag(tmp_path / "numpy.pt")
    assert "\n" not in str(caught.value)
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(InputError, match="not a readable torch file") as caught:
        read_bag(tmp_path / "junk.pt")
    assert "\n" not in str(caught.value)
    (tmp_path / "folder.h5").mkdir()
    with pytest.raises(IsADirectoryError, match="folder"):
        read_bag(tmp_path / "folder.h5")
    torch.manual_seed(0)
    torch.save(CLAM_SB(embed_dim=4).state_dict(), tmp_path / "model.pt")
    code, _, err = run_cli(capsys, "mil", "attention", tmp_path / "model.pt", tmp_path / "numpy.pt",
                           "--out", tmp_path / "out")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "numpy.pt" in err


def test_a_batch_of_one_is_unwrapped_for_features_and_coords_alike(tmp_path):
    features = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    coords = np.arange(10).reshape(5, 2) * 256
    with h5py.File(tmp_path / "batched.h5", "w") as handle:  # as extractors that keep a batch axis write
        handle["features"] = features[None]
        handle["coords"] = coords[None]
    bag = read_bag(tmp_path / "batched.h5")
    np.testing.assert_array_equal(bag.features.numpy(), features)
    np.testing.assert_array_equal(bag.coords, coords)
    with h5py.File(tmp_path / "two.h5", "w") as handle:  # two rows of coords per patch are still refused
        handle["features"] = features
        handle["coords"] = np.stack([coords, coords])
    with pytest.raises(InputError, match="coords have shape"):
        read_bag(tmp_path / "two.h5")


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"", "the file is empty"),
        (b"hello\n", "neither torch.save's zip archive nor its legacy format"),
        (bytes(range(203, 256)) * 40, "neither torch.save's zip archive nor its legacy format"),
        (pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)[:-1], "the file ends early"),
    ],
)
def test_a_file_that_is_no_torch_file_says_so_not_an_unpickler_number(tmp_path, content, why):
    """A junk .pt bag or checkpoint said 'not a readable torch file (101)': 101 is the unpickler's
    key for the byte 'e' of 'hello', meaningless to a user."""
    path = tmp_path / "junk.pt"
    path.write_bytes(content)
    with pytest.raises(InputError) as caught:
        read_bag(path)
    assert str(caught.value).startswith(f"{path}: not a readable torch file ({why}")
    with pytest.raises(InputError) as caught:
        load_mil(path)
    assert f"{path}: " in str(caught.value) and why in str(caught.value)


def test_a_checkpoint_in_the_bag_folder_is_named_as_model_weights_in_one_short_line(tmp_path, capsys):
    """A checkpoint kept beside h5_files/ is read as a flat-layout bag; the message listed every
    weight name (hundreds for a real model) and did not say what the file was."""
    from attnmap.mil import write_h5_bag

    write_h5_bag(tmp_path / "features" / "h5_files" / "a.h5", np.ones((3, 4), np.float32), np.zeros((3, 2)))
    torch.manual_seed(0)
    torch.save(CLAM_SB(embed_dim=4).state_dict(), tmp_path / "features" / "s_0_checkpoint.pt")
    torch.save(CLAM_SB(embed_dim=4).state_dict(), tmp_path / "model.pt")
    code, _, err = run_cli(capsys, "--quiet", "mil", "attention", tmp_path / "model.pt",
                           tmp_path / "features", "--out", tmp_path / "out")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "s_0_checkpoint.pt: dict without a 'features' entry" in err
    assert "a model's weights (a state_dict), not a feature bag" in err
    assert len(err) < 400, err


def test_hidden_files_in_a_bag_folder_are_not_bags(tmp_path, capsys):
    """A Mac copying features to an exFAT or network drive writes ._<slide>.h5 (AppleDouble) beside
    every bag; a folder of bags then stopped at "._a.h5: not a readable h5 file"."""
    from attnmap.mil import list_bags, write_h5_bag

    bags = tmp_path / "features" / "h5_files"
    write_h5_bag(bags / "a.h5", np.ones((3, 4), np.float32), np.zeros((3, 2)))
    (bags / "._a.h5").write_bytes(b"\x00\x05\x16\x07" + bytes(60))  # AppleDouble header
    (tmp_path / "features" / ".b.attnmap-tmp-1.pt").write_bytes(b"")  # a temporary left by a kill
    assert list_bags(tmp_path / "features") == [bags / "a.h5"]
    torch.manual_seed(0)
    torch.save(CLAM_SB(embed_dim=4).state_dict(), tmp_path / "model.pt")
    code, _, err = run_cli(capsys, "--quiet", "mil", "attention", tmp_path / "model.pt",
                           tmp_path / "features", "--out", tmp_path / "out")
    assert code == 0, err


@pytest.mark.parametrize("last", ["odd-sized", "empty"])
def test_a_bag_that_cannot_be_scored_stops_the_run_before_any_bag_is_written(tmp_path, capsys, last):
    """An empty or odd-sized bag last in a long list stopped `mil attention` only when reached,
    after every bag before it was computed (hours with --method all) and written beside no
    predictions.csv."""
    torch.manual_seed(0)
    torch.save(CLAM_SB(embed_dim=16, n_classes=2).state_dict(), tmp_path / "m.pt")
    _h5(tmp_path / "bags" / "a.h5", np.ones((3, 16), np.float32), np.zeros((3, 2)))
    torch.save(torch.ones(3, 16), tmp_path / "bags" / "b.pt")
    torch.save(torch.ones(3, 8) if last == "odd-sized" else torch.ones(0, 16), tmp_path / "bags" / "z.pt")
    code, _, err = run_cli(capsys, "mil", "attention", tmp_path / "m.pt", tmp_path / "bags",
                           "--out", tmp_path / "out")
    problem = {"odd-sized": "features have 8 columns but the model expects 16",
               "empty": "the bag is empty"}[last]
    assert code == 2 and err.strip().startswith(f"attnmap: error: {tmp_path / 'bags' / 'z.pt'}: {problem}")
    assert not (tmp_path / "out").exists()
