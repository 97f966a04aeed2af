"""Patch flipping over a set of slides for several MIL relevance methods
(``attnmap evaluate --mil-checkpoint``): one row per slide and method, a mean per method, a CSV and
a JSON of curves.

The random order is the same for every method of a slide (seeded by ``seed`` and the slide id, not
by the slide's place in the cohort, so a slide's floor does not change when the cohort is listed in
another order or evaluated alone), so the methods are compared against one floor. A slide and method
with nothing to flip (a one-patch bag, or scores that rank no patch above another) is skipped with
its reason, not allowed to stop the cohort: the reasons are written beside the results and the means
count only the slides evaluated.
"""

from __future__ import annotations

import csv
import json
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from attnmap.errors import InputError
from attnmap.evaluate.patch_flipping import FRACTIONS, PatchFlippingResult, nothing_to_flip, patch_flipping
from attnmap.io_utils import atomic_path, write_bytes_atomic
from attnmap.mil.bags import Bag
from attnmap.mil.base import AttentionMILBase
from attnmap.mil.explain import explain

COLUMNS = ("auc_most_relevant_first", "auc_least_relevant_first", "auc_random")


@dataclass
class SlideFlipping:
    """Per slide and method: the patch-flipping result."""

    results: dict[str, dict[str, PatchFlippingResult]] = field(default_factory=dict)
    skipped: dict[str, dict[str, str]] = field(default_factory=dict)  # slide → method → why

    def rows(self) -> list[dict[str, object]]:
        """One row per slide and method (the AUCs, target and number of patches)."""
        return [
            {"slide_id": slide, "method": method, "target": result.target, "n_patches": result.n_patches,
             **{column: getattr(result, column) for column in COLUMNS}}
            for slide, methods in self.results.items()
            for method, result in methods.items()
        ]

    def summary(self) -> list[dict[str, object]]:
        """Mean AUCs over slides, one row per method."""
        methods = list(dict.fromkeys(method for slide in self.results.values() for method in slide))
        out = []
        for method in methods:
            found = [slide[method] for slide in self.results.values() if method in slide]
            means = {column: float(np.mean([getattr(r, column) for r in found])) for column in COLUMNS}
            out.append({"method": method, "n_slides": len(found), **means})
        return out


def evaluate_bags(
    model: AttentionMILBase,
    bags: Iterable[Bag],
    methods: Sequence[str],
    fractions: Sequence[float] = FRACTIONS,
    seed: int = 0,
    target: int | None = None,
    progress: bool = False,
) -> SlideFlipping:
    """Patch flipping of every method's scores on every bag (the same random floor per slide);
    ``progress``: a bar over integrated gradients' steps on a bag that takes several passes."""
    methods = list(methods)
    if not methods or len(set(methods)) != len(methods):
        raise InputError(f"need at least one method, each named once; got {methods}")
    evaluation = SlideFlipping()
    seen, given = 0, {}
    for bag in bags:
        seen += 1
        if bag.slide_id in given:  # the rule of `attnmap.mil.bags.collect_bags`
            raise InputError(f"slide id {bag.slide_id!r} is given twice: bags {given[bag.slide_id]} and "
                             f"{bag.path or bag.slide_id}; give one of them (or rename one)")
        given[bag.slide_id] = bag.path or bag.slide_id
        per_method, skipped = {}, {}
        try:
            for method in methods:
                reason = nothing_to_flip(len(bag.features))  # before scoring: occlusion refuses one patch
                if reason is not None:
                    skipped[method] = reason
                    continue
                scores = explain(model, bag.features, method, target=target, progress=progress)
                values = np.asarray(scores, dtype=np.float64).reshape(-1)
                reason = nothing_to_flip(len(values), values) if np.isfinite(values).all() else None
                if reason is not None:
                    skipped[method] = reason
                    continue
                per_method[method] = patch_flipping(model, bag.features, scores, target=target,
                                                    fractions=fractions, seed=slide_seed(seed, bag.slide_id))
        except InputError as error:  # e.g. a feature size the model does not take: say which bag
            raise InputError(f"{bag.path or bag.slide_id}: {error}") from error
        if per_method:
            evaluation.results[bag.slide_id] = per_method
        if skipped:
            evaluation.skipped[bag.slide_id] = skipped
    if not seen:
        raise InputError("no bags to evaluate")
    if not evaluation.results:
        reasons = sorted({why for slide in evaluation.skipped.values() for why in slide.values()})
        raise InputError(f"no slide could be evaluated: {'; '.join(reasons)}")
    return evaluation


def slide_seed(seed: int, slide_id: str) -> int:
    """The random order's seed of one slide: ``seed`` plus a stable hash of its id (CRC-32)."""
    return int(seed) + zlib.crc32(str(slide_id).encode("utf-8"))


def skipped_notes(evaluation: SlideFlipping) -> list[str]:
    """One line per skipped slide: its id, the methods skipped and why."""
    notes = []
    for slide, methods in evaluation.skipped.items():
        by_reason: dict[str, list[str]] = {}
        for method, why in methods.items():
            by_reason.setdefault(why, []).append(method)
        notes.extend(f"skipped {slide} ({', '.join(names)}): {why}" for why, names in by_reason.items())
    return notes


def write_flipping(evaluation: SlideFlipping, path: str | Path, record: Mapping[str, str]) -> Path:
    """``path`` (CSV, one row per slide and method) and a ``.json`` sidecar with provenance, the
    per-method means and every curve."""
    path = Path(path)
    rows = evaluation.rows()
    sidecar = {
        "provenance": dict(record),
        "summary": evaluation.summary(),
        "skipped": evaluation.skipped,
        "curves": {slide: {method: result.to_dict() for method, result in methods.items()}
                   for slide, methods in evaluation.results.items()},
    }
    # the record before the file (`attnmap.provenance`), each written whole
    write_bytes_atomic(path.with_suffix(".json"), (json.dumps(sidecar, indent=1) + "\n").encode())
    with atomic_path(path) as temporary, open(temporary, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["slide_id", "method", "target", "n_patches", *COLUMNS])
        writer.writeheader()
        for row in rows:
            writer.writerow({key: f"{value:.6f}" if isinstance(value, float) else value
                             for key, value in row.items()})
    return path


def format_flipping_table(evaluation: SlideFlipping, markdown: bool = False) -> str:
    """The per-method means: most relevant first (lower is better), least first, random floor."""
    header = ["method", "slides", "AUC most relevant first (lower better)", "least relevant first",
              "random order"]
    body = [[row["method"], str(row["n_slides"]), *(f"{row[column]:.3f}" for column in COLUMNS)]
            for row in evaluation.summary()]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in body])
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))
                     for line in [header, *body])
