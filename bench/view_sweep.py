"""Robustness sweep of the zoomable viewer: `attnmap view` and its 127.0.0.1 server hit with requests
and output folders nobody tried (traversal, odd addresses, odd slides, damaged or changing outputs).

Run (about a minute on 2 shared cores; everything in a temporary folder)::

    PYTHONPATH=src nice python bench/view_sweep.py [--only SUBSTRING] [--keep DIR] [-v]

Builds tiny `wsi run` output folders the way ``tests/view_fixtures.py`` does (1024×768 synthetic
TIFF slides, a blockmap with two score sets, fine maps, prediction, tissue), slides of odd sizes, and
one real `wsi run` cohort of two slides; serves each with the viewer's own server (`make_server`,
port 0, in this process, reloading as `attnmap view` does) and fires raw HTTP requests at it, each
with a timeout. The command line itself runs in subprocesses for its options.

Each case is classified:

- ``ok``: the answer is right (a tile decodes at the size its Deep Zoom address has, a descriptor
  names the slide's size, a payload equals what a viewer opened afresh on the same folder serves).
- ``error``: a clean refusal: a 4xx (or a 503 naming files that do not read) with a one-line body,
  after which the server still answers; for the command line, exit 2 with one ``attnmap: error:``
  line.
- ``crash``: any other 5xx, a traceback in the server's log, no answer within the timeout, a server
  that stops answering, or a command line that fails with a traceback.
- ``stale``: after the outputs changed on disk (and the viewer's check interval passed), the open
  server answers otherwise than a viewer opened afresh on the changed folder.
- ``wrong``: a tile of the wrong size or format, a descriptor of another size, a layer listed or
  served that the slide does not have, a slide listed that the last run's cohort no longer has.
- ``escaped``: an answer carrying a file from outside the served content (a canary file beside the
  run folder, ``/etc/passwd``, the package's Python source), or data served to a page of another
  origin (a foreign ``Host``: DNS rebinding).

Prints one line per case (``CLASS  seconds  case  detail``) and the counts per class at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the tests' slide and run-folder writers

from synthetic_slide_files import write_pipeline_setup, write_test_slide  # noqa: E402
from view_fixtures import write_run_folder  # noqa: E402

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

    def __init__(self, path: Path, annotations: Path | None = None) -> None:
        from attnmap.view import ViewerContent, find_slides, make_server

        def load():
            return find_slides(path, [], annotations)

        self.path = path
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


def fresh(path: Path, annotations: Path | None = None):
    """A viewer opened afresh on ``path`` (what the live server should now answer), or the error."""
    from attnmap.errors import InputError
    from attnmap.view import ViewerContent, find_slides

    try:
        return ViewerContent(find_slides(path, [], annotations))
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


def compare_with_fresh(served: Served, annotations: Path | None = None) -> tuple[str, str]:
    """(class, detail) of the live server against a viewer opened afresh on its folder."""
    from attnmap.view import NotFoundError

    now = fresh(served.path, annotations)
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


# --- cases ------------------------------------------------------------------------------------------


def request_cases(s: Sweep) -> None:
    run = base_run(s.root / "req")
    served = Served(run)
    h = s.http
    try:
        h(served, "page", "/", expect="ok")
        h(served, "slide list", "/data/slides.js", expect="ok")
        secret = str((s.root / "req" / "secret.txt").resolve())
        pkg = "/static/../app.py"
        for target in (
            "/../secret.txt",
            "/../../secret.txt",
            "/static/../../secret.txt",
            "/static/%2e%2e/%2e%2e/secret.txt",
            "/static/%2E%2E%2F%2E%2E%2Fsecret.txt",
            "/static/..%2fapp.py",
            "/static/%252e%252e/app.py",
            "/static/.%2e/app.py",
            pkg,
            "/static/../../view/app.py",
            "//etc/passwd",
            "/etc/passwd",
            "/static//etc/passwd",
            "/static/" + secret,
            secret,
            "/%2Fetc%2Fpasswd",
            "/static/..\\app.py",
            "/static/%5c..%5capp.py",
            "/static\\..\\..\\secret.txt",
            "/static/C:/Windows/win.ini",
            "/static/x%00.js",
            "/index.html%00.png",
            "/static/%00",
            "/tiles/../../secret.txt",
            "/tiles/0/slide_files/../../../../secret.txt",
            "/tiles/..%2f..%2fsecret.txt/slide_files/0/0_0.jpeg",
            "/data/../static/../../secret.txt",
            "/data/0/..%2f..%2f..%2fsecret.txt",
            "/thumbs/0/0/..%2f..%2f1.jpeg",
            "/heatmaps/slide_a/slide_a_prediction.json",
            "/slides/slide_a.tif",
            "/run_report.json",
            "../secret.txt",
            "http://127.0.0.1/../secret.txt",
            "/static/%c0%ae%c0%ae/app.py",
            "/static/%ff%fe",
        ):
            h(served, f"traversal {target[:48]}", target, expect="error")
        h(served, "traversal raw NUL byte", b"/static/a\x00b.js", expect="error")
        h(served, "traversal raw backslashes", b"\\..\\secret.txt", expect="error")
        for host in ("evil.example", f"attacker.example:{served.port}", f"127.0.0.1.nip.io:{served.port}"):

            def rebinding(host=host) -> tuple[str, str]:  # a page of another origin reading the data
                answer = served.get("/data/0/info.js", headers={"Host": host})
                if answer.status == 200:
                    return "escaped", f"slide info served to Host: {host} (DNS rebinding)"
                return classify(served, "", answer)

            s.case(f"foreign Host {host.split(':')[0]} (DNS rebinding)", rebinding, expect="error")
        h(
            served,
            "localhost Host",
            "/data/slides.js",
            headers={"Host": f"localhost:{served.port}"},
            expect="ok",
        )

        # names and indexes
        for target in (
            "/tiles/99/slide_files/0/0_0.jpeg",
            "/tiles/-1/slide_files/0/0_0.jpeg",
            "/tiles/slide_a/slide_files/0/0_0.jpeg",
            "/tiles/0/heat-99_files/0/0_0.png",
            "/tiles/0/heat--1_files/0/0_0.png",
            "/tiles/0/heat-attention_files/0/0_0.png",
            "/tiles/0/bogus_files/0/0_0.png",
            "/tiles/0/annotations_files/10/0_0.png",
            "/data/99/info.js",
            "/data/0/patches-99.js",
            "/data/0/patches-attention.js",
            "/data/0/info.json",
            "/thumbs/0/99/1.jpeg",
            "/thumbs/0/0/0.jpeg",
            "/thumbs/0/0/13.jpeg",
            "/thumbs/0/0/" + "9" * 40 + ".jpeg",
            "/tiles/" + "9" * 40 + "/slide_files/0/0_0.jpeg",
            "/data/" + "9" * 40 + "/info.js",
            "/nothing",
            "/static/",
            "/static/nothing.js",
        ):
            h(served, f"unknown {target[:50]}", target, expect="error")
        h(served, "thumb rank 1", "/thumbs/0/0/1.jpeg", expect="ok")
        h(served, "leading zeros slide index", "/tiles/00/slide_files/0/0_0.jpeg", expect="ok")

        # tile addresses (1024x768: 11 levels, level 10 is 5x4 tiles)
        for level, col, row, expect in (
            ("10", "0", "0", "ok"),
            ("10", "4", "3", "ok"),
            ("10", "5", "0", "error"),
            ("10", "0", "4", "error"),
            ("11", "0", "0", "error"),
            ("0", "0", "0", "ok"),
            ("0", "1", "0", "error"),
            ("-1", "0", "0", "error"),
            ("10", "-1", "0", "error"),
            ("1.5", "0", "0", "error"),
            ("10", "0x1", "0", "error"),
            ("10", "1e1", "0", "error"),
            ("10", "%201", "0", "error"),
            ("10", "\u0661", "0", "error"),
            ("9" * 30, "0", "0", "error"),
            ("10", "9" * 30, "9" * 30, "error"),
            ("010", "004", "003", "ok"),
        ):
            for layer, fmt in (("slide", "jpeg"), ("heat-0", "png"), ("heat-2", "png"), ("tissue", "png")):
                target = f"/tiles/0/{layer}_files/{level}/{col}_{row}.{fmt}"
                h(served, f"tile {layer} {level[:6]}/{col[:6]}_{row[:6]}", target, expect=expect)

        # descriptors for every layer, and layers the slide lacks
        listed = info_layers(served, 0)
        for layer in ("slide", "tissue", "annotations", "heat-0", "heat-1", "heat-2", "heat-3"):
            exists = layer in listed

            def dzi_check(answer: Answer, layer=layer, exists=exists) -> str | None:
                if not exists:
                    return f"a descriptor for {layer}, which slide 0 does not have"
                return check_dzi(served, 0, answer)

            h(
                served,
                f"dzi {layer}",
                f"/tiles/0/{layer}.dzi",
                check=dzi_check,
                expect="ok" if exists else "error",
            )
            fmt = "jpeg" if layer == "slide" else "png"

            def tile_check(answer: Answer, layer=layer, exists=exists) -> str | None:
                return None if exists else f"a tile of {layer}, which slide 0 does not have"

            h(
                served,
                f"tile of {layer}",
                f"/tiles/0/{layer}_files/10/2_1.{fmt}",
                check=tile_check,
                expect="ok" if exists else "error",
            )

        # format suffixes
        for target in (
            "/tiles/0/slide_files/10/0_0.png",
            "/tiles/0/heat-0_files/10/0_0.jpeg",
            "/tiles/0/slide_files/10/0_0.jpg",
            "/tiles/0/slide_files/10/0_0.JPEG",
            "/tiles/0/slide_files/10/0_0.webp",
            "/tiles/0/heat-0_files/10/0_0.png.js",
            "/tiles/0/slide.xml",
            "/tiles/0/slide.dzi.xml",
            "/data/0/info.js.map",
        ):
            h(served, f"suffix {target}", target, expect="error")

        # methods and odd requests
        tile = "/tiles/0/heat-0_files/10/2_1.png"
        get = served.get(tile)

        def head_check(answer: Answer) -> str | None:
            if answer.body:
                return f"HEAD answered with a {len(answer.body)}-byte body"
            if answer.headers.get("content-length") != get.headers.get("content-length"):
                return "HEAD's Content-Length differs from GET's"
            return None

        h(served, "HEAD tile", tile, "HEAD", check=head_check, expect="ok")
        h(served, "HEAD unknown", "/nothing", "HEAD", expect="error")
        for method in ("POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT", "PROPFIND"):
            h(served, f"method {method}", tile, method, expect="error")
        h(
            served,
            "conditional GET (If-None-Match)",
            tile,
            headers={"If-None-Match": get.headers.get("etag", "")},
            check=lambda a: None if a.status == 304 else f"{a.status}, not 304",
            expect="ok",
        )
        h(served, "stale version ?v=", tile + "?v=old", expect="error")
        h(served, "garbage query (ignored)", tile + "?v&w=&&%ZZ", expect="ok")
        h(served, "URL of 70,000 chars", "/static/" + "a" * 70000, expect="error")
        h(served, "header of 70,000 chars", "/", headers={"X-Long": "a" * 70000}, expect="error")

        def garbage() -> tuple[str, str]:
            with socket.create_connection(("127.0.0.1", served.port), timeout=TIMEOUT) as sock:
                sock.sendall(b"GARBAGE\r\n\r\n")
                reply = sock.recv(65536)
            words = reply.split() or [b""]
            # a one-word request line is HTTP/0.9: the answer is the body alone
            status = (
                int(words[1]) if words[0].startswith(b"HTTP/") else int(words[0]) if words[0].isdigit() else 0
            )
            if not served.alive():
                return "crash", "server stopped answering"
            return ("error", f"{status}") if 400 <= status < 500 else ("crash", f"{status} {reply[:80]!r}")

        s.case("malformed request line", garbage, expect="error")

        def half_open() -> tuple[str, str]:  # a client that connects and sends nothing must not block others
            sockets = [socket.create_connection(("127.0.0.1", served.port)) for _ in range(20)]
            try:
                return (
                    ("ok", "answered beside 20 idle connections") if served.alive() else ("crash", "blocked")
                )
            finally:
                for sock in sockets:
                    sock.close()

        s.case("20 idle connections", half_open, expect="ok")
    finally:
        served.close()


def concurrency_cases(s: Sweep) -> None:
    """Many threads on more slides than MAX_OPEN_SLIDES: each answer equal to a sequential one."""
    from attnmap.view import ViewerContent, find_slides
    from attnmap.view.app import MAX_OPEN_SLIDES

    root = s.root / "many"
    run = base_run(root, MAX_OPEN_SLIDES + 3)
    served = Served(run)
    try:
        reference = ViewerContent(find_slides(run))
        urls = []
        for index in range(len(reference.slides)):
            urls += [f"/data/{index}/info.js", f"/thumbs/{index}/2/1.jpeg", f"/tiles/{index}/slide.dzi"]
            urls += [
                f"/tiles/{index}/{layer}_files/{lvl}/{c}_{r}.{'jpeg' if layer == 'slide' else 'png'}"
                for layer in ("slide", "heat-0", "heat-1", "heat-2", "tissue")
                for lvl, c, r in ((10, 2, 1), (9, 1, 1), (8, 0, 0), (10, 4, 3))
            ]
        expected = {url: reference.get(url.lstrip("/"))[0] for url in urls}
        reference.close()
        for threads in (4, 16, 48):

            def run_batch(threads=threads) -> tuple[str, str]:
                work = urls * 2
                random.Random(threads).shuffle(work)
                with ThreadPoolExecutor(threads) as pool:
                    answers = list(pool.map(served.get, work))
                bad = [(u, a.status) for u, a in zip(work, answers, strict=True) if a.status != 200]
                if bad:
                    return "crash", f"{len(bad)} of {len(work)} failed, e.g. {bad[0]}"
                differ = [
                    u for u, a in zip(work, answers, strict=True) if _payload(a.body) != _payload(expected[u])
                ]
                if differ:
                    return "wrong", f"{len(differ)} of {len(work)} differ from sequential, e.g. {differ[0]}"
                open_now = len(served.content._tiles)
                if open_now > MAX_OPEN_SLIDES:
                    return "wrong", f"{open_now} slides open after the batch (bound {MAX_OPEN_SLIDES})"
                return "ok", f"{len(work)} requests, {MAX_OPEN_SLIDES + 3} slides, as one at a time"

            s.case(f"concurrent {threads} threads, {MAX_OPEN_SLIDES + 3} slides", run_batch, expect="ok")

        def during_reruns() -> tuple[str, str]:
            """Requests from 8 threads while two slides' scores are rewritten several times."""
            stop = threading.Event()
            failures: list[str] = []

            def hammer(seed: int) -> None:
                rng = random.Random(seed)
                while not stop.is_set():
                    url = rng.choice(urls)
                    try:
                        answer = served.get(url)
                    except OSError as exc:
                        failures.append(f"{url}: {exc}")
                        continue
                    if answer.status >= 500 and answer.status != 503:
                        failures.append(f"{url}: {answer.status} {answer.line()}")

            workers = [threading.Thread(target=hammer, args=(i,)) for i in range(8)]
            for worker in workers:
                worker.start()
            try:
                for step in range(4):
                    for slide_id in ("slide_a", "slide_b"):
                        path = run / "heatmaps" / slide_id / f"{slide_id}_blockmap.h5"
                        with h5py.File(path, "r+") as handle:
                            handle["attention_scores"][...] = -handle["attention_scores"][...] + step
                        touch_later(path)
                    time.sleep(0.7)
            finally:
                stop.set()
                for worker in workers:
                    worker.join()
            if failures:
                return "crash", f"{len(failures)} failed, e.g. {failures[0]}"[:200]
            time.sleep(WAIT)
            return compare_with_fresh(served)

        s.case("concurrent requests during reruns", during_reruns, expect="ok")
    finally:
        served.close()


def every_tile(served: Served) -> tuple[str, str]:
    """Every tile of every layer at every level of slide 0 (and its descriptor and info)."""
    from attnmap.view.deepzoom import DeepZoomGrid

    dims = served.content.slide_tiles(0).slide.dimensions
    grid = DeepZoomGrid(dims)
    layers = sorted(info_layers(served, 0))
    count = 0
    answer = served.get("/tiles/0/slide.dzi")
    why = check_dzi(served, 0, answer) if answer.status == 200 else f"descriptor {answer.status}"
    if why:
        return "wrong", why
    for level in range(grid.level_count):
        cols, rows = grid.level_tiles[level]
        for col in range(min(cols, 12)):
            for row in range(min(rows, 12)):
                for layer in layers:
                    target = (
                        f"/tiles/0/{layer}_files/{level}/{col}_{row}.{'jpeg' if layer == 'slide' else 'png'}"
                    )
                    answer = served.get(target)
                    cls, detail = classify(served, target, answer)
                    if cls != "ok":
                        return cls, f"{target}: {detail}"
                    count += 1
    return "ok", f"{count} tiles of {len(layers)} layers, {grid.level_count} levels"


def odd_slide_cases(s: Sweep) -> None:
    for size, levels in (
        ((1, 300), 1),
        ((300, 1), 1),
        ((1, 1), 1),
        ((2, 2), 1),
        ((254, 254), 1),
        ((255, 255), 1),
        ((253, 509), 1),
        ((509, 253), 2),
        ((2000, 1500), 1),
        ((1100, 700), 3),
    ):

        def run(size=size, levels=levels) -> tuple[str, str]:
            root = s.root / f"odd_{size[0]}_{size[1]}_{levels}"
            try:
                folder = odd_run(root, size, levels)
            except Exception as exc:  # noqa: BLE001 - the test writer cannot make it: not the viewer's case
                return "ok", f"(slide not writable: {type(exc).__name__})"
            from attnmap.errors import InputError

            try:
                served = Served(folder)
            except InputError as exc:
                return "error", str(exc)[:150]
            try:
                return every_tile(served)
            finally:
                served.close()

        s.case(f"odd slide {size[0]}x{size[1]}, {levels} level(s)", run, expect="ok")


def _damage_cases(run: Path) -> list[tuple[str, Callable[[], None]]]:
    folder = run / "heatmaps" / "slide_a"
    blockmap, fine = folder / "slide_a_blockmap.h5", folder / "slide_a_fine_maps.h5"
    prediction, tissue = folder / "slide_a_prediction.json", run / "tissue" / "slide_a.json"
    slide = run.parent / "slides" / "slide_a.tif"

    def h5_with(path: Path, **datasets) -> Callable[[], None]:
        def make() -> None:
            with h5py.File(path, "w") as handle:
                for key, value in datasets.items():
                    if key.startswith("attr_"):
                        handle.attrs[key[5:]] = value
                    else:
                        handle.create_dataset(key, data=value)

        return make

    def patch_attr(value) -> Callable[[], None]:
        def make() -> None:
            with h5py.File(blockmap, "r+") as handle:
                handle.attrs["patch_size"] = value

        return make

    def scores(value) -> Callable[[], None]:
        def make() -> None:
            with h5py.File(blockmap, "r+") as handle:
                data = handle["attention_scores"][...]
                data[0] = value
                handle["attention_scores"][...] = data

        return make

    coords = np.array([[0, 0], [128, 0]], dtype=np.int64)
    return [
        ("blockmap missing", blockmap.unlink),
        ("prediction missing", prediction.unlink),
        ("fine maps missing", fine.unlink),
        ("tissue json missing", tissue.unlink),
        ("whole slide folder missing", lambda: shutil.rmtree(folder)),
        ("blockmap truncated", lambda: truncate(blockmap)),
        ("blockmap empty file", lambda: blockmap.write_bytes(b"")),
        ("blockmap is a folder", lambda: (blockmap.unlink(), blockmap.mkdir())),
        (
            "blockmap without coords",
            h5_with(blockmap, attention_scores=np.zeros((2, 1)), attr_patch_size=128),
        ),
        (
            "blockmap coords 1-D",
            h5_with(blockmap, coords=np.arange(2), attention_scores=np.zeros((2, 1)), attr_patch_size=128),
        ),
        (
            "blockmap coords (N, 3)",
            h5_with(
                blockmap,
                coords=np.zeros((2, 3), np.int64),
                attention_scores=np.zeros((2, 1)),
                attr_patch_size=128,
            ),
        ),
        (
            "blockmap 0 patches",
            h5_with(
                blockmap,
                coords=np.zeros((0, 2), np.int64),
                attention_scores=np.zeros((0, 1)),
                attr_patch_size=128,
            ),
        ),
        (
            "blockmap 1 patch, no patch size",
            h5_with(blockmap, coords=coords[:1], attention_scores=np.zeros((1, 1))),
        ),
        (
            "blockmap scores of another length",
            h5_with(blockmap, coords=coords, attention_scores=np.zeros((5, 1)), attr_patch_size=128),
        ),
        ("blockmap NaN score", scores(np.nan)),
        ("blockmap inf score", scores(np.inf)),
        ("blockmap patch_size 0", patch_attr(0)),
        ("blockmap patch_size -128", patch_attr(-128)),
        ("blockmap patch_size 'abc'", patch_attr("abc")),
        ("blockmap patch_size 1e12", patch_attr(10**12)),
        (
            "blockmap string scores",
            h5_with(blockmap, coords=coords, attention_scores=np.array([b"a", b"b"]), attr_patch_size=128),
        ),
        ("prediction truncated", lambda: truncate(prediction)),
        ("prediction a list", lambda: prediction.write_text("[1, 2]")),
        ("prediction slide_path a number", lambda: prediction.write_text('{"slide_path": 3}')),
        ("prediction slide_path empty", lambda: prediction.write_text('{"slide_path": ""}')),
        (
            "prediction probabilities odd",
            lambda: prediction.write_text(
                json.dumps(
                    {"slide_path": str(slide), "prediction": 5, "probabilities": "high", "label": {"a": 1}}
                )
            ),
        ),
        ("prediction not UTF-8", lambda: prediction.write_bytes(b"\xff\xfe{")),
        ("tissue json truncated", lambda: truncate(tissue)),
        (
            "tissue contours malformed",
            lambda: tissue.write_text(
                json.dumps({"contours": [{"outer": [[1]], "holes": "x"}, {"outer": "abc", "holes": []}]})
            ),
        ),
        (
            "tissue contours of one point",
            lambda: tissue.write_text(json.dumps({"contours": [{"outer": [[5, 5]], "holes": []}]})),
        ),
        (
            "tissue level_dimensions wrong",
            lambda: tissue.write_text(json.dumps({"contours": [], "level_dimensions": [[10, 10]]})),
        ),
        ("fine maps truncated", lambda: truncate(fine)),
        ("fine maps empty file", lambda: fine.write_bytes(b"")),
        ("fine maps without datasets", h5_with(fine, attr_method="lrp")),
        ("fine maps a blockmap", lambda: shutil.copy(blockmap, fine)),
        (
            "overlap blockmap truncated",
            lambda: (
                shutil.copy(blockmap, folder / "slide_a_overlap_blockmap.h5"),
                truncate(folder / "slide_a_overlap_blockmap.h5"),
            ),
        ),
        (
            "overlap blockmap without attention",
            h5_with(
                folder / "slide_a_overlap_blockmap.h5",
                coords=coords,
                scores_lrp=np.zeros((2, 1)),
                attr_patch_size=128,
            ),
        ),
        ("run_report truncated", lambda: (run / "run_report.json").write_text('{"items": [{"status": "fa')),
        (
            "run_report items odd",
            lambda: (run / "run_report.json").write_text(
                '{"items": [{"status": "failed", "item": 3}, 5, null]}'
            ),
        ),
        ("slide file truncated", lambda: truncate(slide, 0.3)),
        ("slide file empty", lambda: slide.write_bytes(b"")),
        ("slide file deleted", slide.unlink),
        ("slide file moved", lambda: slide.rename(slide.with_name("moved.tif"))),
        ("slide replaced by a smaller one", lambda: write_test_slide(slide, seed=9, size=(512, 384))),
        ("slide is a folder", lambda: (slide.unlink(), slide.mkdir())),
        ("slide id with spaces and %", lambda: rename_slide(run, "slide_a", "a b%20c#?")),
        ("stray file in heatmaps/", lambda: (run / "heatmaps" / "notes.txt").write_text("x")),
        ("heatmaps/ a file", lambda: (shutil.rmtree(run / "heatmaps"), (run / "heatmaps").write_text("x"))),
    ]


MUST_HIDE = {
    "blockmap coords (N, 3)",
    "blockmap patch_size 0",
    "blockmap patch_size -128",
    "blockmap patch_size 'abc'",
    "blockmap NaN score",
    "blockmap scores of another length",
    "slide replaced by a smaller one",
}
"""Damages after which slide_a must not be shown (named among the slides not shown, with why)."""
MUST_SHOW = {
    "fine maps missing",
    "tissue json missing",
    "tissue json truncated",
    "tissue contours malformed",
    "tissue contours of one point",
    "prediction probabilities odd",
    "run_report truncated",
    "run_report items odd",
    "stray file in heatmaps/",
}
"""Damages that leave slide_a showable (its heatmap reads): hiding it would hide a good slide."""


def shown_check(folder: Path, name: str) -> str | None:
    """Why the slides a fresh viewer shows contradict `MUST_HIDE` / `MUST_SHOW`, or None."""
    from attnmap.errors import InputError
    from attnmap.view import find_slides

    try:
        ids = [slide.slide_id for slide in find_slides(folder).slides]
    except InputError:
        ids = []
    if name in MUST_HIDE and "slide_a" in ids:
        return f"slide_a is shown after '{name}'"
    if name in MUST_SHOW and "slide_a" not in ids:
        return f"slide_a is not shown after '{name}'"
    return None


def damage_cases(s: Sweep) -> None:
    """Each damage before the viewer starts (as `attnmap view` finds the folder) and while it serves."""
    from attnmap.errors import InputError

    names = [name for name, _ in _damage_cases(s.root / "x")]
    for number in range(len(names)):
        for when in ("before start", "while served"):
            root = s.root / f"damage_{number}_{when[0]}"

            def run(root=root, number=number, when=when) -> tuple[str, str]:
                folder = base_run(root)
                damage = _damage_cases(folder)[number][1]
                if when == "before start":
                    with contextlib.redirect_stderr(LOG):  # warnings of a discovery go to the log
                        damage()
                        try:
                            served = Served(folder)
                        except InputError as exc:
                            return "error", "start: " + " ".join(str(exc).split())[:150]
                else:
                    served = Served(folder)
                    assert served.get("/data/slides.js").status == 200
                    damage()
                    time.sleep(WAIT)
                try:
                    cls, detail = compare_with_fresh(served)
                    why = shown_check(folder, names[number]) if cls == "ok" else None
                    return ("wrong", why) if why else (cls, detail)
                finally:
                    served.close()

            s.case(f"damage {when}: {names[number]}", run)


def change_cases(s: Sweep) -> None:
    """Outputs changed while the viewer serves, compared with a viewer opened afresh."""
    from attnmap.view.sources import find_slides

    def changed(
        name: str,
        change: Callable[[Path], None],
        extra: Callable[[Served], str | None] | None = None,
        expect: str = "ok",
    ):
        def run() -> tuple[str, str]:
            root = s.root / f"change_{len(s.results)}"
            folder = base_run(root)
            served = Served(folder)
            try:
                for url in probe_urls(served.content):  # the page has seen everything once (cached)
                    served.get(url)
                change(folder)
                time.sleep(WAIT)
                cls, detail = compare_with_fresh(served)
                why = extra(served) if extra and cls == "ok" else None
                return ("wrong", why) if why else (cls, detail)
            finally:
                served.close()

        s.case(f"change while served: {name}", run, expect=expect)

    def rewrite_scores(folder: Path) -> None:
        path = folder / "heatmaps" / "slide_a" / "slide_a_blockmap.h5"
        with h5py.File(path, "r+") as handle:
            handle["attention_scores"][...] = -handle["attention_scores"][...]

    def add_method(folder: Path) -> None:
        path = folder / "heatmaps" / "slide_a" / "slide_a_blockmap.h5"
        with h5py.File(path, "r+") as handle:
            handle.create_dataset(
                "scores_gradient", data=np.linspace(-1, 1, len(handle["coords"])).reshape(-1, 1)
            )

    def drop_method(folder: Path) -> None:
        path = folder / "heatmaps" / "slide_a" / "slide_a_blockmap.h5"
        with h5py.File(path, "r+") as handle:
            del handle["scores_lrp"]

    def rewrite_same_size(folder: Path) -> None:  # same bytes count, same mtime second, other content
        path = folder / "heatmaps" / "slide_a" / "slide_a_blockmap.h5"
        stat = path.stat()
        with h5py.File(path, "r+") as handle:
            handle["attention_scores"][...] = handle["attention_scores"][...][::-1]
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    def fine_rewritten(folder: Path) -> None:  # written beside and renamed over, as a run replaces a file
        path = folder / "heatmaps" / "slide_a" / "slide_a_fine_maps.h5"
        new = path.with_name("rewritten.h5")
        shutil.copy(path, new)
        with h5py.File(new, "r+") as handle:
            for item in handle.values():
                if isinstance(item, h5py.Dataset) and item.dtype.kind == "f" and item.ndim >= 3:
                    item[...] = -item[...]
        os.replace(new, path)

    def slide_reseeded(folder: Path) -> None:
        write_test_slide(folder.parent / "slides" / "slide_a.tif", seed=7)

    def add_slide(folder: Path) -> None:
        write_run_folder(folder.parent, "slide_z", seed=5)

    def tissue_moved(folder: Path) -> None:
        (folder / "tissue" / "slide_a.json").write_text(
            json.dumps({"contours": [{"outer": [[10, 10], [300, 10], [300, 300]], "holes": []}]})
        )

    changed("scores rewritten", rewrite_scores)
    changed("a method added", add_method)
    changed("a method removed", drop_method)
    changed("scores rewritten, size and mtime kept", rewrite_same_size)
    changed("fine maps rewritten", fine_rewritten)
    changed("fine maps removed", lambda f: (f / "heatmaps/slide_a/slide_a_fine_maps.h5").unlink())
    changed("blockmap removed", lambda f: (f / "heatmaps/slide_a/slide_a_blockmap.h5").unlink())
    changed("slide folder removed", lambda f: shutil.rmtree(f / "heatmaps/slide_a"))
    changed("slide file reseeded (same size)", slide_reseeded)
    changed("slide file deleted", lambda f: (f.parent / "slides/slide_a.tif").unlink())
    changed("a slide added", add_slide)
    changed("tissue rewritten", tissue_moved)
    changed("every slide removed", lambda f: shutil.rmtree(f / "heatmaps"), expect="error")

    # annotations given as a folder, changed while served
    def annotated() -> tuple[str, str]:
        root = s.root / "annotated"
        folder = base_run(root)
        notes = root / "annotations"
        notes.mkdir()
        ring = [[100, 100], [400, 100], [400, 400], [100, 400], [100, 100]]
        feature = {
            "type": "Feature",
            "properties": {},
            "geometry": {"type": "Polygon", "coordinates": [ring]},
        }
        (notes / "slide_a.geojson").write_text(
            json.dumps({"type": "FeatureCollection", "features": [feature]})
        )
        served = Served(folder, notes)
        try:
            for url in probe_urls(served.content):
                served.get(url)
            feature["geometry"]["coordinates"] = [[[500, 300], [900, 300], [900, 700], [500, 300]]]
            (notes / "slide_a.geojson").write_text(
                json.dumps({"type": "FeatureCollection", "features": [feature]})
            )
            (notes / "slide_b.geojson").write_text("{not json")
            time.sleep(WAIT)
            return compare_with_fresh(served, notes)
        finally:
            served.close()

    s.case("change while served: annotations rewritten, one broken", annotated, expect="ok")

    # a real `wsi run` cohort: a rerun that drops a slide from the CSV, and one with another colour map
    from attnmap.cli.main import main

    project = s.root / "project"
    config = write_pipeline_setup(project, n_slides=2)

    def wsi_run() -> None:
        here = Path.cwd()
        os.chdir(project)
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                main(["--quiet", "wsi", "run", config.name])
        finally:
            os.chdir(here)

    wsi_run()
    out = project / "out"

    def cohort_drop() -> tuple[str, str]:
        served = Served(out)
        try:
            csv = project / "slides.csv"
            csv.write_text("".join(csv.read_text().splitlines(keepends=True)[:2]))  # header + slide_0
            wsi_run()
            time.sleep(WAIT)
            body = served.get("/data/slides.js").body.decode()
            listed = re.findall(r'"id":"([^"]+)"', body.split('"unshown"')[0])
            if "slide_1" in listed:
                return "wrong", f"lists {listed} after a rerun whose cohort is only slide_0"
            return "ok", f"lists {listed}"
        finally:
            served.close()

    s.case("rerun dropping a slide from the cohort CSV", cohort_drop, expect="ok")

    def cohort_drop_fresh() -> tuple[str, str]:
        found = find_slides(out)
        listed = [slide.slide_id for slide in found.slides]
        if "slide_1" in listed:
            return "wrong", f"a fresh `attnmap view` lists {listed}; the cohort is only slide_0"
        return "ok", f"lists {listed}, names {[u.slide_id for u in found.unshown]}"

    s.case("view started after the cohort dropped a slide", cohort_drop_fresh, expect="ok")

    def attention_cmap(served: Served) -> str:
        text = served.get("/data/0/info.js").body.decode()
        info = json.loads(text.split(", ", 1)[1].rsplit(")", 1)[0])
        return next(m["scale"]["cmap"] for m in info["methods"] if m["name"] == "attention")

    def cmap_rerun() -> tuple[str, str]:
        served = Served(out)
        try:
            before = attention_cmap(served)
            text = config.read_text().replace("alpha: 0.5", "alpha: 0.5\n  cmap: viridis")
            config.write_text(text)
            wsi_run()
            time.sleep(WAIT)
            after = attention_cmap(served)
            if after != "viridis":
                return (
                    "stale",
                    f"colour bar {after} (before: {before}) after a rerun with heatmap.cmap viridis",
                )
            return "ok", f"colour bar {before} -> {after}"
        finally:
            served.close()

    s.case("rerun with another colour map", cmap_rerun, expect="ok")


def _cli(args: list[str], timeout: float = 60.0, wait_for_url: bool = False) -> tuple[int, str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    command = [
        sys.executable,
        "-c",
        "import sys; from attnmap.cli.main import main; main(sys.argv[1:])",
        *args,
    ]
    if not wait_for_url:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
        return done.returncode, done.stdout, done.stderr
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = process.stdout.readline()
        found = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        if not found:
            process.kill()
            out, err = process.communicate(timeout=timeout)
            return process.returncode, line + out, err
        answer = request(int(found.group(1)), "/data/slides.js")
        process.terminate()
        out, err = process.communicate(timeout=timeout)
        return (0 if answer.status == 200 else 1), line + out, err
    finally:
        if process.poll() is None:
            process.kill()


def cli_classify(code: int, stdout: str, stderr: str) -> tuple[str, str]:
    lines = [line for line in stderr.splitlines() if line.strip() and "warning:" not in line.lower()]
    if "Traceback" in stderr or "internal error" in stderr:
        return "crash", (lines[-1] if lines else "traceback")[:200]
    if code == 0:
        return "ok", stdout.strip().splitlines()[0][:150] if stdout.strip() else ""
    errors = [line for line in lines if line.startswith("attnmap: error:") or line.startswith("Error:")]
    if code == 2 and len(errors) == 1:
        return "error", errors[0][:200]
    return "crash", f"exit {code}: " + " | ".join(lines)[:200]


def cli_cases(s: Sweep) -> None:
    root = s.root / "cli"
    run = base_run(root)
    (root / "empty").mkdir()
    (root / "norun" / "sub").mkdir(parents=True)
    (root / "heatmaps_only" / "heatmaps").mkdir(parents=True)
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    busy = taken.getsockname()[1]
    cases = [
        ("--help", ["view", "--help"], "ok", False),
        ("port 0", ["view", str(run), "--port", "0", "--no-browser"], "ok", True),
        ("port in use", ["view", str(run), "--port", str(busy), "--no-browser"], "error", False),
        ("port 65536", ["view", str(run), "--port", "65536", "--no-browser"], "error", False),
        ("port -1", ["view", str(run), "--port", "-1", "--no-browser"], "error", False),
        ("port abc", ["view", str(run), "--port", "abc", "--no-browser"], "error", False),
        ("cache-mb 0", ["view", str(run), "--cache-mb", "0", "--no-browser"], "error", False),
        ("cache-mb 1", ["view", str(run), "--cache-mb", "1", "--port", "0", "--no-browser"], "ok", True),
        ("nonexistent folder", ["view", str(root / "nope"), "--no-browser"], "error", False),
        ("empty folder", ["view", str(root / "empty"), "--no-browser"], "error", False),
        ("folder with no runs", ["view", str(root / "norun"), "--no-browser"], "error", False),
        (
            "run folder with empty heatmaps/",
            ["view", str(root / "heatmaps_only"), "--no-browser"],
            "error",
            False,
        ),
        (
            "a file that is no slide",
            ["view", str(root / "secret.txt"), "--scores", str(run), "--no-browser"],
            "error",
            False,
        ),
        ("--scores with a folder", ["view", str(run), "--scores", str(run), "--no-browser"], "error", False),
        (
            "--annotations missing",
            ["view", str(run), "--annotations", str(root / "nope"), "--no-browser"],
            "error",
            False,
        ),
        ("--export onto a file", ["view", str(run), "--export", str(root / "secret.txt")], "error", False),
    ]
    try:
        for name, args, expect, serve in cases:

            def one(args=args, serve=serve) -> tuple[str, str]:
                try:
                    return cli_classify(*_cli(["--quiet", *args], wait_for_url=serve))
                except subprocess.TimeoutExpired:
                    return "crash", "no exit within the timeout"

            s.case(f"cli {name}", one, expect)
    finally:
        taken.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only",
        default="",
        help="run the groups whose name contains this: requests, concurrency, odd, damage, changes, cli",
    )
    parser.add_argument("--keep", type=Path, default=None, help="work in this folder (kept)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print the server log of each case")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    start = time.perf_counter()
    root = args.keep or Path(tempfile.mkdtemp(prefix="attnmap-view-sweep-"))
    root.mkdir(parents=True, exist_ok=True)
    sweep = Sweep(root, args.verbose)
    real_stderr = sys.stderr
    sys.stderr = LOG  # the servers' log lines, and any traceback a thread prints
    try:
        for name, group in (
            ("requests", request_cases),
            ("concurrency", concurrency_cases),
            ("odd", odd_slide_cases),
            ("damage", damage_cases),
            ("changes", change_cases),
            ("cli", cli_cases),
        ):
            if args.only in name:
                group(sweep)
    finally:
        sys.stderr = real_stderr
    counts = Counter(cls for cls, _, _ in sweep.results)
    print(
        f"\n{len(sweep.results)} cases in {time.perf_counter() - start:.0f} s: "
        + ", ".join(f"{name} {counts[name]}" for name in CLASSES)
    )
    if args.keep is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
