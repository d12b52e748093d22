"""Serves exported SavedModels over TensorFlow Serving's REST and gRPC APIs, without Docker.

Speaks the APIs of `tensorflow_model_server`: REST (status, metadata and
predict under /v1/, the same JSON, errors and status codes) and gRPC
(PredictionService and ModelService, with tensorflow-serving-api's stubs),
and takes its flags, so the same commands and clients work with either
server. Versions are numeric subfolders of the base path; new ones are
picked up while serving. Stop with Ctrl+C (SIGINT) or SIGTERM.

Typical usage:
    python code/model_server.py --port=8500 --rest_api_port=8501 \\
        --model_name=my_digit_classifier --model_base_path=my_digit_classifier
"""

import argparse
import logging
import os
import sys

from mnist_serving import cli, config
from mnist_serving.serving.options import (
    DEFAULT_GRPC_MAX_THREADS,
    DEFAULT_MAX_BYTES_IN_FLIGHT,
    DEFAULT_MAX_IMAGES_IN_FLIGHT,
    DEFAULT_MAX_IMAGES_PER_REQUEST,
    DEFAULT_MAX_JSON_VALUES,
    DEFAULT_MAX_PIXELS_PER_IMAGE,
    DEFAULT_MAX_PIXELS_PER_REQUEST,
    DEFAULT_MAX_QUEUED_REQUESTS,
    DEFAULT_MAX_REQUEST_BYTES,
    DEFAULT_REST_API_NUM_THREADS,
)
from mnist_serving.text import OneLineFormatter

PROGRAM = "model_server.py"
LOG_FORMAT = "%(asctime)s.%(msecs)03d: %(levelname).1s %(filename)s:%(lineno)d] %(message)s"


class _OneLineErrorParser(argparse.ArgumentParser):
    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The command line, with tensorflow_model_server's flag names."""
    parser = _OneLineErrorParser(
        prog=PROGRAM,
        description=(
            "A local server that answers as TensorFlow Serving does (REST and gRPC APIs). "
            "Flags keep tensorflow_model_server's names; booleans also take =true/=false."
        ),
        formatter_class=cli.HelpFormatter,
    )
    parser.add_argument(
        "--port",
        type=int,
        default=config.GRPC_PORT,
        help="port of the gRPC API; 0 picks a free port (logged at startup)",
    )
    parser.add_argument(
        "--grpc_max_threads",
        type=int,
        default=DEFAULT_GRPC_MAX_THREADS,
        help="gRPC calls answered at once; one more gets RESOURCE_EXHAUSTED "
        "(TF Serving's default: 4 per CPU)",
    )
    parser.add_argument(
        "--grpc_channel_arguments",
        default="",
        help="comma-separated key=value gRPC server arguments, e.g. "
        "grpc.max_receive_message_length=134217728 (default: none; the largest message "
        f"read is {DEFAULT_MAX_REQUEST_BYTES} bytes unless given here)",
    )
    parser.add_argument(
        "--rest_api_port",
        type=int,
        default=config.REST_PORT,
        help="port of the REST API; 0 picks a free port (logged at startup)",
    )
    parser.add_argument(
        "--rest_api_host",
        default=config.REST_HOST,
        help="address both APIs listen on; 0.0.0.0 serves other machines too",
    )
    parser.add_argument(
        "--model_name",
        default=config.MODEL_NAME,
        help=f"model name in URLs (default: {config.MODEL_NAME}, this project's model; "
        "tensorflow_model_server's own is 'default')",
    )
    parser.add_argument(
        "--model_base_path",
        default=str(config.DEFAULT_EXPORT_BASE),
        help="folder whose numeric subfolders are the model's versions; the project's export "
        "folder unless given, so that the server runs as is after export_model.py",
    )
    parser.add_argument(
        "--model_config_file",
        default=None,
        help="text ModelServerConfig serving several models, version policies and labels; "
        "overrides --model_name and --model_base_path",
    )
    parser.add_argument(
        "--model_config_file_poll_wait_seconds",
        type=float,
        default=0,
        help="seconds between re-reads of --model_config_file (models added, removed or "
        "changed) (default: 0, read once)",
    )
    parser.add_argument(
        "--file_system_poll_wait_seconds",
        type=float,
        default=1.0,
        help="seconds between looks for new or removed versions; 0 or less looks once",
    )
    parser.add_argument(
        "--rest_api_timeout_in_ms",
        type=int,
        default=30000,
        help="time limit of one prediction, then HTTP 504, and work not yet started is "
        "dropped; 0 for none",
    )
    parser.add_argument(
        "--rest_api_num_threads",
        type=int,
        default=DEFAULT_REST_API_NUM_THREADS,
        help="worker threads that run predictions (TF Serving's default: 4 per CPU)",
    )
    parser.add_argument(
        "--rest_api_max_queued_requests",
        type=int,
        default=DEFAULT_MAX_QUEUED_REQUESTS,
        help="predictions that may wait for a worker; beyond, HTTP 503 at once "
        "(model_server.py only)",
    )
    parser.add_argument(
        "--rest_api_max_request_bytes",
        type=int,
        default=DEFAULT_MAX_REQUEST_BYTES,
        help="largest request body accepted, after gzip decompression; larger gets HTTP 413 "
        "(model_server.py only: TF Serving takes any size)",
    )
    parser.add_argument(
        "--rest_api_max_bytes_in_flight",
        type=int,
        default=DEFAULT_MAX_BYTES_IN_FLIGHT,
        help="bytes of request bodies held at once, being received, waiting or parsed; beyond, "
        "HTTP 503 at once (model_server.py only: TF Serving holds any number of bodies)",
    )
    parser.add_argument(
        "--rest_api_max_json_values",
        type=int,
        default=DEFAULT_MAX_JSON_VALUES,
        help="JSON values (numbers, strings, lists, objects) in one body, counted from its "
        "commas and brackets before it is parsed; more gets HTTP 400 (model_server.py only: "
        "TF Serving parses any number)",
    )
    parser.add_argument(
        "--max_images_per_request",
        type=int,
        default=DEFAULT_MAX_IMAGES_PER_REQUEST,
        help="images (the first dimension of the inputs) in one prediction; more gets HTTP 400 "
        "(model_server.py only: TF Serving bounds them only with batching, by max_batch_size)",
    )
    parser.add_argument(
        "--max_images_in_flight",
        type=int,
        default=DEFAULT_MAX_IMAGES_IN_FLIGHT,
        help="images computed at once across requests; a request waits its turn, until "
        "--rest_api_timeout_in_ms (model_server.py only: TF Serving bounds requests at once, "
        "by its threads, not images)",
    )
    parser.add_argument(
        "--max_pixels_per_image",
        type=int,
        default=DEFAULT_MAX_PIXELS_PER_IMAGE,
        help="pixels (width x height x frames, read from the header) of a PNG, JPEG, GIF, BMP "
        "or WebP image in a string input; more gets HTTP 400 before the model decodes it "
        "(model_server.py only: TF Serving lets the model decode any size)",
    )
    parser.add_argument(
        "--max_pixels_per_request",
        type=int,
        default=DEFAULT_MAX_PIXELS_PER_REQUEST,
        help="pixels of all such images in one prediction together; more gets HTTP 400 "
        "(model_server.py only)",
    )
    cli.add_bool_flag(
        parser, "--enable_batching", help="merge concurrent predict requests into batches"
    )
    parser.add_argument(
        "--batching_parameters_file",
        default=None,
        help="text BatchingParameters (max_batch_size, batch_timeout_micros, ...); "
        "needs --enable_batching",
    )
    parser.add_argument(
        "--monitoring_config_file",
        default=None,
        help="text MonitoringConfig; prometheus_config { enable: true } serves metrics "
        "on the REST port",
    )
    cli.add_bool_flag(
        parser,
        "--rest_api_enable_cors_support",
        help="add CORS headers and answer OPTIONS preflight requests",
    )
    parser.add_argument(
        "--tensorflow_intra_op_parallelism",
        type=int,
        default=0,
        help="threads TensorFlow uses inside one op (default: 0, TensorFlow chooses)",
    )
    parser.add_argument(
        "--tensorflow_inter_op_parallelism",
        type=int,
        default=0,
        help="ops TensorFlow runs at once (default: 0, TensorFlow chooses)",
    )
    cli.add_bool_flag(
        parser,
        "--enable_model_warmup",
        default=True,
        help="replay assets.extra/tf_serving_warmup_requests when a version loads",
    )
    parser.add_argument(
        "--num_request_iterations_for_warmup",
        type=int,
        default=1,
        help="times each warm-up record is replayed",
    )
    cli.add_bool_flag(
        parser,
        "--allow_version_labels_for_unavailable_models",
        help="accept version labels (models.config) for versions not yet AVAILABLE; "
        "needed for labels given at start-up, as in TF Serving",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="also log one line per request: HTTP method, path, status, milliseconds; "
        "gRPC method, status, milliseconds",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs the server until SIGINT or SIGTERM; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    # Keras imports matplotlib when it is installed, for plots a server never
    # draws; without it, TensorFlow loads 25 MiB lighter.
    sys.modules.setdefault("matplotlib", None)
    # Each record one line, whatever a request put in it.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OneLineFormatter(LOG_FORMAT, datefmt="%Y-%m-%d %H:%M:%S"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    logger = logging.getLogger("model_server")
    from mnist_serving.serving.errors import ConfigError
    from mnist_serving.serving.options import options_from_flags

    try:
        options = options_from_flags(args)
    except ConfigError as error:
        print(f"{PROGRAM}: error: {error}", file=sys.stderr)
        return 1

    from mnist_serving.serving import server

    try:
        server.run(options)
    except server.StartupError as error:
        print(f"{PROGRAM}: {error}", file=sys.stderr)
        return 1
    logger.info("Server stopped")
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    # A prediction abandoned at its time limit may still be computing; it has
    # no client left to answer, so the process need not wait for it.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
