"""Classifies images of handwritten digits through TensorFlow Serving's REST or gRPC API.

Each image (a file, or every file of a folder) is turned into an MNIST-style
digit with OpenCV, sent to the model server in batches, and printed with its
most probable class and that class's probability (all ten with -p).

Typical usage (from code/, with a server running):

    python serving_request.py -i ../test_images/image_7.png
    python serving_request.py -i ../test_images -p True
    python serving_request.py -i photos/ -r --model-version 2 --json
    python serving_request.py -i ../test_images --protocol grpc
"""

import argparse
import re
import sys
from pathlib import Path

import orjson

from mnist_serving import cli, config
from mnist_serving.text import one_line, printable

# Exit statuses.
ALL_CLASSIFIED, SOME_FAILED, USAGE_ERROR = 0, 1, 2
# Runs with more images than this show a progress bar (on a terminal).
PROGRESS_BAR_THRESHOLD = 200


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'")
    return value


def positive_float(text):
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got '{text}'")
    return value


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=cli.HelpFormatter,
    )
    parser.add_argument(
        "-i", "--input", type=Path, required=True, help="an image file, or a folder of images"
    )
    cli.add_bool_flag(
        parser,
        "-d",
        "--directory",
        default=None,
        help="kept for the original commands; ignored: the input path tells a file from a folder",
    )
    parser.add_argument(
        "-r", "--recursive", action="store_true", help="also classify images in subfolders"
    )
    cli.add_bool_flag(
        parser, "-p", "--probabilities", help="print the probabilities of all ten digits"
    )
    parser.add_argument(
        "--protocol",
        choices=config.PROTOCOLS,
        default="rest",
        help="TensorFlow Serving's API to call: REST (JSON) or gRPC (TensorProtos)",
    )
    parser.add_argument(
        "--server",
        default=None,
        help=f"the model server's API (default: {config.DEFAULT_SERVERS['rest']} for REST, "
        f"{config.DEFAULT_SERVERS['grpc']} for gRPC)",
    )
    parser.add_argument("--model-name", default=config.MODEL_NAME, help="the served model")
    pinned = parser.add_mutually_exclusive_group()
    pinned.add_argument(
        "--model-version",
        type=positive_int,
        metavar="N",
        help="ask this version of the model (default: the one the server serves)",
    )
    pinned.add_argument(
        "--model-label", metavar="NAME", help="ask the version with this label (e.g. stable)"
    )
    parser.add_argument(
        "--signature",
        default=None,
        help=f"signature to call (default: {config.PNG_SIGNATURE} when the model has it, "
        f"else {config.DEFAULT_SIGNATURE})",
    )
    parser.add_argument("--batch-size", type=positive_int, default=64, help="images per request")
    parser.add_argument(
        "--timeout",
        type=positive_float,
        default=config.REQUEST_TIMEOUT_SECONDS,
        help="seconds for each whole request: connecting, sending and reading all of the answer "
        "(the deadline of each gRPC call)",
    )
    parser.add_argument(
        "--max-file-size",
        type=cli.byte_size,
        default=cli.scaled_text(config.MAX_FILE_BYTES, 1024),
        metavar="SIZE",
        help="a larger file fails unread (bytes; k, M, G for KiB, MiB, GiB)",
    )
    parser.add_argument(
        "--max-pixels",
        type=cli.pixel_count,
        default=cli.scaled_text(config.MAX_IMAGE_PIXELS, 1000),
        metavar="N",
        help="an image with more pixels fails undecoded, as its header tells "
        "(k, M for thousands, millions)",
    )
    parser.add_argument(
        "--max-answer-size",
        type=cli.byte_size,
        default=cli.scaled_text(config.MAX_ANSWER_BYTES, 1024),
        metavar="SIZE",
        help="a larger answer of the server is refused before it is read whole "
        "(bytes; k, M, G for KiB, MiB, GiB; gRPC's max_receive_message_length)",
    )
    parser.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="first wait up to this long for the model to be AVAILABLE (a server just started)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object per image per line (file, class, probability, "
        "and probabilities with -p)",
    )
    arguments = parser.parse_args(argv)
    if arguments.server is None:
        arguments.server = config.DEFAULT_SERVERS[arguments.protocol]
    else:
        try:
            cli.SERVER_ADDRESS_CHECKS[arguments.protocol](arguments.server)
        except argparse.ArgumentTypeError as error:
            parser.error(f"argument --server: {error}")
    return arguments


def natural_key(path):
    """Sorts image_2 before image_10."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", str(path))]


def list_images(path, recursive):
    """The files to classify: `path` itself, or the visible files of a folder, in name order."""
    if path.is_file():
        return [path]
    pattern = "**/*" if recursive else "*"
    files = [
        candidate
        for candidate in path.glob(pattern)
        if candidate.is_file()
        and not any(part.startswith(".") for part in candidate.relative_to(path).parts)
    ]
    return sorted(files, key=lambda candidate: natural_key(candidate.relative_to(path)))


class Report:
    """Prints results as they come, then a summary; counts what failed.

    File names and errors are printed with `printable`, and in plain output
    with their control characters escaped: one line per file, always.
    """

    def __init__(self, root, paths, probabilities, as_json, stream):
        self.root = root
        self.probabilities = probabilities
        self.as_json = as_json
        self.write = stream
        self.width = max(len(self.name(path)) for path in paths)
        self.per_class = [0] * config.NUM_CLASSES
        self.failures = []
        if probabilities and not as_json:
            self.write(
                f"{'file':<{self.width}}  class  probability  "
                + " ".join(f"{digit:>7}" for digit in range(config.NUM_CLASSES))
            )

    def text(self, value):
        return printable(value) if self.as_json else one_line(value)

    def name(self, path):
        return self.text(str(path.relative_to(self.root)) if self.root else path.name)

    def add(self, result):
        name = self.name(result.path)
        if result.error is not None:
            error = self.text(result.error)
            self.failures.append((name, error))
            if self.as_json:
                self.write(orjson.dumps({"file": name, "error": error}).decode())
            else:
                self.write(f"{name:<{self.width}}  failed: {error}")
            return
        self.per_class[result.digit] += 1
        if self.as_json:
            record = {"file": name, "class": result.digit, "probability": result.probability}
            if self.probabilities:
                record["probabilities"] = [float(value) for value in result.probabilities]
            self.write(orjson.dumps(record).decode())
        elif self.probabilities:
            self.write(
                f"{name:<{self.width}}  {result.digit:>5}  {result.probability:>11.2%}  "
                + " ".join(f"{value:>7.2%}" for value in result.probabilities)
            )
        else:
            self.write(f"{name:<{self.width}}  {result.digit}  ({result.probability:.2%})")

    def summary(self):
        classified = sum(self.per_class)
        lines = [
            f"{classified + len(self.failures)} images: {classified} classified, "
            f"{len(self.failures)} failed",
            "per class: "
            + "  ".join(f"{digit}:{count}" for digit, count in enumerate(self.per_class)),
        ]
        lines += [f"failed: {name} ({error})" for name, error in self.failures]
        return "\n".join(lines)


def classify(arguments, paths):
    from mnist_serving import client

    with client.ServingClient(
        arguments.server,
        arguments.model_name,
        version=arguments.model_version,
        label=arguments.model_label,
        timeout=arguments.timeout,
        max_answer_bytes=arguments.max_answer_size,
        protocol=arguments.protocol,
    ) as serving:
        return classify_and_report(serving, arguments, paths)


def classify_and_report(serving, arguments, paths):
    """Classifies `paths` through an open client, printing each result; returns the exit status."""
    from tqdm import tqdm

    if arguments.wait > 0:
        serving.wait_until_available(arguments.wait)
    signature = serving.signature(arguments.signature)

    root = arguments.input if arguments.input.is_dir() else None
    progress = tqdm(
        total=len(paths),
        unit="image",
        file=sys.stderr,
        disable=True if len(paths) <= PROGRESS_BAR_THRESHOLD else None,
        leave=False,
    )

    def write(line):
        # Above the progress bar when there is one, so the two do not mix.
        if progress.disable:
            print(line)
        else:
            tqdm.write(line, file=sys.stdout)

    report = Report(root, paths, arguments.probabilities, arguments.json, write)
    results = serving.classify_files(
        paths,
        signature,
        arguments.batch_size,
        max_file_bytes=arguments.max_file_size,
        max_pixels=arguments.max_pixels,
    )
    with progress:
        for result in results:
            report.add(result)
            progress.update()
    if root is not None or len(paths) > 1:
        print(report.summary(), file=sys.stderr if arguments.json else sys.stdout)
    return SOME_FAILED if report.failures else ALL_CLASSIFIED


def main(argv=None):
    arguments = parse_arguments(argv)
    # A terminal that cannot show a character gets '?', not a traceback.
    sys.stdout.reconfigure(errors="replace")
    if not arguments.input.exists():
        print(
            f"serving_request.py: error: no such file or folder: {arguments.input}", file=sys.stderr
        )
        return USAGE_ERROR
    paths = list_images(arguments.input, arguments.recursive)
    if not paths:
        print(f"serving_request.py: error: no files in {arguments.input}", file=sys.stderr)
        return USAGE_ERROR

    from mnist_serving.client import ClientError

    try:
        return classify(arguments, paths)
    except ClientError as error:
        print(f"serving_request.py: error: {error}", file=sys.stderr)
        return SOME_FAILED
    except KeyboardInterrupt:
        print("serving_request.py: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
