"""The fingerprint of each `wsi run` stage output for one slide, chained from the slide file down.

Each stage's fingerprint holds its own parameters, its stage version and its upstream stages'
fingerprints, so a change anywhere reaches exactly the outputs below it: a new ``a_t`` remakes the
tissue and everything after; a new model checkpoint (content hash) remakes attention, heatmap,
samples and prediction but keeps tissue, patches and features; a heatmap colour map remakes the
heatmap only; a new ``features.precision`` remakes the features and everything after them.
Parameters that cannot change a result (batch size, workers, device, output folder) are left out,
so changing them reuses everything.

``STAGE_VERSIONS`` is the attnmap version that matters: raise a stage's number when its
algorithm or file layout changes, and only that stage and what follows are recomputed.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from attnmap.checkpoint import TORCHSCRIPT_PREFIX
from attnmap.fingerprint import Fingerprint, file_identity
from attnmap.wsi.pipeline.config import PipelineConfig, SlideEntry

STAGE_VERSIONS = {
    "tissue": 1,
    "patches": 1,
    "features": 1,
    "attention": 1,
    "overlap": 1,
    "heatmap": 1,
    "fine": 1,
    "sampling": 1,
    "prediction": 1,
    "export": 1,
}


def encoder_identity(features: Any) -> dict[str, Any]:
    """What determines the encoder's weights: a file's content, or a name + its checkpoint + seed."""
    encoder = features.encoder
    file = encoder.removeprefix(TORCHSCRIPT_PREFIX)  # `torchscript:PATH` names a file too
    named_file = {"name": encoder, **file_identity(file, content=True)} if Path(file).is_file() else None
    identity: dict[str, Any] = {
        "encoder": named_file or encoder,
        "checkpoint": file_identity(features.checkpoint, content=True) if features.checkpoint else None,
        "input_size": features.input_size,
        "seed": features.seed,
    }
    if features.encoder_args:  # absent when empty: earlier runs keep their fingerprints
        identity["encoder_args"] = json.loads(features.encoder_arguments())
    from attnmap.vit.models import timm_folder

    folder = timm_folder(encoder[len("timm:") :]) if encoder.startswith("timm:") else None
    if folder is not None:  # timm:FOLDER: its files make the encoder
        config_file = Path(encoder[len("timm:") :]) / "config.json"
        identity["folder"] = {"config": file_identity(config_file, content=True),
                              "weights": file_identity(folder.weights, content=True)}
    from attnmap.wsi.hf_encoder import folder_files, hf_folder

    hf = hf_folder(encoder)
    if hf is not None and hf.is_dir():  # hf:FOLDER: its configurations and weights files
        identity["folder"] = {path.name: file_identity(path, content=True) for path in folder_files(hf)}
    return identity


class StageFingerprints:
    """Fingerprints of one slide's stage outputs under one configuration (computed on first use).

    Lazy, so that `attnmap wsi segment` (no model, no encoder in its configuration) only computes
    what it needs.
    """

    def __init__(self, entry: SlideEntry, config: PipelineConfig) -> None:
        self.entry = entry
        self.config = config

    def _params(self, section: str, drop: tuple[str, ...] = ()) -> dict[str, Any]:
        values = dict(self.config.stage_parameters(section)[section])
        return {key: value for key, value in values.items() if key not in drop}

    def _make(self, stage: str, **inputs: Any) -> Fingerprint:
        return Fingerprint({"stage": stage, "version": STAGE_VERSIONS[stage], **inputs})

    @functools.cached_property
    def tissue(self) -> Fingerprint:
        return self._make(
            "tissue", slide=file_identity(self.entry.path), segmentation=self._params("segmentation")
        )

    @functools.cached_property
    def patches(self) -> Fingerprint:
        # the ROI file's content, not only its folder's name: an edited ROI reused the old patches.
        # No key without one, so that grids made before keep their fingerprint.
        roi = self.roi_file
        return self._make(
            "patches",
            tissue=self.tissue.value,
            patching=self._params("patching"),
            **({"roi": file_identity(roi, content=True)} if roi is not None else {}),
            **self._grid(),
        )

    def _grid(self) -> dict[str, str]:
        """``{"grid": "downsample"}`` when the patch level's downsample is not a whole number
        (`attnmap.wsi.patching.grid_scale`: the grid there is no longer CLAM's overlapping one, so
        patches made before must not be reused); nothing otherwise, so other grids keep theirs."""
        level = self.config.patching.level
        if level == 0:
            return {}
        from attnmap.errors import InputError
        from attnmap.wsi.patching import grid_scale
        from attnmap.wsi.slide import open_slide

        try:
            with open_slide(self.entry.path) as slide:
                scales = slide.level_scale_xy(level)
        except InputError:  # the slide's own stage reports it
            return {}
        return {"grid": "downsample"} if any(grid_scale(s) != int(s) for s in scales) else {}

    @property
    def roi_file(self) -> Path | None:
        """The slide's ROI annotation file when ``patching.roi_annotations`` is set and has one."""
        folder = self.config.patching.roi_annotations
        if folder is None:
            return None
        from attnmap.wsi.annotations import annotation_file

        return annotation_file(folder, self.entry.slide_id)

    @functools.cached_property
    def features(self) -> Fingerprint:
        # half precision gives other (close) numbers; float32 adds no key, so that features written
        # before the option existed keep their fingerprint
        precision = self.config.features.precision
        return self._make(
            "features",
            patches=self.patches.value,
            encoder=encoder_identity(self.config.features),
            **({} if precision == "float32" else {"precision": precision}),
        )  # save_pt is not a cause: a missing .pt when asked for is a reason of its own

    @functools.cached_property
    def model(self) -> dict[str, Any]:
        return file_identity(self.config.model.checkpoint, content=True)

    @functools.cached_property
    def attention(self) -> Fingerprint:
        return self._make("attention", features=self.features.value, model=self.model)

    @functools.cached_property
    def overlap(self) -> Fingerprint:
        """The overlapping-grid attention a heatmap with ``overlap > 0`` draws (encoder + model)."""
        return self._make("overlap", attention=self.attention.value, overlap=self.config.heatmap.overlap)

    @functools.cached_property
    def heatmap(self) -> Fingerprint:
        heatmap = self._params("heatmap", drop=("tiff", "save_original"))  # which files: not how drawn
        names = list(self.config.model.class_names)
        return self._make(
            "heatmap",
            attention=self.attention.value,
            overlap=self.overlap.value if self.config.heatmap.overlap > 0 else None,
            tissue=self.tissue.value if self.config.heatmap.use_tissue_mask else None,
            heatmap=heatmap,
            # the legend's title names the classes; no key without names, so older files keep theirs
            **({"class_names": names} if names and self.config.heatmap.legend else {}),
        )

    @functools.cached_property
    def fine(self) -> Fingerprint:
        """The fine-map file: what the attention depends on (patches, encoder, model) and ``heatmap.fine``.

        Not the drawing options: a new colour map redraws the fine TIFF from the same maps.
        """
        return self._make("fine", attention=self.attention.value, fine=self.config.heatmap.fine)

    @functools.cached_property
    def sampling(self) -> Fingerprint:
        return self._make("sampling", attention=self.attention.value, sampling=self._params("sampling"))

    @functools.cached_property
    def export(self) -> Fingerprint:
        """The QuPath GeoJSON: the scores and predicted class it carries, the tissue it may add."""
        tissue = self.tissue.value if self.config.export.geojson_tissue else None
        return self._make("export", prediction=self.prediction.value, tissue=tissue)

    @functools.cached_property
    def prediction(self) -> Fingerprint:
        return self._make(
            "prediction",
            attention=self.attention.value,
            class_names=list(self.config.model.class_names),
            slide_id=self.entry.slide_id,
            slide_path=self.entry.path,
            label=self.entry.label,
        )
