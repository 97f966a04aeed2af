"""The cases of `browser_sweep.py` that use the page: clicks, the address, a rerun while it is open,
the static export opened from disk, and one real `wsi run`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from browser_sweep_cases import _deep_and_edges, _rewrite_scores
from browser_sweep_harness import (
    VIEW,
    Page,
    Served,
    Sweep,
    check_heat,
    check_scalebar,
    check_slide,
    fail,
    page_problems,
)
from view_fixtures import PATCH, write_run_folder


def _cohort(s: Sweep, name: str, fine: bool = False) -> Path:
    root = s.folder(name)
    write_run_folder(root, "slide_a", seed=0, fine=fine)
    return write_run_folder(root, "slide_b", seed=1, hot=(128, 128), fine=fine)


def _heat_items(p: Page) -> int:
    return p.js("window.attnmap.viewer.world.getItemCount()")


def use_cases(s: Sweep) -> None:
    run = _cohort(s, "use", fine=True)
    served = Served(run)
    try:
        _use(s, served)
    finally:
        served.close()


def _use(s: Sweep, served: Served) -> None:
    p = Page(s.browser, served.url)

    def quick_slides():
        rows = p.page.locator("#slides li")
        for i in (1, 0, 1, 0, 1):
            rows.nth(i).click()
        p.loaded(extra="window.attnmap.state.slide === 1")
        p.page.wait_for_timeout(500)
        if (items := _heat_items(p)) != 2:  # the slide and one heatmap (tissue off)
            fail("wrong", f"{items} layers stacked after quick slide clicks")
        if not p.text("#title").startswith("slide_b") or "active" not in rows.nth(1).get_attribute("class"):
            fail("wrong", "title or list do not name the slide in view")
        return ("wrong", problem) if (problem := check_heat(p, 0)) else page_problems(p)

    s.case("use: five quick slide clicks", quick_slides)

    def quick_methods():
        for m in (2, 0, 1, 2, 1):
            p.page.select_option("#method", str(m))
        p.loaded(extra="window.attnmap.state.method === 1")
        p.page.wait_for_timeout(500)
        if (items := _heat_items(p)) != 2:
            fail("wrong", f"{items} layers stacked after quick method changes")
        if not p.text("#scale-caption").startswith("lrp"):
            fail("wrong", f"colour bar caption {p.text('#scale-caption')[:60]!r} for lrp")
        if p.page.locator("#fine-legend").is_visible():
            fail("wrong", "the fine maps' colour bar stays after leaving them")
        return ("wrong", problem) if (problem := check_heat(p, 1)) else page_problems(p)

    s.case("use: five quick method changes", quick_methods)

    def opacity():
        p.opacity(30)
        got = p.js("window.attnmap.state.heat.getOpacity()")
        if abs(got - 0.3) > 1e-6 or p.text("#opacity-value") != "30%" or "opacity=30" not in p.page.url:
            fail("wrong", f"opacity 30: layer {got}, label {p.text('#opacity-value')}, address {p.page.url}")
        return page_problems(p)

    s.case("use: opacity slider", opacity)

    def tissue():
        p.page.locator("#show-tissue").check()
        p.settle(300)
        if _heat_items(p) != 3:
            fail("wrong", f"{_heat_items(p)} layers with the tissue outline on")
        p.page.locator("#show-tissue").uncheck()
        p.settle(300)
        return None if _heat_items(p) == 2 else ("wrong", "the tissue outline stays after unticking")

    s.case("use: tissue outline on and off", tissue)

    def deep():
        _deep_and_edges(p)
        return ("wrong", problem) if (problem := check_scalebar(p)) else page_problems(p)

    s.case("use: deepest zoom, four edges, zoomed out", deep)

    def cursor():
        p.method(0)
        top = p.js("window.attnmap.state.info.methods[0].top[0]")
        p.js(f"window.attnmap.jumpTo({top['x']}, {top['y']}, {PATCH})")
        p.settle(700)
        point = p.at(top["x"] + PATCH / 2, top["y"] + PATCH / 2)
        p.page.mouse.move(point["x"], point["y"])
        text = p.text("#cursor")
        if "rank 1 of" not in text or f"({top['x']}, {top['y']})" not in text:
            fail("wrong", f"cursor over the top patch reads {text!r}")
        return page_problems(p)

    s.case("use: cursor readout over the top patch", cursor)

    def gallery():
        p.js("window.attnmap.viewer.viewport.goHome(true)")
        p.settle(200)
        top = p.js("window.attnmap.state.info.methods[0].top[2]")
        p.page.locator("#gallery figure").nth(2).click()
        p.settle(800)
        centre = p.js(
            "(c => window.attnmap.viewer.world.getItemAt(0).viewportToImageCoordinates(c))"
            "(window.attnmap.viewer.viewport.getCenter(true))"
        )
        if abs(centre["x"] - top["x"] - PATCH / 2) > PATCH or abs(centre["y"] - top["y"] - PATCH / 2) > PATCH:
            fail("wrong", f"the third gallery patch {top} is not in the middle of the view: {centre}")
        return page_problems(p)

    s.case("use: gallery click zooms to its patch", gallery)

    def resize():
        p.page.set_viewport_size({"width": 640, "height": 420})
        p.settle(400)
        problem = check_scalebar(p) or check_heat(p, 0)
        p.page.set_viewport_size({"width": 1100, "height": 760})
        p.settle(400)
        return ("wrong", problem) if problem else page_problems(p)

    s.case("use: window resized smaller and back", resize)

    def reload():
        p.page.locator("#slides li").nth(1).click()
        p.loaded(extra="window.attnmap.state.slide === 1")
        p.method(1)
        p.opacity(70)
        p.js(f"window.attnmap.jumpTo(256, 384, {PATCH})")
        p.settle(800)
        before = p.js(VIEW)
        p.page.reload()
        p.loaded()
        state = p.js("[window.attnmap.state.info.id, window.attnmap.state.method]")
        after = p.js(VIEW)
        if (
            state != ["slide_b", 1]
            or p.text("#opacity-value") != "70%"
            or not np.allclose(after, before, 1e-3, 1e-4)
        ):
            fail("wrong", f"reload opened {state}, {p.text('#opacity-value')}, view {after} (was {before})")
        return page_problems(p)

    s.case("use: reload keeps slide, method, opacity, view", reload)

    def address():  # a bookmark or shared link opened in the same tab: only the #fragment differs
        p.page.goto(served.url + "#slide=slide_a&method=lrp&opacity=40")
        p.page.wait_for_timeout(800)
        p.loaded()
        state = p.js("[window.attnmap.state.info.id, window.attnmap.state.method]")
        if state != ["slide_a", 1] or p.text("#opacity-value") != "40%":
            fail(
                "wrong",
                f"a link to slide_a / lrp / 40% opened in the tab shows {state}, {p.text('#opacity-value')}",
            )
        return page_problems(p)

    s.case("use: a link to another slide pasted in the tab", address)

    def back():
        p.page.go_back()
        p.page.wait_for_timeout(800)
        p.loaded()
        state = p.js("[window.attnmap.state.info.id, window.attnmap.state.method]")
        if state != ["slide_b", 1]:
            fail("wrong", f"back after following a link shows {state}, not slide_b / lrp")
        p.page.go_forward()
        p.page.wait_for_timeout(800)
        p.loaded()
        state = p.js("[window.attnmap.state.info.id, window.attnmap.state.method]")
        if state != ["slide_a", 1]:
            fail("wrong", f"forward shows {state}, not slide_a / lrp")
        return page_problems(p)

    s.case("use: back and forward", back)
    p.close()


# --- changes while open -------------------------------------------------------------------------------


def change_cases(s: Sweep) -> None:
    def rerun_in_view():
        run = _cohort(s, "rerun")
        with Served(run) as served:
            p = Page(s.browser, served.url)
            p.js("window.notReloaded = true")
            p.allow_failed = True  # the old page's tile URLs get 404s until it reloads: by design
            _rewrite_scores(run, "slide_a", (128, 640))
            p.page.wait_for_function("window.notReloaded === undefined", timeout=15000)
            p.loaded()
            p.allow_failed = False
            top = p.js("window.attnmap.state.info.methods[0].top[0]")
            if (top["x"], top["y"]) != (128, 640):
                fail("wrong", f"after the rerun the top patch is {top}, not (128, 640)")
            if problem := check_heat(p, 0, (128, 640)) or check_heat(p, 0, (512, 256)):
                fail("wrong", f"stale map after the rerun: {problem}")
            return page_problems(p)

    s.case("changes: rerun of the slide in view", rerun_in_view)

    def rerun_other():
        run = _cohort(s, "other")
        with Served(run) as served:
            p = Page(s.browser, served.url)
            p.js("window.notReloaded = true")
            prediction = run / "heatmaps" / "slide_b" / "slide_b_prediction.json"
            prediction.write_text(
                json.dumps({**json.loads(prediction.read_text()), "prediction_name": "normal"})
            )
            p.page.wait_for_function(
                "document.querySelectorAll('#slides li')[1].textContent.includes('normal')", timeout=15000
            )
            if not p.js("window.notReloaded === true"):
                fail("wrong", "the page reloaded for another slide's rerun")
            p.page.locator("#slides li").nth(1).click()
            p.loaded(extra="window.attnmap.state.slide === 1")
            if "normal" not in p.text("#title"):
                fail("wrong", f"slide_b's title after its rerun: {p.text('#title')!r}")
            return ("wrong", problem) if (problem := check_heat(p, 0)) else page_problems(p)

    s.case("changes: rerun of another slide", rerun_other)

    def broken():
        run = write_run_folder(s.folder("broken"), "only", fine=False)
        with Served(run) as served:
            blockmap = run / "heatmaps" / "only" / "only_blockmap.h5"
            blockmap.write_bytes(blockmap.read_bytes()[:1000])
            p = Page(s.browser, served.url, wait=False)
            p.loaded(timeout=5000)

    s.case("changes: the only slide's scores unreadable at open", broken)

    def server_gone():
        run = write_run_folder(s.folder("gone"), "only", fine=False)
        served = Served(run)
        p = Page(s.browser, served.url)
        served.close()
        p.allow_failed = True
        p.page.wait_for_timeout(4500)  # two polls of the version
        title = p.text("#title")
        if "server" not in title.lower():
            fail("wrong", f"the server stopped and the page still says {title[:60]!r}")
        return None if not p.errors else ("crash", p.errors[0][:160])

    s.case("changes: the server stops while the page is open", server_gone)


def edge_cases(s: Sweep) -> None:
    from browser_sweep_cases import _blockmap_run, _grid

    root = s.folder("edges")
    write_run_folder(root, "slide_a", seed=0, fine=False)
    size = (4000, 120)
    run = _blockmap_run(
        root, "slide_z", size, _grid(size, 60), {"attention_scores": np.ones((67 * 2, 1))}, 60
    )
    served = Served(run)
    try:

        def switch_zoomed():  # zoomed into a corner of one slide, then another slide of another shape
            p = Page(s.browser, served.url)
            p.js(
                "(v => { v.zoomTo(v.getMaxZoom(), null, true); "
                "v.panTo(new OpenSeadragon.Point(1, 0.7), true); })"
                "(window.attnmap.viewer.viewport)"
            )
            p.settle(300)
            p.page.locator("#slides li").nth(1).click()
            p.loaded(extra="window.attnmap.state.slide === 1")
            p.page.wait_for_timeout(500)
            seen = p.js(
                "(v => { const h = v.viewer.world.getHomeBounds(), i = v.getBounds(true).intersection(h); "
                "return i ? i.width * i.height / (h.width * h.height) : 0; })(window.attnmap.viewer.viewport)"
            )
            if seen < 0.5:
                fail(
                    "wrong",
                    f"the new slide opens with {100 * seen:.0f}% of it in view (the old slide's zoom kept)",
                )
            return ("wrong", problem) if (problem := check_slide(p)) else page_problems(p)

        s.case("edges: another slide while zoomed into a corner", switch_zoomed)

        def odd_address():  # a hand-edited or truncated address
            problems = []
            for fragment in (
                "slide=slide_a&zoom=1e308&x=1e308&y=-1e308&opacity=-5&method=none",
                "slide=nobody&zoom=abc&opacity=250",
                "slide=slide_a&zoom=0&x=&y=",
                "%E0%A4%A",
                "slide=slide_a&opacity=33.3",
            ):
                p = Page(s.browser, served.url + "#" + fragment)
                if problem := check_slide(p):
                    problems.append(f"#{fragment}: {problem}")
                if page_problems(p):
                    problems.append(f"#{fragment}: {page_problems(p)[1]}")
                p.close()
            return ("wrong", "; ".join(problems)[:300]) if problems else None

        s.case("edges: hand-edited addresses (huge, NaN, bad %)", odd_address)

        def narrow():
            p = Page(s.browser, served.url, size=(480, 360))
            width = p.js("window.attnmap.viewer.container.clientWidth")
            if width < 100:
                fail("wrong", f"the slide gets {width} px of a 480 px window")
            return ("wrong", problem) if (problem := check_heat(p, 0)) else page_problems(p)

        s.case("edges: a 480×360 window", narrow)

        def click_when_gone():
            p = Page(s.browser, served.url)
            served.close()
            p.allow_failed = True
            p.page.locator("#slides li").nth(1).click()
            p.page.wait_for_timeout(1500)
            if p.errors:
                fail("crash", p.errors[0][:200])
            title = p.text("#title")
            if "slide_z" in title or "server" not in title.lower():
                fail("wrong", f"a click on another slide after the server stopped: title {title[:70]!r}")
            return None

        s.case("edges: click a slide after the server stopped", click_when_gone)
    finally:
        served.close()
