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
from attnmap.fingerprint import FINGERPRINT_KEY, Fingerprint, file_identity
from attnmap.wsi.pipeline.config import PipelineConfig, SlideEntry

STAGE_VERSIONS = {
    "tissue": 1,
    "patches": 1,
    "features": 1,
    "attention": 1,
    "overlap": 1,
    # 2 (these three and fine_tiff): the slide under a heatmap, and a shrunk level, read block by block
    # where read_region reads each block (levels with rounded sides had shifted blocks)
    "heatmap": 2,
    "heatmap_tiff": 2,
    "original": 2,
    "fine": 1,
    "fine_gallery": 1,
    "fine_tiff": 2,
    "sampling": 1,
    "prediction": 1,
    "export": 2,  # 2: tissue rings oriented by RFC 7946 (exteriors counterclockwise)
}


def slide_identity(path: str | Path) -> dict[str, Any]:
    """The slide file's identity (content included), and its companion files'
    (`attnmap.wsi.slide_files.companion_files`) when it has any: pixels replaced in a MIRAX ``.dat``
    file change it too."""
    from attnmap.wsi.slide_files import companion_files

    identity = file_identity(path)
    companions = companion_files(Path(path))
    if companions:  # no key for one-file slides: their fingerprints stay as they were
        identity["files"] = {item.name: file_identity(item)["sha256"] for item in companions}
    reading = _pixel_reading(path)
    if reading is not None:  # no key for slides OpenSlide reads as stored: theirs stay as they were
        identity["reading"] = {"pixels": reading, "version": PIXEL_READING_VERSION}
    return identity


PIXEL_READING_VERSION = 2
"""Raise it when the way a reader turns stored samples into RGB changes (2: alpha over white,
palettes, CMYK, min-is-white and 16-bit grey read by their meaning, pyramids by their largest image)."""


def _pixel_reading(path: str | Path) -> str | None:
    from attnmap.file_hash import file_stamp

    return _pixel_reading_of(file_stamp(path))


@functools.lru_cache(maxsize=4096)
def _pixel_reading_of(stamp: tuple) -> str | None:
    """`Slide.pixel_reading` of the file version ``stamp`` names: opening a slide costs a
    millisecond or two, and a run asks for each slide's fingerprints several times."""
    from attnmap.errors import InputError
    from attnmap.wsi.slide import open_slide

    try:
        with open_slide(stamp[0]) as slide:
            return slide.pixel_reading()
    except InputError:  # the slide's own stage reports it
        return None


@functools.lru_cache(maxsize=4096)
def _shrink_factors(stamp: tuple, vis_level: int) -> dict[str, float | None]:
    """What segment_tissue (its own level) and a heatmap at ``vis_level`` shrink the slide of file
    version ``stamp`` by, None where they read the level as it is: the slide opened once per version,
    not once per fingerprint (a millisecond or two each)."""
    from attnmap.errors import InputError
    from attnmap.wsi.heatmap.renderer import shrunk_vis_downsample
    from attnmap.wsi.slide import open_slide
    from attnmap.wsi.tissue import chosen_segmentation

    try:
        with open_slide(stamp[0]) as slide:
            _, factor = chosen_segmentation(slide)
            return {"segmentation": factor if factor > 1 else None,
                    "heatmap": shrunk_vis_downsample(slide, vis_level) if vis_level < 0 else None}
    except InputError:  # the slide's own stage reports it
        return {"segmentation": None, "heatmap": None}


def encoder_identity(features: Any) -> dict[str, Any]:
    """What determines the encoder's weights: a file's content, or a name + its checkpoint + seed."""
    encoder = features.encoder
    file = encoder.removeprefix(TORCHSCRIPT_PREFIX)  # `torchscript:PATH` names a file too
    # how the file is loaded and its bytes, not its path: an encoder moved elsewhere is the same one
    loader = "torchscript" if encoder.startswith(TORCHSCRIPT_PREFIX) else "file"
    named_file = {"loader": loader, **file_identity(file)} if Path(file).is_file() else None
    identity: dict[str, Any] = {
        "encoder": named_file or encoder,
        "checkpoint": file_identity(features.checkpoint) if features.checkpoint else None,
        "input_size": features.input_size,
        "seed": features.seed,
    }
    if features.encoder_args:  # absent when empty: earlier runs keep their fingerprints
        identity["encoder_args"] = json.loads(features.encoder_arguments())
    from attnmap.vit.timm_folder import timm_folder

    folder = timm_folder(encoder[len("timm:") :]) if encoder.startswith("timm:") else None
    if folder is not None:  # timm:FOLDER: its files make the encoder
        config_file = Path(encoder[len("timm:") :]) / "config.json"
        identity["folder"] = {"config": file_identity(config_file),
                              "weights": file_identity(folder.weights)}
    from attnmap.model_cache import folder_files

    files = folder_files(encoder) if encoder.startswith("hf:") else []  # hf:FOLDER: configs and weights
    if files:
        identity["folder"] = {path.name: file_identity(path) for path in files}
    return identity


class StageFingerprints:
    """Fingerprints of one slide's stage outputs under one configuration (computed on first use).

    Lazy, so that `attnmap wsi segment` (no model, no encoder in its configuration) only computes
    what it needs.
    """

    def __init__(self, entry: SlideEntry, config: PipelineConfig, root: str | Path | None = None) -> None:
        self.entry = entry
        self.config = config
        self.root = Path(root if root is not None else config.run.output_dir)  # the run's output folder

    def _brought(self, stage: str) -> dict[str, Any]:
        """``{"<stage>_file": identity}`` when the slide's patch or feature file is the user's own
        (CLAM's, no attnmap record: used as it is, so its content is what the next stage reads), so
        that a replaced one remakes what follows; nothing for attnmap's own files (their fingerprint
        is chained already) or none at all."""
        from attnmap.stored import DamagedOutputError, stored_record
        from attnmap.wsi.pipeline.outputs import SlideOutputs

        outputs = SlideOutputs(self.root, self.entry.slide_id)
        path = outputs.patches if stage == "patches" else outputs.features_h5
        try:
            record = stored_record(path)
        except DamagedOutputError:
            return {}
        if record is None or "attnmap_version" in record or FINGERPRINT_KEY in record:
            return {}
        return {f"{stage}_file": file_identity(path)}

    def _params(self, section: str, drop: tuple[str, ...] = ()) -> dict[str, Any]:
        values = dict(self.config.stage_parameters(section)[section])
        return {key: value for key, value in values.items() if key not in drop}

    def _make(self, stage: str, **inputs: Any) -> Fingerprint:
        return Fingerprint({"stage": stage, "version": STAGE_VERSIONS[stage], **inputs})

    @functools.cached_property
    def tissue(self) -> Fingerprint:
        return self._make(
            "tissue",
            slide=slide_identity(self.entry.path),
            # an unset channel adds no key, so the tissue of runs made before the option is reused
            segmentation=self._params("segmentation", drop=() if self.config.segmentation.channel
                                      else ("channel",)),
            **self._shrunk("segmentation"),
        )

    def _shrunk(self, drawing: str) -> dict[str, float]:
        """``{"shrunk": factor}`` when the level that ``drawing`` ("segmentation": the tissue, "heatmap":
        the PNG and the original) leaves to attnmap is too large to read whole and is read shrunk
        (a slide without a pyramid: `attnmap.wsi.tissue.chosen_segmentation`,
        `attnmap.wsi.heatmap.renderer.shrunk_vis_downsample`), so that the full-level outputs of
        earlier versions are not reused; nothing otherwise, so other slides keep their fingerprints."""
        from attnmap.file_hash import file_stamp

        level = self.config.segmentation.level if drawing == "segmentation" else self.config.heatmap.vis_level
        if level is not None and level >= 0:  # a level the user names is read as it is
            return {}
        try:
            stamp = file_stamp(self.entry.path)
        except OSError:  # the slide's own stage reports it
            return {}
        factor = _shrink_factors(stamp, self.config.heatmap.vis_level)[drawing]
        return {} if factor is None else {"shrunk": factor}

    @functools.cached_property
    def patches(self) -> Fingerprint:
        # the ROI file's content, not only its folder's name: an edited ROI reused the old patches.
        # No key without one, so that grids made before keep their fingerprint.
        roi = self.roi_file
        return self._make(
            "patches",
            tissue=self.tissue.value,
            patching=self._params("patching"),
            **({"roi": file_identity(roi)} if roi is not None else {}),
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
            **self._brought("patches"),
            encoder=encoder_identity(self.config.features),
            **({} if precision == "float32" else {"precision": precision}),
        )  # save_pt is not a cause: a missing .pt when asked for is a reason of its own

    @functools.cached_property
    def model(self) -> dict[str, Any]:
        return file_identity(self.config.model.checkpoint)

    @functools.cached_property
    def attention(self) -> Fingerprint:
        brought = self._brought("features")
        return self._make("attention", features=self.features.value, model=self.model, **brought)

    @functools.cached_property
    def overlap(self) -> Fingerprint:
        """The overlapping-grid attention a heatmap with ``overlap > 0`` draws (encoder + model)."""
        return self._make("overlap", attention=self.attention.value, overlap=self.config.heatmap.overlap)

    # Drawn files, one fingerprint each: a new legend must not redraw a full-resolution TIFF (minutes on
    # a large slide), nor a new tiff_level or fine-map option the PNG.
    PNG_ONLY = ("roi", "vis_level", "downscale", "legend")
    """Heatmap options that only the PNG depends on (the TIFFs draw the whole slide, their own levels)."""
    FILE_CHOICES = ("tiff", "save_original", "tiff_level", "fine")
    """Which files are written, not how the heatmap PNG looks."""

    def _scores_drawn(self) -> dict[str, Any]:
        """What every heatmap picture shows: the scores (blockmap, overlap grid) and the tissue mask."""
        heatmap = self.config.heatmap
        return {
            "attention": self.attention.value,
            "overlap": self.overlap.value if heatmap.overlap > 0 else None,
            "tissue": self.tissue.value if heatmap.use_tissue_mask else None,
        }

    @functools.cached_property
    def heatmap(self) -> Fingerprint:
        """The heatmap PNG."""
        heatmap = self._params("heatmap", drop=self.FILE_CHOICES)
        names = list(self.config.model.class_names)
        return self._make(
            "heatmap",
            **self._scores_drawn(),
            heatmap=heatmap,
            **self._shrunk("heatmap"),
            # the legend's title names the classes; no key without names, so older files keep theirs
            **({"class_names": names} if names and self.config.heatmap.legend else {}),
        )

    @functools.cached_property
    def heatmap_tiff(self) -> Fingerprint:
        """The pyramidal TIFF overlay: the drawing options but the PNG's own, at ``tiff_level``."""
        return self._make(
            "heatmap_tiff",
            **self._scores_drawn(),
            heatmap=self._params("heatmap", drop=self.PNG_ONLY + ("tiff", "save_original", "fine")),
        )

    @functools.cached_property
    def original(self) -> Fingerprint:
        """The slide drawn at the heatmap's level (``save_original``): the slide and the level only."""
        vis_level = self.config.heatmap.vis_level
        return self._make(
            "original", slide=self.tissue.inputs["slide"], vis_level=vis_level, **self._shrunk("heatmap")
        )

    @functools.cached_property
    def fine(self) -> Fingerprint:
        """The fine-map file: what the attention depends on (patches, encoder, model) and ``heatmap.fine``.

        Not the drawing options: a new colour map redraws the fine TIFF from the same maps. The section
        as read (`FineConfig.as_mapping`), not as written: a default left out or spelt out is the same maps.
        """
        from attnmap.wsi.heatmap.fine import FineConfig

        fine = FineConfig.from_mapping(self.config.heatmap.fine)
        return self._make("fine", attention=self.attention.value, fine=fine and fine.as_mapping())

    @functools.cached_property
    def fine_gallery(self) -> Fingerprint:
        """The gallery of the top patches above their fine maps: drawn from the map file alone."""
        return self._make("fine_gallery", fine=self.fine.value)

    @functools.cached_property
    def fine_tiff(self) -> Fingerprint:
        """The fine TIFF: the map file, the drawing options (at full resolution) and the tissue mask."""
        return self._make(
            "fine_tiff",
            fine=self.fine.value,
            tissue=self.tissue.value if self.config.heatmap.use_tissue_mask else None,
            heatmap=self._params("heatmap", drop=self.PNG_ONLY + self.FILE_CHOICES + ("scale",)),
        )

    def drawn(self, name: str) -> Fingerprint:
        """The fingerprint of heatmap-folder picture ``name`` (``heatmap.png``, ``heatmap.tif``, ...)."""
        return {
            "heatmap.png": self.heatmap,
            "heatmap.tif": self.heatmap_tiff,
            "original.png": self.original,
            "fine_gallery.png": self.fine_gallery,
            "heatmap_fine.tif": self.fine_tiff,
        }[name]

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
