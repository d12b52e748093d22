"""The gRPC transport: TF Serving's PredictionService and ModelService on grpc.aio.

The services are the generated ones of tensorflow-serving-api
(`tensorflow.serving.PredictionService` and `tensorflow.serving.ModelService`),
served by grpc.aio on the server's one asyncio event loop, beside the REST
transport, and calling the same data plane: one model manager, batching
queue, worker pool and set of metrics for both protocols.

The answers are TF Serving's (its `prediction_service_impl.cc`,
`model_service_impl.cc` and the code they call): the same status codes and
messages, cut at 1024 characters as its `ToGRPCStatus` cuts them. Predict,
Classify and Regress are counted in `request_count` and, when OK, timed in
`request_latency` with `API` `Predict`, `Classify` or `Regress` and
`entrypoint` `GRPC` (REST's are `predict`, ... and `REST`), as TF Serving
records them; the other calls are not counted, as in TF Serving.

A Predict runs on the data plane's worker pool within the client's deadline
(`context.time_remaining()`) and `--rest_api_timeout_in_ms`, whichever ends
first. At most `--grpc_max_threads` calls run at once (TF Serving's gRPC
thread quota); one more is refused with RESOURCE_EXHAUSTED.
"""

import asyncio
import functools
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable

import grpc
from tensorflow_serving.apis import (
    model_management_pb2,
    model_pb2,
    model_service_pb2_grpc,
    prediction_service_pb2_grpc,
)

from mnist_serving.serving import proto_codec
from mnist_serving.serving.data_plane import DataPlane
from mnist_serving.serving.errors import ConfigError, ServingError
from mnist_serving.serving.metrics import metric_name
from mnist_serving.serving.model_config import models_from_config
from mnist_serving.serving.options import (
    INT32_MAX,
    MAX_RECEIVE_MESSAGE_LENGTH,
    ServerOptions,
)

LOGGER = logging.getLogger("model_server")
ENTRYPOINT = "GRPC"
# TF Serving's ToGRPCStatus keeps this many characters of a message.
MAX_MESSAGE_CHARACTERS = 1024


def channel_arguments(options: ServerOptions) -> list[tuple[str, int | str]]:
    """The gRPC server's channel arguments: model_server.py's defaults, then the flag's.

    Messages are bounded (TF Serving reads up to INT32_MAX bytes), and
    `SO_REUSEPORT` is off so that a port in use fails at start-up instead
    of being shared with another server.
    """
    arguments = {
        MAX_RECEIVE_MESSAGE_LENGTH: options.grpc_max_receive_bytes,
        "grpc.max_send_message_length": INT32_MAX,
        "grpc.so_reuseport": 0,
    }
    arguments.update(options.grpc_channel_arguments)
    return list(arguments.items())


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class GrpcTransport:
    """The gRPC server: bound at start-up, serving once the models are loaded."""

    def __init__(self, plane: DataPlane):
        self.plane = plane
        self.port: int | None = None
        self._server: grpc.aio.Server | None = None

    def bind(self, host: str, port: int) -> int:
        """Binds host:port (0: a free port) before the models load; returns the port.

        Raises:
            OSError: The address cannot be bound (in use, unknown host, ...).
        """
        options = self.plane.options
        self._server = grpc.aio.server(
            options=channel_arguments(options),
            maximum_concurrent_rpcs=options.grpc_max_threads,
        )
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionService(self.plane), self._server
        )
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(
            ModelService(self.plane), self._server
        )
        try:
            self.port = self._server.add_insecure_port(_address(host, port))
        except RuntimeError:
            self.port = 0
        if not self.port:
            raise _bind_error(host, port)
        return self.port

    async def start(self) -> None:
        """Starts answering calls."""
        await self._server.start()

    async def stop(self, grace: float) -> None:
        """Refuses new calls, lets calls in progress finish for up to `grace` seconds."""
        if self._server is not None:
            await self._server.stop(grace)


def _bind_error(host: str, port: int) -> OSError:
    """Why gRPC could not bind host:port, found by binding a plain socket there."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as error:
        return error
    return OSError(f"gRPC could not listen on {_address(host, port)}")


def _truncated(message: str) -> str:
    if len(message) <= MAX_MESSAGE_CHARACTERS:
        return message
    return message[:MAX_MESSAGE_CHARACTERS] + "...TRUNCATED"


def _missing_model_spec(request) -> None:
    if not request.HasField("model_spec"):
        raise ServingError("INVALID_ARGUMENT", "Missing ModelSpec")


class _Service:
    """What both services share: resolving a ModelSpec, answering with TF Serving's status."""

    def __init__(self, plane: DataPlane):
        self.plane = plane

    def _resolve(self, model_spec: model_pb2.ModelSpec):
        return self.plane.resolve(*proto_codec.model_spec_address(model_spec))

    async def _respond(
        self,
        context: grpc.aio.ServicerContext,
        method: str,
        answer: Callable[[], Awaitable],
        counted_model: str | None = None,
    ):
        """Awaits `answer()`; a ServingError becomes the call's status and message.

        With `counted_model` (the request's model name), the call is counted
        in the metrics as API `method`; with `--verbose` every call is logged.
        """
        started = time.monotonic()
        code, message, response = "OK", "", None
        try:
            response = await answer()
        except ServingError as error:
            code, message = error.code, error.message
        except asyncio.CancelledError:  # The client went away or its deadline passed.
            self._record(method, counted_model, "CANCELLED", started)
            raise
        except Exception as error:  # One bad call never takes the server down.
            LOGGER.exception("Internal error while answering a gRPC %s call", method)
            code, message = "INTERNAL", f"Internal error: {type(error).__name__}"
        self._record(method, counted_model, code, started)
        if code != "OK":
            await context.abort(grpc.StatusCode[code], _truncated(message))
        return response

    def _record(self, method: str, counted_model: str | None, code: str, started: float) -> None:
        seconds = time.monotonic() - started
        if counted_model is not None:
            self.plane.record_request(counted_model, method, code, seconds, ENTRYPOINT)
        if self.plane.options.verbose:
            LOGGER.info("gRPC %s %s %.1f ms", method, code, seconds * 1000)

    async def _on_worker(self, context: grpc.aio.ServicerContext, work: Callable):
        """Runs `work()` on the data plane's workers within the client's deadline."""
        return await self.plane.infer(work, context.time_remaining())


async def _now(function: Callable, *arguments):
    """Calls a quick function on the event loop, as an awaitable for `_respond`."""
    return function(*arguments)


class PredictionService(_Service, prediction_service_pb2_grpc.PredictionServiceServicer):
    """`tensorflow.serving.PredictionService`: Predict, metadata, and TF Serving's refusals."""

    async def Predict(self, request, context):  # noqa: N802 - the RPC's name.
        work = functools.partial(self._predict, request)
        return await self._respond(
            context, "Predict", lambda: self._on_worker(context, work), request.model_spec.name
        )

    def _predict(self, request):
        """A Predict call, on a worker thread: TF Serving's checks, the run, the answer."""
        _missing_model_spec(request)
        servable = self._resolve(request.model_spec)
        key, signature = proto_codec.predict_signature(servable.signature_defs, request.model_spec)
        tensors = proto_codec.predict_inputs(
            request, signature, self.plane.options.grpc_max_receive_bytes
        )
        aliases = proto_codec.output_aliases(request, signature)
        outputs = self.plane.run(servable, key, tensors)
        return proto_codec.predict_response(
            request.model_spec.name, key, servable.version, outputs, aliases
        )

    async def GetModelMetadata(self, request, context):  # noqa: N802
        return await self._respond(
            context, "GetModelMetadata", functools.partial(_now, self._metadata, request)
        )

    def _metadata(self, request):
        _missing_model_spec(request)
        proto_codec.check_metadata_fields(request)
        servable = self._resolve(request.model_spec)
        return proto_codec.metadata_response(
            servable.model_name, servable.version, servable.signature_defs
        )

    async def Classify(self, request, context):  # noqa: N802
        answer = functools.partial(_now, self._classify_or_regress, "classify", request)
        return await self._respond(context, "Classify", answer, request.model_spec.name)

    async def Regress(self, request, context):  # noqa: N802
        answer = functools.partial(_now, self._classify_or_regress, "regress", request)
        return await self._respond(context, "Regress", answer, request.model_spec.name)

    def _classify_or_regress(self, api: str, request):
        """TF Serving's checks of the model and signature; then UNIMPLEMENTED (predict only)."""
        _missing_model_spec(request)
        servable = self._resolve(request.model_spec)
        servable.check_classify_or_regress(api, request.model_spec.signature_name)
        raise ServingError(
            "UNIMPLEMENTED",
            f"model_server.py does not run {api.capitalize()} (tf.Example input); use Predict",
        )

    async def MultiInference(self, request, context):  # noqa: N802
        return await self._respond(
            context, "MultiInference", functools.partial(_now, self._multi_inference, request)
        )

    def _multi_inference(self, request):
        """TF Serving's checks of every task; then UNIMPLEMENTED (predict only)."""
        first = request.tasks[0] if request.tasks else None
        model_spec = first.model_spec if first is not None else model_pb2.ModelSpec()
        servable = self._resolve(model_spec)
        proto_codec.check_multi_inference(request, servable.signature_defs)
        raise ServingError(
            "UNIMPLEMENTED",
            "model_server.py does not run MultiInference (tf.Example input); use Predict",
        )


class ModelService(_Service, model_service_pb2_grpc.ModelServiceServicer):
    """`tensorflow.serving.ModelService`: version status, and reloading the model config."""

    async def GetModelStatus(self, request, context):  # noqa: N802
        return await self._respond(
            context, "GetModelStatus", functools.partial(_now, self._status, request)
        )

    def _status(self, request):
        _missing_model_spec(request)
        model_spec = request.model_spec
        # As in TF Serving, a label is not resolved: every version is listed.
        version = model_spec.version.value if model_spec.HasField("version") else None
        return self.plane.manager.model_status(model_spec.name, version)

    async def HandleReloadConfigRequest(self, request, context):  # noqa: N802
        return await self._respond(
            context, "HandleReloadConfigRequest", functools.partial(self._reload, request)
        )

    async def _reload(self, request):
        """Replaces the served models with the request's ModelConfigList, as TF Serving does.

        Labels are checked first; models no longer listed are unloaded; the
        answer comes once the new models are loaded.
        """
        config = request.config
        if config.WhichOneof("config") != "model_config_list":
            raise ServingError(
                "INVALID_ARGUMENT",
                "ServerModelConfig type not supported by HandleReloadConfigRequest. Only "
                "ModelConfigList is currently supported",
            )
        try:
            models = models_from_config(config.model_config_list, "ReloadConfigRequest")
        except ConfigError as error:
            raise ServingError("INVALID_ARGUMENT", str(error)) from None
        for model in models:
            # A base path relative to the server's folder means nothing to a remote client.
            if not os.path.isabs(model.base_path) and "://" not in model.base_path:
                raise ServingError(
                    "INVALID_ARGUMENT",
                    f"Expected model {model.name} to have an absolute path or URI; got "
                    f"base_path()={model.base_path}",
                )
        before = self._metric_values(request.metric_names)
        LOGGER.info(
            "ReloadConfigRequest: serving %s",
            ", ".join(f"{model.name} from {model.base_path}" for model in models) or "no model",
        )
        await self.plane.update_models(models)
        after = self._metric_values(request.metric_names)
        response = model_management_pb2.ReloadConfigResponse()
        response.status.SetInParent()
        for name in request.metric_names:
            response.metric.add(name=name, int64_value_increase=after[name] - before[name])
        return response

    def _metric_values(self, names) -> dict[str, int]:
        """The first value of each named metric (TF Serving's path names), 0 if unknown."""
        families = {family.name: family for family in self.plane.metrics.registry.collect()}
        values = {}
        for name in names:
            family = families.get(metric_name(name))
            values[name] = int(family.samples[0].value) if family and family.samples else 0
        return values
