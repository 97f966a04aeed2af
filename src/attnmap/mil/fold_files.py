"""The files of an `attnmap mil train` run that decide what a rerun reuses: ``config.json`` (the
options, which a rerun may not change) and each fold's files (finished, resumable or stale).

Why a fingerprint per fold: a fold's model depends on the labels and the bag files as much as on
the options, so a rerun with another labels CSV (or re-extracted features) must retrain it rather
than keep a model of other data next to a ``splits.csv`` that describes the new one. A fold is
finished when ``metrics.json`` (written last) parses and records the fingerprint and
``checkpoint.pt`` loads; ``resume.pt`` is used only when it loads and has the same fingerprint.
The files of a fold that will not be reused are deleted before any fold trains, so a rerun that
fails or is stopped never leaves an earlier run's fold model beside the new ``splits.csv``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path

import torch

from attnmap.checkpoint import read_checkpoint
from attnmap.errors import InputError
from attnmap.fingerprint import Fingerprint, file_identity
from attnmap.io_utils import atomic_path
from attnmap.mil.base import AttentionMILBase
from attnmap.mil.splits import Cohort, Split
from attnmap.stored import DamagedOutputError, stored_record

IGNORED_OPTIONS = ("device", "cache_gb")  # where and how fast, not what is trained
MODEL_RECORD = "model.json"  # a fold's architecture and class_names, beside its checkpoint.pt


def check_same_options(path: Path, options: Mapping[str, object]) -> None:
    """Refuse to resume a run made with different options (``options``: the `TrainConfig` as a
    dict; device and cache size do not count): mixed folds would be meaningless. The run writes
    its options only once its inputs are checked, so a command refused on them holds none back."""
    try:
        previous = json.loads(path.read_text())
    except (OSError, ValueError):  # none yet, or cut short by a killed run (each fold's own
        previous = None  # fingerprint still decides whether it is reused)
    if isinstance(previous, dict):
        changed = sorted(k for k in options if k not in IGNORED_OPTIONS and previous.get(k) != options[k])
        if changed:
            raise InputError(f"{path.parent} holds a run with different options {changed}; use a new out_dir")


def save_atomic(obj: object, path: Path) -> None:
    with atomic_path(path) as temporary:
        torch.save(obj, temporary)


FOLD_VERSION = 1  # raise when training changes so that finished folds are retrained


def fold_fingerprint(
    config: Mapping[str, object], cohort: Cohort, split: Split, bag_paths: Mapping[str, Path]
) -> Fingerprint:
    """What a fold's model depends on: options (``config``: the `TrainConfig` as a dict, where
    device and cache size do not count), its slides' labels and cases, the bag files."""
    options = {key: value for key, value in config.items() if key not in IGNORED_OPTIONS}
    label_of = dict(zip(cohort.slide_ids, cohort.labels, strict=True))
    case_of = dict(zip(cohort.slide_ids, cohort.case_ids, strict=True))
    slides = sorted(split.train + split.val + split.test)
    return Fingerprint(
        {
            "stage": "mil_fold",
            "version": FOLD_VERSION,
            "options": options,
            "split": asdict(split),
            "class_names": cohort.class_names,
            "labels": {slide: [cohort.class_names[label_of[slide]], case_of[slide]] for slide in slides},
            "bags": {slide: file_identity(bag_paths[slide]) for slide in slides},
        }
    )


def finished_fold(fold_dir: Path, fingerprint: Fingerprint) -> tuple[dict | None, str | None]:
    """(the fold's metrics, None) when it is finished with this fingerprint, else (None, why not)."""
    reason = fingerprint.check(fold_dir / "metrics.json")
    if reason is None:
        try:
            if stored_record(fold_dir / "checkpoint.pt") is None:
                reason = "checkpoint.pt missing"
            json.loads((fold_dir / MODEL_RECORD).read_text())
        except DamagedOutputError as error:
            reason = f"damaged: {error}"
        except (OSError, ValueError):
            reason = "damaged: model.json unreadable"
    if reason is not None:
        return None, reason
    metrics = json.loads((fold_dir / "metrics.json").read_text())
    metrics.pop("provenance", None)
    return metrics, None


RESUME_KEYS = ("model", "optimizer", "torch_rng", "state", "fingerprint")  # what train_fold saves


def is_resume_state(saved: object) -> bool:
    """Whether ``saved`` is the content of a fold's ``resume.pt`` (an unfinished fold's state)."""
    return isinstance(saved, dict) and all(key in saved for key in RESUME_KEYS)


def load_resume(resume: Path, fingerprint: Fingerprint) -> dict | None:
    """The saved state of an interrupted fold, if it is intact and of this fingerprint."""
    if not resume.is_file():
        return None
    try:
        saved = read_checkpoint(resume)
    except InputError:  # a truncated or foreign file: start the fold again
        return None
    return saved if isinstance(saved, dict) and saved.get("fingerprint") == fingerprint.value else None


FOLD_RESULTS = ("checkpoint.pt", MODEL_RECORD, "metrics.json")


def remove_stale_folds(
    out_dir: Path, fingerprints: Mapping[int, Fingerprint], say: Callable[[str], object] | None = None
) -> list[int]:
    """Delete the results of every fold that is not finished with its fingerprint (and its log and
    ``resume.pt`` unless that resumes it); returns those folds. ``say`` gets one line per fold
    trained again because something changed or a file is damaged."""
    stale = []
    for fold, fingerprint in fingerprints.items():
        fold_dir = out_dir / f"fold_{fold}"
        metrics, reason = finished_fold(fold_dir, fingerprint)
        if metrics is not None:
            continue
        stale.append(fold)
        if say is not None and reason != "missing":
            say(f"fold {fold}: training again ({reason})")
        names = FOLD_RESULTS
        if load_resume(fold_dir / "resume.pt", fingerprint) is None:
            names += ("log.csv", "resume.pt")
        for name in names:
            (fold_dir / name).unlink(missing_ok=True)
    return stale


# what a checkpoint's weights tell of its model (dropout, k_sample, subtyping they do not)
INFERRED_KEYS = ("model", "embed_dim", "n_classes", "gate", "size", "hidden_dim", "attention_dim")


def class_names_for(
    checkpoint: Path, model: AttentionMILBase, given: str | None = None, setting: str = "--class-names"
) -> list[str] | None:
    """The name of each class index of ``model``, read from ``checkpoint``: ``given``
    (comma-separated, e.g. ``--class-names``), else the ``class_names`` that `mil train` recorded
    in ``model.json`` beside it, else None. Names that do not fit the model (count, repeats,
    blanks), or a ``model.json`` describing another architecture, are refused: a wrong name on a
    prediction is worse than none. ``setting``: how the caller's user gives names, for the advice
    (``model.class_names`` in a `wsi run` configuration)."""
    n_classes = int(model.n_classes)
    if given is not None:
        names, source = [name.strip() for name in given.split(",")], f"{setting} {given!r}"
    else:
        record = Path(checkpoint).parent / MODEL_RECORD
        try:
            recorded = json.loads(record.read_text()) if record.is_file() else None
        except (OSError, ValueError) as error:
            raise InputError(f"{record} (beside the checkpoint) is unreadable: {error}") from error
        if not isinstance(recorded, dict) or "class_names" not in recorded:
            return None  # none, or another tool's model.json
        names, source = recorded["class_names"], f"{record} (beside the checkpoint)"
        actual = model.config()
        other = [key for key in INFERRED_KEYS
                 if key in recorded and key in actual and recorded[key] != actual[key]]
        if other:
            differences = ", ".join(f"{key} {recorded[key]} vs {actual[key]}" for key in other)
            raise InputError(f"{source} describes another model than {Path(checkpoint).name} "
                             f"({differences}); give {setting}")
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            raise InputError(f"{source}: class_names must be a list of texts; give {setting}")
    if len(names) != n_classes or len(set(names)) != len(names) or not all(names):
        advice = "" if given is not None else f"; give {setting}"
        raise InputError(f"{source} names {len(names)} classes ({', '.join(map(repr, names))}), but the "
                         f"model has {n_classes} classes, each named once and not empty{advice}")
    return names


def refuse_run_folder(path: Path) -> Path:
    """``path`` unless it is a `mil train` output folder, refused naming a fold's checkpoint: each
    fold is its own model, and the generic folder message would suggest a Hugging Face folder."""
    folds = sorted(Path(path).glob("fold_*/checkpoint.pt"), key=lambda p: (len(p.parent.name), p.parent.name))
    if Path(path).is_dir() and folds:
        raise InputError(f"{path} is a `mil train` run of {len(folds)} fold model(s): give one fold's "
                         f"checkpoint, e.g. {folds[0]}")
    return path
