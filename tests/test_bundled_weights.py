"""Each bundled weights file agrees with the JSON record beside it (and with its own metadata)."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import load_file

from attnmap.data.shapes import SHAPE_CLASSES
from attnmap.data.shapes_model import SHAPES_VIT_CONFIG
from attnmap.mil.checkpoint import clean_clam_keys, infer_clam_config, read_state_dict
from attnmap.provenance import model_checksum

WEIGHTS = Path(__file__).parents[1] / "src" / "attnmap" / "data" / "weights"


def _record(name: str) -> dict:
    return json.loads((WEIGHTS / name).read_text())


def _metadata(path: Path) -> dict[str, str]:
    with safe_open(str(path), "pt") as handle:
        return handle.metadata() or {}


def test_shapes_vit_record_matches_the_file_and_its_metadata():
    path = WEIGHTS / "shapes_vit.safetensors"
    record = _record("shapes_vit.json")
    assert record["weights_sha256"] == model_checksum(path)
    assert record["state_sha256"] == model_checksum(load_file(str(path)))
    inside = json.loads(_metadata(path)["attnmap_record"])
    assert inside == {key: value for key, value in record.items() if key != "weights_sha256"}
    assert record["config"] == SHAPES_VIT_CONFIG and record["classes"] == list(SHAPE_CLASSES)


def test_tiny_encoder_record_matches_the_file_and_its_metadata():
    path = WEIGHTS / "tiny_encoder.safetensors"
    record = _record("tiny_encoder.json")
    assert record["weights_sha256"] == model_checksum(path)
    assert record["model_sha256"] == model_checksum(load_file(str(path)))
    inside = _metadata(path)
    assert inside and all(record[key] == value for key, value in inside.items())


def test_demo_clam_record_matches_the_checkpoint():
    path = WEIGHTS / "demo_clam_sb.pt"
    record = _record("demo_clam_sb.json")
    assert record["model_sha256"] == model_checksum(path)
    inferred = infer_clam_config(clean_clam_keys(read_state_dict(path)))
    stated = record["model_config"]
    for key in ("model", "gate", "size", "n_classes", "embed_dim", "dropout"):
        assert inferred[key] == stated[key], key
