"""The server assembled: one asyncio event loop, the data plane, the REST and gRPC transports.

Start-up follows tensorflow_model_server: the ports are bound first (a busy
port fails at once), version labels are assigned (TF Serving assigns them
before any model loads, so a label needs
`--allow_version_labels_for_unavailable_models` at start-up), every model's
newest version is loaded and warmed up, and only then are calls accepted,
gRPC first, then REST, each logged as TF Serving logs it. Both transports
run on the same loop and call into the same `DataPlane`.

SIGINT or SIGTERM stops the server: both ports stop accepting, requests in
progress finish (up to `SHUTDOWN_SECONDS`), then loading and batching stop.
A second signal exits at once.
"""

import asyncio
import logging
import os
import signal
import socket

from aiohttp import web

from mnist_serving.serving.data_plane import DataPlane
from mnist_serving.serving.errors import ConfigError, ServingError
from mnist_serving.serving.grpc_transport import GrpcTransport
from mnist_serving.serving.model_config import read_model_config_file
from mnist_serving.serving.options import ServerOptions
from mnist_serving.serving.rest import AccessLogger, RestApi

LOGGER = logging.getLogger("model_server")
# Requests in progress at shutdown get this long to finish.
SHUTDOWN_SECONDS = 10.0
# Connections waiting to be accepted.
LISTEN_BACKLOG = 1024


class StartupError(Exception):
    """The server cannot start; the message is one line for the user."""


class ModelServer:
    """Loads the configured models and serves them until stopped."""

    def __init__(self, options: ServerOptions):
        self.options = options
        self.plane = DataPlane(options)
        self.grpc = GrpcTransport(self.plane)
        self.port: int | None = None  # REST.
        self.grpc_port: int | None = None
        self._socket: socket.socket | None = None
        self._runner: web.ServerRunner | None = None
        self._site: web.SockSite | None = None
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    async def start(self) -> None:
        """Binds the ports, assigns labels, loads the models, then accepts requests.

        Raises:
            StartupError: Port unavailable, a label TF Serving refuses, or a
                model whose newest version failed to load.
        """
        options = self.options
        self._socket = _bind(options.rest_api_host, options.rest_api_port)
        self.port = self._socket.getsockname()[1]
        try:
            self.grpc_port = self.grpc.bind(options.rest_api_host, options.port)
        except OSError as error:
            raise StartupError(
                f"Failed to start gRPC server at {options.rest_api_host}:{options.port}: "
                f"{error.strerror or error}"
            ) from None
        if options.model_config_file:
            LOGGER.info("Adding/updating models.")
            for model in options.models:
                LOGGER.info("(Re-)adding model: %s", model.name)
        else:
            for model in options.models:
                LOGGER.info(
                    "Building single TensorFlow model file config:  model_name: %s "
                    "model_base_path: %s",
                    model.name,
                    model.base_path,
                )
        _configure_tensorflow_threads(options)
        manager = self.plane.manager
        try:
            manager.assign_labels(list(options.models))
        except ServingError as error:
            raise StartupError(f"Failed to start server. Error: {error}") from None
        # Loading runs TensorFlow: off the event loop, so that signals are still handled.
        await asyncio.get_running_loop().run_in_executor(None, manager.start)
        failures = manager.startup_failures()
        if failures:
            raise StartupError(
                f"Failed to start server. Error: UNKNOWN: {len(failures)} model(s) did not "
                "become available: {" + ", ".join(failures) + "}"
            )
        await self.grpc.start()
        LOGGER.info("Running gRPC ModelServer at %s:%d ...", options.rest_api_host, self.grpc_port)
        rest_server = RestApi(self.plane).server(
            access_log_class=AccessLogger, access_log=LOGGER if options.verbose else None
        )
        self._runner = web.ServerRunner(
            rest_server, handle_signals=False, shutdown_timeout=SHUTDOWN_SECONDS
        )
        await self._runner.setup()
        self._site = web.SockSite(self._runner, self._socket, backlog=LISTEN_BACKLOG)
        await self._site.start()
        if options.model_config_file and options.model_config_file_poll_wait_seconds > 0:
            self._tasks.append(asyncio.create_task(self._watch_config_file()))
        LOGGER.info("Exporting HTTP/REST API at:%s:%d ...", options.rest_api_host, self.port)

    async def _watch_config_file(self) -> None:
        """Re-reads `--model_config_file` periodically and applies changes."""
        current = list(self.options.models)
        while True:
            await asyncio.sleep(self.options.model_config_file_poll_wait_seconds)
            try:
                models = read_model_config_file(self.options.model_config_file)
            except ConfigError as error:
                LOGGER.error("Keeping the current models: %s", error)
                continue
            if models == current:
                continue
            LOGGER.info("Model config file changed; updating the served models")
            try:
                await self.plane.update_models(models)
            except ServingError as error:
                LOGGER.error("Keeping the current model config: %s", error)
                continue
            current = models

    def request_stop(self, signal_number: int | None = None) -> None:
        """Asks `serve` to stop; a second request (a second Ctrl+C) exits at once."""
        if self._stop.is_set():
            LOGGER.warning("Second signal: exiting without waiting")
            logging.shutdown()
            os._exit(128 + (signal_number or 0))
        if signal_number is not None:
            LOGGER.info("Received %s; shutting down", signal.Signals(signal_number).name)
        self._stop.set()

    async def serve(self) -> None:
        """Starts, serves until `request_stop`, then stops cleanly."""
        loop = asyncio.get_running_loop()
        for number in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(number, self.request_stop, number)
        try:
            await self.start()
            await self._stop.wait()
        finally:
            await self.close()

    async def close(self) -> None:
        """Stops accepting, waits for requests in progress, stops the data plane."""
        for task in self._tasks:
            task.cancel()
        stopping = [self.grpc.stop(SHUTDOWN_SECONDS)]
        if self._site is not None:
            stopping.append(self._site.stop())
            LOGGER.info("Stopped accepting connections; finishing the requests in progress")
        await asyncio.gather(*stopping)
        if self._runner is not None:
            await self._runner.cleanup()
        elif self._socket is not None:
            self._socket.close()
        self.plane.close()


def _bind(host: str, port: int) -> socket.socket:
    """A socket bound to host:port, not yet listening (connections wait until start-up ends)."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as error:
        raise StartupError(
            f"Failed to start HTTP/REST server at {host}:{port}: {error.strerror or error}"
        ) from None
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise StartupError(
            f"Failed to start HTTP/REST server at {host}:{port}: {error.strerror or error}"
        ) from None
    return sock


def _configure_tensorflow_threads(options: ServerOptions) -> None:
    """Applies --tensorflow_{intra,inter}_op_parallelism before any model loads."""
    intra = options.tensorflow_intra_op_parallelism
    inter = options.tensorflow_inter_op_parallelism
    if intra <= 0 and inter <= 0:
        return
    import tensorflow as tf

    if intra > 0:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
    if inter > 0:
        tf.config.threading.set_inter_op_parallelism_threads(inter)


def run(options: ServerOptions) -> None:
    """Runs the server in this thread until SIGINT or SIGTERM.

    Raises:
        StartupError: The server could not start.
    """
    asyncio.run(ModelServer(options).serve())
