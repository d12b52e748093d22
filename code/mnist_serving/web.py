"""The drawing page's local setup: web/ over HTTP, and model_server.py beside it.

A browser lets a page call a server of another origin only when the server
allows it (CORS): model_server.py and TensorFlow Serving do with
`--rest_api_enable_cors_support=true`, and they accept only pages whose
origin is http(s)://, not a file opened from disk. So the page is served by a
small static file server, and the model server is started with that flag.
"""

import functools
import http.server
import threading
import urllib.parse

from mnist_serving import config


class _PageRequestHandler(http.server.SimpleHTTPRequestHandler):
    """Serves web/ quietly, and tells browsers to check for changes on every load."""

    def end_headers(self):
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def log_message(self, format, *arguments):
        """Requests are not logged: the model server's log is the one to read."""


class PageServer:
    """Serves a folder (web/ by default) over HTTP in a background thread.

    Args:
        host: The address to listen on (127.0.0.1: this machine only).
        port: The port; 0 picks a free one (see `port`).
        directory: The folder to serve.

    Raises:
        OSError: The address cannot be bound (a port in use, say).
    """

    def __init__(self, host=config.REST_HOST, port=config.WEB_PAGE_PORT, directory=config.WEB_DIR):
        handler = functools.partial(_PageRequestHandler, directory=str(directory))
        self._server = http.server.ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        """The port the page is served on."""
        return self._server.server_address[1]

    def close(self):
        """Stops serving and releases the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def local_url(host: str, port: int) -> str:
    """http://host:port, as a browser on this machine reaches a server bound to `host`."""
    if host in ("127.0.0.1", "0.0.0.0", "::", "::1", ""):
        host = "localhost"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def page_url(
    host: str,
    port: int,
    server_url: str = config.DEFAULT_SERVER_URL,
    model_name: str = config.MODEL_NAME,
) -> str:
    """The page's address, with `?server=` and `?model=` where they are not the page's defaults."""
    query = {}
    if server_url.rstrip("/") != config.DEFAULT_SERVER_URL:
        query["server"] = server_url
    if model_name != config.MODEL_NAME:
        query["model"] = model_name
    url = local_url(host, port) + "/"
    if query:
        url += "?" + urllib.parse.urlencode(query, safe=":/")
    return url
