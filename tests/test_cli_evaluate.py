"""``attnmap evaluate`` and ``attnmap train-shapes`` from the command line."""

from __future__ import annotations

import csv
import json

import pytest

from attnmap.cli.main import main


def run_cli(args: list[str]) -> int:
    try:
        main(args)
    except SystemExit as done:
        return int(done.code or 0)
    return 0


def test_evaluate_prints_a_table_and_writes_csv_sidecar_and_plot(tmp_path, capsys):
    out = tmp_path / "eval"
    code = run_cli(["evaluate", "--model", "attnmap:shapes-vit", "--data", "shapes", "--n", "6",
                    "--methods", "attention,rollout", "--out", str(out), "--batch-size", "3", "--quiet"])
    printed = capsys.readouterr().out
    assert code == 0
    expected = ("attention", "rollout", "random", "pos AUC pred", "evaluate --model attnmap:shapes-vit")
    for name in expected:
        assert name in printed
    rows = list(csv.DictReader((out / "evaluation.csv").open()))
    assert [row["method"] for row in rows] == ["attention", "rollout", "random"]
    sidecar = json.loads((out / "evaluation.json").read_text())
    assert sidecar["provenance"]["model"] == "attnmap:shapes-vit"
    assert "model_sha256" in sidecar["provenance"] and sidecar["settings"]["n_images"] == 6
    assert (out / "perturbation_curves.png").stat().st_size > 0


def test_evaluate_rejects_unknown_methods_with_a_one_line_error(tmp_path, capsys):
    code = run_cli(["evaluate", "--methods", "attention,telepathy", "--n", "2", "--out", str(tmp_path)])
    assert code == 2
    error = capsys.readouterr().err
    assert "telepathy" in error and "available" in error and "Traceback" not in error


def test_evaluate_rejects_a_missing_checkpoint(tmp_path, capsys):
    missing = str(tmp_path / "none.pt")
    code = run_cli(["evaluate", "--checkpoint", missing, "--n", "2", "--out", str(tmp_path)])
    assert code == 2
    assert "none.pt" in capsys.readouterr().err


@pytest.mark.slow
def test_train_shapes_records_the_command_that_made_the_weights(tmp_path, capsys):
    out = tmp_path / "weights"
    code = run_cli(["train-shapes", "--out", str(out), "--seed", "3", "--epochs", "1", "--n-train", "64",
                    "--threads", "1", "--quiet"])
    assert code == 0
    record = json.loads((out / "shapes_vit.json").read_text())
    expected = f"attnmap train-shapes --out {out} --seed 3 --epochs 1 --n-train 64 --threads 1"
    assert record["command"] == expected
    assert record["seed"] == 3 and "held-out accuracy" in capsys.readouterr().out


def test_evaluate_rejects_a_method_listed_twice_in_every_mode(tmp_path, capsys):
    code = run_cli(["evaluate", "--methods", "rollout, attention,rollout", "--n", "2",
                    "--out", str(tmp_path)])
    assert code == 2
    error = capsys.readouterr().err
    assert "rollout more than once" in error and "Traceback" not in error
    placeholder = tmp_path / "model.pt"  # names are checked before any file is read
    placeholder.write_bytes(b"")
    code = run_cli(["evaluate", "--mil-checkpoint", str(placeholder), "--bags", str(placeholder),
                    "--methods", "attention,attention", "--out", str(tmp_path / "slides")])
    assert code == 2 and "attention more than once" in capsys.readouterr().err


def test_an_evaluation_too_large_for_the_memory_is_refused_before_it_starts(tmp_path, capsys, monkeypatch):
    """`--n` large enough to exhaust the memory was killed by the system after minutes, without a word."""
    from attnmap.evaluate import runner

    per_image = 64 * 64 * runner.BYTES_PER_PIXEL  # the bundled shapes model takes 64x64 images
    monkeypatch.setattr(runner, "available_memory", lambda: 1000 * per_image)
    code = run_cli(["evaluate", "--n", "5000", "--methods", "attention", "--out", str(tmp_path / "big")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "5000 images of 64x64 and their maps need about" in err and err.endswith("use at most --n 1000")
    assert not (tmp_path / "big").exists()
    assert run_cli(["evaluate", "--n", "4", "--methods", "attention", "--out", str(tmp_path / "small")]) == 0


EARLIER_IMAGE_OUTPUTS = ("evaluation.csv", "evaluation.json", "perturbation_curves.png")


@pytest.mark.parametrize("stop_in", ["_maps_for", "plot_curves"])
def test_an_interrupted_evaluation_leaves_no_earlier_output_beside_its_own(
    tmp_path, capsys, monkeypatch, stop_in
):
    """The CSV, its JSON and the PNG were written one after another over an earlier evaluation's: a stop
    between them left a new CSV beside the old plot (or the old three beside nothing new)."""
    from attnmap.evaluate import report, runner

    out = tmp_path / "eval"
    out.mkdir()
    for name in EARLIER_IMAGE_OUTPUTS:
        (out / name).write_text("an earlier evaluation's")

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner if stop_in == "_maps_for" else report, stop_in, stop)
    code = run_cli(["evaluate", "--n", "2", "--methods", "attention", "--out", str(out), "--quiet"])
    assert code != 0
    for name in EARLIER_IMAGE_OUTPUTS:
        path = out / name
        assert not path.exists() or path.read_text(errors="replace") != "an earlier evaluation's", name
    assert not (out / "perturbation_curves.png").exists()
    assert not [path.name for path in out.iterdir() if path.name.startswith(".")]  # no temporary left


def test_a_refused_evaluation_keeps_the_earlier_one(tmp_path, capsys, monkeypatch):
    """Deleting an earlier evaluation's files must wait until the inputs are accepted: a model of other
    classes, refused in one line, left the folder without the earlier, valid evaluation."""
    from attnmap.evaluate import runner

    out = tmp_path / "eval"
    out.mkdir()
    for name in EARLIER_IMAGE_OUTPUTS:
        (out / name).write_text("an earlier evaluation's")

    def refuse(*args, **kwargs):
        raise runner.InputError("the model has 1000 classes but the data has 5")

    monkeypatch.setattr(runner, "_predict", refuse)
    code = run_cli(["evaluate", "--n", "2", "--methods", "attention", "--out", str(out), "--quiet"])
    assert code == 2 and "1000 classes" in capsys.readouterr().err
    assert all((out / name).read_text() == "an earlier evaluation's" for name in EARLIER_IMAGE_OUTPUTS)


def test_evaluate_names_the_checkpoint_inside_a_mil_train_folder(tmp_path, capsys):
    """--mil-checkpoint FOLD (a `mil train` fold folder) was refused in click's words, "is a
    directory"; like `mil attention`, the fold's checkpoint.pt is named, and a whole run is refused
    naming a fold's."""
    import numpy as np
    from synthetic_slide_files import write_clam_checkpoint

    from attnmap.mil import write_h5_bag

    run = tmp_path / "run"
    for fold in range(2):
        (run / f"fold_{fold}").mkdir(parents=True)
        write_clam_checkpoint(run / f"fold_{fold}" / "checkpoint.pt")
    bag = tmp_path / "slide.h5"
    write_h5_bag(bag, np.random.default_rng(0).normal(size=(6, 8)).astype(np.float32), np.zeros((6, 2)))
    expected = {run / "fold_0": f"checkpoint {run / 'fold_0'} is a folder, not a weights file: give the "
                                f"weights file inside it, {run / 'fold_0' / 'checkpoint.pt'}",
                run: f"{run} is a `mil train` run of 2 fold model(s): give one fold's checkpoint, "
                     f"e.g. {run / 'fold_0' / 'checkpoint.pt'}"}
    for folder, message in expected.items():
        code = run_cli(["evaluate", "--mil-checkpoint", str(folder), "--bags", str(bag),
                        "--methods", "attention", "--out", str(tmp_path / "out"), "--quiet"])
        assert code == 2
        assert capsys.readouterr().err.strip().splitlines()[-1] == f"attnmap: error: {message}"
