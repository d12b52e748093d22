"""A local server that speaks TensorFlow Serving's REST API.

`ModelServer` ties the parts together: `servables` finds and loads model
versions, `json_parsing` reads bodies, `rest_json` turns JSON into tensors
and back, `batching` merges concurrent requests, `monitoring` counts them. This module is the HTTP
layer: routing with TF Serving's URL grammar, bodies (size limit, gzip,
chunked), status codes, headers, startup and clean shutdown.

One thread serves each connection (HTTP/1.1 keep-alive); TensorFlow runs
ops without holding the GIL, so requests run at the same time.
"""

import concurrent.futures
import email.utils
import http.server
import logging
import os
import re
import signal
import socket
import threading
import time
import urllib.parse
import zlib
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import json_format

from mnist_serving import config, json_parsing, rest_json
from mnist_serving.monitoring import Metrics
from mnist_serving.status import ServingError

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
CORS_ORIGIN = re.compile(r"https?://.*")
INT64_MAX = 2**63 - 1

# libevent's own page for paths outside /v1/: TF Serving's 404 is not JSON.
NOT_FOUND_PAGE = (
    b"<HTML><HEAD>\n<TITLE>404 Not Found</TITLE>\n</HEAD><BODY>\n<H1>Not Found</H1>\n"
    b"</BODY></HTML>\n"
)
# Seconds an idle keep-alive connection (or a stalled upload) may hold a thread.
CONNECTION_IDLE_SECONDS = 120
# Over-limit bodies up to this size are read and dropped so that the client
# sees the 413 instead of a reset connection; bigger ones are cut off.
MAX_DRAIN_BYTES = 256 * 2**20
DEFAULT_MAX_REQUEST_BYTES = 64 * 2**20
# Predictions running at once without batching; TensorFlow spreads each one
# over the cores itself, so more would only queue inside TensorFlow.
PREDICT_THREADS = 32


@dataclass
class ServerOptions:
    """Everything `model_server.py`'s flags decide."""

    models: list
    rest_api_host: str = config.REST_HOST
    rest_api_port: int = config.REST_PORT
    file_system_poll_wait_seconds: float = 1.0
    rest_api_timeout_in_ms: int = 30000
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    batching_parameters: object = None  # batching.BatchingParameters or None.
    prometheus_path: str = None
    enable_cors: bool = False
    warmup_iterations: int = 1
    model_config_file: str = None
    model_config_file_poll_wait_seconds: float = 0.0
    intra_op_parallelism: int = 0  # 0: TensorFlow's choice (one thread per core).
    inter_op_parallelism: int = 0
    allow_labels_for_unavailable_models: bool = False


class StartupError(Exception):
    """The server cannot start; the message is one line for the user."""


class UsageError(Exception):
    """Flags or files that cannot work; reported as one line."""


def options_from_flags(args):
    """Turns model_server.py's parsed flags into ServerOptions, reading the files they name.

    Raises:
        UsageError: Any problem with the flags or the files they point at.
    """
    from mnist_serving.batching import (
        BatchingConfigError,
        BatchingParameters,
        read_batching_parameters,
    )
    from mnist_serving.monitoring import read_monitoring_config
    from mnist_serving.servables import ConfigError, ModelConfig, read_model_config_file
    from mnist_serving.text_protos import ProtoTextError

    if not 0 <= args.rest_api_port <= 65535:
        raise UsageError(f"--rest_api_port must be between 0 and 65535, got {args.rest_api_port}")
    if args.rest_api_max_request_bytes < 1:
        raise UsageError("--rest_api_max_request_bytes must be positive")
    if args.batching_parameters_file and not args.enable_batching:
        raise UsageError(
            "server_options.batching_parameters_file is set without setting "
            "server_options.enable_batching to true."
        )
    try:
        if args.model_config_file:
            models = read_model_config_file(args.model_config_file)
        elif args.model_base_path and args.model_name:
            models = [ModelConfig(name=args.model_name, base_path=str(Path(args.model_base_path)))]
        elif not args.model_base_path:
            raise UsageError(
                "Both server_options.model_base_path and server_options.model_config_file "
                "are empty!"
            )
        else:
            raise UsageError("--model_name must not be empty")
        batching = None
        if args.enable_batching:
            batching = (
                read_batching_parameters(args.batching_parameters_file)
                if args.batching_parameters_file
                else BatchingParameters()
            )
        prometheus_path = (
            read_monitoring_config(args.monitoring_config_file)
            if args.monitoring_config_file
            else None
        )
    except (ConfigError, ProtoTextError, BatchingConfigError) as error:
        raise UsageError(str(error)) from None
    return ServerOptions(
        models=models,
        rest_api_host=args.rest_api_host,
        rest_api_port=args.rest_api_port,
        file_system_poll_wait_seconds=args.file_system_poll_wait_seconds,
        rest_api_timeout_in_ms=args.rest_api_timeout_in_ms,
        max_request_bytes=args.rest_api_max_request_bytes,
        batching_parameters=batching,
        prometheus_path=prometheus_path,
        enable_cors=args.rest_api_enable_cors_support,
        warmup_iterations=(
            args.num_request_iterations_for_warmup if args.enable_model_warmup else 0
        ),
        allow_labels_for_unavailable_models=args.allow_version_labels_for_unavailable_models,
        model_config_file=args.model_config_file,
        intra_op_parallelism=args.tensorflow_intra_op_parallelism,
        inter_op_parallelism=args.tensorflow_inter_op_parallelism,
        model_config_file_poll_wait_seconds=args.model_config_file_poll_wait_seconds,
    )


class ModelServer:
    """Loads the configured models and serves them over HTTP until stopped."""

    def __init__(self, options):
        from mnist_serving.servables import ServableManager

        self.options = options
        self.metrics = Metrics()
        self.scheduler = None
        if options.batching_parameters is not None:
            from mnist_serving.batching import BatchScheduler

            self.scheduler = BatchScheduler(options.batching_parameters, self.metrics)
        self.manager = ServableManager(
            options.models,
            poll_wait_seconds=options.file_system_poll_wait_seconds,
            warmup_iterations=options.warmup_iterations,
            on_change=self._version_changed,
        )
        timeout_ms = options.rest_api_timeout_in_ms
        self.timeout = timeout_ms / 1000.0 if timeout_ms and timeout_ms > 0 else None
        self.executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=PREDICT_THREADS, thread_name_prefix="predict"
        )
        self.httpd = None
        self.port = None
        self._in_flight = 0
        self._in_flight_lock = threading.Condition()
        self._stopping = threading.Event()

    def _version_changed(self, model_name, version, state):
        if self.scheduler is not None and state == "END":
            self.scheduler.forget_version(model_name, version)

    # -- lifecycle ---------------------------------------------------------

    def start(self):
        """Binds the port, loads the models, then starts accepting requests.

        The port is bound first so that a busy port fails at once, but
        connections are only accepted once every model's newest version is
        AVAILABLE (or has no version at all yet), as in TF Serving.

        Raises:
            StartupError: Port unavailable, a model failed to load, or a
                version label points at a version that is not available.
        """
        handler = type("Handler", (RequestHandler,), {"model_server": self})
        try:
            self.httpd = _HTTPServer(
                (self.options.rest_api_host, self.options.rest_api_port),
                handler,
                bind_and_activate=False,
            )
            self.httpd.server_bind()
        except OSError as error:
            if self.httpd is not None:
                self.httpd.server_close()
            raise StartupError(
                f"Failed to start HTTP/REST server at "
                f"{self.options.rest_api_host}:{self.options.rest_api_port}: "
                f"{error.strerror or error}"
            ) from None
        self.port = self.httpd.server_address[1]
        if self.options.model_config_file:
            LOGGER.info("Adding/updating models.")
            for model in self.options.models:
                LOGGER.info("(Re-)adding model: %s", model.name)
        else:
            for model in self.options.models:
                LOGGER.info(
                    "Building single TensorFlow model file config:  model_name: %s "
                    "model_base_path: %s",
                    model.name,
                    model.base_path,
                )
        self._configure_tensorflow_threads()
        self.manager.start()
        failures = self.manager.startup_failures()
        if failures:
            self.close()
            raise StartupError(
                f"Failed to start server. Error: UNKNOWN: {len(failures)} model(s) did not "
                "become available: {" + ", ".join(failures) + "}"
            )
        if not self.options.allow_labels_for_unavailable_models:
            problems = self.manager.label_problems()
            if problems:
                self.close()
                raise StartupError(
                    f"Failed to start server. Error: FAILED_PRECONDITION: {problems[0]}"
                )
        self.httpd.server_activate()
        if self.options.model_config_file and self.options.model_config_file_poll_wait_seconds > 0:
            threading.Thread(
                target=self._watch_config_file, name="config-reloader", daemon=True
            ).start()
        LOGGER.info("Exporting HTTP/REST API at:%s:%d ...", self.options.rest_api_host, self.port)

    def _configure_tensorflow_threads(self):
        """Applies --tensorflow_{intra,inter}_op_parallelism before any model loads."""
        intra = self.options.intra_op_parallelism
        inter = self.options.inter_op_parallelism
        if intra <= 0 and inter <= 0:
            return
        import tensorflow as tf

        if intra > 0:
            tf.config.threading.set_intra_op_parallelism_threads(intra)
        if inter > 0:
            tf.config.threading.set_inter_op_parallelism_threads(inter)

    def _watch_config_file(self):
        """Re-reads `--model_config_file` periodically and applies changes."""
        from mnist_serving.servables import ConfigError, read_model_config_file

        current = self.options.models
        while not self._stopping.wait(self.options.model_config_file_poll_wait_seconds):
            try:
                models = read_model_config_file(self.options.model_config_file)
            except ConfigError as error:
                LOGGER.error("Keeping the current models: %s", error)
                continue
            if models != current:
                LOGGER.info("Model config file changed; updating the served models")
                self.manager.update_models(models)
                current = models

    def serve_forever(self):
        """Serves until `request_stop()`; then finishes in-flight requests."""
        try:
            self.httpd.serve_forever(poll_interval=0.2)
        finally:
            self.close()

    def stop_requested(self):
        """True once SIGINT/SIGTERM (or `request_stop`) asked the server to stop."""
        return self._stopping.is_set()

    def request_stop(self):
        """Asks `serve_forever` to return; safe from signal handlers."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        if self.httpd is not None:
            threading.Thread(target=self.httpd.shutdown, name="shutdown", daemon=True).start()

    def close(self, grace_seconds=10.0):
        """Stops accepting, waits for in-flight requests, stops loading and batching."""
        if self.httpd is not None:
            self.httpd.server_close()
        deadline = time.monotonic() + grace_seconds
        with self._in_flight_lock:
            while self._in_flight and time.monotonic() < deadline:
                self._in_flight_lock.wait(deadline - time.monotonic())
        self.manager.stop()
        if self.scheduler is not None:
            # Whatever is still queued has no client waiting any more.
            self.scheduler.close(timeout=1.0)
        self.executor.shutdown(wait=False, cancel_futures=True)

    def install_signal_handlers(self):
        """SIGINT and SIGTERM stop the server cleanly; a second one exits at once."""

        def stop(signal_number, _frame):
            if self._stopping.is_set():
                LOGGER.warning("Second signal: exiting without waiting")
                logging.shutdown()
                os._exit(128 + signal_number)
            LOGGER.info("Received %s; shutting down", signal.Signals(signal_number).name)
            self.request_stop()

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)

    def _request_started(self):
        with self._in_flight_lock:
            self._in_flight += 1

    def _request_finished(self):
        with self._in_flight_lock:
            self._in_flight -= 1
            self._in_flight_lock.notify_all()

    # -- request processing ------------------------------------------------

    def process(self, method, path, body):
        """Handles one REST request below /v1/.

        Returns:
            `(http_status, body, model_name, api, code)`: `api` is the `:verb`
            of predict-style URLs ('' for status and metadata), `code` the
            TensorFlow status code name, as the metrics label them.
        """
        model_name = ""
        api = ""
        try:
            prediction = PREDICTION_PATH.fullmatch(path) if method == "POST" else None
            status = STATUS_PATH.fullmatch(path) if method == "GET" else None
            match = prediction or status
            if match is None:
                raise ServingError("INVALID_ARGUMENT", f"Malformed request: {method} {path}")
            model_name = _decode_url_part(match.group(1)) if match.group(1) else ""
            version = _parse_version(match.group(2))
            label = _decode_url_part(match.group(3)) if match.group(3) else None
            if prediction is not None:
                api = match.group(4)
                if api == "predict":
                    response = self.predict(model_name, version, label, body)
                elif api in ("classify", "regress"):
                    raise ServingError(
                        "UNIMPLEMENTED",
                        f"model_server.py does not serve :{api}; use :predict",
                    )
                else:
                    raise ServingError("INVALID_ARGUMENT", f"Malformed request: {method} {path}")
            elif match.group(4) == "metadata":
                response = self.metadata(model_name, version, label)
            else:
                response = self.status(model_name, version)
            return 200, response, model_name, api, "OK"
        except ServingError as error:
            body = rest_json.make_error_body(error.message)
            return error.http_status, body, model_name, api, error.code

    def predict(self, model_name, version, label, body):
        """A `:predict` request; returns the response body (bytes)."""
        # Images as JSON numbers are most of the traffic: try the fast path,
        # which only accepts bodies the general path would accept alike.
        dense = rest_json.parse_dense_request(body)
        if dense is not None:
            document = None
            signature_name = dense.signature_name
        else:
            document = json_parsing.parse_json(body)
            signature_name = rest_json.read_signature_name(document)
        servable = self.manager.resolve(model_name, version, label)
        key, _ = servable.signature(signature_name)
        input_dtypes = servable.input_dtypes[key]
        if not input_dtypes:
            raise ServingError(
                "INVALID_ARGUMENT",
                f"Failed to get input map for signature: {signature_name or 'DEFAULT'}",
            )
        tensors = None
        if dense is not None and len(input_dtypes) == 1:
            ((name, dtype),) = input_dtypes.items()
            if dtype in (rest_json.DataType.DT_FLOAT, rest_json.DataType.DT_DOUBLE):
                tensors, request_format = {name: dense.tensor(dtype)}, dense.request_format
        if tensors is None:
            if document is None:
                document = json_parsing.parse_json(body)
            mentions_booleans = b"true" in body or b"false" in body
            tensors, request_format = rest_json.predict_request_to_tensors(
                document, input_dtypes, mentions_booleans
            )
        outputs = self.run_model(servable, key, tensors)
        return rest_json.make_predict_response(outputs, request_format)

    def run_model(self, servable, signature_key, tensors):
        """Runs a signature, batched or not, within `--rest_api_timeout_in_ms`."""
        if self.scheduler is not None:
            return self.scheduler.run(servable, signature_key, tensors, self.timeout)
        future = self.executor.submit(servable.run, signature_key, tensors)
        try:
            return future.result(timeout=self.timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise ServingError("DEADLINE_EXCEEDED", "Timed out waiting for notification") from None

    def status(self, model_name, version):
        """A model status request; returns the response body."""
        if not model_name:
            raise ServingError("INVALID_ARGUMENT", "Missing model name in request.")
        response = self.manager.model_status(model_name, version)
        return json_format.MessageToJson(
            response, always_print_fields_with_no_presence=True, indent=1
        ).encode()

    def metadata(self, model_name, version, label):
        """A model metadata request; returns the response body."""
        from tensorflow_serving.apis import get_model_metadata_pb2, model_pb2

        if not model_name:
            raise ServingError("INVALID_ARGUMENT", "Missing model name in request.")
        servable = self.manager.resolve(model_name, version, label)
        model_spec = model_pb2.ModelSpec(name=model_name)
        model_spec.version.value = servable.version
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for key, signature in servable.signature_defs.items():
            signature_map.signature_def[key].CopyFrom(signature)

        def to_json(message):
            return json_format.MessageToJson(
                message,
                always_print_fields_with_no_presence=True,
                preserving_proto_field_name=True,
                indent=1,
            )

        # TF Serving prints the two parts separately and joins them like this.
        text = (
            "{\n"
            f'"model_spec":{to_json(model_spec)},\n'
            f'"metadata": {{"signature_def": {to_json(signature_map)}}}\n'
            "}\n"
        )
        return text.encode()


def _decode_url_part(text):
    return urllib.parse.unquote_to_bytes(text).decode("utf-8", "surrogateescape")


def _parse_version(text):
    if not text:
        return None
    version = int(text)
    if version > INT64_MAX:
        raise ServingError("INVALID_ARGUMENT", f"Failed to convert version: {text} to numeric.")
    return version


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def handle_error(self, request, client_address):
        # A client that hangs up is not the server's problem; anything else
        # is logged without disturbing other connections.
        LOGGER.debug("Connection from %s ended with an error", client_address, exc_info=True)


class _BodyTooLargeError(Exception):
    def __init__(self, size, drainable):
        super().__init__(size)
        self.size = size
        self.drainable = drainable


class _BadBodyError(Exception):
    pass


class RequestHandler(http.server.BaseHTTPRequestHandler):
    """One connection: reads requests, hands them to the ModelServer, answers."""

    protocol_version = "HTTP/1.1"
    server_version = "model_server.py"
    timeout = CONNECTION_IDLE_SECONDS
    model_server = None  # Set on the subclass ModelServer.start() creates.

    def setup(self):
        super().setup()
        # Answers go out in one write; without NODELAY a small answer could
        # wait for the client's delayed ACK.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format, *args):
        LOGGER.debug("%s - %s", self.address_string(), format % args)

    def handle_one_request(self):
        try:
            self.raw_requestline = self.rfile.readline(65537)
        except (TimeoutError, ConnectionError):
            self.close_connection = True
            return
        if not self.raw_requestline:
            self.close_connection = True
            return
        if len(self.raw_requestline) > 65536:
            self.send_error(414)
            return
        if not self.parse_request():
            return
        server = self.model_server
        server._request_started()
        try:
            self._handle()
        except (ConnectionError, TimeoutError):
            # The client hung up or stalled mid-request: drop this connection only.
            self.close_connection = True
        except Exception as error:
            LOGGER.exception("Internal error while handling %s %s", self.command, self.path)
            self.close_connection = True
            body = rest_json.make_error_body(f"Internal error: {type(error).__name__}: {error}")
            self._send(500, body, "application/json")
        finally:
            server._request_finished()

    def _handle(self):
        server = self.model_server
        started = time.monotonic()
        path = urllib.parse.urlsplit(self.path).path
        method = self.command
        options = server.options
        if options.prometheus_path is not None and path == options.prometheus_path:
            self._discard_body()
            self._send(200, server.metrics.prometheus_page().encode(), "text/plain")
            return
        if not HANDLER_PATH.fullmatch(path):
            self._discard_body()
            self._send(404, NOT_FOUND_PAGE, "text/html; charset=ISO-8859-1")
            return
        if method == "OPTIONS" and options.enable_cors:
            self._discard_body()
            origin = self.headers.get("Origin", "")
            if CORS_ORIGIN.match(origin):
                self._send(200, b"", "application/json")
            else:
                error = rest_json.make_error_body("Origin header is missing in CORS preflight")
                self._send(400, error, "application/json")
            return
        try:
            body = self._read_body(options.max_request_bytes)
        except _BodyTooLargeError as error:
            message = (
                f"Request body of {error.size} bytes is larger than the limit of "
                f"{options.max_request_bytes} bytes (--rest_api_max_request_bytes)"
            )
            server.metrics.request_count.increment("", "RESOURCE_EXHAUSTED")
            self.close_connection = True
            self._send(413, rest_json.make_error_body(message), "application/json")
            if error.drainable:
                self._drain(error.size)
            return
        except _BadBodyError as error:
            server.metrics.request_count.increment("", "INVALID_ARGUMENT")
            self.close_connection = True
            self._send(400, rest_json.make_error_body(str(error)), "application/json")
            return
        http_status, response, model_name, api, code = server.process(method, path, body)
        server.metrics.request_count.increment(model_name, code)
        if code == "OK":
            server.metrics.request_latency.add(
                (time.monotonic() - started) * 1e6, model_name, api, "REST"
            )
        self._send(http_status, response, "application/json")

    # -- bodies ------------------------------------------------------------

    def _read_body(self, limit):
        transfer_encoding = self.headers.get("Transfer-Encoding", "").lower()
        if "chunked" in transfer_encoding:
            body = self._read_chunked(limit)
        else:
            length_header = self.headers.get("Content-Length")
            if length_header is None:
                body = b""
            else:
                try:
                    length = int(length_header)
                    if length < 0:
                        raise ValueError
                except ValueError:
                    raise _BadBodyError(f"Invalid Content-Length: {length_header}") from None
                if length > limit:
                    raise _BodyTooLargeError(length, length <= MAX_DRAIN_BYTES)
                body = self._read_exactly(length)
        encoding = self.headers.get("Content-Encoding", "").strip().lower()
        if encoding == "gzip":
            body = _gunzip(body, limit)
        elif encoding not in ("", "identity"):
            raise _BadBodyError(f"Unsupported Content-Encoding: {encoding}")
        return body

    def _read_exactly(self, length):
        chunks = []
        remaining = length
        while remaining:
            chunk = self.rfile.read(min(remaining, 1 << 20))
            if not chunk:
                raise ConnectionError("client closed the connection mid-body")
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)

    def _read_chunked(self, limit):
        chunks = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            if not line:
                raise ConnectionError("client closed the connection mid-body")
            try:
                size = int(line.split(b";")[0].strip(), 16)
            except ValueError:
                raise _BadBodyError("Malformed chunked request body") from None
            if size == 0:
                # Trailer lines end with an empty line.
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            total += size
            if total > limit:
                raise _BodyTooLargeError(total, False)
            chunks.append(self._read_exactly(size))
            self.rfile.readline(1024)  # The CRLF after each chunk.

    def _discard_body(self):
        length = self.headers.get("Content-Length")
        if length and length.isdigit() and int(length) <= MAX_DRAIN_BYTES:
            self._drain(int(length))
        elif length or "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True

    def _drain(self, length):
        try:
            remaining = length
            while remaining:
                chunk = self.rfile.read(min(remaining, 1 << 20))
                if not chunk:
                    return
                remaining -= len(chunk)
        except OSError:
            return

    # -- answers -----------------------------------------------------------

    def _send(self, http_status, body, content_type):
        reason = http.server.BaseHTTPRequestHandler.responses.get(
            http_status, ("Client Closed Request" if http_status == 499 else "Error",)
        )[0]
        lines = [
            f"HTTP/1.1 {http_status} {reason}",
            f"Content-Type: {content_type}",
            f"Date: {email.utils.formatdate(usegmt=True)}",
            f"Content-Length: {len(body)}",
        ]
        if self.model_server.options.enable_cors:
            lines += [
                "Access-Control-Allow-Origin: *",
                "Access-Control-Allow-Methods: POST, GET",
                "Access-Control-Allow-Headers: Content-Type",
            ]
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        try:
            self.wfile.write(head + body)
        except OSError:
            self.close_connection = True


def _gunzip(body, limit):
    """Decompresses a gzip body, refusing output over `limit` (no zip bombs)."""
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        data = decompressor.decompress(body, limit + 1)
    except zlib.error as error:
        raise _BadBodyError(f"Failed to decompress the gzip request body: {error}") from None
    if len(data) > limit or decompressor.unconsumed_tail:
        raise _BodyTooLargeError(limit + 1, False)
    return data
