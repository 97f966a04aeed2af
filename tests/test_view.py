"""`attnmap view` without a browser: discovery, tile geometry, overlay pixels, 404s, port errors, export."""

from __future__ import annotations

import io
import json
import signal
import socket
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from view_fixtures import FINE_TOP, PATCH, overlap_cells, write_overlap_run, write_run_folder

from attnmap.cli.main import main
from attnmap.errors import InputError
from attnmap.render.scale import colour_table
from attnmap.view import NotFoundError, ViewerContent, discover, find_slides, make_server
from attnmap.view.cache import ByteLRU
from attnmap.view.deepzoom import DeepZoomGrid, SlideTiles
from attnmap.wsi.slide import ArraySlide, open_slide


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> Path:
    return write_run_folder(tmp_path_factory.mktemp("view"))


def test_discovery_offers_every_score_set_and_the_prediction(run_folder):
    (slide,) = discover(run_folder)
    assert list(slide.score_sets) == ["attention", "lrp", "fine maps (lrp)"]
    assert slide.score_sets["attention"].patch_size == PATCH
    fine = slide.score_sets["fine maps (lrp)"]
    assert fine.fine.count == FINE_TOP and fine.fine.scale.high == 1.0 and fine.patch_size == PATCH
    assert np.array_equal(fine.scores, slide.score_sets["attention"].scores)
    assert slide.score_sets["lrp"].scale.kind == "diverging"
    assert slide.score_sets["attention"].scale.kind == "robust"
    assert slide.prediction["prediction_name"] == "tumor" and slide.tissue
    cohort = discover(run_folder.parent)  # a folder holding run folders
    assert [s.slide_id for s in cohort] == ["slide_a"]
    with pytest.raises(InputError, match="--scores"):
        discover(slide.slide_path)


def test_a_slide_id_in_two_runs_of_a_folder_names_every_copy_by_its_run(tmp_path):
    """Two runs of a folder of runs holding one slide id: each copy is named <run>-<id>; the first
    kept the plain id, which read as if it were the only one (and the later copy its variant)."""
    cohort = tmp_path / "cohort"
    cohort.mkdir()
    for run, seed in (("run10", 0), ("run2", 1)):
        write_run_folder(tmp_path / run, "slide_a", seed=seed).rename(cohort / run)
    write_run_folder(tmp_path / "other", "slide_b").rename(cohort / "run3")
    slides = discover(cohort)
    assert sorted(s.slide_id for s in slides) == ["run10-slide_a", "run2-slide_a", "slide_b"]
    assert {s.file_id for s in slides} == {"slide_a", "slide_b"}  # annotations stay named by the run's id


def test_grid_matches_openslide_deepzoom(run_folder):
    from openslide import OpenSlide
    from openslide.deepzoom import DeepZoomGenerator

    (slide,) = discover(run_folder)
    reference = DeepZoomGenerator(OpenSlide(str(slide.slide_path)), 254, 1)
    grid = DeepZoomGrid((1024, 768))
    assert grid.level_dimensions == reference.level_dimensions and grid.level_tiles == reference.level_tiles
    for level in (3, grid.level_count - 2, grid.level_count - 1):
        cols, rows = grid.level_tiles[level]
        for col, row in ((0, 0), (cols - 1, rows - 1)):
            (location, _, size), pixels = reference._get_tile_info(level, (col, row))
            assert grid.region(level, col, row).pixels == pixels
            assert grid.region(level, col, row).origin == location


def test_plain_image_tiles_equal_openslide_tiles(run_folder):
    (slide,) = discover(run_folder)
    with open_slide(slide.slide_path) as real:
        pixels = real.read_region((0, 0), 0, real.dimensions)
        reference = SlideTiles(real)
        plain = SlideTiles(ArraySlide(pixels))
        assert reference._generator is not None and plain._generator is None
        for address in ((10, 2, 1), (9, 0, 0), (7, 0, 0)):
            a = np.asarray(reference.image(*address), dtype=int)
            b = np.asarray(plain.image(*address), dtype=int)
            assert a.shape == b.shape and np.abs(a - b).mean() < 2.0


def test_heatmap_tile_colours_the_top_patch_with_the_top_colour(run_folder):
    content = ViewerContent(discover(run_folder))
    layer = content.layer(0, "heat-0")
    grid = DeepZoomGrid((1024, 768))
    top = grid.level_count - 1
    region = grid.region(top, 2, 1)  # level-0 x 508.., y 253.. holds the hot patch at (512, 256)
    rgba = layer.rgba(region)
    inside = rgba[256 - region.origin[1] + 10, 512 - region.origin[0] + 10]
    assert inside[3] == 255 and tuple(inside[:3]) == tuple(colour_table("jet")[-1])
    empty = layer.rgba(grid.region(top, 3, 2))  # x 762.., y 508..: inside the patch grid too
    assert empty is not None
    whole = layer.rgba(grid.region(0, 0, 0))  # one pixel for the whole slide: still drawn
    assert whole.shape == (1, 1, 4) and whole[0, 0, 3] == 255
    content.close()


def test_fine_layer_draws_maps_inside_patches_when_zoomed_in_and_reads_only_those(run_folder):
    content = ViewerContent(discover(run_folder))
    fine, plain = content.layer(0, "heat-2"), content.layer(0, "heat-0")
    reads: list[list[int]] = []
    read = fine.store.read
    fine.store.read = lambda rows: (reads.append(list(rows)), read(rows))[1]
    grid = DeepZoomGrid((1024, 768))
    full = grid.level_count - 1
    red, blue = (tuple(int(c) for c in colour_table("RdBu_r")[i]) for i in (-1, 0))
    region = grid.region(full, 2, 1)  # level-0 x 508.., y 253..: the top patch at (512, 256), full size
    rgba = fine.rgba(region)
    left = rgba[256 - region.origin[1] + 60, 512 - region.origin[0] + 20]
    right = rgba[256 - region.origin[1] + 60, 512 - region.origin[0] + 100]
    assert tuple(left[:3]) == red and tuple(right[:3]) == blue and left[3] == right[3] == 255
    assert reads and all(len(rows) <= FINE_TOP for rows in reads)
    reads.clear()
    corner = grid.region(full, 0, 0)  # far from the fine-mapped patches: the patch colours, no map read
    assert np.array_equal(fine.rgba(corner)[..., 3], plain.rgba(corner)[..., 3]) and not reads
    for level in range(full - 1, full - 3, -1):  # 128-px patches span ≥ 32 px at downsample 2 and 4
        region = grid.region(level, 0, 0)
        assert not np.array_equal(fine.rgba(region), fine.coarse.rgba(region))
    coarse = grid.region(full - 3, 0, 0)  # downsample 8: 16-px patches, the patch-level map only
    assert np.array_equal(fine.rgba(coarse), fine.coarse.rgba(coarse))
    thumb = np.asarray(Image.open(io.BytesIO(content.get("thumbs/0/2/1.jpeg")[0])), dtype=int)
    plain_thumb = np.asarray(Image.open(io.BytesIO(content.get("thumbs/0/0/1.jpeg")[0])), dtype=int)
    half = thumb.shape[1] // 2  # the top patch's gallery picture: its map blended over it, red | blue
    blended = (np.array(red) + plain_thumb[:, :half]) / 2, (np.array(blue) + plain_thumb[:, half:]) / 2
    assert np.abs(thumb[:, :half] - blended[0]).mean() < 6 and np.abs(thumb[:, half:] - blended[1]).mean() < 6
    assert np.abs(thumb - plain_thumb).mean() > 40
    info = content.info(0)["methods"][2]
    assert info["fine"]["scale"]["cmap"] == "RdBu_r" and "99th pct of |R|" in info["fine"]["scale"]["caption"]
    assert content.info(0)["methods"][0]["fine"] is None
    content.close()


def test_fine_map_file_as_scores_of_a_slide(run_folder):
    (slide,) = discover(run_folder)
    fine = run_folder / "heatmaps" / "slide_a" / "slide_a_fine_maps.h5"
    blockmap = run_folder / "heatmaps" / "slide_a" / "slide_a_blockmap.h5"
    (alone,) = discover(slide.slide_path, scores=[blockmap, fine])
    assert list(alone.score_sets) == ["attention", "lrp", "fine maps (lrp)"]
    assert alone.score_sets["fine maps (lrp)"].fine.path == fine


def test_cache_is_bounded_in_bytes():
    cache = ByteLRU(100)
    for key in range(10):
        cache.get_or_make(key, lambda: b"x" * 30)
    assert cache.size <= 100 and len(cache) == 3
    assert cache.get_or_make(9, lambda: b"new") == b"x" * 30  # recent entries stay


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_server_answers_404_and_never_leaves_its_files(run_folder):
    content = ViewerContent(discover(run_folder))
    server = make_server(content, port=0)
    assert server.server_address[0] == "127.0.0.1"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert _get(f"{base}/") == 200
        assert _get(f"{base}/tiles/0/slide_files/10/0_0.jpeg") == 200
        assert _get(f"{base}/static/openseadragon/LICENSE.txt") == 200
        for bad in ("/../../etc/passwd", "/static/../../../../etc/passwd", "/static/%2e%2e/%2e%2e/etc/passwd",
                    "/static/..%2f..%2fapp.py", "/tiles/0/slide_files/99/0_0.jpeg", "/tiles/7/slide.dzi",
                    "/data/0/patches-9.js", "/thumbs/0/0/99.jpeg", "/static/", "/etc/passwd",
                    "/tiles/0/../../../slides/slide_a.tif", "/static/C:\\windows",
                    "/tiles/0/slide_files/-1/0_0.jpeg", "/tiles/0/slide_files/x/0_0.jpeg",
                    "/tiles/0/slide_files/10/0_-1.jpeg", "/tiles/0/slide_files/10/5_0.jpeg",
                    "/tiles/0/heat-99999999999999999999_files/10/0_0.png", "/thumbs/0/0/0.jpeg",
                    "/tiles/-1/slide.dzi", "/data/0/patches-x.js",
                    # the page under another name: its relative links (static/...) would all 404
                    "/index.html/", "/index.html//", "/static/viewer.js/", "/static//viewer.js"):
            assert _get(base + bad) == 404, bad
        with socket.create_connection(("127.0.0.1", server.server_address[1])) as raw:  # unnormalised path
            raw.sendall(b"GET /static/../../view/app.py HTTP/1.0\r\n\r\n")
            assert b" 404 " in raw.recv(64)
        with pytest.raises(InputError, match="in use"):
            make_server(content, port=server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        content.close()


def test_cli_port_in_use_is_one_line(run_folder, capsys):
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    try:
        with pytest.raises(SystemExit) as exit_info:
            main(["view", str(run_folder), "--no-browser", "--port", str(blocker.getsockname()[1])])
    finally:
        blocker.close()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "in use" in err and len(err.splitlines()) == 1
    assert "--port 0" in err  # the way to a free port, said where it is needed (8000: http.server's too)


def test_cli_export_writes_a_static_folder(run_folder, tmp_path, capsys):
    main(["view", str(run_folder), "--export", str(tmp_path / "site"), "--quiet"])
    assert "%|" not in capsys.readouterr().err  # --quiet: no progress bar
    site = tmp_path / "site"
    assert (site / "index.html").is_file() and (site / "data" / "0" / "patches-1.js").is_file()
    assert (site / "static" / "openseadragon" / "openseadragon.min.js").is_file()
    assert (site / "tiles" / "0" / "slide_files" / "10" / "4_3.jpeg").is_file()
    assert (site / "tiles" / "0" / "heat-0_files" / "10" / "2_1.png").is_file()
    assert (site / "tiles" / "0" / "heat-2_files" / "10" / "2_1.png").is_file()  # the fine maps
    assert "not found" not in (site / "index.html").read_text()


def test_missing_path_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        discover(tmp_path / "nope")
    with pytest.raises(InputError, match="nothing to view"):
        discover(tmp_path)
    with pytest.raises(NotFoundError):
        ViewerContent([]).get("data/0/info.js")


def test_tiffslide_slides_tile_like_openslide(run_folder):
    import tiffslide

    from attnmap.wsi.slide import TiffSlideSlide

    (slide,) = discover(run_folder)
    with open_slide(slide.slide_path) as reference:
        expected = np.asarray(SlideTiles(reference).image(9, 1, 1), dtype=int)
    other = TiffSlideSlide(str(slide.slide_path), tiffslide.TiffSlide(str(slide.slide_path)))
    tiles = SlideTiles(other)
    assert np.abs(np.asarray(tiles.image(9, 1, 1), dtype=int) - expected).mean() < 2.0
    other.close()


def test_broken_prediction_files_are_one_line_errors(tmp_path):
    run = write_run_folder(tmp_path, fine=False)
    prediction = run / "heatmaps" / "slide_a" / "slide_a_prediction.json"
    good = prediction.read_text()
    for text, message in (
        (good[:40], "cannot read"),  # a run interrupted while writing it
        ("[1, 2]", "names no 'slide_path'"),
        ('{"slide_id": "slide_a"}', "names no 'slide_path'"),
    ):
        prediction.write_text(text)
        with pytest.raises(InputError, match=message):
            discover(run)


def _fetch(url: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_a_rerun_while_the_server_is_open_is_never_served_stale(tmp_path):
    import h5py

    run = write_run_folder(tmp_path, fine=False)
    content = ViewerContent(discover(run), reload=lambda: discover(run), watch=[run], check_interval=0)
    server = make_server(content, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    tile = f"{base}/tiles/0/heat-0_files/10/0_0.png"
    try:
        status, headers, before = _fetch(tile)
        assert status == 200 and headers["Cache-Control"] == "no-cache"
        etag = headers["ETag"]
        assert _fetch(tile, {"If-None-Match": etag})[0] == 304
        head = urllib.request.Request(tile, method="HEAD")
        with urllib.request.urlopen(head) as response:
            assert response.status == 200 and response.read() == b"" and response.headers["ETag"] == etag
        version = _fetch(f"{base}/data/version.js")[2]  # what an open page polls
        with h5py.File(run / "heatmaps" / "slide_a" / "slide_a_blockmap.h5", "r+") as handle:
            handle["attention_scores"][...] = -np.asarray(handle["attention_scores"])  # a new configuration
        status, headers, after = _fetch(tile, {"If-None-Match": etag})
        assert status == 200 and headers["ETag"] != etag and after != before
        assert _fetch(f"{base}/data/version.js")[2] != version  # so the page reloads itself
        old_version = version.decode().split('"')[3]  # and meanwhile gets no tile of the new run
        assert _fetch(f"{tile}?v={old_version}")[0] == 404
        new_version = _fetch(f"{base}/data/version.js")[2].decode().split('"')[3]
        assert _fetch(f"{tile}?v={new_version}")[2] == after
        fresh = ViewerContent(discover(run))  # what a fresh server draws for the new scores
        assert fresh.get("tiles/0/heat-0_files/10/0_0.png")[0] == after
        fresh.close()
        blockmap = run / "heatmaps" / "slide_a" / "slide_a_blockmap.h5"
        saved = blockmap.read_bytes()
        blockmap.write_bytes(saved[:1000])  # a rerun still writing it
        status, headers, body = _fetch(f"{base}/data/slides.js")
        assert status == 503 and headers["Cache-Control"] == "no-store" and len(body.splitlines()) == 1
        assert _fetch(f"{base}/data/version.js")[0] == 200  # the error page still learns of the fix
        blockmap.write_bytes(saved)
        assert _fetch(f"{base}/data/slides.js")[0] == 200
        status, headers, _ = _fetch(f"{base}/tiles/0/slide_files/99/0_0.jpeg")
        assert status == 404 and headers["Cache-Control"] == "no-store"  # a 404 is not remembered
        assert _fetch(f"{base}/tiles/0/slide_files/%D9%A3/0_0.jpeg")[0] == 404  # non-ASCII digit
    finally:
        server.shutdown()
        server.server_close()
        content.close()


def test_cli_help_says_what_it_serves(capsys):
    try:
        main(["view", "--help"])
    except SystemExit as exit_info:
        assert not exit_info.code
    text = " ".join(capsys.readouterr().out.split())
    for phrase in ("127.0.0.1", "Deep Zoom", "heatmap layer per score set", "fine maps", "tissue",
                   "annotations", "rerun", "_fine_maps.h5"):
        assert phrase in text, phrase


def test_scores_made_from_another_slide_of_the_same_size_are_refused(run_folder, tmp_path):
    """A blockmap of another slide of the same level-0 size had every patch inside this one and was
    shown over it without a word; a `wsi run` output records its slide's content hash."""
    import shutil

    import h5py

    from attnmap.file_hash import content_sha256

    (slide,) = discover(run_folder)
    scores = tmp_path / "other_blockmap.h5"
    shutil.copy(run_folder / "heatmaps" / "slide_a" / "slide_a_blockmap.h5", scores)
    with h5py.File(scores, "a") as handle:
        handle.attrs.update({"slide": "other.tif", "slide_sha256": "0" * 64})
    with pytest.raises(InputError, match="_blockmap.h5 was made from slide other.tif, not from slide_a.tif"):
        discover(slide.slide_path, [scores])
    with h5py.File(scores, "a") as handle:  # the same bytes under another name: the same slide
        handle.attrs["slide_sha256"] = content_sha256(slide.slide_path)
    (alone,) = discover(slide.slide_path, [scores])
    assert "attention" in alone.score_sets


def test_scores_of_another_slide_or_a_file_that_is_no_slide_are_refused(run_folder, tmp_path):
    import h5py

    (slide,) = discover(run_folder)
    scores = tmp_path / "other_blockmap.h5"
    with h5py.File(scores, "w") as handle:  # patches of a bigger slide: half lie beyond this one
        handle.create_dataset("coords", data=np.array([[0, 0], [512, 0], [2048, 0], [0, 4096]]))
        handle.create_dataset("attention_scores", data=np.arange(4.0))
        handle.attrs["patch_size"] = PATCH
    with pytest.raises(InputError, match="2 of 4 'attention' patches start outside the slide"):
        discover(slide.slide_path, [scores])
    notes = tmp_path / "notes.txt"
    notes.write_text("not a slide")
    with pytest.raises(InputError, match="notes.txt"):
        discover(notes, [run_folder / "heatmaps" / "slide_a" / "slide_a_blockmap.h5"])


def test_an_interrupted_run_shows_its_finished_slides_and_names_the_others(tmp_path, capsys):
    run = write_run_folder(tmp_path, fine=False)
    (run / "heatmaps" / "slide_b").mkdir()  # started, nothing written yet
    (run / "heatmaps" / "slide_c").mkdir()
    (run / "heatmaps" / "slide_c" / "slide_c_blockmap.h5").write_bytes(b"")  # prediction not yet written
    skipped: list[str] = []
    assert [slide.slide_id for slide in discover(run, skipped=skipped)] == ["slide_a"]
    assert skipped == ["slide_b", "slide_c"]
    main(["view", str(run), "--export", str(tmp_path / "site")])
    err = [line for line in capsys.readouterr().err.splitlines() if "not shown" in line]
    assert err == ["attnmap view: not shown (no blockmap or prediction file yet): slide_b, slide_c"]
    (run / "heatmaps" / "slide_a" / "slide_a_prediction.json").unlink()
    with pytest.raises(InputError, match="interrupted or running"):
        discover(run)


def test_a_damaged_extra_layer_is_left_out_and_named_the_slide_is_shown(tmp_path, capsys):
    """A fine-map file cut short, or an overlapping grid of another slide, hid the whole slide,
    though its blockmap layers read: now the slide is shown without that layer, which is named."""
    import h5py

    run = write_run_folder(tmp_path)
    folder = run / "heatmaps" / "slide_a"
    fine = folder / "slide_a_fine_maps.h5"
    fine.write_bytes(fine.read_bytes()[:200])
    with h5py.File(folder / "slide_a_overlap_blockmap.h5", "w") as handle:  # patches of a bigger slide
        handle.create_dataset("coords", data=np.array([[0, 0], [4096, 0]]))
        handle.create_dataset("attention_scores", data=np.array([[0.1], [0.9]]))
        handle.attrs["patch_size"] = PATCH
    found = find_slides(run)
    (slide,) = found.slides
    assert slide.slide_id == "slide_a" and set(slide.score_sets) == {"attention", "lrp"}
    named = {item.slide_id: item.reason for item in found.unshown}
    assert set(named) == {"slide_a (fine maps)", "slide_a (overlapping grid)"}
    assert "slide_a_fine_maps.h5" in named["slide_a (fine maps)"]
    off_slide = "1 of 2 'attention (overlapping grid)' patches start outside"
    assert off_slide in named["slide_a (overlapping grid)"]
    main(["view", str(run), "--export", str(tmp_path / "site")])
    err = [line for line in capsys.readouterr().err.splitlines() if "not shown" in line]
    assert len(err) == 2 and all("this layer is left out" in line for line in err)


def test_a_tile_drawn_while_a_rerun_is_read_is_not_cached_as_the_new_one(tmp_path):
    import h5py

    run = write_run_folder(tmp_path, fine=False)
    content = ViewerContent(discover(run), reload=lambda: discover(run), watch=[run], check_interval=0)
    url = "tiles/0/heat-0_files/10/0_0.png"
    layer = content.layer(0, "heat-0")
    draw = layer.rgba

    def draw_during_a_rerun(region):
        pixels = draw(region)  # the old scores' tile, finished after the server re-read the run
        with h5py.File(run / "heatmaps" / "slide_a" / "slide_a_blockmap.h5", "r+") as handle:
            handle["attention_scores"][...] = -np.asarray(handle["attention_scores"])
        content.refresh()
        return pixels

    layer.rgba = draw_during_a_rerun
    old = content.get(url)[0]
    fresh = ViewerContent(discover(run))
    assert content.get(url)[0] == fresh.get(url)[0] != old
    fresh.close()
    content.close()


def test_annotations_that_cannot_apply_are_refused_not_ignored(run_folder, tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        discover(run_folder, annotations=tmp_path / "typo")
    single = tmp_path / "slide_a.geojson"
    single.write_text('{"type": "Polygon", "coordinates": [[[0, 0], [9, 0], [9, 9], [0, 0]]]}')
    with pytest.raises(InputError, match="give a folder"):
        discover(run_folder, annotations=single)


def test_concurrent_requests_get_the_same_bytes_as_one_at_a_time(run_folder):
    from concurrent.futures import ThreadPoolExecutor

    grid = DeepZoomGrid((1024, 768))
    urls = [
        f"tiles/0/{layer}_files/{level}/{col}_{row}.{'jpeg' if layer == 'slide' else 'png'}"
        for layer in ("slide", "heat-0", "heat-2", "tissue")
        for level in (7, 9, 10)
        for col in range(grid.level_tiles[level][0])
        for row in range(grid.level_tiles[level][1])
    ] + [f"thumbs/0/{m}/{rank}.jpeg" for m in (0, 2) for rank in (1, 2, 3)] + ["data/0/patches-2.js"]
    serial = ViewerContent(discover(run_folder))
    expected = {url: serial.get(url)[0] for url in urls}
    serial.close()
    content = ViewerContent(discover(run_folder))
    server = make_server(content, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda url: _fetch(base + url), urls * 2))
    finally:
        server.shutdown()
        server.server_close()
        content.close()
    for url, (status, _, body) in zip(urls * 2, answers, strict=True):
        assert status == 200 and body == expected[url], url


@pytest.mark.parametrize("size, suffix", [((1, 1), ".png"), ((3000, 9), ".webp")])
def test_tiny_and_very_wide_plain_image_slides_serve_every_tile(tmp_path, size, suffix):
    import h5py

    image = tmp_path / f"slide{suffix}"
    ramp = np.linspace(0, 255, size[0]).astype(np.uint8)  # smooth, so JPEG keeps it
    pixels = np.stack([np.tile(ramp, (size[1], 1))] * 3, axis=-1)
    Image.fromarray(pixels).save(image, **({"lossless": True} if suffix == ".webp" else {}))
    scores = tmp_path / "scores.h5"
    with h5py.File(scores, "w") as handle:
        handle.create_dataset("coords", data=np.array([[0, 0], [size[0] - 1, 0]]))
        handle.create_dataset("attention_scores", data=np.array([1.0, 2.0]))
        handle.attrs["patch_size"] = 8
    content = ViewerContent(discover(image, [scores]))
    grid = DeepZoomGrid(size)
    for level, (cols, _) in enumerate(grid.level_tiles):
        for col in range(cols):
            tile = Image.open(io.BytesIO(content.get(f"tiles/0/slide_files/{level}/{col}_0.jpeg")[0]))
            assert tile.size == grid.region(level, col, 0).pixels
            assert content.get(f"tiles/0/heat-0_files/{level}/{col}_0.png")[1] == "image/png"
        with pytest.raises(NotFoundError):
            content.get(f"tiles/0/slide_files/{level}/{cols}_0.jpeg")
    top = content.get(f"tiles/0/slide_files/{grid.level_count - 1}/0_0.jpeg")[0]
    top = np.asarray(Image.open(io.BytesIO(top)), dtype=int)
    assert np.abs(top - pixels[:, : top.shape[1]]).mean() < 4  # the image itself, not a blank
    content.close()


def test_a_slide_moved_while_served_is_reported_not_drawn_from_the_old_handle(tmp_path):
    from attnmap.view.app import UnavailableError

    run = write_run_folder(tmp_path, fine=False)
    content = ViewerContent(discover(run), reload=lambda: discover(run), watch=[run], check_interval=0)
    assert content.get("tiles/0/slide_files/9/0_0.jpeg")[1] == "image/jpeg"  # opens the slide
    slide = content.slides[0].slide_path
    slide.rename(slide.with_suffix(".moved"))
    content.refresh()
    with pytest.raises(UnavailableError, match=r"slide_a\.tif .* is missing"):
        content.get("tiles/0/slide_files/9/0_0.jpeg")
    version = content.version
    content.refresh()  # tried again, failing the same way: open pages are not reloaded for nothing
    assert content.version == version and content.error
    slide.with_suffix(".moved").rename(slide)
    content.refresh()
    assert content.get("tiles/0/slide_files/9/0_0.jpeg")[1] == "image/jpeg"
    content.close()


def test_slide_ids_with_url_characters_are_served_by_index(tmp_path):
    import json

    slide_id = "case 7#b?x=%41é"
    run = write_run_folder(tmp_path, slide_id=slide_id, fine=False)
    content = ViewerContent(discover(run))
    server = make_server(content, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        def payload(url: str) -> dict:  # attnmapData("name", {...});
            status, _, body = _fetch(base + url)
            assert status == 200, url
            return json.loads(body.decode().split(", ", 1)[1].rsplit(");", 1)[0])

        assert payload("data/slides.js")["slides"][0]["id"] == slide_id
        assert payload("data/0/info.js")["id"] == slide_id
        assert _fetch(base + "tiles/0/heat-0_files/10/2_1.png")[0] == 200
    finally:
        server.shutdown()
        server.server_close()
    site = tmp_path / "site"
    from attnmap.view import export_static

    export_static(content, site)
    content.close()
    assert not [p for p in site.rglob("*") if slide_id in str(p) or "%" in p.name or "?" in p.name]


def test_exporting_again_into_an_export_leaves_nothing_of_the_earlier_one(tmp_path):
    import shutil

    write_run_folder(tmp_path, "slide_a", fine=False)
    run = write_run_folder(tmp_path, "slide_b", seed=1, fine=False)  # the same run folder
    site = tmp_path / "site"
    main(["view", str(run), "--export", str(site)])
    assert (site / "tiles" / "1").is_dir() and (site / "tiles" / "0" / "tissue_files").is_dir()
    shutil.rmtree(run / "heatmaps" / "slide_b")  # the rerun: slide_a only, and without its tissue file
    (run / "tissue" / "slide_a.json").unlink()
    main(["view", str(run), "--export", str(site)])
    assert not (site / "tiles" / "1").exists() and not (site / "data" / "1").exists()
    assert not (site / "tiles" / "0" / "tissue_files").exists()
    assert (site / "tiles" / "0" / "slide_files" / "10" / "0_0.jpeg").is_file()


def test_an_interrupted_export_is_no_page_to_open_and_the_next_export_completes_it(tmp_path, monkeypatch):
    """Ctrl+C during `--export` left the page and the slide list (written first) beside the tiles of
    only the layers done: it opened as a whole export, the rest failing in the browser. Over an
    earlier export, the earlier page was kept beside the new, partial data."""
    import attnmap.view.export as export

    run = write_run_folder(tmp_path, "slide_a", fine=False)
    site = tmp_path / "site"
    layer = export._export_layer

    def interrupted(content, out, index, name, bar):
        if name != "slide":  # the slide's tiles written, its heatmaps not
            raise KeyboardInterrupt
        return layer(content, out, index, name, bar)

    def stopped_export() -> None:
        monkeypatch.setattr(export, "_export_layer", interrupted)
        content = ViewerContent(discover(run))
        with pytest.raises(KeyboardInterrupt):
            export.export_static(content, site)
        content.close()
        monkeypatch.setattr(export, "_export_layer", layer)
        assert (site / "tiles" / "0" / "slide_files").is_dir()
        assert not (site / "index.html").exists() and not (site / "data" / "slides.js").exists()

    stopped_export()  # into a new folder
    main(["view", str(run), "--export", str(site), "--quiet"])  # an export still: taken over, finished
    assert (site / "index.html").is_file() and (site / "data" / "0" / "info.js").is_file()
    stopped_export()  # over that whole export: its page goes first


def test_a_browser_dropping_a_tile_request_prints_no_traceback(run_folder, capsys):
    server = make_server(ViewerContent(discover(run_folder)), port=0)
    try:
        for error in (ConnectionResetError(104, "reset by peer"), BrokenPipeError(32, "Broken pipe")):
            try:
                raise error  # as when writing a tile the browser no longer wants
            except OSError:
                server.handle_error(None, ("127.0.0.1", 5000))
        assert capsys.readouterr().err == ""
        try:
            raise ValueError("bad request")
        except ValueError:
            server.handle_error(None, ("127.0.0.1", 5000))
        err = capsys.readouterr().err
        assert err.splitlines() == ["attnmap view: request from 127.0.0.1: ValueError: bad request"]
    finally:
        server.server_close()


def _cohort_with_problems(root: Path) -> Path:
    """A run of five slides: a (fine, its path relative to where the run ran), b (blockmap cut short),
    c (slide moved away), d (annotations that do not parse), and e (failed in the run)."""
    import json

    for index, slide_id in enumerate("abcd"):
        run = write_run_folder(root, f"slide_{slide_id}", seed=index, fine=False)
    prediction = run / "heatmaps" / "slide_a" / "slide_a_prediction.json"
    prediction.write_text(
        json.dumps({**json.loads(prediction.read_text()), "slide_path": "slides/slide_a.tif"})
    )
    blockmap = run / "heatmaps" / "slide_b" / "slide_b_blockmap.h5"
    blockmap.write_bytes(blockmap.read_bytes()[:3000])
    (root / "slides" / "slide_c.tif").rename(root / "slide_c.moved")
    (root / "annotations").mkdir()
    (root / "annotations" / "slide_d.geojson").write_text('{"type": "Polygon", "coordinates": [[[1, 2]]]}')
    report = {
        "items": [
            {
                "item": "slides/slide_e.svs",
                "status": "failed",
                "error_type": "InputError",
                "message": "cannot read slide slides/slide_e.svs",
            }
        ]
    }
    (run / "run_report.json").write_text(json.dumps(report))
    return run


def test_a_cohort_shows_the_slides_that_read_and_names_the_others_with_why(tmp_path, monkeypatch, capsys):
    from attnmap.view import find_slides

    run = _cohort_with_problems(tmp_path / "cohort")
    monkeypatch.chdir(tmp_path)  # not where the run ran: slide_a's relative path is found beside the run
    found = find_slides(run, annotations=tmp_path / "cohort" / "annotations")
    assert [slide.slide_id for slide in found.slides] == ["slide_a"]
    assert found.slides[0].slide_path == (tmp_path / "cohort" / "slides" / "slide_a.tif").resolve()
    reasons = {item.slide_id: item.reason for item in found.unshown}
    assert list(reasons) == ["slide_b", "slide_c", "slide_d", "slide_e"]
    assert reasons["slide_b"].startswith("cannot read scores file") and "truncated" in reasons["slide_b"]
    assert reasons["slide_c"].startswith("its file") and "slide_c.tif" in reasons["slide_c"]
    assert "slide_d.geojson is not GeoJSON" in reasons["slide_d"]
    assert reasons["slide_e"] == "failed in the run: InputError: cannot read slide slides/slide_e.svs"
    content = ViewerContent(
        found,
        reload=lambda: find_slides(run, annotations=tmp_path / "cohort" / "annotations"),
        check_interval=0,
    )
    listed = content.slide_list()
    assert [row["id"] for row in listed["slides"]] == ["slide_a"]
    assert [row["id"] for row in listed["unshown"]] == list(reasons)
    (tmp_path / "cohort" / "slide_c.moved").rename(tmp_path / "cohort" / "slides" / "slide_c.tif")
    content.refresh()  # the slide is back where its prediction says: shown, without a restart
    assert [row["id"] for row in content.slide_list()["slides"]] == ["slide_a", "slide_c"]
    content.close()
    annotations = str(tmp_path / "cohort" / "annotations")
    main(["view", str(run), "--annotations", annotations, "--export", str(tmp_path / "site"), "--quiet"])
    lines = [
        line for line in capsys.readouterr().err.splitlines() if line.startswith("attnmap view: not shown:")
    ]
    assert [line.split(":")[2].strip() for line in lines] == ["slide_b", "slide_d", "slide_e"]
    (run / "heatmaps" / "slide_a" / "slide_a_blockmap.h5").write_bytes(b"")
    for slide_id in "cd":
        (run / "heatmaps" / f"slide_{slide_id}" / f"slide_{slide_id}_prediction.json").unlink()
    with pytest.raises(
        InputError, match=r"^nothing to view in .*: slide slide_a: cannot read scores file .*\(4 more"
    ):
        discover(run)
    failed = tmp_path / "every_slide_failed"  # a run that wrote no heatmaps folder at all
    failed.mkdir()
    (run / "run_report.json").rename(failed / "run_report.json")
    with pytest.raises(InputError, match=r"^nothing to view in .*: slide slide_e: failed in the run"):
        discover(failed)


def _cannot_read(entry) -> dict:
    raise InputError(f"cannot read slide {entry.path}")


def test_a_failed_slide_whose_id_is_not_its_file_name_is_named_by_its_id(tmp_path):
    """A slide list with a ``slide_id`` column (ids unlike the file names, as TCGA barcodes beside
    scanner file names): a failed slide was named by its file's stem, and its folder (emptied by the
    failed rerun) was called "left from an earlier run", as though the slide were not in the list.
    The report is written as `wsi run` writes it (`run_tasks` over its slide entries)."""
    from attnmap.parallel import run_tasks
    from attnmap.wsi.pipeline.config import SlideEntry

    out = tmp_path / "out"
    (out / "heatmaps" / "P0").mkdir(parents=True)  # what a failed rerun leaves of its earlier outputs
    entries = [SlideEntry(str(tmp_path / "slides" / "scan_0001.svs"), "P0")]
    run_tasks(_cannot_read, entries, report=out / "run_report.json", retries=0, progress=False,
              provenance={"method": "attnmap wsi run"})
    with pytest.raises(InputError) as error:
        find_slides(out)
    assert str(error.value) == f"nothing to view in {out}: slide P0: failed in the run: InputError: " + (
        f"cannot read slide {entries[0].path}"
    )  # one slide, said once, by its id


def test_export_into_a_place_it_cannot_write_fails_at_once(run_folder, tmp_path, capsys, monkeypatch):
    from attnmap.view import export_static

    (tmp_path / "a_file").write_text("x")
    content = ViewerContent(discover(run_folder))
    calls = []
    content.get = lambda url: calls.append(url)  # nothing may be drawn before the target is known good
    with pytest.raises(InputError, match=r"^--export target .*a_file/site: Not a directory$"):
        export_static(content, tmp_path / "a_file" / "site")
    assert not calls
    content.close()
    with pytest.raises(SystemExit) as exit_info:
        main(["view", str(run_folder), "--export", str(tmp_path / "a_file" / "site")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"attnmap: error: --export target {tmp_path / 'a_file' / 'site'}: Not a directory"
    ]

    def refused(self, *args, **kwargs):  # a read-only place (as root, permissions are not enforced)
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", refused)
    with pytest.raises(InputError, match=r"^--export target .*read_only: not writable$"):
        export_static(ViewerContent([]), tmp_path / "read_only")


def test_annotations_in_both_formats_are_drawn_and_wrong_ones_refused(tmp_path):
    import h5py

    run = write_run_folder(tmp_path, "slide_a", fine=False)
    folder = tmp_path / "annotations"
    folder.mkdir()
    square = [[600, 300], [900, 300], [900, 600], [600, 600], [600, 300]]
    hole = [[700, 400], [800, 400], [800, 500], [700, 500], [700, 400]]
    (folder / "slide_a.geojson").write_text(
        '{"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {}, "geometry": '
        f'{{"type": "MultiPolygon", "coordinates": [[{square}, {hole}], '
        "[[[100, 100], [200, 100], [150, 200], [100, 100]]]]}}]}"
    )
    content = ViewerContent(discover(run, annotations=folder))
    assert len(content.slides[0].annotations) == 3  # outer, hole, and the second polygon
    grid = DeepZoomGrid((1024, 768))

    def alpha(x: int, y: int) -> int:  # the outline layer at level-0 pixel (x, y), at full resolution
        col, row = x // grid.tile_size, y // grid.tile_size
        region = grid.region(grid.level_count - 1, col, row)
        tile = content.get(f"tiles/0/annotations_files/{grid.level_count - 1}/{col}_{row}.png")[0]
        return int(np.asarray(Image.open(io.BytesIO(tile)))[y - region.origin[1], x - region.origin[0], 3])

    assert alpha(750, 300) == alpha(800, 450) == alpha(150, 100) == 255  # square, hole, second polygon
    assert alpha(850, 350) == alpha(750, 450) == 0  # inside the lesion and inside the hole, off the outlines
    content.close()
    (folder / "slide_a.geojson").unlink()
    coordinates = "".join(f'<Coordinate Order="{i}" X="{x}" Y="{y}"/>' for i, (x, y) in enumerate(square[:4]))
    (folder / "slide_a.xml").write_text(
        '<?xml version="1.0"?><ASAP_Annotations><Annotations><Annotation Name="a" Type="Polygon" '
        f'PartOfGroup="Tumor"><Coordinates>{coordinates}</Coordinates></Annotation></Annotations>'
        "<AnnotationGroups/></ASAP_Annotations>"
    )
    (slide,) = discover(run, annotations=folder)
    assert len(slide.annotations) == 1 and slide.annotations[0][:, 0].max() == 900
    shifted = coordinates.replace('X="6', 'X="46').replace('X="9', 'X="49')  # x 4600-4900: another slide
    (folder / "slide_a.xml").write_text((folder / "slide_a.xml").read_text().replace(coordinates, shifted))
    with pytest.raises(InputError, match=r"slide_a: 1 of 1 annotation rings lie wholly outside the slide"):
        discover(run, annotations=folder)
    (folder / "slide_a.xml").write_text("<ASAP_Annotations><Annotations>")  # cut short
    with pytest.raises(InputError, match="slide_a.xml"):
        discover(run, annotations=folder)
    (folder / "slide_a.xml").unlink()
    with h5py.File(run / "heatmaps" / "slide_a" / "slide_a_blockmap.h5", "r+") as handle:
        handle["scores_lrp"][3] = np.nan  # a score set a run left unfinished
    with pytest.raises(InputError, match=r"slide_a_blockmap\.h5: 'lrp' scores: .*NaN"):
        discover(run)


def test_coarse_tiles_of_a_one_level_slide_are_read_in_bounded_blocks(run_folder, monkeypatch):
    import attnmap.view.deepzoom as deepzoom

    (slide,) = discover(run_folder)
    with open_slide(slide.slide_path) as real:
        pixels = real.read_region((0, 0), 0, real.dimensions)
    one_level = ArraySlide(pixels)
    whole = {}
    monkeypatch.setattr(deepzoom, "MAX_READ_RATIO", 1e9)  # the one-piece read, as the reference
    for address in ((10, 1, 1), (9, 0, 0), (8, 0, 0), (5, 0, 0), (0, 0, 0)):
        whole[address] = np.asarray(SlideTiles(one_level).image(*address), dtype=int)
    monkeypatch.setattr(deepzoom, "MAX_READ_RATIO", 8)
    monkeypatch.setattr(deepzoom, "CHUNK", 16)
    reads = []
    read = one_level.read_region
    monkeypatch.setattr(one_level, "read_region", lambda *args: reads.append(args[2]) or read(*args))
    tiles = SlideTiles(one_level)
    for address, expected in whole.items():
        reads.clear()
        image = np.asarray(tiles.image(*address), dtype=int)
        assert image.shape == expected.shape and np.abs(image - expected).mean() < 1.0, address
        bound = 2 * 16 * 8 if address[0] <= 6 else 8 * (254 + 2)  # level 7 and finer: one read ≤ 8 × tile
        assert max(max(size) for size in reads) <= bound, (address, reads)


def test_a_real_run_with_relative_paths_views_from_anywhere_and_a_replaced_slide_is_refused(
    tmp_path, monkeypatch, capsys
):
    import yaml
    from synthetic_slide_files import write_pipeline_setup, write_test_slide

    config = write_pipeline_setup(tmp_path / "project", n_slides=1)
    raw = yaml.safe_load(config.read_text())
    raw["segmentation"]["level"] = 0
    config.write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(tmp_path / "project")  # as a user runs it: relative paths throughout
    main(["wsi", "run", "config.yaml", "--quiet"])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    run = tmp_path / "project" / "out"
    (slide,) = discover(run)
    assert slide.slide_path == (tmp_path / "project" / "slides" / "slide_0.tif").resolve()
    assert slide.run_dimensions == (1024, 768)
    assert list(slide.score_sets) == ["attention"]  # no overlap asked: no overlapping-grid layer
    write_test_slide(tmp_path / "project" / "slides" / "slide_0.tif", seed=5, size=(2048, 1536))  # replaced
    with pytest.raises(InputError, match=r"is 2048x1536 px at level 0 but the run read a 1024x768 slide"):
        discover(run)


def test_a_rerun_of_one_slide_changes_only_that_slides_version(tmp_path):
    import json

    from attnmap.view import find_slides

    write_run_folder(tmp_path, "slide_a", seed=0, fine=False)
    run = write_run_folder(tmp_path, "slide_b", seed=1, fine=False)
    content = ViewerContent(find_slides(run), reload=lambda: find_slides(run), watch=[run], check_interval=0)
    a, b, whole = content.slide_version(0), content.slide_version(1), content.version
    prediction = run / "heatmaps" / "slide_b" / "slide_b_prediction.json"
    prediction.write_text(json.dumps({**json.loads(prediction.read_text()), "prediction_name": "normal"}))
    content.refresh()
    assert content.version != whole and content.slide_version(1) != b
    assert content.slide_version(0) == a and a in content.version_of("tiles/0/heat-0_files/10/0_0.png")
    assert b not in content.version_of("tiles/1/heat-0_files/10/0_0.png")
    versions = content.get("data/version.js")[0].decode()
    assert f'attnmapData("slideVersions", {{"slide_a":"{a}",' in versions
    changed = content.slide_version(1)
    prediction.write_text(prediction.read_text() + "\n")  # rewritten with the same data: the same picture
    content.refresh()
    assert content.slide_version(1) == changed
    content.close()


def test_slides_added_to_a_served_folder_drop_its_tiles_once_and_a_write_during_the_read_is_seen(tmp_path):
    """A rerun adding (or removing) a slide made two reloads: the files' state was taken over the old
    slides' files, then compared with the new slides' (other paths), so the next check re-read the
    folder and dropped every cached tile again. A re-read that finds what is shown now keeps it
    (same version, same tiles); a file written while the folder is read is still read next time."""
    import json
    import shutil

    from attnmap.view import find_slides

    run = write_run_folder(tmp_path, "slide_a", fine=False)
    during: list = []

    def reload():
        found = find_slides(run)
        while during:  # a run writing while the viewer reads the folder
            during.pop()()
        return found

    content = ViewerContent(find_slides(run), reload=reload, watch=[run], check_interval=0)
    tile = "tiles/0/slide_files/10/0_0.jpeg"
    prediction = run / "heatmaps" / "slide_b" / "slide_b_prediction.json"
    try:
        write_run_folder(tmp_path, "slide_b", seed=1, fine=False)  # the rerun adds a slide
        during.append(lambda: prediction.write_text(
            json.dumps({**json.loads(prediction.read_text()), "prediction_name": "normal"})))
        content.refresh()
        assert [s.slide_id for s in content.slides] == ["slide_a", "slide_b"]
        assert content.slide_list()["slides"][1]["prediction"] == "tumor"  # as read
        content.refresh()  # the write made during the read: read now
        assert content.slide_list()["slides"][1]["prediction"] == "normal"
        version = content.version
        content.get(tile)
        cached = len(content.cache)
        content.refresh()  # nothing changed since: nothing dropped
        assert content.version == version and len(content.cache) == cached and cached
        shutil.rmtree(run / "heatmaps" / "slide_b")  # a slide removed
        content.refresh()
        assert [s.slide_id for s in content.slides] == ["slide_a"] and content.version != version
        version = content.version
        content.get(tile)
        cached = len(content.cache)
        content.refresh()
        assert content.version == version and len(content.cache) == cached
    finally:
        content.close()


def test_the_old_slides_of_a_rerun_are_closed_once_no_request_uses_them(tmp_path, monkeypatch):
    import json

    run = write_run_folder(tmp_path, fine=False)
    content = ViewerContent(discover(run), reload=lambda: discover(run), watch=[run], check_interval=0)
    prediction = run / "heatmaps" / "slide_a" / "slide_a_prediction.json"
    payload = json.loads(prediction.read_text())
    closed = []
    for step in range(3):  # a server left open through reruns
        content.get("tiles/0/slide_files/10/0_0.jpeg")
        handle = content.slide_tiles(0).slide
        monkeypatch.setattr(handle, "close", lambda handle=handle: closed.append(handle))
        prediction.write_text(json.dumps({**payload, "n_patches": step}))
        content.refresh()
    assert len(closed) == 2 and len(content._retired) == 1  # the third: when the next request is answered
    tiles = content.slide_tiles(0)
    draw = tiles.tile
    seen = []

    def rerun_while_drawing(*address):
        prediction.write_text(json.dumps({**payload, "n_patches": 99}))
        content.refresh()  # the rerun is read while this request still draws from the old handle
        seen.append(list(closed))
        return draw(*address)

    monkeypatch.setattr(tiles, "tile", rerun_while_drawing)
    monkeypatch.setattr(tiles.slide, "close", lambda: closed.append(tiles.slide))
    content.get("tiles/0/slide_files/10/1_1.jpeg")
    assert tiles.slide not in seen[0] and closed[-1] is tiles.slide  # closed after, not during
    content.close()


def test_a_tile_that_fails_to_draw_is_a_500_and_one_line_in_the_log(run_folder, capsys, monkeypatch):
    content = ViewerContent(discover(run_folder))
    server = make_server(content, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    tiles = content.slide_tiles(0)

    def unreadable(*address):  # as when the slide file is damaged where this tile lies
        raise OSError("read error in tile\nat offset 12")

    monkeypatch.setattr(tiles, "tile", unreadable)
    try:
        url = "/tiles/0/slide_files/10/0_0.jpeg"
        status, headers, body = _fetch(f"http://127.0.0.1:{server.server_address[1]}{url}")
        assert status == 500 and headers["Cache-Control"] == "no-store"
        assert body.decode() == "OSError: read error in tile at offset 12\n"
        err = capsys.readouterr().err
        assert err.splitlines() == [f"attnmap view: {url}: OSError: read error in tile at offset 12"]
    finally:
        server.shutdown()
        server.server_close()
        content.close()


def test_tiles_are_served_while_a_rerun_is_read(tmp_path):
    import json

    run = write_run_folder(tmp_path, fine=False)
    reading, release = threading.Event(), threading.Event()

    def slow_reload():  # a cohort's re-read opens every slide
        reading.set()
        release.wait(10)
        return discover(run)

    content = ViewerContent(discover(run), reload=slow_reload, watch=[run], check_interval=0)
    content.get("tiles/0/slide_files/10/0_0.jpeg")
    prediction = run / "heatmaps" / "slide_a" / "slide_a_prediction.json"
    prediction.write_text(json.dumps({**json.loads(prediction.read_text()), "prediction_name": "normal"}))
    version = content.version
    rereading = threading.Thread(target=content.refresh)
    rereading.start()
    assert reading.wait(10)
    answered = []
    request = threading.Thread(target=lambda: answered.append(content.get("tiles/0/heat-0_files/10/1_1.png")))
    request.start()
    request.join(5)
    assert answered and content.version == version  # the old content, under its own version
    content.refresh()  # another request does not start a second re-read
    release.set()
    rereading.join(10)
    assert content.version != version and content.slide_list()["slides"][0]["prediction"] == "normal"
    content.close()


def test_an_overlap_run_offers_its_overlapping_grid_with_each_pixel_the_mean_of_its_patches(tmp_path):
    run = write_overlap_run(tmp_path)
    (slide,) = discover(run)
    assert list(slide.score_sets) == ["attention", "attention (overlapping grid)"]
    grid_set = slide.score_sets["attention (overlapping grid)"]
    assert grid_set.overlapping and grid_set.scale == slide.score_sets["attention"].scale
    content = ViewerContent([slide])
    info = content.info(0)
    assert "every 32 px" in info["methods"][1]["note"]
    grid = DeepZoomGrid((1024, 768))
    level = grid.level_count - 1  # level 0 pixels
    canvas = np.zeros((768, 1024, 4), dtype=np.uint8)
    for row in range(grid.level_tiles[level][1]):
        for col in range(grid.level_tiles[level][0]):
            region = grid.region(level, col, row)
            body, _ = content.get(f"tiles/0/heat-1_files/{level}/{col}_{row}.png")
            if body == content.empty_png:
                continue
            (x, y), (w, h) = region.origin, region.pixels
            canvas[y : y + h, x : x + w] = np.asarray(Image.open(io.BytesIO(body)))
    content.close()
    path = run / "heatmaps" / "slide_0" / "slide_0_overlap_blockmap.h5"
    corners, means, counts, step = overlap_cells(path, grid_set.scale.unit)
    assert (counts == 4).any() and len(np.unique(np.round(means, 6))) > 10
    table = colour_table(grid_set.scale.cmap)
    drawn = np.zeros((768, 1024), dtype=bool)
    for (x, y), mean in zip(corners, means, strict=True):  # every pixel: the mean of the patches over it
        cell = canvas[y : y + step, x : x + step]
        expected = table[int(np.rint(mean * (len(table) - 1)))]
        assert (cell[..., 3] == 255).all() and (cell[..., :3] == expected).all(), ((x, y), mean)
        drawn[y : y + step, x : x + step] = True
    assert not canvas[~drawn][:, 3].any()  # nothing where no patch lies
    (given,) = discover(slide.slide_path, scores=[path])  # the file given with --scores: drawn the same way
    assert given.score_sets["attention"].overlapping
    assert not discover(slide.slide_path, scores=[path.with_name("slide_0_blockmap.h5")])[0].score_sets[
        "attention"
    ].overlapping


def test_an_overlap_run_on_clams_raw_scale_colours_its_grid_as_its_png(tmp_path):
    """`heatmap.scale: clam` with `percentiles: false` draws the blockmap raw / 100, but the PNG of
    an overlapping grid ranks its scores against the blockmap's (CLAM's rule); the viewer coloured
    the grid raw / 100 (the blockmap attention's scale), another picture than the PNG."""
    from attnmap.wsi.heatmap.scores import percentiles_against

    run = write_overlap_run(tmp_path, scale="clam", percentiles=False)
    (slide,) = discover(run)
    blockmap, grid = slide.score_sets["attention"], slide.score_sets["attention (overlapping grid)"]
    assert grid.scale.kind == "percentile"
    assert np.allclose(grid.scale.unit(grid.scores), percentiles_against(grid.scores, blockmap.scores) / 100)


def test_a_cohort_browsed_slide_after_slide_keeps_only_a_few_slides_open(run_folder, monkeypatch):
    """Each slide viewed used to stay open (its OpenSlide handle, tile cache and layers) until the
    server stopped; past `MAX_OPEN_SLIDES` the least recently viewed is closed and, viewed again,
    reopened with the same tiles."""
    from attnmap.view import app

    opened, closed = [], []

    class CountedTiles(SlideTiles):
        def __init__(self, slide) -> None:
            super().__init__(slide)
            opened.append(self)
            original_close = slide.close
            slide.close = lambda: (closed.append(self), original_close())

    monkeypatch.setattr(app, "SlideTiles", CountedTiles)
    monkeypatch.setattr(app, "MAX_OPEN_SLIDES", 3)
    (slide,) = discover(run_folder)
    count = 7
    content = ViewerContent([slide] * count)
    first = {index: content.get(f"tiles/{index}/slide_files/10/0_0.jpeg")[0] for index in range(count)}
    heat = content.get("tiles/0/heat-0_files/10/0_0.png")[0]
    assert len(opened) == count + 1 and len(opened) - len(closed) == 3  # slide 0 opened again
    assert content.get("tiles/0/slide_files/9/0_0.jpeg")[0]  # a tile not cached yet: from the open handle
    assert len({body for body in first.values()}) == 1 and heat
    content.cache.clear()
    again = [content.get(f"tiles/{index}/slide_files/10/0_0.jpeg")[0] for index in (1, 2)]
    assert again == [first[1], first[2]]
    assert len(opened) - len(closed) == 3 and len(set(map(id, closed))) == len(closed)
    content.close()
    assert len(closed) == len(opened)


def test_a_score_set_not_one_per_patch_or_a_file_of_no_patch_is_refused_by_name(run_folder, tmp_path):
    """A ``scores_<method>`` of another length was dropped without a word (the method missing from the
    viewer and the GeoJSON), and when it was the only one the file "held no score dataset"; a file of
    no patch was served as a slide with an empty heatmap."""
    import h5py

    from attnmap.view.score_files import read_score_sets

    (slide,) = discover(run_folder)
    coords = np.array([[0, 0], [PATCH, 0]])
    cases = {
        "short": ({"attention_scores": np.ones(2), "scores_lrp": np.ones(3)}, coords, "'scores_lrp' has"),
        "wide": ({"attention_scores": np.ones((2, 2))}, coords, "'attention_scores' has shape"),
        "none": ({"attention_scores": np.ones(0)}, coords[:0], "no patch"),
    }
    for name, (datasets, where, message) in cases.items():
        path = tmp_path / f"{name}_blockmap.h5"
        with h5py.File(path, "w") as handle:
            handle.create_dataset("coords", data=where.reshape(-1, 2))
            for key, values in datasets.items():
                handle.create_dataset(key, data=values)
            handle.attrs["patch_size"] = PATCH
        with pytest.raises(InputError, match=message):
            read_score_sets(path)
        with pytest.raises(InputError, match=message):
            discover(slide.slide_path, [path])


def test_a_scores_file_or_one_slides_folder_given_as_the_path_says_what_to_view(run_folder):
    """``attnmap view run/heatmaps/<id>/<id>_blockmap.h5`` said the blockmap "is a slide file", and
    ``run/heatmaps/<id>`` only listed what a path may be; both now name the run folder to give."""
    folder = run_folder / "heatmaps" / "slide_a"
    with pytest.raises(InputError, match="is a scores file, not a slide") as scores_error:
        discover(folder / "slide_a_blockmap.h5")
    with pytest.raises(InputError, match="one slide's folder") as folder_error:
        discover(folder)
    for error in (scores_error, folder_error):
        assert f"attnmap view {run_folder}" in str(error.value) and "\n" not in str(error.value)


def test_export_into_a_folder_with_an_index_html_of_its_own_leaves_it_alone(run_folder, tmp_path, capsys):
    """Any ``index.html`` made a folder an earlier export: ``--export attnmap-demo/`` (the demo's page)
    or a web site's folder had its page replaced and its ``data/``, ``static/`` folders deleted."""
    site = tmp_path / "site"
    (site / "data").mkdir(parents=True)
    (site / "static").mkdir()
    (site / "index.html").write_text("<html>my page</html>")
    (site / "data" / "results.csv").write_text("a,b\n")
    (site / "static" / "style.css").write_text("body {}")
    with pytest.raises(SystemExit) as exit_info:
        main(["view", str(run_folder), "--export", str(site), "--quiet"])
    assert exit_info.value.code == 2
    assert "is a non-empty folder that is not a viewer export" in capsys.readouterr().err
    assert (site / "index.html").read_text() == "<html>my page</html>"
    assert (site / "data" / "results.csv").is_file() and (site / "static" / "style.css").is_file()


@pytest.mark.parametrize(
    "text", ["{broken", '{"contours": [{"outer": [[1, 2], [3, "x"]], "holes": []}]}', "{}"]
)
def test_a_damaged_tissue_file_is_named_as_a_left_out_layer_not_dropped_silently(tmp_path, capsys, text):
    """A tissue file that does not read was shown as a slide without tissue, without a word."""
    run = write_run_folder(tmp_path, fine=False)
    (run / "tissue" / "slide_a.json").write_text(text)
    found = find_slides(run)
    (slide,) = found.slides
    assert slide.tissue == [] and set(slide.score_sets) == {"attention", "lrp"}
    named = {item.slide_id: item.reason for item in found.unshown}
    assert list(named) == ["slide_a (tissue)"] and "slide_a.json" in named["slide_a (tissue)"]
    main(["view", str(run), "--export", str(tmp_path / "site"), "--quiet"])
    err = [line for line in capsys.readouterr().err.splitlines() if "not shown" in line]
    assert len(err) == 1 and "slide_a (tissue)" in err[0] and "this layer is left out" in err[0]


def test_scores_that_are_no_hdf5_file_say_so_not_hdf5_internals(run_folder, tmp_path):
    """An `attnmap explain` .npy map given with --scores was refused with h5py's "Unable to
    synchronously open file (file signature not found)"."""
    (slide,) = discover(run_folder)
    explained = tmp_path / "cat_attention.npy"
    np.save(explained, np.zeros((8, 8), dtype=np.float32))
    with pytest.raises(InputError) as error:
        discover(slide.slide_path, [explained])
    message = str(error.value)
    assert "is not an HDF5 scores file" in message and "signature" not in message
    assert str(explained) in message and "\n" not in message


def test_view_names_annotation_files_that_match_no_slide(tmp_path, capsys):
    """``--annotations`` files named after no slide (``slide-a.geojson`` for slide_a) were ignored
    without a word: the slide was drawn without its outlines."""
    run = write_run_folder(tmp_path, fine=False)
    folder = tmp_path / "annotations"
    folder.mkdir()
    ring = [[200, 200], [400, 200], [400, 400], [200, 400], [200, 200]]
    feature = {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [ring]}}
    (folder / "slide-a.geojson").write_text(json.dumps(feature))
    main(["view", str(run), "--annotations", str(folder), "--export", str(tmp_path / "site"), "--quiet"])
    named = [line for line in capsys.readouterr().err.splitlines() if "slide-a.geojson" in line]
    assert len(named) == 1 and "no slide" in named[0]
    (folder / "slide-a.geojson").rename(folder / "slide_a.geojson")
    main(["view", str(run), "--annotations", str(folder), "--export", str(tmp_path / "site"), "--quiet"])
    assert "no slide" not in capsys.readouterr().err


def test_a_runs_heatmaps_folder_or_a_slides_folder_given_as_dot_says_which_run_to_view(
    run_folder, monkeypatch
):
    """``attnmap view run/heatmaps`` (the folder of the slide folders), and ``attnmap view .`` from
    inside a slide's folder, got only the list of what a path may be; both now name the run."""
    with pytest.raises(InputError, match="holds the slide folders of a `wsi run`") as error:
        discover(run_folder / "heatmaps")
    assert str(error.value).endswith(f"attnmap view {run_folder}")
    monkeypatch.chdir(run_folder / "heatmaps" / "slide_a")
    with pytest.raises(InputError, match="one slide's folder") as error:
        discover(".")
    assert str(error.value).endswith(f"attnmap view {run_folder.resolve()}")


def test_a_folder_of_loose_blockmaps_says_how_to_view_one(run_folder, tmp_path):
    """A folder holding ``*_blockmap.h5`` files but no run layout (``attnmap demo``'s folder, scores
    copied out of a run) got only the list of what a path may be; it now names a file and the way."""
    import shutil

    loose = tmp_path / "loose"
    loose.mkdir()
    shutil.copy(run_folder / "heatmaps" / "slide_a" / "slide_a_blockmap.h5", loose / "slide_a_blockmap.h5")
    with pytest.raises(InputError) as error:
        discover(loose)
    message = str(error.value)
    assert f"--scores {loose / 'slide_a_blockmap.h5'}" in message and "\n" not in message


def test_an_export_given_as_the_path_says_how_to_open_it(run_folder, tmp_path, capsys):
    """`attnmap view site/` on the folder `--export site/` wrote got only the list of what a path
    may be; it now says the folder is an export and how to open it."""
    from attnmap.view import export_static

    content = ViewerContent(discover(run_folder))
    export_static(content, tmp_path / "site")
    content.close()
    with pytest.raises(SystemExit) as exit_info:
        main(["view", str(tmp_path / "site"), "--no-browser"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "viewer export" in err
    assert str(tmp_path / "site" / "index.html") in err and "python -m http.server" in err


@pytest.mark.parametrize(("signum", "status", "last"), [
    (signal.SIGINT, 0, "stopped"),  # Ctrl+C: the way the server is meant to be stopped
    (signal.SIGTERM, 143, "attnmap: stopped by SIGTERM"),  # `kill`, a scheduler (SIGHUP the same way)
])
def test_the_server_stopped_by_a_signal_says_so_as_every_command_does(run_folder, signum, status, last):
    """SIGTERM and SIGHUP ended `attnmap view` as Ctrl+C does, with "stopped" and exit status 0, where
    every other command exits with 128 + the signal's number: a script or scheduler read success."""
    import subprocess
    import sys

    child = subprocess.Popen(
        [sys.executable, "-m", "attnmap", "view", str(run_folder), "--port", "0", "--no-browser"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert "slide(s) at http://127.0.0.1:" in child.stdout.readline()
        child.send_signal(signum)
        out, err = child.communicate(timeout=30)
    finally:
        child.kill()
    assert child.returncode == status, err
    assert (out + err).strip().splitlines()[-1] == last and "Traceback" not in err


def test_a_run_folder_with_no_slide_written_yet_says_so(tmp_path):
    """A `wsi run` that has only made its folders (``heatmaps/`` empty) was told it is no run folder."""
    (tmp_path / "run" / "heatmaps").mkdir(parents=True)
    with pytest.raises(InputError, match=r"nothing to view in .*run yet: .*heatmaps.* holds no slide folder"):
        discover(tmp_path / "run")


@pytest.mark.parametrize(("fine_method", "mil_method", "name"), [
    ("lrp", "lrp", "fine maps (lrp)"),
    ("lrp", "gradient_x_input", "fine maps (lrp of gradient_x_input scores)"),
    ("transformer_attribution", "lrp", "fine maps (transformer_attribution of lrp scores)"),
])
def test_fine_score_set_is_named_by_both_methods(tmp_path, fine_method, mil_method, name):
    """The set holds the MIL method's patch scores and the fine method's maps: a name giving only the
    fine method called gradient x input scores 'lrp' (also in `evaluate --run`'s lesions_<set>.json)."""
    from attnmap.view.score_files import read_fine_score_set
    from attnmap.wsi.heatmap.fine_store import FineMapWriter

    coords = np.array([[0, 0], [32, 0]], dtype=np.int64)
    path = tmp_path / "s_fine_maps.h5"
    with FineMapWriter(path, coords, np.array([1.0, -1.0]), np.array([0]), (8, 8), patch_size=32,
                       method=fine_method, mil_method=mil_method, target=1, top_k=1) as writer:
        writer.append(np.ones((1, 8, 8), dtype=np.float32), np.zeros(1))
    assert read_fine_score_set(path).method == name
