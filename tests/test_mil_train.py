"""End-to-end training on a small synthetic cohort, splits, metrics and resuming."""

from __future__ import annotations

import codecs
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_runner import run_cli

from attnmap.cli.main import main
from attnmap.errors import InputError
from attnmap.mil import CLAM_SB, load_mil
from attnmap.mil.bags import write_h5_bag
from attnmap.mil.fold_training import _update_early_stopping
from attnmap.mil.metrics import classification_metrics, roc_auc
from attnmap.mil.splits import make_folds, read_labels
from attnmap.mil.train import TrainConfig, train_mil

pytestmark = pytest.mark.usefixtures("single_thread")


FAST = dict(folds=2, max_epochs=4, lr=1e-3, seed=3, k_sample=4, val_fraction=0.2)


def make_cohort(root: Path, n_slides: int = 24, n_patches: int = 50, dim: int = 32, seed: int = 0) -> Path:
    """Bags whose label is decidable: positive slides hold 10 patches shifted along 8 feature dims.

    Slides come in pairs sharing a case id; half are stored as h5 (with coords), half as .pt.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_slides):
        label = (i // 2) % 2
        features = rng.normal(size=(n_patches, dim)).astype(np.float32)
        if label:
            features[:10, :8] += 3.0
        slide = f"slide_{i:02d}"
        coords = np.stack([np.arange(n_patches) * 256, np.zeros(n_patches)], axis=1)
        if i % 2:
            (root / "pt_files").mkdir(parents=True, exist_ok=True)
            torch.save(torch.from_numpy(features), root / "pt_files" / f"{slide}.pt")
        else:
            write_h5_bag(root / "h5_files" / f"{slide}.h5", features, coords)
        rows.append((slide, "tumor" if label else "normal", f"case_{i // 2:02d}"))
    labels = root / "labels.csv"
    with open(labels, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["slide_id", "label", "case_id"])
        writer.writerows(rows)
    return labels


def test_roc_auc_and_metrics_against_definitions():
    labels = np.array([0, 0, 1, 1, 1, 0])
    scores = np.array([0.1, 0.4, 0.35, 0.8, 0.4, 0.2])
    pairs = [(p, n) for p in scores[labels == 1] for n in scores[labels == 0]]
    expected = np.mean([1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs])
    assert roc_auc(labels, scores) == pytest.approx(expected)
    assert np.isnan(roc_auc(np.zeros(3), np.arange(3)))
    probs = np.stack([1 - scores, scores], axis=1)
    metrics = classification_metrics(labels, probs)
    assert metrics["auc"] == pytest.approx(expected)
    assert metrics["accuracy"] == pytest.approx(np.mean((scores > 0.5) == labels))
    assert metrics["acc_class1"] == pytest.approx(1 / 3) and metrics["acc_class0"] == 1.0


def test_folds_are_grouped_by_case_and_stratified(tmp_path):
    cohort = read_labels(make_cohort(tmp_path, n_slides=48, n_patches=2, dim=4))
    assert cohort.class_names == ["normal", "tumor"]
    splits = make_folds(cohort, folds=4, seed=0, val_fraction=0.1)
    case_of = dict(zip(cohort.slide_ids, cohort.case_ids, strict=True))
    label_of = dict(zip(cohort.slide_ids, cohort.labels, strict=True))
    tested = sorted(s for split in splits for s in split.test)
    assert tested == sorted(cohort.slide_ids)  # every slide tested exactly once
    for split in splits:
        parts = [{case_of[s] for s in part} for part in (split.train, split.val, split.test)]
        assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
        assert sorted(split.train + split.val + split.test) == sorted(cohort.slide_ids)
        assert sorted(label_of[s] for s in split.test) == [0] * 6 + [1] * 6
        assert {label_of[s] for s in split.val} == {0, 1}
    with pytest.raises(InputError, match="at most"):
        make_folds(cohort, folds=50)


def test_bad_labels_files(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("slide,label\na,0\n")
    with pytest.raises(InputError, match="slide_id,label"):
        read_labels(bad)
    bad.write_text("slide_id,label\na,0\nb,0\n")
    with pytest.raises(InputError, match="same label"):
        read_labels(bad)
    bad.write_text("slide_id,label,case_id\na,0,c\nb,1,c\n")
    with pytest.raises(InputError, match="different labels"):
        make_folds(read_labels(bad), folds=2)


@pytest.mark.parametrize("separator", [";", "\t"])
def test_labels_separated_by_semicolons_or_tabs_are_read(tmp_path, separator):
    """Excel in comma-decimal locales saves ";": the header was read as one unknown column."""
    labels = tmp_path / "labels.csv"
    rows = [["slide_id", "label", "case_id"], ["a", "tumour", "p1"], ["b", "normal", "p2"]]
    labels.write_text("\ufeff" + "".join(separator.join(row) + "\r\n" for row in rows))
    cohort = read_labels(labels)
    assert (cohort.slide_ids, cohort.labels, cohort.case_ids) == (["a", "b"], [1, 0], ["p1", "p2"])
    assert cohort.class_names == ["normal", "tumour"]


@pytest.mark.parametrize("model", ["clam_sb", "abmil"])
def test_training_learns_a_decidable_label(tmp_path, model):
    labels = make_cohort(tmp_path / "features")
    rows = train_mil(
        tmp_path / "features", labels, tmp_path / "run", model=model, progress=False, verbose=False, **FAST
    )
    mean = next(row for row in rows if row["fold"] == "mean")
    assert mean["auc"] >= 0.9 and mean["accuracy"] >= 0.75
    with open(tmp_path / "run" / "metrics.csv") as handle:
        written = list(csv.DictReader(handle))
    assert {"auc", "accuracy", "acc_class0", "acc_class1"} <= set(written[0])
    for fold in range(2):
        fold_dir = tmp_path / "run" / f"fold_{fold}"
        assert (fold_dir / "checkpoint.pt").is_file() and not (fold_dir / "resume.pt").exists()
        assert len((fold_dir / "log.csv").read_text().splitlines()) == 1 + FAST["max_epochs"]
        loaded = load_mil(fold_dir / "checkpoint.pt")
        assert loaded.embed_dim == 32 and (isinstance(loaded, CLAM_SB) == (model == "clam_sb"))


def test_interrupted_training_resumes_to_the_same_result(tmp_path):
    labels = make_cohort(tmp_path / "features")
    options = dict(FAST, model="clam_sb", max_epochs=3, weighted_sample=True, progress=False, verbose=False)
    train_mil(tmp_path / "features", labels, tmp_path / "straight", **options)

    def interrupt(fold, epoch, row):
        if fold == 1 and epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_mil(tmp_path / "features", labels, tmp_path / "resumed", on_epoch=interrupt, **options)
    assert (tmp_path / "resumed" / "fold_0" / "metrics.json").is_file()
    assert (tmp_path / "resumed" / "fold_1" / "resume.pt").is_file()
    seen = []
    train_mil(
        tmp_path / "features",
        labels,
        tmp_path / "resumed",
        on_epoch=lambda f, e, r: seen.append((f, e)),
        **options,
    )
    assert seen == [(1, 2)]  # fold 0 skipped, fold 1 continued after its last saved epoch
    for fold in range(2):
        straight = torch.load(tmp_path / "straight" / f"fold_{fold}" / "checkpoint.pt", weights_only=True)
        resumed = torch.load(tmp_path / "resumed" / f"fold_{fold}" / "checkpoint.pt", weights_only=True)
        for key in straight:
            torch.testing.assert_close(resumed[key], straight[key], rtol=0, atol=0)
    with pytest.raises(InputError, match="different options"):
        train_mil(tmp_path / "features", labels, tmp_path / "resumed", **dict(options, lr=0.5))


def test_cli_train_and_attention(tmp_path, capsys):
    labels = make_cohort(tmp_path / "features", n_slides=8, n_patches=20)
    main(
        [
            "mil",
            "train",
            str(tmp_path / "features"),
            str(labels),
            "--out",
            str(tmp_path / "run"),
            "--folds",
            "2",
            "--max-epochs",
            "1",
            "--model",
            "clam_mb",
            "--quiet",
        ]
    )
    assert "auc" in capsys.readouterr().out
    checkpoint = tmp_path / "run" / "fold_0" / "checkpoint.pt"
    main(
        [
            "mil",
            "attention",
            str(checkpoint),
            str(tmp_path / "features"),
            "-o",
            str(tmp_path / "att"),
            "--quiet",
        ]
    )
    import h5py

    with h5py.File(tmp_path / "att" / "slide_00_attention.h5") as handle:
        assert handle["attention_raw"].shape == (20, 2) and handle["coords"].shape == (20, 2)
        assert handle["attention_scores"].shape == (20, 1)
        branch = int(handle.attrs["branch"])
        assert branch == int(handle.attrs["prediction"])
        np.testing.assert_array_equal(handle["attention_scores"][:, 0], handle["attention_raw"][:, branch])
        assert "attnmap_version" in handle.attrs and "model_sha256" in handle.attrs
    assert (tmp_path / "att" / "slide_01_attention.csv").is_file()  # .pt bag without coords
    assert json.loads((tmp_path / "att" / "slide_01_attention.json").read_text())["method"] == "mil-attention"
    with open(tmp_path / "att" / "predictions.csv") as handle:
        assert len(list(csv.DictReader(handle))) == 8
    with pytest.raises(SystemExit) as done:
        main(["mil", "attention", str(labels), str(tmp_path / "features"), "-o", str(tmp_path / "x")])
    assert done.value.code == 2


def test_early_stopping_follows_clam_rule():
    model = torch.nn.Linear(2, 2)
    config = TrainConfig(patience=2, stop_epoch=2)
    state = {"best_loss": float("inf"), "best_epoch": -1, "bad_epochs": 0, "best_weights": None}
    stops = [
        _update_early_stopping(state, model, loss, epoch, config)
        for epoch, loss in enumerate([1.0, 0.9, 0.95, 0.97, 0.99])
    ]
    assert stops == [False, False, False, True, True] and state["best_epoch"] == 1
    config = TrainConfig(patience=2, stop_epoch=5)  # not before stop_epoch
    state = {"best_loss": float("inf"), "best_epoch": -1, "bad_epochs": 0, "best_weights": None}
    stops = [
        _update_early_stopping(state, model, loss, epoch, config)
        for epoch, loss in enumerate([1.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0])
    ]
    assert stops == [False] * 6 + [True]


@pytest.mark.parametrize(("kind", "problem"), [("wide", "16 features per patch; other bags have 32"),
                                               ("empty", "the bag is empty")])
def test_a_bag_that_cannot_train_is_named_before_the_first_fold(tmp_path, kind, problem):
    """An odd-sized or empty bag stopped the run only when a fold reached it, after others trained."""
    labels = make_cohort(tmp_path / "features", n_slides=8, n_patches=6)
    odd = tmp_path / "features" / "pt_files" / "s_odd.pt"  # a .pt bag: its header read memory-mapped
    odd.parent.mkdir(exist_ok=True)
    torch.save(torch.zeros((0, 32)) if kind == "empty" else torch.ones(4, 16), odd)
    with open(labels, "a") as handle:
        handle.write("s_odd,tumor,case_odd\n")
    epochs: list[int] = []
    with pytest.raises(InputError, match=f"s_odd.pt: {problem}"):
        train_mil(tmp_path / "features", labels, tmp_path / "run", folds=2, max_epochs=1, device="cpu",
                  progress=False, verbose=False, on_epoch=lambda *args: epochs.append(1))
    assert epochs == []


def test_a_training_run_that_diverges_stops_in_one_line(tmp_path):
    """A learning rate far too large gave NaN losses, and the folds still finished: NaN weights saved
    as checkpoints, NaN AUCs in metrics.csv and exit status 0."""
    labels = make_cohort(tmp_path / "features", n_slides=8, n_patches=6)
    with pytest.raises(InputError, match=r"fold 0, epoch 0: .*diverged.*--lr") as caught:
        train_mil(tmp_path / "features", labels, tmp_path / "run", **dict(FAST, lr=1e30), device="cpu",
                  progress=False, verbose=False)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "run" / "fold_0" / "checkpoint.pt").exists()



@pytest.mark.parametrize("flag", [["--size", "big"], ["--k-sample", "3"], ["--subtyping"],
                                  ["--bag-weight", "0.5"]])
def test_clam_flags_given_with_abmil_are_refused_not_ignored(tmp_path, capsys, flag):
    """ABMIL has no instance clustering and fixed layer widths: these flags trained nothing
    different, yet the command ran as if configured by them (as evaluate refuses another mode's)."""
    labels = make_cohort(tmp_path / "features", n_slides=8, n_patches=6)
    code, _, err = run_cli(capsys, "mil", "train", tmp_path / "features", labels, "--out", tmp_path / "run",
                           "--model", "abmil", *flag)
    assert code == 2 and err.strip() == f"attnmap: error: {flag[0]} is an option of CLAM (--model clam_sb, " \
        "clam_mb), not of abmil"
    assert not (tmp_path / "run").exists()


def test_reading_the_bags_before_the_first_fold_shows_a_bar_unless_quiet(tmp_path, capsys):
    """Every bag is read and checked before any fold trains: on a cohort of hundreds of 50,000-patch
    bags that is minutes, and nothing was shown until the first fold's bar."""
    labels = make_cohort(tmp_path / "features", n_slides=8, n_patches=6)
    for extra, shown in (((), True), (("--quiet",), False)):
        code, _, err = run_cli(capsys, *extra, "mil", "train", tmp_path / "features", labels, "--out",
                               tmp_path / f"run{len(extra)}", "--folds", "2", "--max-epochs", "1")
        assert code == 0, err
        assert ("reading bags" in err and "8/8" in err) == shown, err


def test_each_fold_records_which_class_each_output_is(tmp_path):
    """Text labels are numbered in sorted order; p_0, p_1 of predictions.csv and a fold's logits
    follow that numbering, which no file of the fold recorded (splits.csv holds the names only)."""
    labels = make_cohort(tmp_path / "features", n_slides=8, n_patches=6)
    text = labels.read_text().replace(",tumor,", ",Tumour (LUAD),").replace(",normal,", ",Benign,")
    labels.write_text(text)
    train_mil(tmp_path / "features", labels, tmp_path / "run", **dict(FAST, max_epochs=1), progress=False,
              verbose=False)
    for fold in range(2):
        recorded = json.loads((tmp_path / "run" / f"fold_{fold}" / "model.json").read_text())
        assert recorded["class_names"] == sorted(["Tumour (LUAD)", "Benign"])
        assert recorded["n_classes"] == 2


def test_a_labels_csv_saved_by_excel_in_a_legacy_encoding_says_how_to_save_it(tmp_path):
    """Excel's plain "CSV" is cp1252 on Windows: 'Nécrose' then gave "'utf-8' codec can't decode
    byte 0xe9 in position 22: invalid continuation byte", which tells a pathologist nothing (and
    past the first 8 KB the position was not even the file's)."""
    labels = tmp_path / "labels.csv"
    rows = [f"s{i},Tumeur" for i in range(600)] + ["a,Nécrose", "b,Tumeur"]
    for bom in (b"", codecs.BOM_UTF8):
        labels.write_bytes(bom + "\n".join(["slide_id,label", *rows]).encode("cp1252"))
        with pytest.raises(InputError) as caught:
            read_labels(labels)
        assert str(caught.value) == f'{labels} is not a text CSV in UTF-8 (line 602): save it as "CSV UTF-8"'


def test_a_case_with_two_labels_names_its_slides_and_labels(tmp_path):
    """The message named only the case: in a CSV of hundreds of rows the user had to search for
    which slides disagreed."""
    labels = tmp_path / "labels.csv"
    labels.write_text("slide_id,label,case_id\na,normal,p1\nb,normal,p2\nc,tumor,p1\nd,tumor,p3\n")
    with pytest.raises(InputError) as caught:
        make_folds(read_labels(labels), folds=2)
    assert str(caught.value) == ("case 'p1' has slides with different labels (a: normal, c: tumor); "
                                 "cannot group it in one split")


def test_a_refused_run_leaves_no_output_folder_it_made(tmp_path, capsys):
    """Too many folds (or a missing bag) is found once the run holds its output folder's lock:
    the refused command left that folder, and any parents it made, behind empty."""
    labels = make_cohort(tmp_path / "features", n_slides=8, n_patches=6)
    out = tmp_path / "runs" / "clam"
    code, _, err = run_cli(capsys, "mil", "train", tmp_path / "features", labels, "--out", out,
                           "--folds", "20")
    assert code == 2 and "20 folds but only 4 cases" in err
    assert not (tmp_path / "runs").exists()
    out.mkdir(parents=True)  # a folder that was there before the command stays
    code, _, err = run_cli(capsys, "mil", "train", tmp_path / "features", labels, "--out", out,
                           "--folds", "20")
    assert code == 2 and out.is_dir() and not any(out.iterdir())


def test_labels_columns_in_a_spreadsheets_spelling_are_read(tmp_path):
    """"Slide_ID,Label,Case_ID" (a spreadsheet's header) or "slide_id, label" was refused as having
    no slide_id or label column, where the slide list of `wsi run` reads the same header."""
    labels = tmp_path / "labels.csv"
    rows = "a,normal,p1\r\nb,tumor,p2\r\nc,tumor,p1\r\n"
    labels.write_text(f"slide_id,label,case_id\r\n{rows}")
    expected = read_labels(labels)
    for header in ("Slide_ID,Label,Case_ID", "SLIDE_ID , label, case_id"):
        labels.write_text(f"{header}\r\n{rows}")
        assert read_labels(labels) == expected
    labels.write_text(f"slide_id,label,Label\r\n{rows}")
    with pytest.raises(InputError, match=r"has the columns 'label' and 'Label': keep one"):
        read_labels(labels)
