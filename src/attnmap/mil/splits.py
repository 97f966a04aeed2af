"""Slide labels and k-fold splits stratified by label and grouped by case (patient).

Slides of one patient must never sit on both sides of a split: their features are correlated and
would inflate test scores. So folds are built over cases. Each case gets the label of its first
slide (a case whose slides disagree raises an error, since grouping could not keep both labels
honest). Within each class the cases are shuffled (seeded) and dealt round-robin over the folds,
continuing the deal across classes, so every fold gets about 1/k of each class.

Fold i tests on its own cases; its validation set (for early stopping) is drawn from the other
cases: per class round(val_fraction · n) cases, at least one when the class has two or more.
Everything else trains. Unlike CLAM's Monte-Carlo splits, every case is tested exactly once.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from attnmap.errors import InputError
from attnmap.io_utils import csv_dict_reader, write_csv_atomic
from attnmap.mil.label_classes import class_indices

LABEL_COLUMNS = ("slide_id", "label", "case_id")


@dataclass
class Cohort:
    """Slides with integer labels (0..C-1), their cases and the label names in class order."""

    slide_ids: list[str]
    labels: list[int]
    case_ids: list[str]
    class_names: list[str]

    @property
    def n_classes(self) -> int:
        return len(self.class_names)


@dataclass
class Split:
    """The slide ids of one fold's train / val / test sets."""

    fold: int
    train: list[str] = field(default_factory=list)
    val: list[str] = field(default_factory=list)
    test: list[str] = field(default_factory=list)


def read_labels(path: str | Path) -> Cohort:
    """Read ``slide_id,label[,case_id]``. Labels become class indices by
    `attnmap.mil.label_classes.class_indices` (whole numbers: the indices 0..C-1 themselves; other
    numbers by value; names in natural order). A missing case_id means one case per slide."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(2, "No such labels file", str(path))
    reader = csv_dict_reader(path, LABEL_COLUMNS)
    try:
        columns = list(reader.fieldnames or [])
        if "slide_id" not in columns or "label" not in columns:
            raise InputError(f"{path}: needs columns slide_id,label[,case_id]; found {columns}")
        rows = [{(k or "").strip(): _cell(v) for k, v in row.items()} for row in reader]
    except csv.Error as error:
        raise InputError(f"{path} is not a text CSV (slide_id,label[,case_id]): {error}") from error
    rows = [row for row in rows if row.get("slide_id")]
    if not rows:
        raise InputError(f"{path}: no slides listed")
    slide_ids = [row["slide_id"] for row in rows]
    duplicates = sorted({s for s in slide_ids if slide_ids.count(s) > 1})
    if duplicates:
        raise InputError(f"{path}: slide ids listed more than once: {duplicates[:5]}")
    raw_labels = [row["label"] for row in rows]
    if any(label == "" for label in raw_labels):
        raise InputError(f"{path}: some slides have an empty label")
    try:
        labels, class_names = class_indices(raw_labels)
    except InputError as error:
        raise InputError(f"{path}: {error}") from error
    if len(set(labels)) < 2:
        raise InputError(f"{path}: all slides have the same label; a classifier needs at least two classes")
    case_ids = [row.get("case_id") or row["slide_id"] for row in rows]
    given = {row["case_id"]: row["slide_id"] for row in rows if row.get("case_id")}
    for row in rows:  # a blank case_id is a case of its own, named by the slide id
        if not row.get("case_id") and row["slide_id"] in given:
            raise InputError(f"{path}: slide {row['slide_id']!r} has no case_id, and {row['slide_id']!r} is "
                             f"the case_id of slide {given[row['slide_id']]!r}; give its case_id")
    return Cohort(slide_ids, labels, case_ids, class_names)


def _cell(value: object) -> str:
    """A CSV cell as text; a row longer than the header puts a list under the None key."""
    return ",".join(value) if isinstance(value, list) else str(value or "").strip()


def make_folds(cohort: Cohort, folds: int, seed: int = 1, val_fraction: float = 0.1) -> list[Split]:
    """k stratified, case-grouped folds (see the module docstring)."""
    case_label: dict[str, int] = {}
    case_slides: dict[str, list[str]] = {}
    for slide, label, case in zip(cohort.slide_ids, cohort.labels, cohort.case_ids, strict=True):
        if case_label.setdefault(case, label) != label:
            first = case_slides[case][0]
            names = cohort.class_names
            raise InputError(f"case {case!r} has slides with different labels ({first}: "
                             f"{names[case_label[case]]}, {slide}: {names[label]}); "
                             "cannot group it in one split")
        case_slides.setdefault(case, []).append(slide)
    if folds < 2:
        raise InputError(f"k-fold needs at least 2 folds, got {folds}")
    if folds > len(case_slides):
        raise InputError(
            f"{folds} folds but only {len(case_slides)} cases: use at most {len(case_slides)} folds"
        )
    per_class = [sum(1 for value in case_label.values() if value == c) for c in range(cohort.n_classes)]
    fewest = min(per_class)
    if fewest < folds:  # a test fold without the class, and a training set without it when it has 1
        rare = cohort.class_names[per_class.index(fewest)]
        advice = f"use {fewest} folds or fewer" if fewest >= 2 else "label more cases of it"
        raise InputError(
            f"class {rare!r} has {fewest} case(s), fewer than the {folds} folds: some test folds would "
            f"hold none of it; {advice}"
        )
    if not 0.0 <= val_fraction < 1.0:
        raise InputError(f"val_fraction must be in [0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    fold_of: dict[str, int] = {}
    position = 0
    for label in range(cohort.n_classes):
        cases = sorted(case for case, value in case_label.items() if value == label)
        for case in rng.permutation(np.array(cases, dtype=object)) if cases else []:
            fold_of[case] = position % folds
            position += 1
    splits = []
    for fold in range(folds):
        split = Split(fold)
        test_cases = {case for case, f in fold_of.items() if f == fold}
        val_cases = _pick_validation(
            {c: v for c, v in case_label.items() if c not in test_cases}, val_fraction, rng
        )
        for case, slides in case_slides.items():
            target = split.test if case in test_cases else split.val if case in val_cases else split.train
            target.extend(slides)
        for part in (split.train, split.val, split.test):
            part.sort()
        splits.append(split)
    return splits


def _pick_validation(case_label: dict[str, int], fraction: float, rng: np.random.Generator) -> set[str]:
    chosen: set[str] = set()
    if fraction <= 0:
        return chosen
    for label in sorted(set(case_label.values())):
        cases = sorted(case for case, value in case_label.items() if value == label)
        count = round(fraction * len(cases))
        if count == 0 and len(cases) >= 2:
            count = 1
        chosen.update(
            rng.choice(np.array(cases, dtype=object), size=min(count, len(cases) - 1), replace=False)
        )
    return chosen


def write_splits(path: str | Path, cohort: Cohort, splits: Sequence[Split]) -> Path:
    """A CSV with one row per slide and one ``fold_<i>`` column holding train / val / test."""
    path = Path(path)
    membership = [
        {slide: name for name in ("train", "val", "test") for slide in getattr(split, name)}
        for split in splits
    ]
    header = ["slide_id", "case_id", "label"] + [f"fold_{s.fold}" for s in splits]
    rows = [
        [slide, case, cohort.class_names[label]] + [m[slide] for m in membership]
        for slide, label, case in zip(cohort.slide_ids, cohort.labels, cohort.case_ids, strict=True)
    ]
    return write_csv_atomic(path, header, rows)  # never half old, half new
