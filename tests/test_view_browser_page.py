"""The viewer's page in a real browser: the address as a link, a server that stops, long slide ids.

Same Chromium fixture as `test_view_browser.py` (Debian's, never a downloaded one)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_view_browser import _open, _serve, browser  # noqa: F401 - the module-scoped browser fixture
from view_fixtures import write_run_folder

from attnmap.view import ViewerContent, find_slides

LONG = "L" * 150  # one word, as a slide file's stem can be
STATE = (
    "[window.attnmap.state.info.id, window.attnmap.state.method, "
    "document.querySelector('#opacity-value').textContent]"
)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("page")
    write_run_folder(root, "slide_a", seed=0, fine=False)
    return write_run_folder(root, LONG, seed=1, hot=(128, 128), fine=False)


@pytest.fixture
def served(cohort):
    content = ViewerContent(find_slides(cohort))
    server, url = _serve(content)
    yield server, url
    server.shutdown()
    server.server_close()
    content.close()


def test_a_link_opened_in_the_tab_and_back_and_forward_show_what_the_address_names(browser, served):  # noqa: F811
    _, url = served
    page, errors = _open(browser, url)
    assert page.evaluate("window.attnmap.state.info.id") == LONG  # listed first ('L' < 's')
    page.goto(url + "#slide=slide_a&method=lrp&opacity=40")  # only the fragment differs: no reload
    page.wait_for_function("window.attnmap.state.loaded === true && window.attnmap.state.method === 1")
    assert page.evaluate(STATE) == ["slide_a", 1, "40%"]
    assert page.locator("#title").inner_text().startswith("slide_a")
    page.go_back()
    page.wait_for_function(
        f"window.attnmap.state.loaded === true && window.attnmap.state.info.id === '{LONG}'"
    )
    assert page.evaluate(STATE) == [LONG, 0, "50%"]
    page.go_forward()
    page.wait_for_function(
        "window.attnmap.state.loaded === true && window.attnmap.state.info.id === 'slide_a'"
    )
    assert page.evaluate(STATE) == ["slide_a", 1, "40%"]
    assert page.evaluate("window.attnmap.viewer.world.getItemCount()") == 2  # the slide and one heatmap
    assert not errors, errors


def test_a_stopped_server_is_said_in_one_line_and_a_click_then_throws_nothing(browser, served):  # noqa: F811
    server, url = served
    page, errors = _open(browser, url)
    server.shutdown()
    server.server_close()
    page.wait_for_function(
        "document.querySelector('#title').textContent.includes('stopped answering')", timeout=6000
    )
    page.locator("#slides li").nth(1).click()  # its data cannot come: said, not an uncaught error
    page.wait_for_timeout(800)
    assert "stopped answering" in page.locator("#title").inner_text()
    assert not [error for error in errors if "failed to load" not in error.lower()], errors


def test_a_long_slide_id_wraps_in_the_title_and_the_list(browser, served):  # noqa: F811
    _, url = served
    page, errors = _open(browser, url)
    assert page.evaluate("window.attnmap.state.info.id") == LONG  # listed first ('L' < 's')
    for selector in ("#title", "#slides", "#side"):
        wide = page.evaluate(f"(e => [e.scrollWidth, e.clientWidth])(document.querySelector('{selector}'))")
        assert wide[0] <= wide[1] + 1, (selector, wide)  # nothing cut off, no sideways scroll
    assert page.locator("#title").inner_text().startswith(LONG)
    assert not errors, errors
