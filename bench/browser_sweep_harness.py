"""The browser side of `browser_sweep.py`: a served run folder, a page of it in headless Chromium that
records what went wrong in it, and the checks of what the page shows (pixels, text, state)."""

from __future__ import annotations

import io
import os
import shutil
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("ok", "error", "crash", "wrong")
CHROMIUM = os.environ.get("ATTNMAP_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
LOADED = "window.attnmap && window.attnmap.state.loaded === true"
VIEW = "(v => [v.getCenter(true).x, v.getCenter(true).y, v.getZoom(true)])(window.attnmap.viewer.viewport)"


class CaseResultError(Exception):
    """Ends a case early with its class and why."""

    def __init__(self, cls: str, detail: str) -> None:
        super().__init__(detail)
        self.cls, self.detail = cls, detail


def fail(cls: str, detail: str) -> None:
    raise CaseResultError(cls, detail)


class Served:
    """A folder served by the viewer's own server (port 0, in process, re-reading on change as
    `attnmap view` does, with no wait between checks)."""

    def __init__(self, path: Path, prepare: Callable | None = None) -> None:
        from attnmap.view import ViewerContent, find_slides, make_server

        def load():
            found = find_slides(path)
            return prepare(found) if prepare else found

        self.content = ViewerContent(load(), reload=load, watch=[path], check_interval=0)
        self.server = make_server(self.content, port=0)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"

    def close(self) -> None:
        if self.server is None:
            return
        self.server.shutdown()
        self.server.server_close()
        self.content.close()
        self.server = None

    def __enter__(self) -> Served:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


OPEN: list[Page] = []
"""Pages still open: a case shared by several (a page kept across cases) starts with their records empty."""


class Page:
    """A Chromium page that records script errors, console errors and failed requests."""

    def __init__(self, browser, url: str, size: tuple[int, int] = (1100, 760), wait: bool = True) -> None:
        self.page = browser.new_page(viewport={"width": size[0], "height": size[1]})
        self.errors: list[str] = []  # uncaught exceptions and console errors other than failed loads
        self.failed: list[str] = []  # answers >= 400, and requests that got no answer
        self.allow_failed = False  # a rerun's window, where the page's old tile URLs get 404s by design
        self.page.on("pageerror", lambda error: self.errors.append(f"pageerror: {error}"))
        self.page.on("console", self._console)
        self.page.on("response", self._response)
        self.page.on("requestfailed", self._request_failed)
        OPEN.append(self)
        self.page.goto(url)
        if wait:
            self.loaded()

    def _console(self, message) -> None:
        if message.type == "error" and "Failed to load resource" not in message.text:
            self.errors.append(f"console: {message.text}")

    def _request_failed(self, request) -> None:
        if "ERR_ABORTED" not in (request.failure or ""):  # cancelled by the page itself (a layer removed)
            self.failed.append(f"{request.url} {request.failure}")

    def _response(self, response) -> None:
        if response.status >= 400 and not self.allow_failed:
            self.failed.append(f"{response.status} {response.url}")

    def loaded(self, timeout: float = 20000, extra: str = "true") -> None:
        """Wait until every layer in view has loaded; a page that never gets there is classified by
        what it shows: a one-line message in its title is an error, anything else a crash."""
        try:
            self.page.wait_for_function(f"{LOADED} && ({extra})", timeout=timeout)
        except Exception:  # noqa: BLE001 - playwright's TimeoutError, a closed page
            title = self.text("#title")
            if self.errors:
                fail("crash", f"never loaded; {self.errors[0][:160]}")
            if title and "\n" not in title.strip():
                fail("error", f"shows: {title[:120]}")
            fail("crash", "blank page: never loaded and says nothing")

    def text(self, selector: str) -> str:
        try:
            return self.page.locator(selector).first.inner_text(timeout=2000)
        except Exception:  # noqa: BLE001
            return ""

    def js(self, expression: str):
        return self.page.evaluate(expression)

    def settle(self, ms: int = 350) -> None:
        self.page.wait_for_timeout(ms)
        self.loaded()

    def shot(self) -> np.ndarray:
        return np.asarray(Image.open(io.BytesIO(self.page.screenshot())).convert("RGB")).astype(int)

    def at(self, x: float, y: float) -> dict:
        return self.js(f"window.attnmap.imageToPage({x}, {y})")

    def opacity(self, percent: int) -> None:
        self.page.locator("#opacity").fill(str(percent))
        self.page.wait_for_timeout(150)

    def method(self, m: int) -> None:
        self.page.select_option("#method", str(m))
        self.loaded(extra=f"window.attnmap.state.method === {m}")

    def close(self) -> None:
        self.page.close()
        OPEN.remove(self)


# --- checks ---------------------------------------------------------------------------------------


def expected_colour(method: dict, score: float) -> np.ndarray:
    """The colour the served tiles give ``score`` by the method's own scale (as its colour bar says)."""
    from attnmap.render.scale import ScoreScale, colour_table

    scale = method["scale"]
    unit = ScoreScale(scale["kind"], scale["low"], scale["high"], scale["cmap"]).unit(np.array([score]))[0]
    table = colour_table(scale["cmap"]).astype(int)
    return table[int(np.rint(unit * (len(table) - 1)))]


def check_heat(p: Page, m: int, where: tuple[int, int] | None = None, tolerance: int = 14) -> str | None:
    """The top patch of method ``m`` (or the patch at ``where``) drawn in the colour its score has,
    at full opacity; the slide showing through it at zero. None when right, else why."""
    info = p.js("window.attnmap.state.info")
    method = info["methods"][m]
    patches = p.js(
        "(() => { const s = window.attnmap.state.patches; return { coords: s.coords, "
        "scores: s.scores, size: s.patchSize }; })()"
    )
    coords = np.asarray(patches["coords"]).reshape(-1, 2)
    scores = np.asarray(patches["scores"], dtype=float)
    if where is None:
        i = int(np.argmax(scores))
    else:
        hits = np.flatnonzero((coords[:, 0] == where[0]) & (coords[:, 1] == where[1]))
        if not len(hits):
            return f"no patch at {where} in the page's patch list"
        i = int(hits[0])
    size = patches["size"]
    x, y = coords[i]
    right, bottom = min(x + size, info["width"]), min(y + size, info["height"])
    cx, cy = (x + right) / 2, (y + bottom) / 2
    if problem := check_legend(p, method):
        return problem
    p.js(f"window.attnmap.jumpTo({x}, {y}, {size})")
    p.settle(700)
    p.opacity(100)
    point = p.at(cx, cy)
    shot = p.shot()
    h, w = shot.shape[:2]
    if not (0 <= point["x"] < w and 0 <= point["y"] < h):
        return f"patch ({x}, {y}) is off screen after zooming to it: {point}"
    pixel = shot[int(point["y"]), int(point["x"])]
    want = expected_colour(method, scores[i])
    if np.abs(pixel - want).max() > tolerance:
        name = method["name"]
        return f"{name} patch ({x}, {y}) score {scores[i]:.3g}: pixel {pixel.tolist()} ≠ {want.tolist()}"
    p.opacity(0)
    bare = p.shot()[int(point["y"]), int(point["x"])]
    if np.abs(bare - want).max() <= tolerance and np.abs(want - 245).max() > 30:
        return f"{method['name']}: opacity 0 still shows the heat colour {bare.tolist()}"
    p.opacity(50)
    return None


def check_legend(p: Page, method: dict) -> str | None:
    """The colour bar in view is the method's: its ticks, its colour map's ends, its caption."""
    ticks = p.js("[...document.querySelectorAll('#colorbar-ticks span')].map(s => s.textContent)")
    if ticks != [label for _, label in method["scale"]["ticks"]]:
        return f"{method['name']}: colour bar ticks {ticks} ≠ its scale's {method['scale']['ticks']}"
    gradient = p.js("document.querySelector('#colorbar-gradient').style.background")
    ends = [
        tuple(int(c[i : i + 2], 16) for i in (1, 3, 5)) for c in (method["colours"][0], method["colours"][-1])
    ]
    if not all(f"rgb({r}, {g}, {b})" in gradient for r, g, b in ends):
        return f"{method['name']}: colour bar {gradient[:80]} does not run from {ends[0]} to {ends[1]}"
    if not p.text("#scale-caption").startswith(method["name"] + " score"):
        return f"{method['name']}: caption {p.text('#scale-caption')[:60]!r}"
    return None


def check_slide(p: Page) -> str | None:
    """The slide's pixels are drawn where the slide is (opacity 0: the slide alone): not the page's
    white nor a uniform colour. The synthetic slides are 245-grey with pink tissue."""
    p.opacity(0)
    p.js("window.attnmap.viewer.viewport.goHome(true)")
    p.settle(400)
    info = p.js("window.attnmap.state.info")
    a, b = p.at(0, 0), p.at(info["width"], info["height"])
    shot = p.shot()
    x0, y0 = max(0, int(np.ceil(a["x"]))), max(0, int(np.ceil(a["y"])))
    x1, y1 = min(shot.shape[1], int(b["x"])), min(shot.shape[0], int(b["y"]))
    p.opacity(50)
    if x1 <= x0 or y1 <= y0:
        x1, y1 = x0 + 1, y0 + 1  # a slide thinner than a screen pixel: its one column or row
    region = shot[y0:y1, x0:x1].reshape(-1, 3)
    if not len(region) or np.abs(region - 255).max() < 6:
        return f"slide area {x0},{y0}–{x1},{y1} is blank white"
    return None


def check_safe(p: Page) -> str | None:
    """No markup from a slide id or reason became elements; no injected script ran."""
    found = p.js(
        "(() => { const bad = [...document.querySelectorAll('#side b, #title b, #side img:not(#gallery img), "
        "#title img, #side script, #title *')].map(e => e.outerHTML); "
        "return { bad: bad, xss: window.__xss === undefined ? null : window.__xss }; })()"
    )
    if found["xss"] is not None or found["bad"]:
        return f"injected: {found}"
    return None


def check_scalebar(p: Page) -> str | None:
    """With a pixel size: a visible bar whose length in µm over its width in pixels is the slide's µm
    per screen pixel; without: no bar, and the side panel says why."""
    info = p.js("window.attnmap.state.info")
    visible = p.page.locator("#scalebar").is_visible()
    if not info.get("mpp"):
        if visible:
            return "a scale bar on a slide with no pixel size"
        if "no scale" not in p.text("#slide-info"):
            return "no word that the slide records no pixel size"
        return None
    if not visible:
        return "no scale bar on a slide with a pixel size"
    label = p.text("#scalebar-label").split()
    length = float(label[0]) * {"µm": 1.0, "mm": 1000.0}[label[1]]
    pixels = p.js("document.querySelector('#scalebar-bar').getBoundingClientRect().width")
    per_screen = p.js(
        "(v => 1 / v.world.getItemAt(0).viewportToImageZoom(v.viewport.getZoom(true)))(window.attnmap.viewer)"
    )
    if not np.isclose(length / pixels, info["mpp"] * per_screen, rtol=0.02):
        view = info["mpp"] * per_screen
        return f"scale bar {length} µm over {pixels:.1f} px, but the view is {view:.3g} µm/px"
    return None


JUNK = ("NaN", "undefined", "null", "Infinity", "[object")


def page_problems(p: Page) -> tuple[str, str] | None:
    """Script errors, failed requests, and JavaScript's words for a missing value shown as text."""
    shown = p.js("document.querySelector('#side').innerText + ' ' + document.querySelector('main').innerText")
    junk = [word for word in JUNK if f" {word}" in f" {shown}"]
    if junk:
        return "wrong", f"the page shows {junk} as text: {shown[:160]!r}"
    if p.errors:
        return "crash", p.errors[0][:200]
    if p.failed:
        return "wrong", f"{len(p.failed)} failed requests, e.g. {p.failed[0][:160]}"
    return None


class Sweep:
    """Runs the cases, one line each, and keeps (class, name, detail)."""

    def __init__(self, browser, root: Path) -> None:
        self.browser, self.root, self.results = browser, root, []
        self._count = 0

    def folder(self, name: str) -> Path:
        self._count += 1
        path = self.root / f"{self._count:03d}-{''.join(c if c.isalnum() else '_' for c in name)[:40]}"
        path.mkdir(parents=True)
        return path

    def case(self, name: str, fn: Callable[[], tuple[str, str] | None]) -> None:
        start = time.perf_counter()
        before = list(OPEN)
        for page in OPEN:  # what an earlier case on a shared page saw is that case's
            page.errors.clear()
            page.failed.clear()
        try:
            result = fn() or ("ok", "")
        except CaseResultError as exc:
            result = (exc.cls, exc.detail)
        except Exception as exc:  # noqa: BLE001 - the sweep's own failure or a browser timeout
            last = traceback.extract_tb(exc.__traceback__)[-1]
            result = (
                "crash",
                f"{type(exc).__name__}: {str(exc).splitlines()[0][:150]} (at line {last.lineno})",
            )
        for page in [page for page in OPEN if page not in before]:  # the case's own pages
            try:
                page.close()
            except Exception:  # noqa: BLE001 - a page whose browser side is gone
                OPEN.remove(page)
        cls, detail = result
        self.results.append((cls, name, detail))
        print(f"{cls:<6} {time.perf_counter() - start:5.1f}s  {name:<44} {detail}", flush=True)
