"""The viewer's content: every URL it serves, as bytes, for the live server and the static export alike.

Why one resolver: the page must open both from `attnmap view`'s server and from an exported folder
on disk, so URLs are plain relative file paths and data comes as small ``.js`` files (a browser
loads scripts and images from ``file://`` but refuses ``fetch``). URLs name slides and methods by
index, never by user-given names or paths, so nothing outside the package's static folder and the
slides' own tiles can be addressed; anything else is `NotFoundError`.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path, PurePosixPath

import numpy as np

from attnmap.errors import InputError
from attnmap.view.cache import ByteLRU
from attnmap.view.deepzoom import DeepZoomGrid, SlideTiles, encode_png
from attnmap.view.layers import FineLayer, HeatmapLayer, OutlineLayer, OverlapLayer
from attnmap.view.payloads import NotFoundError, Payloads, UnavailableError
from attnmap.view.sources import Discovery, UnshownSlide, ViewSlide, slide_digest, source_state

TISSUE_COLOUR = (0, 170, 60)
ANNOTATION_COLOUR = (20, 40, 230)
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".jpeg": "image/jpeg",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
    ".dzi": "application/xml",
}
TILE_URL = re.compile(
    r"^tiles/(\d+)/(slide|tissue|annotations|heat-(\d+))_files/(\d+)/(\d+)_(\d+)\.(jpeg|png)$", re.ASCII
)
DZI_URL = re.compile(r"^tiles/(\d+)/(slide|tissue|annotations|heat-(\d+))\.dzi$", re.ASCII)
DATA_URL = re.compile(r"^data/(\d+)/(info|patches-(\d+))\.js$", re.ASCII)
THUMB_URL = re.compile(r"^thumbs/(\d+)/(\d+)/(\d+)\.jpeg$", re.ASCII)
SLIDE_PATH = re.compile(r"^(?:tiles|data|thumbs)/(\d+)/", re.ASCII)


def _close(item: object) -> None:
    closable = item.slide if isinstance(item, SlideTiles) else item
    if hasattr(closable, "close"):
        closable.close()


def _split(found: list[ViewSlide] | Discovery) -> tuple[list[ViewSlide], list[UnshownSlide]]:
    """(slides, unshown) of what `find_slides` or `discover` gave."""
    if isinstance(found, Discovery):
        return list(found.slides), list(found.unshown)
    return list(found), []


def _static_root():
    return resources.files("attnmap.view") / "static"


def _js(name: str, payload: object) -> bytes:
    return f"attnmapData({json.dumps(name)}, {json.dumps(payload, separators=(',', ':'))});\n".encode()


MAX_OPEN_SLIDES = 8
"""Slides held open at once (handle, tile generator, layers); the least recently viewed is closed past
it and opened again when viewed. Why: OpenSlide keeps a tile cache and file handles per open slide,
and a page browsing a cohort of hundreds of slides would otherwise hold every one it showed."""


class ViewerContent(Payloads):
    """Resolves relative URLs to (bytes, content type); tiles are rendered on demand and cached.

    ``reload`` (with ``watch``, extra paths such as the folder given): a server stays open while the
    user reruns `wsi run`, so `refresh` re-reads the slides when a file or folder they came from
    changed, and drops every tile, layer and cached byte of the old ones; `version` (part of the
    server's ETags) changes with them, so a browser never keeps showing the old picture.
    """

    def __init__(
        self,
        slides: list[ViewSlide] | Discovery,
        cache_bytes: int = 128 << 20,
        reload: Callable[[], list[ViewSlide] | Discovery] | None = None,
        watch: Sequence[str | Path] = (),
        check_interval: float = 1.0,
    ) -> None:
        self.slides, self.unshown = _split(slides)
        self.cache = ByteLRU(cache_bytes)
        self._lock = threading.Lock()
        self._reload_lock = threading.Lock()
        self._tiles: dict[int, SlideTiles] = {}
        self._layers: dict[tuple[int, str], object] = {}
        self._retired: list[tuple[int, object]] = []  # (last generation that used it, handle)
        self._evicted: list[object] = []  # past MAX_OPEN_SLIDES, closed once no request is in flight
        self._in_flight: dict[int, int] = {}  # requests being answered, by the generation they began in
        self.empty_png = encode_png(np.zeros((1, 1, 4), dtype=np.uint8))
        self._reload, self.check_interval = reload, check_interval
        self._watch = tuple(Path(p) for p in watch)
        self._sources = self._slide_sources(self.slides, self.unshown)
        self._state = self._source_state()
        self._checked_at = time.monotonic()
        self._token, self._generation = secrets.token_hex(6), 0
        self.error: str | None = None
        self._slide_versions = self._versions(self.slides)

    # ------------------------------------------------------------------------------ freshness
    @property
    def version(self) -> str:
        """Names this process's current content: another server, or a reload, gives another."""
        return f"{self._token}-{self._generation}"

    def _versions(self, slides: list[ViewSlide]) -> list[str]:
        return [f"{self._token}-{index}-{slide_digest(slide)}" for index, slide in enumerate(slides)]

    def slide_version(self, index: int) -> str:
        """Names slide ``index``'s picture in this process: it changes only when that slide's data
        (or its place in the list) does, so a rerun of other slides leaves its open pages alone."""
        return self._slide_versions[index]

    def versions(self) -> dict[str, str]:
        """Each shown slide's version by id: what an open page compares with its own slide's."""
        return {
            slide.slide_id: version for slide, version in zip(self.slides, self._slide_versions, strict=False)
        }

    def version_of(self, path: str) -> tuple[str, ...]:
        """The versions a request for ``path`` may name (``?v=``): its slide's, or the whole content's."""
        match = SLIDE_PATH.match(path.lstrip("/"))
        if match and int(match.group(1)) < len(self._slide_versions):
            return (self._slide_versions[int(match.group(1))], self.version)
        return (self.version,)

    def _slide_sources(self, slides: list[ViewSlide], unshown: list[UnshownSlide]) -> tuple[Path, ...]:
        return tuple(p for slide in [*slides, *unshown] for p in slide.sources)

    def _source_state(self) -> tuple:
        return source_state([*self._watch, *self._sources])

    def refresh(self) -> None:
        """Re-read the slides if their files changed (checked at most every ``check_interval`` s).

        One thread re-reads at a time, without holding the lock that tile requests take: a cohort's
        re-read opens every slide, and meanwhile the old content (and its version) is still served.
        """
        if self._reload is None or time.monotonic() - self._checked_at < self.check_interval:
            return
        if not self._reload_lock.acquire(blocking=False):
            return  # another request is re-reading
        try:
            self._checked_at = time.monotonic()
            state = self._source_state()
            if state == self._state and self.error is None:  # while in error, try again each time
                return
            try:
                (slides, unshown), error = _split(self._reload()), None
            except Exception as exc:  # noqa: BLE001 - shown as one line until the files read again
                message = str(exc) if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"
                slides, unshown, error = [], [], " ".join(message.split())
            # the state read before the reload: a file written during it is read again next time
            self._state = state
            if error is not None and error == self.error:
                return  # the same failure again: nothing new to show, no reload for open pages
            versions = self._versions(slides)
            same = versions == self._slide_versions and unshown == self.unshown
            if error is None and self.error is None and same:
                # what is shown already (a second look after slides were added or removed: the state
                # above was taken over the old slides' files): keep it, its tiles and its version
                self._sources = self._slide_sources(slides, unshown)
                return
            with self._lock:
                # requests in flight may still hold the old slides' handles: closed once answered
                generation = self._generation
                self._retired += [
                    (generation, item) for item in [*self._tiles.values(), *self._layers.values()]
                ]
                self._tiles, self._layers = {}, {}
                self.cache.clear()
                self.slides, self.unshown, self.error, self._slide_versions = slides, unshown, error, versions
                if error is None:  # after a failed read, keep watching the files of the last good one
                    self._sources = self._slide_sources(slides, unshown)
                self._generation += 1
        finally:
            self._reload_lock.release()

    # ------------------------------------------------------------------------------ resources
    def slide_tiles(self, index: int) -> SlideTiles:
        evicted: list[object] = []
        with self._lock:
            if index in self._tiles:
                self._tiles[index] = self._tiles.pop(index)  # the most recently viewed last
            else:
                from attnmap.wsi.slide import open_slide

                self._tiles[index] = SlideTiles(open_slide(self.slides[index].slide_path))
                while len(self._tiles) > MAX_OPEN_SLIDES:
                    oldest = next(iter(self._tiles))
                    evicted.append(self._tiles.pop(oldest))
                    evicted += [self._layers.pop(key) for key in list(self._layers) if key[0] == oldest]
                if any(self._in_flight.values()):  # a request may still draw from them: closed after it
                    self._evicted += evicted
                    evicted = []
            tiles = self._tiles[index]
        for item in evicted:  # no request in flight (a direct call, as the export makes): closed now
            _close(item)
        return tiles

    def layer(self, index: int, name: str):
        tiles = self.slide_tiles(index)  # (before the lock, which `slide_tiles` takes too)
        with self._lock:
            key = (index, name)
            if key in self._layers:
                return self._layers[key]
            slide = self.slides[index]
            if name == "tissue":
                made = OutlineLayer(slide.tissue, TISSUE_COLOUR)
            elif name == "annotations":
                made = OutlineLayer(slide.annotations, ANNOTATION_COLOUR, thickness=3)
            else:
                score_set = slide.score_sets[self.method_names(index)[int(name.split("-")[1])]]
                if score_set.overlapping:
                    made = OverlapLayer(score_set, tiles.slide)
                else:
                    made = (FineLayer if score_set.fine is not None else HeatmapLayer)(score_set)
            if self._tiles.get(index) is tiles:  # not if the slide was closed meanwhile (MAX_OPEN_SLIDES)
                self._layers[key] = made
            return made

    def method_names(self, index: int) -> list[str]:
        return list(self.slides[index].score_sets)

    def close(self) -> None:
        retired = [item for _, item in self._retired]
        for item in [*self._tiles.values(), *self._layers.values(), *retired, *self._evicted]:
            _close(item)

    def _close_retired(self) -> None:
        """Close the handles of replaced slides that no request begun before the replacement uses.

        Why: a server left open through many reruns would otherwise keep every old slide open.
        """
        with self._lock:
            oldest = min((g for g, count in self._in_flight.items() if count), default=self._generation)
            done = [item for generation, item in self._retired if generation < oldest]
            self._retired = [(generation, item) for generation, item in self._retired if generation >= oldest]
            if not any(self._in_flight.values()):
                done, self._evicted = done + self._evicted, []
        for item in done:
            _close(item)

    def tile(self, index: int, layer: str, level: int, col: int, row: int) -> bytes:
        # the generation first: a tile drawn from a slide that a reload replaces meanwhile is cached
        # under the old generation, where no later request looks
        key = (self._generation, index, layer, level, col, row)
        tiles = self.slide_tiles(index)
        try:
            region = tiles.grid.region(level, col, row)
        except Exception as exc:  # noqa: BLE001 - any bad address is a missing tile
            raise NotFoundError(str(exc)) from None
        if layer == "slide":
            return self.cache.get_or_make(key, lambda: tiles.tile(level, col, row))
        source = self.layer(index, layer)

        def make() -> bytes:
            rgba = source.rgba(region)
            return self.empty_png if rgba is None else encode_png(rgba)

        return self.cache.get_or_make(key, make)

    # ------------------------------------------------------------------------------ routing
    def get(self, url: str) -> tuple[bytes, str]:
        """(body, content type) for a URL path relative to the viewer root; `NotFoundError` otherwise."""
        with self._lock:
            generation = self._generation
            self._in_flight[generation] = self._in_flight.get(generation, 0) + 1
        try:
            return self._get(url)
        finally:
            with self._lock:
                self._in_flight[generation] -= 1
                if not self._in_flight[generation]:
                    del self._in_flight[generation]
            if self._retired or self._evicted:
                self._close_retired()

    def _get(self, url: str) -> tuple[bytes, str]:
        path = url.split("?", 1)[0].split("#", 1)[0].lstrip("/") or "index.html"
        suffix = PurePosixPath(path).suffix
        if path == "data/version.js":  # polled by an open page, which reloads itself when it changes
            body = _js("version", self.version) + _js("slideVersions", self.versions())
            return body, CONTENT_TYPES[".js"]
        if self.error is not None and not path.startswith("static/") and path != "index.html":
            raise UnavailableError(self.error)
        if path == "data/slides.js":
            return _js("slides", self.slide_list()), CONTENT_TYPES[".js"]
        for pattern, handler in (
            (TILE_URL, self._tile_url),
            (DZI_URL, self._dzi_url),
            (DATA_URL, self._data_url),
            (THUMB_URL, self._thumb_url),
        ):
            match = pattern.match(path)
            if match:
                return handler(match), CONTENT_TYPES[suffix]
        return self._static(path), CONTENT_TYPES.get(suffix, "application/octet-stream")

    def _checked(self, index: str, method: str | None = None) -> tuple[int, int | None]:
        slide = int(index)
        if slide >= len(self.slides):
            raise NotFoundError(f"no slide {slide}")
        if method is not None and int(method) >= len(self.slides[slide].score_sets):
            raise NotFoundError(f"no method {method}")
        return slide, None if method is None else int(method)

    def _checked_layer(self, index: str, layer: str, method: str | None) -> int:
        """The slide of a tile or descriptor URL; `NotFoundError` unless the slide has that layer
        (the outlines only where the slide has tissue contours or annotations: as the page lists)."""
        slide, _ = self._checked(index, method)
        if layer in ("tissue", "annotations") and not getattr(self.slides[slide], layer):
            raise NotFoundError(f"slide has no {layer}")
        return slide

    def _tile_url(self, match: re.Match) -> bytes:
        layer, fmt = match.group(2), match.group(7)
        slide = self._checked_layer(match.group(1), layer, match.group(3))
        if (fmt == "jpeg") != (layer == "slide"):
            raise NotFoundError("wrong tile format")
        return self.tile(slide, layer, int(match.group(4)), int(match.group(5)), int(match.group(6)))

    def _dzi_url(self, match: re.Match) -> bytes:
        slide = self._checked_layer(match.group(1), match.group(2), match.group(3))
        return (
            DeepZoomGrid(self._dimensions(slide)).dzi("jpeg" if match.group(2) == "slide" else "png").encode()
        )

    def _data_url(self, match: re.Match) -> bytes:
        slide, method = self._checked(match.group(1), match.group(3))
        if method is None:
            return _js(f"info-{slide}", self.info(slide))
        return _js(f"patches-{slide}-{method}", self.patches(slide, method))

    def _thumb_url(self, match: re.Match) -> bytes:
        slide, method = self._checked(match.group(1), match.group(2))
        return self.thumb(slide, method, int(match.group(3)))

    def _static(self, path: str) -> bytes:
        parts = PurePosixPath(path).parts
        if not parts or any(part in ("..", ".", "") or "\\" in part or ":" in part for part in parts):
            raise NotFoundError(path)
        if "/".join(parts) != path:  # "index.html/": the page would load, its relative links would not
            raise NotFoundError(path)
        if parts == ("index.html",):
            parts = ("index.html",)
        elif parts[0] != "static":
            raise NotFoundError(path)
        else:
            parts = parts[1:]
        node = _static_root()
        for part in parts:
            node = node / part
        if not node.is_file():
            raise NotFoundError(path)
        return node.read_bytes()
