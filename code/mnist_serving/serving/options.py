"""Everything model_server.py's flags decide, checked and read once, as typed options.

The field names are the flags' names (tensorflow_model_server's), so a flag
is called the same from the command line to the code that uses it. The files
the flags name (model config, batching parameters, monitoring config) are
read here, once, so that a bad file stops the program before any model loads.
"""

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

from mnist_serving import config
from mnist_serving.serving.batching import BatchingParameters, read_batching_parameters
from mnist_serving.serving.errors import ConfigError
from mnist_serving.serving.metrics import read_monitoring_config
from mnist_serving.serving.model_config import ModelConfig, read_model_config_file

DEFAULT_MAX_REQUEST_BYTES = 64 * 2**20
# TF Serving's --rest_api_num_threads and --grpc_max_threads defaults: 4 per CPU.
DEFAULT_REST_API_NUM_THREADS = 4 * (os.cpu_count() or 1)
DEFAULT_GRPC_MAX_THREADS = 4 * (os.cpu_count() or 1)
DEFAULT_MAX_QUEUED_REQUESTS = 128
# gRPC's channel argument for the largest message the server reads. TF Serving
# sets it to INT32_MAX; model_server.py bounds it as it bounds REST bodies.
MAX_RECEIVE_MESSAGE_LENGTH = "grpc.max_receive_message_length"
INT32_MAX = 2**31 - 1
# The limits TF Serving does not have (see Instructions.md, "Limits of the
# server"). This project's CNN takes about 250 KB per image while it computes,
# on top of 0.8 GB for TensorFlow and the model: 2,048 images in flight keep
# the server near 1.3 GB (bench/server_limits_bench.py), under 2 GB.
DEFAULT_MAX_IMAGES_PER_REQUEST = 2048
DEFAULT_MAX_IMAGES_IN_FLIGHT = 2048
# 16 Mi pixels is a 4096x4096 image or a 12-megapixel photo; 2,048 MNIST
# digits are 1.6 Mi pixels.
DEFAULT_MAX_PIXELS_PER_IMAGE = 16 * 2**20
DEFAULT_MAX_PIXELS_PER_REQUEST = 32 * 2**20
# A JSON value becomes a Python object of 30 to 80 bytes while a body is
# parsed; 2,048 digits as nested lists are 3.3 million values.
DEFAULT_MAX_JSON_VALUES = 4 * 2**20
# Bodies being received, waiting for a worker or being parsed: four of the
# largest, or hundreds of ordinary ones.
DEFAULT_MAX_BYTES_IN_FLIGHT = 4 * DEFAULT_MAX_REQUEST_BYTES


@dataclass(frozen=True)
class ServerOptions:
    """The server's settings, named after tensorflow_model_server's flags."""

    models: tuple[ModelConfig, ...]
    rest_api_host: str = config.REST_HOST  # Both ports listen here.
    rest_api_port: int = config.REST_PORT
    port: int = config.GRPC_PORT  # gRPC.
    grpc_max_threads: int = DEFAULT_GRPC_MAX_THREADS
    # `--grpc_channel_arguments`, parsed: (key, int or string value) pairs.
    grpc_channel_arguments: tuple[tuple[str, int | str], ...] = ()
    model_config_file: str | None = None
    model_config_file_poll_wait_seconds: float = 0.0
    file_system_poll_wait_seconds: float = 1.0
    rest_api_timeout_in_ms: int = 30000
    rest_api_num_threads: int = DEFAULT_REST_API_NUM_THREADS
    rest_api_max_queued_requests: int = DEFAULT_MAX_QUEUED_REQUESTS
    rest_api_max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    rest_api_max_bytes_in_flight: int = DEFAULT_MAX_BYTES_IN_FLIGHT
    rest_api_max_json_values: int = DEFAULT_MAX_JSON_VALUES
    max_images_per_request: int = DEFAULT_MAX_IMAGES_PER_REQUEST
    max_images_in_flight: int = DEFAULT_MAX_IMAGES_IN_FLIGHT
    max_pixels_per_image: int = DEFAULT_MAX_PIXELS_PER_IMAGE
    max_pixels_per_request: int = DEFAULT_MAX_PIXELS_PER_REQUEST
    batching_parameters: BatchingParameters | None = None  # None: batching off.
    prometheus_path: str | None = None  # None: no metrics page.
    rest_api_enable_cors_support: bool = False
    enable_model_warmup: bool = True
    num_request_iterations_for_warmup: int = 1
    tensorflow_intra_op_parallelism: int = 0  # 0: TensorFlow's choice.
    tensorflow_inter_op_parallelism: int = 0
    allow_version_labels_for_unavailable_models: bool = False
    verbose: bool = False

    @property
    def timeout_seconds(self) -> float | None:
        """`--rest_api_timeout_in_ms` in seconds; None for no limit."""
        timeout = self.rest_api_timeout_in_ms
        return timeout / 1000.0 if timeout > 0 else None

    @property
    def grpc_max_receive_bytes(self) -> int:
        """The largest gRPC message read: `grpc.max_receive_message_length`, or the REST bound."""
        value = dict(self.grpc_channel_arguments).get(MAX_RECEIVE_MESSAGE_LENGTH)
        if isinstance(value, int):
            return INT32_MAX if value < 0 else value
        return DEFAULT_MAX_REQUEST_BYTES

    @property
    def warmup_iterations(self) -> int:
        """Replays of each warm-up record when a version loads (0: warm-up off)."""
        return self.num_request_iterations_for_warmup if self.enable_model_warmup else 0


def options_from_flags(args: argparse.Namespace) -> ServerOptions:
    """Checks model_server.py's parsed flags and reads the files they name.

    Raises:
        ConfigError: Any problem with the flags or the files they point at,
            with TF Serving's message where it has one.
    """
    for flag in ("rest_api_port", "port"):
        if not 0 <= getattr(args, flag) <= 65535:
            raise ConfigError(f"--{flag} must be between 0 and 65535, got {getattr(args, flag)}")
    if args.port == args.rest_api_port != 0:
        raise ConfigError(
            f"server_options.http_port cannot be same as grpc_port ({args.port}). "
            "Please use a different port for HTTP/REST API."
        )
    for flag in (
        "rest_api_max_request_bytes",
        "rest_api_num_threads",
        "rest_api_max_bytes_in_flight",
        "rest_api_max_json_values",
        "grpc_max_threads",
        "max_images_per_request",
        "max_images_in_flight",
        "max_pixels_per_image",
        "max_pixels_per_request",
    ):
        if getattr(args, flag) < 1:
            raise ConfigError(f"--{flag} must be positive")
    if args.rest_api_max_queued_requests < 0:
        raise ConfigError("--rest_api_max_queued_requests must not be negative")
    # Otherwise the largest request allowed could never run, or never be received.
    if args.max_images_per_request > args.max_images_in_flight:
        raise ConfigError("--max_images_per_request must not be more than --max_images_in_flight")
    if args.rest_api_max_request_bytes > args.rest_api_max_bytes_in_flight:
        raise ConfigError(
            "--rest_api_max_request_bytes must not be more than --rest_api_max_bytes_in_flight"
        )
    if args.batching_parameters_file and not args.enable_batching:
        raise ConfigError(
            "server_options.batching_parameters_file is set without setting "
            "server_options.enable_batching to true."
        )
    if args.model_config_file:
        models = read_model_config_file(args.model_config_file)
    elif not args.model_base_path:
        raise ConfigError(
            "Both server_options.model_base_path and server_options.model_config_file are empty!"
        )
    elif not args.model_name:
        raise ConfigError("--model_name must not be empty")
    else:
        models = [ModelConfig(name=args.model_name, base_path=str(Path(args.model_base_path)))]
    batching = None
    if args.enable_batching:
        batching = (
            read_batching_parameters(args.batching_parameters_file)
            if args.batching_parameters_file
            else BatchingParameters()
        )
    prometheus_path = (
        read_monitoring_config(args.monitoring_config_file) if args.monitoring_config_file else None
    )
    return ServerOptions(
        models=tuple(models),
        rest_api_host=args.rest_api_host,
        rest_api_port=args.rest_api_port,
        port=args.port,
        grpc_max_threads=args.grpc_max_threads,
        grpc_channel_arguments=parse_grpc_channel_arguments(args.grpc_channel_arguments),
        model_config_file=args.model_config_file,
        model_config_file_poll_wait_seconds=args.model_config_file_poll_wait_seconds,
        file_system_poll_wait_seconds=args.file_system_poll_wait_seconds,
        rest_api_timeout_in_ms=args.rest_api_timeout_in_ms,
        rest_api_num_threads=args.rest_api_num_threads,
        rest_api_max_queued_requests=args.rest_api_max_queued_requests,
        rest_api_max_request_bytes=args.rest_api_max_request_bytes,
        rest_api_max_bytes_in_flight=args.rest_api_max_bytes_in_flight,
        rest_api_max_json_values=args.rest_api_max_json_values,
        max_images_per_request=args.max_images_per_request,
        max_images_in_flight=args.max_images_in_flight,
        max_pixels_per_image=args.max_pixels_per_image,
        max_pixels_per_request=args.max_pixels_per_request,
        batching_parameters=batching,
        prometheus_path=prometheus_path,
        rest_api_enable_cors_support=args.rest_api_enable_cors_support,
        enable_model_warmup=args.enable_model_warmup,
        num_request_iterations_for_warmup=args.num_request_iterations_for_warmup,
        tensorflow_intra_op_parallelism=args.tensorflow_intra_op_parallelism,
        tensorflow_inter_op_parallelism=args.tensorflow_inter_op_parallelism,
        allow_version_labels_for_unavailable_models=args.allow_version_labels_for_unavailable_models,
        verbose=args.verbose,
    )


def parse_grpc_channel_arguments(text: str | None) -> tuple[tuple[str, int | str], ...]:
    """`--grpc_channel_arguments`: `key=value,key=value` as TF Serving reads it.

    A value that reads as a 32-bit integer is passed as one, any other as a
    string (gRPC ignores, with a log line, the keys it does not know).

    Raises:
        ConfigError: An item that is not `key=value`.
    """
    arguments = []
    for item in text.split(",") if text else []:
        key, equals, value = item.partition("=")
        if not equals or not key.strip():
            raise ConfigError(f"--grpc_channel_arguments: expected key=value, got '{item}'")
        try:
            number = int(value.strip())
        except ValueError:
            number = None
        if number is not None and -(2**31) <= number <= INT32_MAX:
            arguments.append((key.strip(), number))
        else:
            arguments.append((key.strip(), value))
    return tuple(arguments)
