"""The REST transport: TF Serving's HTTP API on aiohttp.

Routes requests with TF Serving's URL grammar (case-insensitive, matched in
full on the raw path), reads bodies (aiohttp decompresses gzip), hands the
work to the data plane and answers with TF Serving's status codes and JSON.
OPTIONS requests under /v1/ are answered 200 when they carry an `Origin`
(CORS preflight), with or without CORS support, as TF Serving's HTTP server
does.

What HTTP itself may cost is bounded here: a body's size
(`--rest_api_max_request_bytes`), the bytes of all bodies held at once
(`--rest_api_max_bytes_in_flight`), the JSON values of a body
(`--rest_api_max_json_values`, before parsing; bodies are parsed one at a
time), the URL (`MAX_URL_BYTES`, then 414) and header lines
(`MAX_HEADER_LINE_BYTES` and `MAX_HEADERS`, then 431). Requests aiohttp
cannot parse get TF Serving's JSON error too, and a request whose client
disconnects is cancelled, which drops its work if it has not started.
"""

import asyncio
import contextlib
import functools
import logging
import re
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass

from aiohttp import abc, http_exceptions, web

from mnist_serving.serving import rest_codec
from mnist_serving.serving.data_plane import DataPlane
from mnist_serving.serving.errors import ServingError

LOGGER = logging.getLogger("model_server")

# TF Serving's URL grammar (model_servers/http_rest_api_util.cc), matched in full.
HANDLER_PATH = re.compile(r"/v1/.*", re.IGNORECASE | re.DOTALL)
PREDICTION_PATH = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?"
    r":(classify|regress|predict)",
    re.IGNORECASE,
)
STATUS_PATH = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
    re.IGNORECASE,
)
CORS_ORIGIN = re.compile(r"https?://")
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, GET",
    "Access-Control-Allow-Headers": "Content-Type",
}
INT64_MAX = 2**63 - 1
# libevent's own page for paths outside /v1/: TF Serving's 404 is not JSON.
NOT_FOUND_PAGE = (
    b"<HTML><HEAD>\n<TITLE>404 Not Found</TITLE>\n</HEAD><BODY>\n<H1>Not Found</H1>\n"
    b"</BODY></HTML>\n"
)
# A request body must arrive within this time (a stalled upload is dropped).
BODY_SECONDS = 60.0
ENTRYPOINT = "REST"
# Longer URLs get 414. Model names and labels of any sensible length fit; each
# connection may buffer this much before its request line is complete.
MAX_URL_BYTES = 64 * 1024
# A longer header line, or more header lines, get 431 (aiohttp's defaults).
MAX_HEADER_LINE_BYTES = 8190
MAX_HEADERS = 128


class AccessLogger(abc.AbstractAccessLogger):
    """`--verbose`: one line per request: method, path, status, milliseconds."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            "%s %s %d %.1f ms", request.method, request.raw_path, response.status, time * 1000
        )


class RestApi:
    """The HTTP handler: one per server, calling into the data plane."""

    def __init__(self, plane: DataPlane):
        self.plane = plane
        self.options = plane.options
        self.body_bytes = BytesInFlight(self.options.rest_api_max_bytes_in_flight)
        # JSON parsing holds the GIL, so parsing bodies one at a time is no
        # slower, and keeps one parsed document in memory at a time, not one per worker.
        self._parsing = threading.Lock()

    def server(self, **keywords) -> web.Server:
        """aiohttp's low-level server for this API; `keywords` go to each connection's handler.

        Every request goes to `handle`, which dispatches as TF Serving does;
        those that aiohttp cannot parse get TF Serving's JSON errors too.
        """
        return _Server(
            self.handle,
            handler_cancellation=True,
            max_line_size=MAX_URL_BYTES,
            max_field_size=MAX_HEADER_LINE_BYTES,
            max_headers=MAX_HEADERS,
            **keywords,
        )

    async def handle(self, request: web.BaseRequest) -> web.Response:
        """Answers one request."""
        path = request.raw_path.split("?", 1)[0]
        prometheus_path = self.options.prometheus_path
        if prometheus_path is not None and path == prometheus_path:
            page = self.plane.metrics.prometheus_page()
            return web.Response(body=page, content_type="text/plain")
        if not HANDLER_PATH.fullmatch(path):
            return web.Response(
                status=404, body=NOT_FOUND_PAGE, content_type="text/html", charset="ISO-8859-1"
            )
        if request.method == "OPTIONS":
            if CORS_ORIGIN.match(request.headers.get("Origin", "")):
                return self._answer(200, b"")
            return self._answer(
                400, rest_codec.make_error_body("Origin header is missing in CORS preflight")
            )
        started = time.monotonic()
        route, code = None, "OK"
        try:
            with self.body_bytes.claim() as claim:
                body = await self._read_body(request, claim)
                route = Route.parse(request.method, path)
                response, status = await self._respond(route, body), 200
        except ServingError as error:
            code = error.code
            status, response = error.http_status, rest_codec.make_error_body(error.message)
        except asyncio.CancelledError:
            # The client has gone (aiohttp cancels its handler): nobody to answer.
            self._record(route, "CANCELLED", started)
            raise
        except Exception as error:  # One bad request never takes the server down.
            LOGGER.exception("Internal error while handling %s %s", request.method, path)
            code, status = "INTERNAL", 500
            response = rest_codec.make_error_body(f"Internal error: {type(error).__name__}")
        self._record(route, code, started)
        return self._answer(status, response)

    def _record(self, route: "Route | None", code: str, started: float) -> None:
        model_name, api = (route.model_name, route.api) if route is not None else ("", "")
        self.plane.record_request(model_name, api, code, time.monotonic() - started, ENTRYPOINT)

    def _answer(self, status: int, body: bytes) -> web.Response:
        response = web.Response(status=status, body=body, content_type="application/json")
        if self.options.rest_api_enable_cors_support:
            response.headers.update(CORS_HEADERS)
        return response

    async def _read_body(self, request: web.BaseRequest, claim: "BodyClaim") -> bytearray:
        """The whole body (decompressed), counted against both byte limits as it arrives.

        Raises:
            ServingError: 413 over `--rest_api_max_request_bytes` (at once when
                Content-Length says so), 503 over `--rest_api_max_bytes_in_flight`,
                400 for a body that is cut short or badly encoded, 504 after
                `BODY_SECONDS`.
        """
        limit = self.options.rest_api_max_request_bytes
        too_large = ServingError(
            "RESOURCE_EXHAUSTED",
            f"Request body is larger than the limit of {limit} bytes "
            "(--rest_api_max_request_bytes)",
            http_status=413,
        )
        if not request.body_exists:
            return bytearray()
        announced = request.content_length or 0
        if announced > limit:
            raise too_large
        claim.grow_to(announced)
        body = bytearray()
        try:
            async with asyncio.timeout(BODY_SECONDS):
                async for chunk in request.content.iter_any():
                    body += chunk
                    if len(body) > limit:
                        raise too_large
                    claim.grow_to(len(body))
            # Not copied to bytes: the parsers take a bytearray alike.
            return body
        except web.RequestPayloadError as error:
            # The body ended early or is not valid for its Content-Encoding (e.g. corrupt gzip).
            reason = error.__cause__ or error
            raise ServingError(
                "INVALID_ARGUMENT", f"Failed to read the request body (gzip or chunked): {reason}"
            ) from None
        except TimeoutError:
            raise ServingError(
                "DEADLINE_EXCEEDED", f"The request body did not arrive within {BODY_SECONDS:.0f} s"
            ) from None

    async def _respond(self, route: "Route", body: bytes) -> bytes:
        """The response body of a routed /v1/ request."""
        name, version, label = route.model_name, route.version, route.label
        if route.api == "predict":
            work = functools.partial(self._predict, name, version, label, body)
            return await self.plane.infer(work)
        if route.api:
            work = functools.partial(
                self._classify_or_regress, route.api, name, version, label, body
            )
            return await self.plane.infer(work)
        if not name:
            raise ServingError("INVALID_ARGUMENT", "Missing model name in request.")
        if route.metadata:
            servable = self.plane.resolve(name, version, label)
            return rest_codec.metadata_json(name, servable.version, servable.signature_defs)
        return rest_codec.status_json(self.plane.manager.model_status(name, version))

    def _predict(self, model_name: str, version: int | None, label: str | None, body: bytes):
        """A `:predict` request, on a worker thread; returns the response body."""
        servable, key, tensors, request_format = self._predict_inputs(
            model_name, version, label, body
        )
        outputs = self.plane.run(servable, key, tensors)
        return rest_codec.make_predict_response(outputs, request_format)

    def _predict_inputs(self, model_name: str, version: int | None, label: str | None, body):
        """(servable, signature key, tensors, request format) of a `:predict` body.

        The parsed document is dropped here, before the model runs.
        """
        rest_codec.check_json_values(body, self.options.rest_api_max_json_values)
        with self._parsing:
            request = rest_codec.PredictBody(body)
            servable = self.plane.resolve(model_name, version, label)
            key, _ = servable.signature(request.signature_name)
            input_dtypes = servable.input_dtypes[key]
            if not input_dtypes:
                raise ServingError(
                    "INVALID_ARGUMENT",
                    f"Failed to get input map for signature: {request.signature_name or 'DEFAULT'}",
                )
            tensors, request_format = request.tensors(input_dtypes)
        return servable, key, tensors, request_format

    def _classify_or_regress(
        self, api: str, model_name: str, version: int | None, label: str | None, body: bytes
    ) -> bytes:
        """`:classify` and `:regress`: TF Serving's checks, then 501 (this server predicts only)."""
        rest_codec.check_json_values(body, self.options.rest_api_max_json_values)
        with self._parsing:
            document = rest_codec.parse_json(body)
        signature_name = rest_codec.read_signature_name(document)
        servable = self.plane.resolve(model_name, version, label)
        servable.check_classify_or_regress(api, signature_name)
        raise ServingError(
            "UNIMPLEMENTED", f"model_server.py does not run :{api} (tf.Example input); use :predict"
        )


@dataclass(frozen=True)
class Route:
    """What a /v1/ URL asks for, by TF Serving's URL grammar."""

    model_name: str
    version: int | None
    label: str | None
    api: str  # classify, regress or predict; '' for status and metadata.
    metadata: bool

    @classmethod
    def parse(cls, method: str, path: str) -> "Route":
        """Routes a POST (predict, classify, regress) or a GET (status, metadata).

        Raises:
            ServingError: `Malformed request` for anything else, or a version too large.
        """
        prediction = PREDICTION_PATH.fullmatch(path) if method == "POST" else None
        status = STATUS_PATH.fullmatch(path) if method == "GET" else None
        match = prediction or status
        if match is None:
            raise ServingError("INVALID_ARGUMENT", f"Malformed request: {method} {path}")
        return cls(
            model_name=_decode_url_part(match.group(1)) if match.group(1) else "",
            version=_parse_version(match.group(2)),
            label=_decode_url_part(match.group(3)) if match.group(3) else None,
            api=prediction.group(4).lower() if prediction is not None else "",
            # TF Serving compares the /metadata suffix case-sensitively.
            metadata=status is not None and status.group(4) == "metadata",
        )


def _decode_url_part(text: str) -> str:
    return urllib.parse.unquote_to_bytes(text).decode("utf-8", "surrogateescape")


def _parse_version(text: str | None) -> int | None:
    if not text:
        return None
    version = int(text)
    if version > INT64_MAX:
        raise ServingError("INVALID_ARGUMENT", f"Failed to convert version: {text} to numeric.")
    return version


class BodyClaim:
    """The bytes one request's body holds of `BytesInFlight`, grown as the body arrives."""

    def __init__(self, budget: "BytesInFlight"):
        self.budget = budget
        self.bytes = 0

    def grow_to(self, size: int) -> None:
        """Claims `size` bytes in all.

        Raises:
            ServingError: UNAVAILABLE (503) when the bodies held would pass the limit.
        """
        extra = size - self.bytes
        if extra <= 0:
            return
        budget = self.budget
        if budget.held + extra > budget.limit:
            raise ServingError(
                "UNAVAILABLE",
                f"The server holds {budget.held:,} bytes of request bodies; this one would "
                f"pass the limit of {budget.limit:,} (--rest_api_max_bytes_in_flight); "
                "retry later",
            )
        budget.held += extra
        self.bytes = size


class BytesInFlight:
    """The bytes of request bodies held at once: being received, waiting or parsed.

    Used on the event loop's thread only, so a plain counter.
    """

    def __init__(self, limit: int):
        self.limit = limit
        self.held = 0

    @contextlib.contextmanager
    def claim(self) -> Iterator[BodyClaim]:
        """A claim on the budget, given back when the block ends (the request is answered)."""
        claim = BodyClaim(self)
        try:
            yield claim
        finally:
            self.held -= claim.bytes


class _Protocol(web.RequestHandler):
    """aiohttp's handler of one connection, answering requests it cannot parse as TF Serving.

    aiohttp answers them itself, in plain text, and logs a traceback; here
    they get TF Serving's `{"error": ...}` and one log line. A URL over
    `MAX_URL_BYTES` gets 414, header lines over the limits 431.
    """

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if not isinstance(exc, http_exceptions.HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        if isinstance(exc, http_exceptions.LineTooLong) and exc.args[1] == MAX_URL_BYTES:
            status, text = 414, f"The URL is longer than the limit of {MAX_URL_BYTES:,} bytes"
        elif isinstance(exc, http_exceptions.LineTooLong):
            status = 431
            text = f"A header line is longer than the limit of {MAX_HEADER_LINE_BYTES:,} bytes"
        elif exc.message == "Too many headers received":
            status, text = 431, f"The request has more than {MAX_HEADERS} header lines"
        else:
            status, text = exc.code or 400, f"Bad HTTP request: {exc.message}"
        LOGGER.warning("HTTP %d for a request from %s: %s", status, request.remote, text)
        response = web.Response(
            status=status, body=rest_codec.make_error_body(text), content_type="application/json"
        )
        response.force_close()
        return response


class _Server(web.Server):
    """aiohttp's low-level server, with `_Protocol` for each connection."""

    def __call__(self) -> web.RequestHandler:
        # The same construction as aiohttp's own, with the subclass.
        return _Protocol(self, loop=self._loop, **self._kwargs)
