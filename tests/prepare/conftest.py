"""A local HTTP server for the download tests (no internet needed).

The ``server`` fixture serves the bytes of ``handler.files[<last URL segment>]``,
honours ``Range`` requests (unless ``handler.ignore_range``), asks for basic-auth
credentials under ``/private/`` and records every request in ``handler.log`` as
``(path, Range header)``.
"""

import base64
import http.server
import os
import threading

import pytest


class _Handler(http.server.BaseHTTPRequestHandler):
    files = {}
    log = []
    ignore_range = False
    auth = ("alice", "secret")

    def log_message(self, *args):
        pass

    def do_GET(self):
        type(self).log.append((self.path, self.headers.get("Range")))
        if self.path.startswith("/private/"):
            token = base64.b64encode(":".join(self.auth).encode()).decode()
            if self.headers.get("Authorization") != f"Basic {token}":
                self.send_response(401)
                self.end_headers()
                return
        data = self.files.get(self.path.split("/")[-1])
        if data is None:
            self.send_response(404)
            self.end_headers()
            return
        rng = self.headers.get("Range")
        if rng and not self.ignore_range:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.end_headers()
                return
            body = data[start:]
            self.send_response(206)
            self.send_header(
                "Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}"
            )
        else:
            body = data
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server():
    """``(base URL, handler class)`` of a server started for one test."""
    _Handler.files = {"data.bin": os.urandom(300_000)}
    _Handler.log = []
    _Handler.ignore_range = False
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", _Handler
    httpd.shutdown()
    httpd.server_close()
