"""What the page reads about the slides: the slide list, each slide's info, patch scores, the gallery.

A mixin of `ViewerContent` (which holds the slides, their versions and their open tiles): the
payloads are plain dicts that `ViewerContent` wraps as ``attnmapData(name, payload)`` scripts.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from attnmap.view.deepzoom import DeepZoomGrid

TOP_K = 12
THUMB_PIXELS = 160


class NotFoundError(Exception):
    """The URL names nothing the viewer serves."""


class UnavailableError(Exception):
    """The files behind the view changed and no longer read (a run still writing them, say)."""


def _hex_colours(cmap: str) -> list[str]:
    from attnmap.render.scale import colour_table

    return ["#{:02x}{:02x}{:02x}".format(*(int(c) for c in row)) for row in colour_table(cmap, 64)]


def _scale_json(scale) -> dict:
    """A scale as the page's colour bar takes it: `ScoreScale.to_json`, and under ``tickSets`` the
    ticks of each count the PNG's legend tries (`TICK_COUNTS`, most first): the page shows the
    first whose labels do not run into each other at the bar's width on screen."""
    from attnmap.render.legend import TICK_COUNTS

    tick_sets = [[[p, label] for p, label in scale.ticks(count)] for count in TICK_COUNTS]
    return {**scale.to_json(), "tickSets": tick_sets}


def _fine_legend(score_set) -> dict | None:
    """The second colour bar of a fine-map score set: the maps' own scale, shown when zoomed in."""
    fine = score_set.fine
    if fine is None:
        return None
    from attnmap.wsi.heatmap.fine_render import MIN_FINE_PIXELS

    scale = _scale_json(fine.scale)
    scale["caption"] = (
        f"{fine.method} relevance per pixel inside the {fine.count} patches with a fine map, drawn "
        f"where a patch spans at least {MIN_FINE_PIXELS} screen pixels: centred on 0, clipped at "
        f"±{fine.scale.high:.3g} (99th pct of |R| over all maps)"
    )
    return {"scale": scale, "colours": _hex_colours(fine.scale.cmap), "minPixels": MIN_FINE_PIXELS}


class Payloads:
    """The payloads of `ViewerContent` (see the module's docstring)."""

    def slide_list(self) -> dict:
        rows = []
        for index, slide in enumerate(self.slides):
            prediction = slide.prediction
            probabilities = prediction.get("probabilities") or []
            predicted = prediction.get("prediction")
            label = prediction.get("label")
            rows.append(
                {
                    "index": index,
                    "id": slide.slide_id,
                    # a slide list without labels: `wsi run` records "", the page then said "label"
                    "label": None if isinstance(label, str) and not label.strip() else label,
                    "prediction": prediction.get("prediction_name", predicted),
                    "probability": float(probabilities[predicted])
                    if isinstance(predicted, int) and 0 <= predicted < len(probabilities)
                    else None,
                }
            )
        unshown = [{"id": item.slide_id, "reason": item.reason} for item in self.unshown]
        return {"slides": rows, "unshown": unshown}

    def info(self, index: int) -> dict:
        slide = self.slides[index]
        grid = DeepZoomGrid(self._dimensions(index))
        methods = []
        for m, (name, score_set) in enumerate(slide.score_sets.items()):
            order = np.argsort(-score_set.scores, kind="stable")[:TOP_K]
            methods.append(
                {
                    "index": m,
                    "name": name,
                    "scale": _scale_json(score_set.scale),
                    "colours": _hex_colours(score_set.scale.cmap),
                    "fine": _fine_legend(score_set),
                    "note": score_set.note,
                    "tiles": grid.tile_source(f"tiles/{index}/heat-{m}_files/", "png"),
                    "patchSize": score_set.patch_size,
                    "count": len(score_set.scores),
                    "top": [
                        {
                            "rank": r + 1,
                            "x": int(score_set.coords[i, 0]),
                            "y": int(score_set.coords[i, 1]),
                            "score": float(score_set.scores[i]),
                            "thumb": f"thumbs/{index}/{m}/{r + 1}.jpeg",
                        }
                        for r, i in enumerate(order)
                    ],
                }
            )
        tiles = self.slide_tiles(index)
        return {
            "index": index,
            "id": slide.slide_id,
            "version": self.slide_version(index),
            "width": grid.dimensions[0],
            "height": grid.dimensions[1],
            "mpp": tiles.slide.mpp,
            "prediction": self.slide_list()["slides"][index],
            "slide": grid.tile_source(f"tiles/{index}/slide_files/", "jpeg"),
            "tissue": grid.tile_source(f"tiles/{index}/tissue_files/", "png") if slide.tissue else None,
            "annotations": grid.tile_source(f"tiles/{index}/annotations_files/", "png")
            if slide.annotations
            else None,
            "methods": methods,
        }

    def patches(self, index: int, method: int) -> dict:
        score_set = self.slides[index].score_sets[self.method_names(index)[method]]
        return {
            "coords": score_set.coords.reshape(-1).tolist(),
            "scores": [float(f"{v:.6g}") for v in score_set.scores.tolist()],
            "ranks": score_set.ranks.tolist(),
            "patchSize": score_set.patch_size,
            "overlapping": score_set.overlapping,
        }

    def _dimensions(self, index: int) -> tuple[int, int]:
        return self.slide_tiles(index).slide.dimensions

    def thumb(self, index: int, method: int, rank: int) -> bytes:
        score_set = self.slides[index].score_sets[self.method_names(index)[method]]
        if not 1 <= rank <= min(TOP_K, len(score_set.scores)):
            raise NotFoundError(f"no top-{rank} patch")
        i = int(np.argsort(-score_set.scores, kind="stable")[rank - 1])
        slide = self.slide_tiles(index).slide
        origin = tuple(int(v) for v in score_set.coords[i])
        image = _patch_picture(slide, origin, score_set.patch_size)
        if score_set.fine is not None:  # the patch with its fine map, as in the fine-map gallery
            layer = self.layer(index, f"heat-{method}")
            image = Image.fromarray(layer.blend_patch(np.asarray(image), origin))
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=85)
        return buffer.getvalue()


def _patch_picture(slide, origin: tuple[int, int], patch: int) -> Image.Image:
    """The slide over one patch as a `THUMB_PIXELS` square, white where the patch passes the slide's edge.

    Why only the part inside: CLAM's padded patches pass the last row and column, and a patch size
    of another level (or a damaged record) can exceed the whole slide; reading the patch whole would
    ask the slide for pixels it does not have, or for a region of any size.
    """
    width, height = slide.dimensions
    left, top = max(origin[0], 0), max(origin[1], 0)
    right, bottom = min(origin[0] + patch, width), min(origin[1] + patch, height)
    picture = Image.new("RGB", (THUMB_PIXELS, THUMB_PIXELS), (255, 255, 255))
    if right <= left or bottom <= top:
        return picture
    level = slide.get_best_level_for_downsample(patch / THUMB_PIXELS)
    downsample = float(slide.level_downsamples[level])
    size = (max(1, round((right - left) / downsample)), max(1, round((bottom - top) / downsample)))
    scale = THUMB_PIXELS / patch
    box = (round((left - origin[0]) * scale), round((top - origin[1]) * scale))
    shown = (max(1, round((right - left) * scale)), max(1, round((bottom - top) * scale)))
    pixels = slide.read_region((left, top), level, size)
    picture.paste(Image.fromarray(pixels).resize(shown, Image.BILINEAR), box)
    return picture
