"""The harness of `bench/view_sweep.py`: raw HTTP requests, the viewer served in this process, the
checks of each answer, the classes, and the folders the cases damage (see view_sweep.py)."""

from __future__ import annotations

import io
import json
import os
import re
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the tests' slide and run-folder writers

from synthetic_slide_files import write_pipeline_setup, write_test_slide  # noqa: E402, F401 - for the cases
from view_fixtures import write_run_folder  # noqa: E402, F401 - for the cases

CLASSES = ("ok", "error", "crash", "stale", "wrong", "escaped")
TIMEOUT = 20.0
CANARY = "attnmap-view-sweep-canary-7f3a"
LEAKS = (CANARY, "root:x:0:0", "from __future__ import annotations")
WAIT = 1.3  # > ViewerContent's check interval (1 s): a change is seen by the next request after it


# --- a log every thread writes to ------------------------------------------------------------------


class Log(io.TextIOBase):
    """Thread-safe text sink standing in for sys.stderr while servers run in this process."""

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            self._parts.append(text)
        return len(text)

    def text(self) -> str:
        with self._lock:
            return "".join(self._parts)


LOG = Log()


# --- raw HTTP ---------------------------------------------------------------------------------------


class Answer:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def line(self) -> str:
        return " ".join(self.body.decode("utf-8", "replace").split())[:120]


def request(
    port: int, target: str | bytes, method: str = "GET", headers: dict[str, str] | None = None
) -> Answer:
    """One request sent byte for byte (no client-side normalisation); `TimeoutError` past TIMEOUT."""
    head = {"Host": f"127.0.0.1:{port}", "Connection": "close", **(headers or {})}
    raw_target = target if isinstance(target, bytes) else target.encode("utf-8")
    data = method.encode() + b" " + raw_target + b" HTTP/1.1\r\n"
    data += b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v in head.items()) + b"\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    reply = b"".join(chunks)
    if not reply:
        raise ConnectionError("the server closed the connection without an answer")
    header, _, body = reply.partition(b"\r\n\r\n")
    lines = header.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    fields = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        fields[key.strip().lower()] = value.strip()
    return Answer(status, fields, body)


class Served:
    """A folder served as `attnmap view` serves it (reload on change), on a free port, in a thread."""

    def __init__(self, path: Path, annotations: Path | None = None, scores: list[Path] | None = None) -> None:
        from attnmap.view import ViewerContent, find_slides, make_server

        def load():
            return find_slides(path, list(scores or []), annotations)

        self.path, self.annotations, self.scores = path, annotations, list(scores or [])
        self.content = ViewerContent(load(), reload=load, watch=[path])
        self.server = make_server(self.content, 0)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def get(self, target: str | bytes, method: str = "GET", headers: dict | None = None) -> Answer:
        return request(self.port, target, method, headers)

    def alive(self) -> bool:
        try:
            return self.get("/data/version.js").status == 200
        except OSError:
            return False

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.content.close()


def fresh(served: Served):
    """A viewer opened afresh on what ``served`` serves (what it should now answer), or the error."""
    from attnmap.errors import InputError
    from attnmap.view import ViewerContent, find_slides

    try:
        return ViewerContent(find_slides(served.path, served.scores, served.annotations))
    except InputError as exc:
        return exc


# --- checking answers -------------------------------------------------------------------------------

TILE = re.compile(r"^/?tiles/(\d+)/(\w+|heat-\d+)_files/(\d+)/(\d+)_(\d+)\.(jpeg|png)$")


def leaked(body: bytes) -> str | None:
    text = body.decode("utf-8", "replace")
    return next((leak for leak in LEAKS if leak in text), None)


def check_tile(served: Served, target: str, answer: Answer) -> str | None:
    """Why a 200 tile answer is wrong, or None."""
    from attnmap.view.deepzoom import DeepZoomGrid

    match = TILE.match(target.split("?")[0])
    if not match:
        return None
    index, _, level, col, row, fmt = match.groups()
    try:
        dims = served.content.slide_tiles(int(index)).slide.dimensions
        expected = DeepZoomGrid(dims).region(int(level), int(col), int(row)).pixels
    except Exception:  # noqa: BLE001
        return f"served a tile that does not exist: {target}"
    try:
        image = Image.open(io.BytesIO(answer.body))
        image.load()
    except Exception as exc:  # noqa: BLE001
        return f"body is no image: {exc}"
    if image.format.lower() != fmt:
        return f"a {image.format} body for .{fmt}"
    if image.size != expected and image.size != (1, 1):  # (1, 1): the empty overlay tile
        return f"tile is {image.size}, its address says {expected}"
    return None


def check_dzi(served: Served, index: int, answer: Answer) -> str | None:
    dims = served.content.slide_tiles(index).slide.dimensions
    found = re.search(rb'Width="(\d+)" Height="(\d+)"', answer.body)
    if not found or (int(found.group(1)), int(found.group(2))) != tuple(dims):
        return f"descriptor says {found and found.groups()}, the slide is {dims}"
    return None


def info_layers(served: Served, index: int) -> set[str]:
    """The layers the page's info lists for slide ``index``."""
    info = json.loads(served.get(f"/data/{index}/info.js").body.decode().split(", ", 1)[1].rsplit(")", 1)[0])
    layers = {"slide"} | {f"heat-{m['index']}" for m in info["methods"]}
    return layers | {name for name in ("tissue", "annotations") if info.get(name)}


def _payload(body: bytes) -> bytes:
    """A data script without the parts that name this process (versions and tokens)."""
    text = re.sub(rb'"version":"[^"]*"', b'"version":""', body)
    return re.sub(rb'"[0-9a-f]{12}-\d+(-[0-9a-f]{16})?"', b'""', text)


def probe_urls(content) -> list[str]:
    """The URLs a page of ``content`` loads: lists, each slide's info, descriptors, tiles, thumbs."""
    from attnmap.view.deepzoom import DeepZoomGrid

    urls = ["/data/slides.js"]
    for index, slide in enumerate(content.slides):
        grid = DeepZoomGrid(content.slide_tiles(index).slide.dimensions)
        top = grid.level_count - 1
        layers = ["slide", *(f"heat-{m}" for m in range(len(slide.score_sets)))]
        layers += [name for name in ("tissue", "annotations") if getattr(slide, name)]
        urls += [f"/data/{index}/info.js", f"/tiles/{index}/slide.dzi"]
        for layer in layers:
            fmt = "jpeg" if layer == "slide" else "png"
            for level in sorted({top, max(0, top - 2), 0}):
                cols, rows = grid.level_tiles[level]
                for col, row in {(0, 0), (cols // 2, rows // 2), (cols - 1, rows - 1)}:
                    urls.append(f"/tiles/{index}/{layer}_files/{level}/{col}_{row}.{fmt}")
        for m in range(len(slide.score_sets)):
            urls += [f"/data/{index}/patches-{m}.js", f"/thumbs/{index}/{m}/1.jpeg"]
    return urls


def compare_with_fresh(served: Served) -> tuple[str, str]:
    """(class, detail) of the live server against a viewer opened afresh on its folder."""
    from attnmap.view import NotFoundError

    now = fresh(served)
    if isinstance(now, Exception):  # nothing shows now: the live server must not serve the old slides
        answer = served.get("/data/slides.js")
        if answer.status == 200:
            return "stale", f"serves slides.js although the folder no longer views: {now}"
        return (
            ("error", f"{answer.status} {answer.line()}")
            if answer.status in (404, 503)
            else (
                "crash",
                f"{answer.status} {answer.line()}",
            )
        )
    try:
        urls = probe_urls(now)
        for url in urls:
            try:
                body, _ = now.get(url.lstrip("/"))
                want: tuple[int, bytes] = (200, body)
            except NotFoundError:
                want = (404, b"")
            except Exception as exc:  # noqa: BLE001 - a fresh viewer failing is a crash of its own
                return "crash", f"fresh viewer: {url}: {type(exc).__name__}: {exc}"[:200]
            got = served.get(url)
            if got.status >= 500:
                return "crash", f"{url}: {got.status} {got.line()}"
            if got.status != want[0]:
                return "stale", f"{url}: {got.status}, a fresh viewer: {want[0]}"
            if got.status == 200 and _payload(got.body) != _payload(want[1]):
                return "stale", f"{url}: other bytes than a fresh viewer's"
        return "ok", f"{len(urls)} URLs as a fresh viewer"
    finally:
        now.close()


# --- the sweep --------------------------------------------------------------------------------------


class Sweep:
    def __init__(self, root: Path, verbose: bool) -> None:
        self.root, self.verbose = root, verbose
        self.results: list[tuple[str, str, str]] = []
        self.last = time.perf_counter()

    def record(self, cls: str, name: str, detail: str, expect: str | None = None) -> None:
        surprise = expect is not None and cls != expect
        self.results.append((cls, name, detail))
        now = time.perf_counter()
        took, self.last = now - self.last, now
        print(f"{cls:8s} {'!' if surprise else ' '} {took:5.1f}s {name:55s} {detail}", flush=True)

    def case(self, name: str, fn: Callable[[], tuple[str, str]], expect: str | None = None) -> None:
        """Run one case; a traceback it leaves in the server's log, or one it raises, is a crash."""
        before = len(LOG.text())
        try:
            cls, detail = fn()
        except TimeoutError:
            cls, detail = "crash", f"no answer within {TIMEOUT:.0f} s"
        except Exception as exc:  # noqa: BLE001 - a sweep records whatever escapes
            cls, detail = "crash", f"{type(exc).__name__}: {exc}"[:200]
            if self.verbose:
                traceback.print_exc(file=sys.__stdout__)
        log = LOG.text()[before:]
        if "Traceback" in log and cls != "crash":
            cls, detail = "crash", "traceback in the server's log: " + log.strip().splitlines()[-1][:150]
        if self.verbose and log.strip():
            print(log.strip()[-1500:], file=sys.__stdout__)
        self.record(cls, name, detail, expect)

    def http(
        self,
        served: Served,
        name: str,
        target: str | bytes,
        method: str = "GET",
        headers: dict | None = None,
        expect: str | None = None,
        check: Callable[[Answer], str | None] | None = None,
    ) -> None:
        def run() -> tuple[str, str]:
            answer = served.get(target, method, headers)
            tile = target if isinstance(target, str) and method == "GET" else ""  # HEAD: no body to decode
            return classify(served, tile, answer, check)

        self.case(name, run, expect)


def classify(served: Served, target: str, answer: Answer, check=None) -> tuple[str, str]:
    leak = leaked(answer.body)
    if leak:
        return "escaped", f"{answer.status}: body holds {leak!r}"
    if answer.status >= 500 and not (answer.status == 503 and len(answer.body.splitlines()) == 1):
        return "crash", f"{answer.status} {answer.line()}"
    if answer.status >= 400 or answer.status == 503:
        if not served.alive():
            return "crash", f"{answer.status}, then the server stopped answering"
        if len(answer.body.splitlines()) > 1 or len(answer.body) > 300:
            return "crash", f"{answer.status} with a {len(answer.body)}-byte body: {answer.line()}"
        return "error", f"{answer.status} {answer.line()}"
    why = check(answer) if check else None
    if why is None and answer.status == 200:
        why = check_tile(served, target, answer)
    return ("wrong", why) if why else ("ok", f"{answer.status} {len(answer.body)} B")


# --- folders ----------------------------------------------------------------------------------------


def write_blockmap(path: Path, coords: np.ndarray, scores: np.ndarray, patch: int, **extra) -> None:
    with h5py.File(path, "w") as handle:
        handle.create_dataset("attention_scores", data=scores.reshape(-1, 1))
        handle.create_dataset("coords", data=coords)
        handle.attrs["patch_size"] = patch
        for key, value in extra.items():
            handle.create_dataset(key, data=value)


def odd_run(root: Path, size: tuple[int, int], n_levels: int = 1) -> Path:
    """A run folder of one slide of ``size`` with patches covering it."""
    slide_id = f"odd_{size[0]}x{size[1]}_{n_levels}"
    slide = write_test_slide(root / "slides" / f"{slide_id}.tif", seed=3, size=size, n_levels=n_levels)
    patch = max(1, min(64, *size))
    xs, ys = np.meshgrid(np.arange(0, size[0], patch), np.arange(0, size[1], patch))
    coords = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.int64)
    folder = root / "run" / "heatmaps" / slide_id
    folder.mkdir(parents=True)
    scores = np.linspace(0, 1, len(coords)).astype(np.float32)
    write_blockmap(folder / f"{slide_id}_blockmap.h5", coords, scores, patch)
    (folder / f"{slide_id}_prediction.json").write_text(
        json.dumps({"slide_path": str(slide), "prediction": 0})
    )
    return root / "run"


def base_run(root: Path, n: int = 2) -> Path:
    """The fixture's run folder with ``n`` slides (slide_a, slide_b, ...)."""
    for i in range(n):
        run = write_run_folder(root, f"slide_{chr(97 + i)}", seed=i)
    (root / "secret.txt").write_text(CANARY + "\n")  # beside the run folder: never to be served
    return run


def rename_slide(run: Path, old: str, new: str) -> None:
    """Give a slide of a run folder another id (its folder, its files, its tissue record)."""
    folder = run / "heatmaps" / old
    for path in folder.iterdir():
        path.rename(folder / path.name.replace(old, new, 1))
    folder.rename(run / "heatmaps" / new)
    (run / "tissue" / f"{old}.json").rename(run / "tissue" / f"{new}.json")


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def touch_later(path: Path) -> None:
    """Make sure a rewrite is seen as one even on coarse file-system clocks."""
    later = time.time() + 2
    os.utime(path, (later, later))
