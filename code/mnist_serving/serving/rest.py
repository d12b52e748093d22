"""The REST transport: TF Serving's HTTP API on aiohttp.

Routes requests with TF Serving's URL grammar (case-insensitive, matched in
full on the raw path), reads bodies (aiohttp enforces the size limit and
decompresses gzip), hands the work to the data plane and answers with TF
Serving's status codes and JSON. OPTIONS requests under /v1/ are answered
200 when they carry an `Origin` (CORS preflight), with or without CORS
support, as TF Serving's HTTP server does.
"""

import asyncio
import functools
import logging
import re
import time
import urllib.parse
from dataclasses import dataclass

from aiohttp import abc, web

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

    def application(self) -> web.Application:
        """The aiohttp application: one catch-all route, dispatched as TF Serving does."""
        app = web.Application(client_max_size=self.options.rest_api_max_request_bytes)
        app.router.add_route("*", "/{path:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.Response:
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
            body = await self._read_body(request)
            route = Route.parse(request.method, path)
            response, status = await self._respond(route, body), 200
        except ServingError as error:
            code = error.code
            status, response = error.http_status, rest_codec.make_error_body(error.message)
        except Exception as error:  # One bad request never takes the server down.
            LOGGER.exception("Internal error while handling %s %s", request.method, path)
            code, status = "INTERNAL", 500
            response = rest_codec.make_error_body(f"Internal error: {type(error).__name__}")
        model_name, api = (route.model_name, route.api) if route is not None else ("", "")
        self.plane.record_request(model_name, api, code, time.monotonic() - started, ENTRYPOINT)
        return self._answer(status, response)

    def _answer(self, status: int, body: bytes) -> web.Response:
        response = web.Response(status=status, body=body, content_type="application/json")
        if self.options.rest_api_enable_cors_support:
            response.headers.update(CORS_HEADERS)
        return response

    async def _read_body(self, request: web.Request) -> bytes:
        limit = self.options.rest_api_max_request_bytes
        try:
            async with asyncio.timeout(BODY_SECONDS):
                return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise ServingError(
                "RESOURCE_EXHAUSTED",
                f"Request body is larger than the limit of {limit} bytes "
                "(--rest_api_max_request_bytes)",
                http_status=413,
            ) from None
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
        outputs = self.plane.run(servable, key, tensors)
        return rest_codec.make_predict_response(outputs, request_format)

    def _classify_or_regress(
        self, api: str, model_name: str, version: int | None, label: str | None, body: bytes
    ) -> bytes:
        """`:classify` and `:regress`: TF Serving's checks, then 501 (this server predicts only)."""
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
