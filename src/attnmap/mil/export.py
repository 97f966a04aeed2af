"""Writing per-patch attention of a bag to h5 and CSV (``attnmap mil attention``, ``attnmap wsi run``).

``<slide>_attention.h5``:
  - ``coords`` (N, 2) int64 level-0 [x, y] (absent when the bag had none; ``patch_index`` always);
  - ``attention_raw`` / ``attention_softmax`` / ``attention_percentile`` (N, K): every branch;
  - ``attention_scores`` (N, 1): raw scores of the reported branch (the predicted class's for
    CLAM_MB), the dataset name and shape of CLAM's ``_blockmap.h5`` so its tools can read it;
  - ``scores_<method>`` (N,): one per relevance method asked for (`attnmap.mil.explain`: attention,
    gradient_x_input, integrated_gradients, lrp, occlusion), for the class in attribute ``target``;
  - ``logits``, ``probabilities`` (C,); attributes ``prediction``, ``branch``, ``slide_id``,
    ``score_branch_kind`` and the provenance record (`attnmap.provenance.provenance`).

``<slide>_attention.csv``: one row per patch: ``x, y`` (or ``patch_index``), raw / softmax /
percentile of the reported branch, for several branches ``raw_branch<k>`` columns, then one
``score_<method>`` column per relevance method; the provenance goes to the sidecar
``<slide>_attention.json``.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from attnmap.errors import InputError
from attnmap.io_utils import atomic_path, write_bytes_atomic
from attnmap.mil.bags import ATTENTION_SUFFIX, Bag, checked_coords, is_attention_output
from attnmap.mil.base import AttentionMILBase
from attnmap.mil.explain import METHODS, explain
from attnmap.mil.readout import readout_for, resolve_target
from attnmap.mil.scores import DEFAULT_CHUNK, BagAttention, convert_scores, infer_bag
from attnmap.provenance import provenance


@dataclass
class AttentionExport:
    """What `export_attention` computed and where it wrote it."""

    slide_id: str
    result: BagAttention
    branch: int
    h5_path: Path
    csv_path: Path | None
    target: int | None = None
    relevance: dict[str, np.ndarray] | None = None
    prediction_name: str | None = None


def _scores_all_branches(result: BagAttention, kind: str) -> np.ndarray:
    return np.stack([convert_scores(row, kind) for row in result.raw], axis=1)  # (N, K)


def _relevance(
    model: AttentionMILBase,
    features: object,
    method: str,
    target: int,
    chunk_size: int,
    result: BagAttention,
    progress: bool,
) -> np.ndarray:
    """`explain`'s scores for ``target``; 'attention' from the attention pass already made (the
    same chunks through the same layers, so the same numbers): a bag read from its file is then
    read once, not twice."""
    if method != "attention":
        return explain(model, features, method, target=target, chunk_size=chunk_size, progress=progress)
    target = resolve_target(model, target, result.prediction)
    return result.raw[readout_for(model).branch[target]]


def export_attention(
    model: AttentionMILBase,
    bag: Bag | torch.Tensor | np.ndarray,
    out_dir: str | Path,
    *,
    coords: np.ndarray | None = None,
    slide_id: str | None = None,
    branch: int | None = None,
    write_csv: bool = True,
    chunk_size: int = DEFAULT_CHUNK,
    model_name: str | None = None,
    extra_provenance: Mapping[str, object] | None = None,
    methods: Sequence[str] = (),
    target: int | None = None,
    progress: bool = False,
    class_names: Sequence[str] | None = None,
) -> AttentionExport:
    """Compute one bag's attention (chunked) and write ``<slide>_attention.h5`` (+ ``.csv``).

    A bag from `attnmap.mil.bag_stream.open_bag` is read from its file one chunk at a time;
    ``progress`` shows a bar over the chunks of the attention pass (and over integrated gradients'
    steps when they take several passes).

    ``methods`` adds per-patch relevance scores (`attnmap.mil.explain`) for class ``target``
    (default: the predicted class) as ``scores_<method>`` datasets and ``score_<method>`` columns.
    ``class_names`` (one per class index, e.g. `fold_files.class_names_for`) adds the attributes
    ``prediction_name`` and ``class_names`` (JSON) and the sidecar's ``prediction_name``.
    """
    import h5py

    from attnmap.wsi.patch_geometry import write_geometry

    unknown = [name for name in methods if name not in METHODS]
    if unknown:
        raise InputError(
            f"unknown relevance method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}"
        )

    if class_names is not None and len(class_names) != model.n_classes:
        raise InputError(f"{len(class_names)} class names for a model of {model.n_classes} classes")
    geometry = None
    if isinstance(bag, Bag):
        features, coords, slide_id = (
            bag.features,
            bag.coords if coords is None else coords,
            slide_id or bag.slide_id,
        )
        geometry = bag.geometry if coords is bag.coords else None  # other coords: not the bag's patches
    else:
        features = bag
    if not slide_id:
        raise InputError("export_attention needs a slide_id for features given without a Bag")
    if Path(slide_id).name != slide_id or slide_id == "..":
        # the id names the output files: a path in it would write them outside out_dir
        raise InputError(f"slide_id {slide_id!r} names output files, so it cannot hold a path")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"out_dir {out_dir} is an existing file; give a folder")
    result = infer_bag(model, features, chunk_size=chunk_size, progress=progress)
    n_patches = result.raw.shape[1]
    if coords is not None and not (isinstance(bag, Bag) and coords is bag.coords):  # given, not read
        # the readers' rule: the h5 truncated 255.9999 to pixel 255 while the CSV wrote the floats
        coords = checked_coords(f"coords of slide {slide_id!r}", coords, n_patches)
    chosen = result.branch_for(branch)
    explained = result.prediction if target is None else target
    relevance = {name: _relevance(model, features, name, explained, chunk_size, result, progress)
                 for name in dict.fromkeys(methods)}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    record = provenance(
        method="mil-attention",
        parameters={"branch": chosen, "chunk_size": chunk_size,
                    **({"methods": ",".join(relevance), "target": explained} if relevance else {})},
        model=model,
        model_name=model_name or type(model).__name__,
        slide_id=slide_id,
        **dict(extra_provenance or {}),
    )
    all_raw = result.raw.T.astype(np.float32)
    softmax = _scores_all_branches(result, "softmax").astype(np.float32)
    percentile = _scores_all_branches(result, "percentile").astype(np.float32)
    h5_path = out_dir / f"{slide_id}{ATTENTION_SUFFIX}"
    named = None if class_names is None else str(class_names[result.prediction])
    csv_path = out_dir / f"{slide_id}_attention.csv"
    # an earlier run's files go first and each file is written whole or not at all: a run stopped
    # while writing (a 10^6-row CSV takes a while) leaves neither a cut file nor another model's CSV
    for earlier in (h5_path, csv_path, csv_path.with_suffix(".json")):
        earlier.unlink(missing_ok=True)
    with atomic_path(h5_path) as temporary, h5py.File(temporary, "w") as handle:
        if coords is not None:
            write_geometry(handle.create_dataset("coords", data=np.asarray(coords, dtype=np.int64)), geometry)
        handle.create_dataset("patch_index", data=np.arange(n_patches, dtype=np.int64))
        handle.create_dataset("attention_raw", data=all_raw)
        handle.create_dataset("attention_softmax", data=softmax)
        handle.create_dataset("attention_percentile", data=percentile)
        handle.create_dataset("attention_scores", data=all_raw[:, chosen : chosen + 1])
        for name, values in relevance.items():
            handle.create_dataset(f"scores_{name}", data=values.astype(np.float32))
        handle.create_dataset("logits", data=result.logits.astype(np.float32))
        handle.create_dataset("probabilities", data=result.probs.astype(np.float32))
        for key, value in record.items():
            handle.attrs[key] = str(value)  # plain str: h5py rejects str subclasses such as TorchVersion
        handle.attrs.update({"prediction": result.prediction, "branch": chosen, "n_patches": n_patches})
        if relevance:
            handle.attrs["target"] = explained
        if named is not None:
            handle.attrs.update({"prediction_name": named, "class_names": json.dumps(list(class_names))})
    if not write_csv:
        csv_path = None
    else:
        with atomic_path(csv_path) as temporary:
            _write_patch_csv(temporary, coords, all_raw, softmax, percentile, chosen, relevance)
        _write_sidecar(csv_path, {**record, "prediction": str(result.prediction), "branch": str(chosen),
                                  **({"prediction_name": named} if named is not None else {})})
    return AttentionExport(slide_id, result, chosen, h5_path, csv_path,
                           explained if relevance else None, relevance or None, named)


def _write_patch_csv(
    path: Path,
    coords: np.ndarray | None,
    raw: np.ndarray,
    softmax: np.ndarray,
    percentile: np.ndarray,
    branch: int,
    relevance: Mapping[str, np.ndarray],
) -> None:
    n_patches, n_branches = raw.shape
    header = ["x", "y"] if coords is not None else ["patch_index"]
    header += ["attention_raw", "attention_softmax", "attention_percentile"]
    if n_branches > 1:
        header += [f"raw_branch{k}" for k in range(n_branches)]
    header += [f"score_{name}" for name in relevance]
    scores = [raw[:, branch], softmax[:, branch], percentile[:, branch]]
    if n_branches > 1:
        scores += [raw[:, k] for k in range(n_branches)]
    scores += list(relevance.values())
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        # a block of rows a column at a time: a row at a time, each value a numpy scalar, a
        # 10^6-patch bag's CSV took two minutes, longer than its attention pass
        for start in range(0, n_patches, _CSV_BLOCK):
            stop = min(start + _CSV_BLOCK, n_patches)
            if coords is not None:  # str of the numpy values, as the csv module writes them
                columns = [[str(value) for value in coords[start:stop, axis]] for axis in (0, 1)]
            else:
                columns = [[str(index) for index in range(start, stop)]]
            # tolist: the exact values as Python floats, which format as the numpy scalars did
            columns += [[f"{value:.8g}" for value in column[start:stop].tolist()] for column in scores]
            writer.writerows(zip(*columns, strict=True))


_CSV_BLOCK = 65_536  # rows formatted at once: a few MB of text


def _write_sidecar(csv_path: Path, record: Mapping[str, str]) -> Path:
    sidecar = csv_path.with_suffix(".json")
    return write_bytes_atomic(sidecar, (json.dumps(dict(record), indent=2, sort_keys=True) + "\n").encode())


def outputs_of_other_bags(out_dir: str | Path, slide_ids: Sequence[str]) -> list[str]:
    """Slide ids of ``<id>_attention.h5`` files in ``out_dir`` that an earlier ``mil attention`` run
    wrote for bags not in ``slide_ids``: kept (they may be another batch's results), but named, since
    ``predictions.csv`` lists this run's bags only."""
    kept, others = set(slide_ids), []
    for path in sorted(Path(out_dir).glob(f"*{ATTENTION_SUFFIX}")):
        slide_id = path.name.removesuffix(ATTENTION_SUFFIX)
        if slide_id not in kept and is_attention_output(path):
            others.append(slide_id)
    return others


def write_predictions_csv(
    exports: Sequence[AttentionExport], path: str | Path, record: Mapping[str, str] | None = None
) -> Path:
    """One row per bag: slide_id, prediction (the class index), prediction_name (when the exports
    were given class names), the reported branch, n_patches and the probabilities p_<index>."""
    path = Path(path)
    n_classes = max((len(item.result.probs) for item in exports), default=0)
    named = bool(exports) and all(item.prediction_name is not None for item in exports)
    with atomic_path(path) as temporary, open(temporary, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["slide_id", "prediction", *(["prediction_name"] if named else []), "branch",
                         "n_patches"] + [f"p_{c}" for c in range(n_classes)])
        for item in exports:
            probs = [f"{value:.8g}" for value in item.result.probs]
            name = [item.prediction_name] if named else []
            writer.writerow(
                [item.slide_id, item.result.prediction, *name, item.branch, item.result.raw.shape[1], *probs]
            )
    if record is not None:
        _write_sidecar(path, record)
    return path
