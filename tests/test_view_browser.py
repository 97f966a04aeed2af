"""The viewer in a real browser: Debian's headless Chromium driven by Playwright (never a downloaded browser).

Skipped only off CI when Chromium or Playwright is missing; with CI=true a missing browser fails.
"""

from __future__ import annotations

import io
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from view_fixtures import PATCH, overlap_cells, write_overlap_run, write_run_folder

from attnmap.render.scale import colour_table
from attnmap.view import ViewerContent, discover, export_static, find_slides, make_server

CHROMIUM = os.environ.get("ATTNMAP_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("playwright is not installed (pip install -e .[view]) and CI is set")
        pytest.skip("playwright is not installed")
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (apt-get install chromium) and CI is set")
        pytest.skip("chromium is not installed")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> Path:
    return write_run_folder(tmp_path_factory.mktemp("viewer"), hot=(512, 256))


def test_cohort_slide_list_and_annotations(browser, tmp_path):
    root = tmp_path / "cohort"
    write_run_folder(root, "slide_a", seed=0)
    run = write_run_folder(root, "slide_b", seed=1, hot=(128, 128))
    annotations = tmp_path / "annotations"
    annotations.mkdir()
    (annotations / "slide_b.geojson").write_text(
        '{"type": "Feature", "properties": {"classification": {"name": "Tumor"}}, '
        '"geometry": {"type": "Polygon", '
        '"coordinates": [[[600, 300], [900, 300], [900, 600], [600, 600], [600, 300]]]}}'
    )
    content = ViewerContent(discover(run, annotations=annotations))
    server = make_server(content, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        page, errors = _open(browser, f"http://127.0.0.1:{server.server_address[1]}/")
        rows = page.locator("#slides li").all_inner_texts()
        assert len(rows) == 2 and all("tumor 0.80" in row for row in rows)
        assert page.locator("#show-annotations").is_disabled()  # slide_a has none
        page.locator("#slides li").nth(1).click()
        page.wait_for_function("window.attnmap.state.loaded === true && window.attnmap.state.slide === 1")
        assert page.evaluate("window.attnmap.state.info.methods[0].top[0].x") == 128
        assert not page.locator("#show-annotations").is_disabled()
        page.locator("#opacity").fill("0")
        page.wait_for_timeout(300)
        edge = page.evaluate("window.attnmap.imageToPage(750, 300)")
        blue = _pixel(page, edge["x"], edge["y"])
        assert blue[2] > 150 and blue[2] > blue[0] + 60, blue  # the annotation outline is drawn
        page.locator("#show-annotations").uncheck()
        page.wait_for_timeout(300)
        bare = _pixel(page, edge["x"], edge["y"])
        assert not (bare[2] > bare[0] + 60), bare
        page.screenshot(path=str(tmp_path / "cohort.png"))
        assert not errors, errors
    finally:
        server.shutdown()
        server.server_close()
        content.close()


def _open(browser, url: str):
    page = browser.new_page(viewport={"width": 1100, "height": 760})
    errors: list[str] = []  # script errors, and console errors (a failed request is one)
    page.on("pageerror", lambda error: errors.append(str(error)))

    def console(message) -> None:
        if message.type == "error":
            errors.append(f"{message.text} {message.location}")

    page.on("console", console)
    page.goto(url)
    page.wait_for_function("window.attnmap && window.attnmap.state.loaded === true", timeout=30000)
    return page, errors


def _pixel(page, x: float, y: float) -> np.ndarray:
    shot = np.asarray(Image.open(io.BytesIO(page.screenshot())).convert("RGB"))
    return shot[int(round(y)), int(round(x))].astype(int)


def _check_overlay(page, tmp_path: Path, name: str) -> None:
    """Top patch drawn in the top colour at full opacity, the slide shows through at zero."""
    info = page.evaluate("window.attnmap.state.info")
    top = info["methods"][0]["top"][0]
    assert (top["x"], top["y"]) == (512, 256)
    page.evaluate(f"window.attnmap.jumpTo({top['x']}, {top['y']}, {PATCH})")
    page.wait_for_timeout(800)
    page.wait_for_function("window.attnmap.state.loaded === true", timeout=30000)
    centre = page.evaluate(f"window.attnmap.imageToPage({top['x'] + PATCH / 2}, {top['y'] + PATCH / 2})")
    hottest = colour_table(info["methods"][0]["scale"]["cmap"])[-1].astype(int)
    slider = page.locator("#opacity")
    slider.fill("100")
    page.wait_for_timeout(300)
    full = _pixel(page, centre["x"], centre["y"])
    assert np.abs(full - hottest).max() <= 12, (full, hottest)
    page.screenshot(path=str(tmp_path / f"{name}_opacity100.png"))
    slider.fill("0")
    page.wait_for_timeout(300)
    bare = _pixel(page, centre["x"], centre["y"])
    assert np.abs(bare - hottest).max() > 40, (bare, hottest)
    assert page.locator("#opacity-value").inner_text() == "0%"
    page.screenshot(path=str(tmp_path / f"{name}_opacity0.png"))


def test_served_page_draws_the_overlay(browser, run_folder, tmp_path):
    content = ViewerContent(discover(run_folder))
    server = make_server(content, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        page, errors = _open(browser, f"http://127.0.0.1:{server.server_address[1]}/")
        assert "tumor" in page.locator("#title").inner_text()
        assert page.locator("#method option").all_inner_texts() == ["attention", "lrp", "fine maps (lrp)"]
        assert page.locator("#gallery img").count() == 12
        assert "1st pct" in page.locator("#scale-caption").inner_text()
        _check_overlay(page, tmp_path, "served")
        centre = page.evaluate(f"window.attnmap.imageToPage({512 + PATCH / 2}, {256 + PATCH / 2})")
        page.mouse.move(centre["x"], centre["y"])
        assert "rank 1 of 48" in page.locator("#cursor").inner_text()
        import h5py

        with h5py.File(run_folder / "heatmaps" / "slide_a" / "slide_a_blockmap.h5") as handle:
            coords, scores = handle["coords"][:], handle["attention_scores"][:, 0]
        ranks = np.argsort(np.argsort(-scores, kind="stable"), kind="stable") + 1
        page.evaluate("window.attnmap.viewer.viewport.goHome(true)")  # every patch on screen
        for i in (5, 17, 40):  # what the cursor reads is the blockmap's score and rank of that patch
            x, y = (int(v) for v in coords[i])
            point = page.evaluate(f"window.attnmap.imageToPage({x + PATCH * 0.3}, {y + PATCH * 0.7})")
            page.mouse.move(point["x"], point["y"])
            text = page.locator("#cursor").inner_text()
            shown = float(text.split(" score ")[1].split(",")[0])
            assert f"rank {ranks[i]} of 48" in text and f"patch at ({x}, {y})" in text, text
            assert abs(shown - scores[i]) <= 0.005 * abs(scores[i]) + 1e-6, (text, scores[i])
        page.select_option("#method", "1")
        page.wait_for_function("window.attnmap.state.loaded === true && window.attnmap.state.method === 1")
        assert "centred on 0" in page.locator("#scale-caption").inner_text()
        assert not page.locator("#fine-legend").is_visible()
        _check_fine_layer(page, tmp_path)
        page.evaluate(  # quicker than the layers load: only the last choice may stay on the slide
            "(s => ['0', '2', '1', '0', '2'].forEach(v => {"
            " s.value = v; s.dispatchEvent(new Event('change')); }))"
            "(document.querySelector('#method'))"
        )
        page.wait_for_function("window.attnmap.state.loaded === true && window.attnmap.state.method === 2")
        page.wait_for_timeout(500)
        urls = page.evaluate(
            "(w => Array.from({length: w.getItemCount()}, (_, i) => w.getItemAt(i).source.tilesUrl))"
            "(window.attnmap.viewer.world)"
        )
        assert urls == ["tiles/0/slide_files/", "tiles/0/heat-2_files/"], urls
        assert not errors, errors
    finally:
        server.shutdown()
        server.server_close()
        content.close()


def _check_fine_layer(page, tmp_path: Path) -> None:
    """The fine maps inside the top patch when zoomed in: red (+) on its left half, blue (−) on its right."""
    page.select_option("#method", "2")
    page.wait_for_function("window.attnmap.state.loaded === true && window.attnmap.state.method === 2")
    assert page.locator("#fine-legend").is_visible()
    assert "99th pct of |R|" in page.locator("#fine-caption").inner_text()
    page.evaluate(f"window.attnmap.jumpTo(512, 256, {PATCH})")
    page.wait_for_timeout(800)
    page.wait_for_function("window.attnmap.state.loaded === true", timeout=30000)
    page.locator("#opacity").fill("100")
    page.wait_for_timeout(300)
    table = colour_table("RdBu_r")
    red, blue = table[-1].astype(int), table[0].astype(int)
    for x, expected in ((512 + PATCH * 0.25, red), (512 + PATCH * 0.75, blue)):
        point = page.evaluate(f"window.attnmap.imageToPage({x}, {256 + PATCH / 2})")
        pixel = _pixel(page, point["x"], point["y"])
        assert np.abs(pixel - expected).max() <= 12, (x, pixel, expected)
    point = page.evaluate(f"window.attnmap.imageToPage({512 + PATCH / 2}, {256 + PATCH / 2})")
    page.mouse.move(point["x"], point["y"])
    assert "fine maps (lrp) score" in page.locator("#cursor").inner_text()
    page.screenshot(path=str(tmp_path / "fine_maps.png"))


def test_exported_folder_opens_from_disk(browser, run_folder, tmp_path):
    content = ViewerContent(discover(run_folder))
    page_path = export_static(content, tmp_path / "export")
    content.close()
    page, errors = _open(browser, page_path.as_uri())
    _check_overlay(page, tmp_path, "exported")
    page.locator("#show-tissue").check()  # an overlay whose tiles are mostly left out of the export
    page.evaluate("window.attnmap.viewer.viewport.goHome(true)")
    page.wait_for_timeout(300)
    page.wait_for_function("window.attnmap.state.loaded === true", timeout=30000)
    assert not errors, errors  # the page never asks for a tile the export left out


def test_exported_folder_opens_from_a_static_web_server(browser, run_folder, tmp_path):
    import functools
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    content = ViewerContent(discover(run_folder))
    export_static(content, tmp_path / "export")
    content.close()

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(tmp_path / "export"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        page, errors = _open(browser, f"http://127.0.0.1:{server.server_address[1]}/index.html")
        page.select_option("#method", "2")  # the fine maps, zoomed in
        page.wait_for_function("window.attnmap.state.loaded === true && window.attnmap.state.method === 2")
        page.evaluate(f"window.attnmap.jumpTo(512, 256, {PATCH})")
        page.wait_for_timeout(800)
        page.wait_for_function("window.attnmap.state.loaded === true", timeout=30000)
        page.wait_for_timeout(2200)  # one poll of data/version.js: the export has it, unchanged
        assert page.evaluate("window.attnmap.state.method") == 2  # not reloaded
        assert not errors, errors
    finally:
        server.shutdown()
        server.server_close()


def test_open_page_reloads_itself_after_a_rerun(browser, tmp_path):
    import json

    run = write_run_folder(tmp_path, fine=False)
    content = ViewerContent(discover(run), reload=lambda: discover(run), watch=[run], check_interval=0)
    server = make_server(content, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        page, errors = _open(browser, f"http://127.0.0.1:{server.server_address[1]}/")
        assert "tumor" in page.locator("#title").inner_text()
        prediction = run / "heatmaps" / "slide_a" / "slide_a_prediction.json"
        payload = json.loads(prediction.read_text())
        prediction.write_text(json.dumps({**payload, "prediction_name": "normal"}))  # a rerun
        page.wait_for_function("document.querySelector('#title').textContent.includes('normal')")
        page.wait_for_function("window.attnmap.state.loaded === true")
        assert not errors, errors
        blockmap = run / "heatmaps" / "slide_a" / "slide_a_blockmap.h5"
        blockmap.write_bytes(blockmap.read_bytes()[:1000])  # a rerun still writing: why, in one line
        page.wait_for_function("document.querySelector('#title').textContent.includes('cannot read scores')")
        # meanwhile its requests fail (404 for the replaced version, 503 while the files do not read)
        assert not [error for error in errors if "failed to load" not in error.lower()], errors
    finally:
        server.shutdown()
        server.server_close()
        content.close()


def test_the_reload_after_a_rerun_keeps_the_slide_method_and_view(browser, tmp_path):
    import json

    root = tmp_path / "cohort"
    write_run_folder(root, "slide_a", seed=0, fine=False)
    run = write_run_folder(root, "slide_b", seed=1, hot=(128, 128), fine=False)
    content = ViewerContent(find_slides(run), reload=lambda: find_slides(run), watch=[run], check_interval=0)
    server = make_server(content, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        page, errors = _open(browser, f"http://127.0.0.1:{server.server_address[1]}/")
        page.locator("#slides li").nth(1).click()
        page.wait_for_function("window.attnmap.state.loaded === true && window.attnmap.state.slide === 1")
        page.select_option("#method", "1")
        page.wait_for_function("window.attnmap.state.loaded === true && window.attnmap.state.method === 1")
        page.locator("#opacity").fill("80")
        page.evaluate(f"window.attnmap.jumpTo(640, 384, {PATCH})")
        page.wait_for_timeout(900)  # the zoom animation ends: the view is in the address
        view = (
            "(v => [v.getCenter(true).x, v.getCenter(true).y, v.getZoom(true)])"
            "(window.attnmap.viewer.viewport)"
        )
        before = page.evaluate(view)
        assert "slide=slide_b" in page.url and "method=lrp" in page.url
        page.evaluate("window.notReloaded = true")
        other = run / "heatmaps" / "slide_a" / "slide_a_prediction.json"  # a rerun of another slide only
        other.write_text(other.read_text().replace('"tumor"', '"normal"'))
        page.wait_for_function("document.querySelector('#slides li').textContent.includes('normal')")
        assert page.evaluate("window.notReloaded === true")  # the list is refreshed, the view left alone
        assert page.evaluate(view) == before and "tumor" in page.locator("#title").inner_text()
        write_run_folder(root, "slide_0", seed=2, fine=False)  # a rerun adds a slide listed first: b is now 2
        prediction = run / "heatmaps" / "slide_b" / "slide_b_prediction.json"
        payload = json.loads(prediction.read_text())
        prediction.write_text(json.dumps({**payload, "prediction_name": "normal"}))
        page.wait_for_function("document.querySelector('#title').textContent.includes('normal')")
        page.wait_for_function("window.attnmap.state.loaded === true && window.attnmap.state.slide === 2")
        assert page.evaluate("window.attnmap.state.info.id") == "slide_b"
        assert page.locator("#method").input_value() == "1"
        assert page.locator("#opacity-value").inner_text() == "80%"
        after = page.evaluate(view)
        assert np.allclose(after, before, rtol=1e-3, atol=1e-4), (before, after)
        assert not errors, errors
        text = prediction.read_text()
        prediction.unlink()  # the rerun reaches slide_b: its outputs are deleted first
        page.wait_for_function("document.querySelector('#title').textContent.includes('b is not shown')")
        assert "slide=slide_b" in page.url  # the place is kept, not replaced by another slide's
        prediction.write_text(text)
        page.wait_for_function("window.attnmap.state.loaded === true && window.attnmap.state.slide === 2")
        assert np.allclose(page.evaluate(view), before, rtol=1e-3, atol=1e-4)
        assert not errors, errors
    finally:
        server.shutdown()
        server.server_close()
        content.close()


def _serve(content: ViewerContent):
    server = make_server(content, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def _scale_bar(page) -> tuple[float, float, float]:
    """(the bar's length in µm from its label, its width in screen pixels, level-0 pixels per screen
    pixel from OpenSeadragon's own zoom of the slide image)."""
    page.wait_for_timeout(300)  # the viewport's update after the last move
    label = page.locator("#scalebar-label").inner_text()
    number, unit = label.split()
    length = float(number) * {"µm": 1.0, "mm": 1000.0}[unit]
    pixels = page.evaluate("document.querySelector('#scalebar-bar').getBoundingClientRect().width")
    per_screen = page.evaluate(
        "(v => 1 / v.world.getItemAt(0).viewportToImageZoom(v.viewport.getZoom(true)))(window.attnmap.viewer)"
    )
    mantissa = length / 10 ** np.floor(np.log10(length))
    assert any(np.isclose(mantissa, m) for m in (1, 2, 5)), label  # a round length
    return length, pixels, per_screen


def test_the_scale_bar_measures_the_slide_at_every_zoom(browser, run_folder, tmp_path):
    from attnmap.wsi.slide import open_slide

    (slide,) = discover(run_folder)
    with open_slide(slide.slide_path) as handle:
        mpp = handle.mpp
    assert mpp == pytest.approx(0.5)
    content = ViewerContent([slide])
    page_path = export_static(content, tmp_path / "export")
    server, url = _serve(content)
    try:
        for address in (url, page_path.as_uri()):  # served, and the exported folder opened from disk
            page, errors = _open(browser, address)
            assert "0.5 µm per pixel" in page.locator("#slide-info").inner_text()
            seen = []
            for zoom in (None, 6.0, 40.0):  # the whole slide, then closer
                viewport = "window.attnmap.viewer.viewport"
                if zoom is None:
                    page.evaluate(f"{viewport}.goHome(true)")
                else:
                    page.evaluate(f"(v => v.zoomTo(v.getHomeZoom() * {zoom}, null, true))({viewport})")
                length, pixels, per_screen = _scale_bar(page)
                ratio = length / pixels  # µm per screen pixel, as the bar says it
                assert ratio == pytest.approx(mpp * per_screen, rel=0.01), (length, pixels, per_screen)
                width = page.evaluate("window.attnmap.viewer.container.clientWidth")
                assert 0.09 * width <= pixels <= 0.25 * width + 0.5, (pixels, width)
                assert page.locator("#scalebar").is_visible()
                seen.append(length)
            assert seen[0] > seen[1] > seen[2], seen  # a shorter length as the view closes in
            page.close()
            assert not errors, errors
    finally:
        server.shutdown()
        server.server_close()
        content.close()


def test_a_slide_without_a_pixel_size_shows_no_scale_bar(browser, tmp_path):
    content = ViewerContent(discover(write_run_folder(tmp_path, fine=False, mpp=None)))
    server, url = _serve(content)
    try:
        page, errors = _open(browser, url)
        assert "no scale: the slide records no pixel size" in page.locator("#slide-info").inner_text()
        page.evaluate("(v => v.zoomTo(v.getHomeZoom() * 4, null, true))(window.attnmap.viewer.viewport)")
        page.wait_for_timeout(300)
        assert not page.locator("#scalebar").is_visible()
        assert not errors, errors
    finally:
        server.shutdown()
        server.server_close()
        content.close()


@pytest.fixture(scope="module")
def overlap_run(tmp_path_factory) -> Path:
    # a linear scale: the planted scores below are its bounds, drawn as the colour map's two ends
    return write_overlap_run(tmp_path_factory.mktemp("overlap"), scale="robust")


def test_the_overlapping_grid_is_a_layer_averaged_as_the_heatmap_png_averages_it(
    browser, overlap_run, tmp_path
):
    import h5py

    run = tmp_path / "run"
    shutil.copytree(overlap_run, run)  # the run's files, with a high-score region planted in a copy
    path = run / "heatmaps" / "slide_0" / "slide_0_overlap_blockmap.h5"
    (slide,) = discover(run)
    low, high = slide.score_sets["attention"].scale.low, slide.score_sets["attention"].scale.high
    corners, means, counts, step = overlap_cells(path, lambda s: s)
    with h5py.File(path, "r") as handle:
        coords = handle["coords"][:]
    shared = np.flatnonzero(counts == 4)
    centre = shared[np.argmin(np.abs(corners[shared] - corners[shared].mean(axis=0)).sum(axis=1))]
    cx, cy = corners[centre]
    planted = (
        (coords[:, 0] > cx - 2 * step)
        & (coords[:, 0] <= cx)
        & (coords[:, 1] > cy - 2 * step)
        & (coords[:, 1] <= cy)
    )
    assert planted.sum() == 4  # the four patches sharing the centre cell
    with h5py.File(path, "r+") as handle:
        handle["attention_scores"][:, 0] = np.where(planted, high, low).astype(np.float32)
    corners, means, counts, step = overlap_cells(path, lambda s: np.clip((s - low) / (high - low), 0, 1))
    content = ViewerContent(discover(run))
    server, url = _serve(content)
    try:
        page, errors = _open(browser, url)
        names = page.locator("#method option").all_inner_texts()
        assert names == ["attention", "attention (overlapping grid)"], names
        page.select_option("#method", "1")
        page.wait_for_function("window.attnmap.state.loaded === true && window.attnmap.state.method === 1")
        assert "averaged where they overlap" in page.locator("#scale-caption").inner_text()
        cmap = page.evaluate("window.attnmap.state.info.methods[1].scale.cmap")
        table = colour_table(cmap).astype(int)
        page.locator("#opacity").fill("100")
        page.evaluate(f"window.attnmap.jumpTo({cx}, {cy}, {step})")
        page.wait_for_timeout(800)
        page.wait_for_function("window.attnmap.state.loaded === true", timeout=30000)
        cell = {tuple(c): i for i, c in enumerate(corners.tolist())}
        checked = []  # the planted cell, one half of whose patches are hot, a quarter, none
        for dx, dy in ((0, 0), (step, 0), (step, step), (-2 * step, 0)):
            i = cell[(cx + dx, cy + dy)]
            point = page.evaluate(f"window.attnmap.imageToPage({cx + dx + step / 2}, {cy + dy + step / 2})")
            expected = table[int(np.rint(means[i] * (len(table) - 1)))]
            pixel = _pixel(page, point["x"], point["y"])
            assert np.abs(pixel - expected).max() <= 12, ((dx, dy), pixel, expected, means[i])
            checked.append(float(means[i]))
            page.mouse.move(point["x"], point["y"])  # the cursor names the mean the pixel shows
            text = page.locator("#cursor").inner_text()
            if counts[i] > 1:
                assert f"the mean of {counts[i]} overlapping patches, " in text, text
                said = float(text.split("overlapping patches, ")[1])
            else:
                assert "mean" not in text, text
                said = float(text.split(" score ")[1].split(",")[0])
            assert said == pytest.approx(low + means[i] * (high - low), rel=0.005), (text, means[i])
        assert checked == pytest.approx([1.0, 0.5, 0.25, 0.0], abs=1e-5), checked  # (float32 scores)
        page.screenshot(path=str(tmp_path / "overlap.png"))
        assert not errors, errors
    finally:
        server.shutdown()
        server.server_close()
        content.close()


def test_colour_bar_labels_never_overlap_on_a_small_signed_scale(browser, tmp_path):
    """An occlusion set of ±0.00192: five labels under the 265-px bar ran into each other ("-0.00192"
    over "-0.000962", whose minus sign was hidden: it read as positive). The page shows the most
    ticks whose labels fit, as the PNG's legend does, each label whole, the bar's ends named."""
    import h5py

    run = write_run_folder(tmp_path, fine=False)
    blockmap = run / "heatmaps" / "slide_a" / "slide_a_blockmap.h5"
    with h5py.File(blockmap, "r+") as handle:
        count = len(handle["coords"])
        handle.create_dataset("scores_occlusion", data=0.001924 * np.cos(np.arange(count) / 3.0))
    content = ViewerContent(discover(run))
    server, url = _serve(content)
    try:
        page, errors = _open(browser, url)
        names = page.locator("#method option").all_inner_texts()
        page.select_option("#method", str(names.index("occlusion")))
        page.wait_for_function("window.attnmap.state.loaded === true && window.attnmap.state.method === 2")
        scale = page.evaluate("window.attnmap.state.info.methods[2].scale")
        assert len(scale["ticks"]) == 5 and scale["ticks"][0][1].startswith("-")
        boxes = page.evaluate(
            "[...document.querySelectorAll('#colorbar-ticks span')].map((s) => {"
            " const b = s.getBoundingClientRect(); return [s.textContent, b.left, b.right]; })"
        )
        labels = [label for label, _, _ in boxes]
        assert labels[0] == scale["ticks"][0][1] and labels[-1] == scale["ticks"][-1][1], labels
        pairs = zip(boxes[:-1], boxes[1:], strict=True)
        assert all(left >= right + 1 for (_, _, right), (_, left, _) in pairs), boxes
        bar = page.evaluate("(b => [b.left, b.right])(document.querySelector('#colorbar-gradient')"
                            ".getBoundingClientRect())")
        assert boxes[0][1] >= bar[0] - 1 and boxes[-1][2] <= bar[1] + 1, (boxes, bar)
        assert not errors, errors
    finally:
        server.shutdown()
        server.server_close()
        content.close()


def test_a_slide_of_a_folder_of_runs_being_rerun_keeps_its_place(browser, tmp_path):
    """In a folder of runs a slide being rerun is listed as "<run>/<id>", while shown it is "<id>"
    (or "<run>-<id>" where two runs hold the id): the page, not finding its slide by that name among
    the slides not shown, jumped to another slide instead of saying its own is being rerun."""
    cohort = tmp_path / "cohort"
    cohort.mkdir()
    write_run_folder(tmp_path / "a", "slide_a", fine=False).rename(cohort / "r1")
    write_run_folder(tmp_path / "b", "slide_b", seed=1, fine=False).rename(cohort / "r2")
    content = ViewerContent(find_slides(cohort), reload=lambda: find_slides(cohort), watch=[cohort],
                            check_interval=0)
    server, url = _serve(content)
    try:
        page, errors = _open(browser, url + "#slide=slide_b")
        page.wait_for_function("window.attnmap.state.info && window.attnmap.state.info.id === 'slide_b'")
        prediction = cohort / "r2" / "heatmaps" / "slide_b" / "slide_b_prediction.json"
        text = prediction.read_text()
        prediction.unlink()  # the rerun reaches slide_b: its outputs are deleted first
        title = "document.getElementById('title').textContent"
        page.wait_for_function(f"{title}.includes('slide_b is not shown')")
        assert "slide=slide_b" in page.url
        prediction.write_text(text)
        page.wait_for_function("window.attnmap.state.loaded === true && window.attnmap.state.info"
                               " && window.attnmap.state.info.id === 'slide_b'")
        assert not errors, errors
    finally:
        server.shutdown()
        server.server_close()
        content.close()
