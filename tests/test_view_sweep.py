"""What `bench/view_sweep.py` found in the viewer, each kept fixed: foreign Host headers, other
methods, HTML error pages, descriptors of missing layers, damaged blockmaps, thumbnails past the
slide's edge, rewrites that keep size and mtime, slides dropped from a rerun's slide list."""

from __future__ import annotations

import io
import os
import socket
import threading
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image
from view_fixtures import write_run_folder

from attnmap.errors import InputError
from attnmap.view import NotFoundError, ViewerContent, discover, find_slides, make_server
from attnmap.view.score_files import read_score_sets
from attnmap.view.sources import source_state


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> Path:
    return write_run_folder(tmp_path_factory.mktemp("view_sweep"), fine=False)


def _raw(port: int, method: str, target: str, host: str) -> tuple[int, dict[str, str], bytes]:
    """One request as bytes on the wire (urllib would fix the Host and refuse odd methods)."""
    data = f"{method} {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(data)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), fields, body


def test_server_answers_only_its_own_host_and_refuses_other_methods_in_one_line(run_folder):
    content = ViewerContent(discover(run_folder))
    server = make_server(content, 0)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost", f"[::1]:{port}"):
            assert _raw(port, "GET", "/data/0/info.js", host)[0] == 200, host
        for host in ("evil.example", f"evil.example:{port}", f"127.0.0.1.nip.io:{port}"):
            status, _, body = _raw(port, "GET", "/data/0/info.js", host)  # DNS rebinding: another origin
            assert status == 403 and b"slide" not in body and body.count(b"\n") == 1, host
        for method in ("POST", "DELETE", "PROPFIND"):
            status, fields, body = _raw(port, method, "/data/0/info.js", f"127.0.0.1:{port}")
            assert status == 405 and fields["allow"] == "GET, HEAD" and body.count(b"\n") == 1
        status, fields, body = _raw(port, "GET", "/" + "a" * 70000, f"127.0.0.1:{port}")
        assert status == 414 and fields["content-type"].startswith("text/plain") and b"<" not in body
    finally:
        server.shutdown()
        server.server_close()
        content.close()


def test_descriptors_exist_only_for_the_layers_the_page_lists(run_folder):
    content = ViewerContent(discover(run_folder))  # tissue contours, no annotations
    assert content.get("tiles/0/tissue.dzi")[1] == "application/xml"
    for url in ("tiles/0/annotations.dzi", "tiles/0/annotations_files/10/0_0.png", "tiles/0/heat-2.dzi"):
        with pytest.raises(NotFoundError):
            content.get(url)
    content.close()


def _blockmap(path: Path, coords, patch_size=128) -> Path:
    with h5py.File(path, "w") as handle:
        handle.create_dataset("coords", data=coords)
        handle.create_dataset("attention_scores", data=np.arange(len(coords), dtype=np.float32))
        if patch_size is not None:
            handle.attrs["patch_size"] = patch_size
    return path


@pytest.mark.parametrize(
    "coords, patch_size, message",
    [
        (np.arange(4), 128, r"'coords' has shape \(4,\); expected \(N, 2\)"),
        (np.zeros((4, 3), np.int64), 128, r"'coords' has shape \(4, 3\)"),
        (np.zeros((4, 2), np.int64), 0, "patch_size 0 is not a positive whole number"),
        (np.zeros((4, 2), np.int64), -128, "patch_size -128 is not"),
        (np.zeros((4, 2), np.int64), 12.5, "patch_size 12.5 is not"),
        (np.zeros((4, 2), np.int64), "abc", "patch_size 'abc' is not"),
    ],
)
def test_damaged_blockmaps_are_input_errors_naming_the_file(tmp_path, coords, patch_size, message):
    path = _blockmap(tmp_path / "s_blockmap.h5", coords, patch_size)
    with pytest.raises(InputError, match=message):
        read_score_sets(path)


@pytest.mark.parametrize(
    ("attrs", "expected"),
    [
        ({"patch_size": 64, "patch_level": 0}, 64),  # CLAM's patch file, level 0
        ({"patch_size": 64, "patch_level": 1, "downsample": np.array([4.0, 4.0])}, 256),  # CLAM, level 1
        ({"patch_size": 224, "patch_size_level0": 448}, 448),  # TRIDENT: 224 px at 20x of a 40x slide
        ({"patch_size": 64, "patch_level": 1}, 128),  # another level, no downsample: the grid step
    ],
)
def test_scores_in_a_patch_file_take_its_patch_size_at_level_0(tmp_path, attrs, expected):
    """Scores written into a CLAM or TRIDENT patch file: the coords' ``patch_size`` is at its
    ``patch_level`` (or the target magnification) and was drawn as level-0 pixels, a quarter size."""
    path = tmp_path / "patches.h5"
    with h5py.File(path, "w") as handle:
        coords = handle.create_dataset("coords", data=np.array([[0, 0], [128, 0], [0, 128], [128, 128]]))
        coords.attrs.update(attrs)
        handle.create_dataset("attention_scores", data=np.arange(4.0))
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        (score_set,) = read_score_sets(path).values()
    assert score_set.patch_size == expected
    grid_step = bool(attrs.get("patch_level")) and "downsample" not in attrs
    assert any("records no patch size" in str(w.message) for w in said) == grid_step


def test_a_gallery_patch_past_the_slide_edge_is_read_only_where_the_slide_is(run_folder, tmp_path):
    (slide,) = discover(run_folder)
    scores = _blockmap(tmp_path / "big_blockmap.h5", np.array([[0, 0], [768, 256]]), patch_size=512)
    content = ViewerContent(discover(slide.slide_path, [scores]))
    thumb = np.asarray(Image.open(io.BytesIO(content.get("thumbs/0/0/1.jpeg")[0])), dtype=int)
    assert thumb.shape == (160, 160, 3)
    # the top patch spans x 768..1280, y 256..768 of a 1024 × 768 slide: its right half is past the
    # edge (white, 255; the slide's own background is 245), its left half the slide there
    assert thumb[:, 84:].min() >= 250
    inside = content.slide_tiles(0).slide.read_region((768, 256), 0, (256, 512)).astype(float)
    assert abs(thumb[:, :76].mean() - inside.mean()) < 4
    huge = _blockmap(tmp_path / "huge_blockmap.h5", np.array([[0, 0], [1, 1]]), patch_size=10**12)
    content = ViewerContent(discover(slide.slide_path, [huge]))  # a size no slide has: no huge read
    assert Image.open(io.BytesIO(content.get("thumbs/0/0/1.jpeg")[0])).size == (160, 160)
    content.close()


def test_a_rewrite_keeping_size_and_mtime_changes_the_source_state(tmp_path):
    path = tmp_path / "scores.h5"
    path.write_bytes(b"a" * 64)
    before = source_state([path])
    stat = path.stat()
    with path.open("r+b") as handle:  # in place: same inode, same size
        handle.write(b"b" * 64)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # and the old mtime put back
    assert path.stat().st_mtime_ns == stat.st_mtime_ns and source_state([path]) != before


def test_a_rerun_without_a_slide_names_its_left_folder_and_colours_as_the_run(tmp_path, monkeypatch):
    """A real `wsi run` of two slides, then a rerun whose CSV drops one, with another colour map."""
    import yaml
    from synthetic_slide_files import write_pipeline_setup

    from attnmap.cli.main import main

    config = write_pipeline_setup(tmp_path / "project", n_slides=2)
    monkeypatch.chdir(config.parent)  # the configuration's paths are relative to it, as a user runs it

    def run() -> None:
        main(["wsi", "run", config.name, "--quiet"])

    run()
    out = config.parent / "out"
    assert [slide.slide_id for slide in find_slides(out).slides] == ["slide_0", "slide_1"]
    content = ViewerContent(find_slides(out), reload=lambda: find_slides(out), watch=[out], check_interval=0)
    csv = config.parent / "slides.csv"
    csv.write_text("".join(csv.read_text().splitlines(keepends=True)[:2]))  # header and slide_0
    values = yaml.safe_load(config.read_text())
    values["heatmap"]["cmap"] = "viridis"
    config.write_text(yaml.safe_dump(values))
    run()
    assert (out / "heatmaps" / "slide_1").is_dir()  # `wsi run` keeps the dropped slide's folder
    content.refresh()  # the open viewer follows, as a fresh one does
    for found in (find_slides(out), content):
        assert [slide.slide_id for slide in found.slides] == ["slide_0"]
        (unshown,) = found.unshown
        assert unshown.slide_id == "slide_1" and "not in the last run's slide list" in unshown.reason
        assert found.slides[0].score_sets["attention"].scale.cmap == "viridis"
    assert content.info(0)["methods"][0]["scale"]["cmap"] == "viridis"
    content.close()
