"""`mil train` folds keyed on labels and features, damaged fold files redone; `mil attention` names."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_runner import run_cli as cli
from test_mil_train import make_cohort

from attnmap.errors import InputError
from attnmap.mil.bags import write_h5_bag
from attnmap.mil.splits import read_labels
from attnmap.mil.train import train_mil

pytestmark = pytest.mark.usefixtures("single_thread")

OPTIONS = dict(folds=2, max_epochs=2, lr=1e-3, seed=3, k_sample=4, val_fraction=0.2, progress=False)




def _trained(run: Path) -> dict[int, dict]:
    return {fold: torch.load(run / f"fold_{fold}" / "checkpoint.pt", weights_only=True) for fold in range(2)}


def test_folds_follow_the_labels_and_features_and_damaged_files_are_redone(tmp_path: Path, capsys) -> None:
    features = tmp_path / "features"
    labels = make_cohort(features, n_slides=12, n_patches=12, dim=8)
    run = tmp_path / "run"
    seen: list[tuple[int, int]] = []
    train_mil(features, labels, run, verbose=False, on_epoch=lambda f, e, r: seen.append((f, e)), **OPTIONS)
    first = _trained(run)
    seen.clear()
    train_mil(features, labels, run, verbose=False, on_epoch=lambda f, e, r: seen.append((f, e)), **OPTIONS)
    assert seen == []  # nothing changed: both folds reused

    # another labels CSV (two slides swap labels with their case): every fold is retrained
    rows = list(csv.reader(labels.open()))
    swapped = {"normal": "tumor", "tumor": "normal"}
    for row in rows[1:5]:
        row[1] = swapped[row[1]]
    relabelled = tmp_path / "labels_2.csv"
    with relabelled.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    train_mil(
        features, relabelled, run, verbose=False, on_epoch=lambda f, e, r: seen.append((f, e)), **OPTIONS
    )
    assert {fold for fold, _ in seen} == {0, 1}
    fresh = tmp_path / "fresh"
    train_mil(features, relabelled, fresh, verbose=False, **OPTIONS)
    assert (run / "splits.csv").read_text() == (fresh / "splits.csv").read_text()
    for fold, state in _trained(fresh).items():
        for key, value in state.items():
            torch.testing.assert_close(_trained(run)[fold][key], value, rtol=0, atol=0)
    assert any(not torch.equal(first[0][key], value) for key, value in _trained(run)[0].items())

    # a bag re-extracted (new file): retrained; truncated checkpoint / metrics: that fold redone
    bag = features / "h5_files" / "slide_00.h5"
    data = np.random.default_rng(5).normal(size=(12, 8)).astype(np.float32)
    write_h5_bag(bag, data, np.stack([np.arange(12) * 256, np.zeros(12)], axis=1))
    seen.clear()
    train_mil(
        features, relabelled, run, verbose=False, on_epoch=lambda f, e, r: seen.append((f, e)), **OPTIONS
    )
    assert {fold for fold, _ in seen} == {0, 1}
    for name, fold in (("checkpoint.pt", 0), ("metrics.json", 1)):
        path = run / f"fold_{fold}" / name
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        seen.clear()
        train_mil(
            features, relabelled, run, verbose=True, on_epoch=lambda f, e, r: seen.append((f, e)), **OPTIONS
        )
        assert {f for f, _ in seen} == {fold}
        assert f"fold {fold}: training again (damaged" in capsys.readouterr().out
        json.loads((run / f"fold_{fold}" / "metrics.json").read_text())


def test_binary_labels_csv_is_an_input_error(tmp_path: Path) -> None:
    binary = tmp_path / "labels.csv"
    binary.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(InputError, match="not a text CSV"):
        read_labels(binary)


def test_same_stem_bags_are_refused_naming_both_and_errors_name_the_bag(tmp_path: Path, capsys) -> None:
    """a/s.h5 and b/s.h5 were written as s and s_2, an id no slide has (and `evaluate --bags` refused
    them): both commands now refuse them in one line naming both files, before any output."""
    from synthetic_slide_files import write_clam_checkpoint

    checkpoint = write_clam_checkpoint(tmp_path / "clam.pt", embed_dim=8)
    rng = np.random.default_rng(0)
    bags = []
    for folder in ("a", "b"):
        bags.append(tmp_path / folder / "s.h5")
        write_h5_bag(bags[-1], rng.normal(size=(6, 8)).astype(np.float32), np.zeros((6, 2)))
    bags.append(tmp_path / "c" / "S.pt")  # one output file with s on a case-insensitive disk
    bags[-1].parent.mkdir()
    torch.save(torch.randn(6, 8), bags[-1])
    for pair in ((bags[0], bags[1]), (bags[0], bags[2]), (tmp_path / "a", bags[1])):
        for command in (("mil", "attention", checkpoint, *pair, "-o", tmp_path / "out"),
                        ("evaluate", "--mil-checkpoint", checkpoint, "--bags", pair[0], "--bags", pair[1],
                         "--methods", "attention", "-o", tmp_path / "out")):
            code, _, err = cli(capsys, *command)
            assert code == 2 and len(err.strip().splitlines()) == 1, err
            assert str(bags[0]) in err and str(pair[1]) in err and "slide id" in err
            assert not (tmp_path / "out").exists()
    code, _, err = cli(capsys, "mil", "attention", checkpoint, bags[0], tmp_path / "a", "-o",
                       tmp_path / "out")
    assert code == 2 and "given twice" in err and len(err.strip().splitlines()) == 1

    wide = tmp_path / "c" / "wide.h5"
    write_h5_bag(wide, rng.normal(size=(6, 16)).astype(np.float32), np.zeros((6, 2)))
    code, _, err = cli(capsys, "mil", "attention", checkpoint, wide, "-o", tmp_path / "out2")
    assert code == 2 and len(err.strip().splitlines()) == 1 and str(wide) in err
    (tmp_path / "file").write_text("x")
    code, _, err = cli(capsys, "mil", "attention", checkpoint, bags[0], "-o", tmp_path / "file")
    assert code == 2 and len(err.strip().splitlines()) == 1


def test_attention_rerun_with_no_csv_leaves_what_a_fresh_run_leaves(tmp_path: Path, capsys) -> None:
    from synthetic_slide_files import write_clam_checkpoint

    checkpoint = write_clam_checkpoint(tmp_path / "clam.pt", embed_dim=8)
    bag = write_h5_bag(tmp_path / "s.h5", np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32),
                       np.zeros((5, 2)))
    for out, runs in ((tmp_path / "rerun", ([], ["--no-csv"])), (tmp_path / "fresh", (["--no-csv"],))):
        for extra in runs:
            code, _, err = cli(capsys, "mil", "attention", checkpoint, bag, "-o", out, "--quiet", *extra)
            assert code == 0, err
    # the first run's patch CSV and its sidecar described a run that is no longer there
    assert sorted(p.name for p in (tmp_path / "rerun").iterdir()) == sorted(
        p.name for p in (tmp_path / "fresh").iterdir())
    assert not (tmp_path / "rerun" / "s_attention.csv").exists()


def test_attention_rerun_on_fewer_bags_names_the_earlier_bags_files(tmp_path: Path, capsys) -> None:
    """The dropped bag's files are another batch's results to the user, so they stay; the run says
    which they are, since predictions.csv lists only its own bags. A user's own h5 is not named."""
    from synthetic_slide_files import write_clam_checkpoint

    checkpoint = write_clam_checkpoint(tmp_path / "clam.pt", embed_dim=8)
    rng = np.random.default_rng(0)
    features = rng.normal(size=(2, 5, 8)).astype(np.float32)
    bags = [write_h5_bag(tmp_path / f"{name}.h5", bag, np.zeros((5, 2)))
            for name, bag in zip("ab", features, strict=True)]
    out = tmp_path / "out"
    code, _, err = cli(capsys, "mil", "attention", checkpoint, *bags, "-o", out, "--quiet")
    assert code == 0 and "note:" not in err
    (out / "mine_attention.h5").write_bytes(b"not an h5 file")
    code, _, err = cli(capsys, "mil", "attention", checkpoint, bags[0], "-o", out, "--quiet")
    assert code == 0, err
    notes = [line for line in err.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "1 bag(s) not in this run (b)" in notes[0] and "mine" not in notes[0]
    assert (out / "b_attention.h5").exists()
    assert [row["slide_id"] for row in csv.DictReader((out / "predictions.csv").open())] == ["a"]


def test_an_attention_rerun_that_fails_on_a_bag_leaves_no_earlier_predictions(tmp_path: Path, capsys) -> None:
    """A rerun with another model that stops at a bad bag had rewritten the bags before it, yet left
    the earlier model's predictions.csv beside them as this run's table. A bag refused from its
    header (here an empty one) now stops the run before it writes anything, leaving the earlier
    run whole; one refused only once read (NaN values) still takes the earlier table away."""
    from synthetic_slide_files import write_clam_checkpoint

    first = write_clam_checkpoint(tmp_path / "first.pt", embed_dim=8, seed=0)
    second = write_clam_checkpoint(tmp_path / "second.pt", embed_dim=8, seed=1)
    rng = np.random.default_rng(0)
    bags = [write_h5_bag(tmp_path / f"{n}.h5", rng.normal(size=(5, 8)).astype(np.float32), np.zeros((5, 2)))
            for n in "ab"]
    out = tmp_path / "out"
    code, _, err = cli(capsys, "mil", "attention", first, *bags, "-o", out, "--quiet")
    assert code == 0 and (out / "predictions.csv").is_file(), err
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    empty = write_h5_bag(tmp_path / "z.h5", np.zeros((0, 8), np.float32), np.zeros((0, 2)))
    code, _, err = cli(capsys, "mil", "attention", second, *bags, empty, "-o", out, "--quiet")
    assert code == 2 and "z.h5" in err and "empty" in err
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before
    nan = np.ones((5, 8), np.float32)
    nan[2, 3] = np.nan
    code, _, err = cli(capsys, "mil", "attention", second, *bags,
                       write_h5_bag(tmp_path / "z.h5", nan, np.zeros((5, 2))), "-o", out, "--quiet")
    assert code == 2 and "z.h5" in err and "NaN" in err
    assert not (out / "predictions.csv").exists()
    assert not (out / "predictions.json").exists()


def test_metrics_csv_columns_do_not_depend_on_which_folds_were_resumed(tmp_path: Path) -> None:
    """A fold finished earlier comes back from its metrics.json with sorted keys; one trained now
    has them in computed order. Whichever comes first, the CSV's columns are the same."""
    import numpy as np

    from attnmap.mil.metrics import classification_metrics, write_metrics_csv

    probs = np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    computed = {"loss": 0.5, **classification_metrics(np.array([0, 1, 1]), probs)}
    read_back = dict(sorted(computed.items()))  # json.dumps(sort_keys=True), then json.loads
    headers = []
    for first, second in ((computed, read_back), (read_back, computed)):
        path = tmp_path / "metrics.csv"
        rows = [{"fold": 0, "split": "test", **first}, {"fold": 1, "split": "test", **second}]
        write_metrics_csv(path, rows)
        headers.append(path.read_text().splitlines()[0])
    assert headers[0] == headers[1]
    assert headers[0].startswith("fold,split,loss,n,accuracy,n_class0,acc_class0,auc_class0,n_class1")


def test_a_run_refused_on_its_inputs_holds_no_options_back(tmp_path: Path, capsys) -> None:
    """A first command that stopped at a missing bag trained nothing; its options must not make the
    corrected command (here with another --folds) be refused as 'a run with different options'."""
    features = tmp_path / "features"
    labels = make_cohort(features, n_slides=12, n_patches=6, dim=4)
    listed = tmp_path / "listed.csv"
    listed.write_text(labels.read_text() + "slide_99,tumor,case_99\n")  # no bag for slide_99
    run = tmp_path / "run"
    code, _, err = cli(capsys, "mil", "train", features, listed, "--out", run, "--folds", "2",
                       "--max-epochs", "1", "--quiet")
    assert code == 2 and "slide_99" in err
    assert not (run / "config.json").exists() and not (run / "splits.csv").exists()
    code, _, err = cli(capsys, "mil", "train", features, labels, "--out", run, "--folds", "3",
                       "--max-epochs", "1", "--quiet")
    assert code == 0, err


def test_an_interrupted_rerun_on_new_labels_leaves_no_earlier_fold_or_metrics(tmp_path: Path) -> None:
    """A rerun whose labels change every fold, stopped in its first epoch, had left the earlier
    run's fold models, fold metrics and metrics.csv beside the new splits.csv as if they were its
    own; `mil attention fold_1/checkpoint.pt` then scored with a model of other labels."""
    features = tmp_path / "features"
    labels = make_cohort(features, n_slides=12, n_patches=12, dim=8)
    run = tmp_path / "run"
    train_mil(features, labels, run, verbose=False, **OPTIONS)
    rows = list(csv.reader(labels.open()))
    swapped = {"normal": "tumor", "tumor": "normal"}
    for row in rows[1:5]:
        row[1] = swapped[row[1]]
    relabelled = tmp_path / "labels_2.csv"
    with relabelled.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)

    class StopError(Exception):
        pass

    def stop(fold: int, epoch: int, row: dict) -> None:
        raise StopError

    with pytest.raises(StopError):
        train_mil(features, relabelled, run, verbose=False, on_epoch=stop, **OPTIONS)
    assert not (run / "metrics.csv").exists()
    for fold in range(2):
        for name in ("checkpoint.pt", "metrics.json", "model.json"):
            assert not (run / f"fold_{fold}" / name).exists(), (fold, name)
    assert not (run / "fold_1" / "log.csv").exists()
    # the stopped fold resumes from its own state; the rerun equals a fresh run on the new labels
    train_mil(features, relabelled, run, verbose=False, **OPTIONS)
    fresh = tmp_path / "fresh"
    train_mil(features, relabelled, fresh, verbose=False, **OPTIONS)
    assert (run / "metrics.csv").read_text() == (fresh / "metrics.csv").read_text()
    for fold, state in _trained(fresh).items():
        for key, value in state.items():
            torch.testing.assert_close(_trained(run)[fold][key], value, rtol=0, atol=0)


def test_attention_files_written_into_the_bag_folder_are_not_read_as_bags(tmp_path: Path, capsys) -> None:
    """`mil attention ... bags/ -o bags/` put s_attention.h5 beside s.h5; the rerun, and evaluate on
    the folder, then stopped at it: "s_attention.h5: no 'features' dataset"."""
    from synthetic_slide_files import write_clam_checkpoint

    checkpoint = write_clam_checkpoint(tmp_path / "clam.pt", embed_dim=8)
    bags = tmp_path / "bags"
    rng = np.random.default_rng(0)
    for name in "ab":
        write_h5_bag(bags / f"{name}.h5", rng.normal(size=(5, 8)).astype(np.float32), np.zeros((5, 2)))
    for _ in range(2):
        code, _, err = cli(capsys, "mil", "attention", checkpoint, bags, "-o", bags, "--quiet")
        assert code == 0, err
        assert [row["slide_id"] for row in csv.DictReader((bags / "predictions.csv").open())] == ["a", "b"]
    code, _, err = cli(capsys, "evaluate", "--mil-checkpoint", checkpoint, "--bags", bags, "--methods",
                       "attention", "--out", tmp_path / "flipping", "--quiet")
    assert code == 0, err
    rows = list(csv.DictReader((tmp_path / "flipping" / "patch_flipping.csv").open()))
    assert sorted({row["slide_id"] for row in rows}) == ["a", "b"]
    # named as a file, an attention output is still refused as a bag
    code, _, err = cli(capsys, "mil", "attention", checkpoint, bags / "a_attention.h5", "-o", tmp_path / "o")
    assert code == 2 and "no 'features' dataset" in err


@pytest.mark.parametrize("stopped_in", ["csv", "h5"])
def test_a_bag_export_stopped_while_writing_leaves_no_half_file_nor_the_earlier_models(
    tmp_path: Path, monkeypatch, stopped_in: str
) -> None:
    """Writing a 10^6-patch bag's CSV takes tens of seconds; Ctrl-C then left a cut CSV (or h5),
    or the earlier model's CSV beside the new model's h5."""
    import h5py
    from synthetic_slide_files import write_clam_checkpoint

    from attnmap.mil import load_mil, read_bag
    from attnmap.mil.export import export_attention

    features = np.random.default_rng(0).normal(size=(9, 8)).astype(np.float32)
    bag = read_bag(write_h5_bag(tmp_path / "s.h5", features, np.zeros((9, 2))))
    first = load_mil(write_clam_checkpoint(tmp_path / "first.pt", embed_dim=8, seed=0))
    second = load_mil(write_clam_checkpoint(tmp_path / "second.pt", embed_dim=8, seed=1))
    out = tmp_path / "out"
    export_attention(first, bag, out)
    assert sorted(p.name for p in out.iterdir()) == ["s_attention.csv", "s_attention.h5", "s_attention.json"]

    if stopped_in == "csv":
        real = csv.writer

        class Cut:
            def __init__(self, handle):
                self.writer, self.rows = real(handle), 0

            def writerow(self, row):
                self.rows += 1
                if self.rows > 3:
                    raise KeyboardInterrupt
                return self.writer.writerow(row)

            def writerows(self, rows):  # the patch rows go out in blocks: cut inside one
                for row in rows:
                    self.writerow(row)

        monkeypatch.setattr(csv, "writer", Cut)
    else:
        real = h5py.Group.create_dataset

        def cut(self, name, *args, **kwargs):
            if name == "attention_softmax":
                raise KeyboardInterrupt
            return real(self, name, *args, **kwargs)

        monkeypatch.setattr(h5py.Group, "create_dataset", cut)
    with pytest.raises(KeyboardInterrupt):
        export_attention(second, bag, out)
    monkeypatch.undo()
    left = sorted(p.name for p in out.iterdir())
    assert left in ([], ["s_attention.h5"]), left
    if left:  # complete, and the second model's
        with h5py.File(out / "s_attention.h5") as handle:
            expected = export_attention(second, bag, tmp_path / "fresh").result.probs
            np.testing.assert_allclose(handle["probabilities"][()], expected, rtol=1e-6)


def test_a_fold_s_resume_state_is_refused_as_a_model(tmp_path: Path, capsys) -> None:
    """An interrupted fold holds resume.pt only; mil attention read its mid-training weights as a
    model (not the best epoch's, not a finished fold) without a word."""
    features = tmp_path / "features"
    labels = make_cohort(features, n_slides=8, n_patches=6, dim=8)

    def interrupt(fold, epoch, row):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_mil(features, labels, tmp_path / "run", verbose=False, on_epoch=interrupt, **OPTIONS)
    resume = tmp_path / "run" / "fold_0" / "resume.pt"
    assert resume.is_file()
    code, _, err = cli(capsys, "mil", "attention", resume, features, "-o", tmp_path / "out")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "resume" in err and "checkpoint.pt" in err
    assert not (tmp_path / "out").exists()
