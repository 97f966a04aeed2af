"""`bench/view_sweep.py`'s requests: traversal, names, tile addresses, descriptors, suffixes,
methods, many threads on more slides than stay open, and slides of odd sizes tile by tile."""

from __future__ import annotations

import random
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import h5py
from view_sweep_harness import (
    TIMEOUT,
    WAIT,
    Answer,
    Served,
    Sweep,
    _payload,
    base_run,
    check_dzi,
    classify,
    compare_with_fresh,
    info_layers,
    odd_run,
    touch_later,
)

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
        for host in (f"localhost:{served.port}", f"LOCALHOST:{served.port}", f"[::1]:{served.port}"):
            h(served, f"Host {host.split(':')[0]}", "/data/slides.js", headers={"Host": host}, expect="ok")

        def no_host() -> tuple[str, str]:  # HTTP/1.0 clients may send none
            with socket.create_connection(("127.0.0.1", served.port), timeout=TIMEOUT) as sock:
                sock.sendall(b"GET /data/slides.js HTTP/1.0\r\n\r\n")
                reply = b""
                while chunk := sock.recv(65536):
                    reply += chunk
            status = int(reply.split()[1])
            return ("ok", "200") if status == 200 else ("wrong", f"{status} to an HTTP/1.0 request")

        s.case("HTTP/1.0 without Host", no_host, expect="ok")

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
