"""`attnmap view`'s local web server: 127.0.0.1 only, standard library, one thread per request.

Why the standard library: the viewer serves a handful of small files and tiles to one local browser;
`http.server.ThreadingHTTPServer` does that without a dependency. Each request is answered from
`ViewerContent`; anything it does not know is a 404, errors inside are a 500 with one line.

Why only ``Host: 127.0.0.1`` / ``localhost`` (403 otherwise): a page of another site whose name
resolves to 127.0.0.1 (DNS rebinding) would otherwise read the slides and scores through the
browser as if it were the viewer's own page. Why every error is one plain line, and other methods
a 405: the log and a user's ``curl`` then say what went wrong, not an HTML page.

Why ETags and ``no-cache`` rather than ``max-age``: the user may rerun `wsi run` into the folder
being viewed, and a tile URL then names a different picture. The browser revalidates every URL
(a 304 costs no rendering) and an ETag holds only while the content's `version` does; errors are
never stored.
"""

from __future__ import annotations

import errno
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

from attnmap.errors import InputError
from attnmap.view.app import NotFoundError, UnavailableError, ViewerContent

HOST = "127.0.0.1"
LOCAL_NAMES = ("127.0.0.1", "localhost", "[::1]")
"""Host header names a request may give: the viewer's own page is opened from these."""


def local_host(header: str | None) -> bool:
    """Whether a request's ``Host`` header names this machine (any port), as the viewer's page does."""
    if header is None:  # HTTP/1.0 clients may send none; a browser always does
        return True
    name = header.strip().lower()
    if name.startswith("["):
        name = name[: name.find("]") + 1]
    else:
        name = name.rsplit(":", 1)[0] if name.count(":") == 1 else name
    return name in LOCAL_NAMES


def _handler(content: ViewerContent) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "attnmap-view"
        error_message_format = "%(code)d %(message)s\n"  # one plain line (http.server's is an HTML page)
        error_content_type = "text/plain; charset=utf-8"

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self._answer(send_body=True)

        def do_HEAD(self) -> None:  # noqa: N802 - http.server's name
            self._answer(send_body=False)

        def _refuse_method(self) -> None:
            body = f"method {self.command} not allowed: the viewer answers GET and HEAD\n".encode()
            self.send_response(405)
            self.send_header("Allow", "GET, HEAD")
            self._send_plain(body)

        def __getattr__(self, name: str):
            if name.startswith("do_"):  # every other method (POST, PROPFIND, ...): 405, not http.server's 501
                return self._refuse_method
            raise AttributeError(name)

        def _send_plain(self, body: bytes, send_body: bool = True) -> None:
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if send_body:
                self.wfile.write(body)

        def _answer(self, send_body: bool) -> None:
            if not local_host(self.headers.get("Host")):
                self.send_response(403)
                self._send_plain(b"forbidden: open the viewer at 127.0.0.1 or localhost\n", send_body)
                return
            url = urlsplit(self.path)
            path = unquote(url.path)
            content.refresh()
            etag = f'"{content.version}"'  # read before the body: a reload meanwhile only costs a refetch
            text = "text/plain; charset=utf-8"
            current = content.version_of(path)  # the page's tiles name their slide's version
            asked = parse_qs(url.query).get("v", [current[0]])[0]
            try:
                if asked not in current:
                    raise NotFoundError(f"version {asked} was replaced by a rerun")
                body, content_type = content.get(path)
                status = 200
            except NotFoundError:
                body, content_type, status = b"not found\n", text, 404
            except UnavailableError as exc:
                body, content_type, status = f"{exc}\n".encode(), text, 503
            except Exception as exc:  # noqa: BLE001 - one failed tile must not stop the server
                line = " ".join(f"{type(exc).__name__}: {exc}".split())
                body, content_type, status = f"{line}\n".encode(), text, 500
                sys.stderr.write(f"attnmap view: {path}: {line}\n")  # one line in the log, no traceback
            if status == 200 and etag in self.headers.get("If-None-Match", ""):
                self.send_response(304)
                self.send_header("ETag", etag)
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                return
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            if status == 200:
                self.send_header("ETag", etag)
                self.send_header("Cache-Control", "no-cache")
            else:
                self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if send_body:
                self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's name
            if getattr(self.server, "verbose", False):
                sys.stderr.write(f"{self.address_string()} {format % args}\n")

    return Handler


class ViewerServer(ThreadingHTTPServer):
    """`ThreadingHTTPServer` that never prints a traceback.

    Why: OpenSeadragon drops the requests of tiles that scrolled out of view, so a reset connection
    is routine, and the standard server would print a traceback for each; anything else is one line.
    """

    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)):
            return
        sys.stderr.write(f"attnmap view: request from {client_address[0]}: {type(error).__name__}: {error}\n")


def make_server(content: ViewerContent, port: int = 8000) -> ViewerServer:
    """A server bound to 127.0.0.1:``port`` (0 picks a free port); `InputError` if the port is taken."""
    try:
        server = ViewerServer((HOST, port), _handler(content))
    except OSError as exc:
        if exc.errno in (errno.EADDRINUSE, errno.EACCES):
            raise InputError(  # 8000, the default, is also `python -m http.server`'s
                f"port {port} on {HOST} is in use or not allowed; choose another with --port "
                "(--port 0: any free port)"
            ) from None
        raise
    return server
