"""A client of TensorFlow Serving for the digit classifier, over REST or gRPC.

It speaks only the documented APIs, so it works the same against TensorFlow
Serving in Docker and against `model_server.py`. Images are preprocessed
here, with `preprocessing`, and sent in batches: a few requests in flight at
once, each carrying many images. With the `predict_png` signature an image
travels as a ~300-byte PNG instead of 3 KB of float32 (9 KB as JSON).

`ServingClient` is the one interface; the protocol is a transport chosen
once, when the client is made: `client_rest.RestTransport` (HTTP/JSON,
aiohttp) or `client_grpc.GrpcTransport` (tensorflow-serving-api's stubs,
TensorProtos). Every request is bounded either way: `timeout` is a deadline
for the whole request, answer included, and an answer larger than
`max_answer_bytes` is refused as it arrives, never read whole.
"""

import concurrent.futures
import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from mnist_serving import config, data, preprocessing


class ClientError(Exception):
    """A request could not be answered; the message is one line for the user."""


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of an MNIST-form image (uint8, 28 x 28), as `predict_png` takes them.

    PNG is lossless: the server decodes exactly the pixels sent.
    """
    ok, encoded = cv2.imencode(".png", np.asarray(image, dtype=np.uint8))
    if not ok:
        raise ClientError("OpenCV could not encode the image as PNG")
    return encoded.tobytes()


@dataclasses.dataclass(frozen=True)
class Signature:
    """What the client needs to know of a signature to call it."""

    name: str
    input_name: str
    takes_png: bool
    probabilities_output: str | None  # None when the probabilities are the only output.


@dataclasses.dataclass(frozen=True)
class SignatureDefinition:
    """A signature as a model's metadata describes it: input dtypes, output names."""

    inputs: dict[str, str]  # alias -> dtype name, e.g. DT_FLOAT
    outputs: list[str]


class Transport(Protocol):
    """What `ServingClient` needs of a protocol (`client_rest`, `client_grpc`).

    Every method raises ClientError, with one line for the user, when the
    server cannot answer or answers with an error.
    """

    server: str

    def version_states(self) -> list[str]: ...

    def signatures(self) -> dict[str, SignatureDefinition]: ...

    def predict(self, signature: Signature, inputs: np.ndarray | list[bytes]) -> np.ndarray: ...

    def close(self) -> None: ...


@dataclasses.dataclass
class Result:
    """The classification of one file, or why it failed."""

    path: Path
    probabilities: np.ndarray | None = None
    error: str | None = None

    @property
    def digit(self) -> int:
        return int(self.probabilities.argmax())

    @property
    def probability(self) -> float:
        return float(self.probabilities.max())


class ServingClient:
    """Calls one model (and optionally one version or label) on a server.

    Close it (or use it in a `with` block) to end its connections.

    Args:
        server: Where the server answers: a URL for REST
            (`http://localhost:8501`), `host:port` for gRPC (`localhost:8500`);
            the protocol's default port on localhost when None.
        model_name: The served model's name.
        version: A version number to pin, or None for the served default.
        label: A version label (e.g. `stable`) instead of a version.
        timeout: Seconds for each whole request, the answer read in full.
        connections: HTTP connections kept open, one per request in flight
            (REST; gRPC multiplexes its requests on one connection).
        max_answer_bytes: The largest answer read; a larger one is refused.
        protocol: `rest` or `grpc`.
    """

    def __init__(
        self,
        server=None,
        model_name=config.MODEL_NAME,
        version=None,
        label=None,
        timeout=config.REQUEST_TIMEOUT_SECONDS,
        connections=4,
        max_answer_bytes=config.MAX_ANSWER_BYTES,
        protocol="rest",
    ):
        if version is not None and label is not None:
            raise ValueError("give a version or a label, not both")
        if protocol not in config.PROTOCOLS:
            raise ValueError(f"protocol must be one of {config.PROTOCOLS}, not {protocol!r}")
        server = server or config.DEFAULT_SERVERS[protocol]
        self.model_name = model_name
        # Imported here: a REST client never loads gRPC, nor a gRPC client aiohttp.
        if protocol == "grpc":
            from mnist_serving.client_grpc import GrpcTransport

            self.transport: Transport = GrpcTransport(
                server, model_name, version, label, timeout, max_answer_bytes
            )
        else:
            from mnist_serving.client_rest import RestTransport

            self.transport = RestTransport(
                server, model_name, version, label, timeout, connections, max_answer_bytes
            )

    def close(self):
        """Closes the transport's connections."""
        self.transport.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def wait_until_available(self, seconds: float, poll_interval: float = 0.5) -> None:
        """Waits until the model (or the pinned version) is AVAILABLE.

        Useful right after starting a server, which loads models before it
        answers. Raises ClientError with the last problem after `seconds`.
        """
        deadline = time.monotonic() + seconds
        while True:
            try:
                states = self.transport.version_states()
                if "AVAILABLE" in states:
                    return
                problem = f"model '{self.model_name}' is not AVAILABLE yet ({', '.join(states)})"
            except ClientError as error:
                problem = str(error)
            if time.monotonic() >= deadline:
                raise ClientError(f"waited {seconds:g} s: {problem}")
            time.sleep(poll_interval)

    def signature(self, name: str | None = None) -> Signature:
        """Looks up a signature in the model's metadata.

        Args:
            name: A signature name; by default `predict_png` when the model has
                it (compact requests), else `serving_default`.

        Raises:
            ClientError: Unknown model or version, or no such signature.
        """
        signatures = self.transport.signatures()
        if name is None:
            name = (
                config.PNG_SIGNATURE
                if config.PNG_SIGNATURE in signatures
                else config.DEFAULT_SIGNATURE
            )
        if name not in signatures:
            available = ", ".join(sorted(key for key in signatures if not key.startswith("__")))
            raise ClientError(
                f"model '{self.model_name}' has no signature '{name}' (it has: {available})"
            )
        inputs, outputs = signatures[name].inputs, signatures[name].outputs
        if len(inputs) != 1:
            raise ClientError(f"signature '{name}' takes {len(inputs)} inputs; expected one image")
        [(input_name, dtype)] = inputs.items()
        if dtype not in ("DT_STRING", "DT_FLOAT"):
            raise ClientError(f"signature '{name}' takes {dtype}, not images")
        if config.PROBABILITIES_OUTPUT in outputs:
            probabilities_output = config.PROBABILITIES_OUTPUT
        elif len(outputs) == 1:
            probabilities_output = None
        else:
            raise ClientError(f"signature '{name}' has no '{config.PROBABILITIES_OUTPUT}' output")
        return Signature(name, input_name, dtype == "DT_STRING", probabilities_output)

    def predict(self, signature: Signature, images: np.ndarray) -> np.ndarray:
        """Classifies MNIST-form images (uint8, N x 28 x 28) in one request.

        Returns:
            float32 probabilities, N x 10.
        """
        if signature.takes_png:
            inputs = [encode_png(image) for image in images]
        else:
            inputs = data.to_model_input(images)
        probabilities = self.transport.predict(signature, inputs)
        if probabilities.shape != (len(images), config.NUM_CLASSES):
            raise ClientError(
                f"expected {len(images)} x {config.NUM_CLASSES} probabilities, "
                f"got shape {probabilities.shape}"
            )
        return probabilities.astype(np.float32, copy=False)

    def classify_files(
        self,
        paths: list[Path],
        signature: Signature,
        batch_size: int = 64,
        requests_in_flight: int = 3,
        max_file_bytes: int = config.MAX_FILE_BYTES,
        max_pixels: int = config.MAX_IMAGE_PIXELS,
    ) -> Iterator[Result]:
        """Classifies image files, yielding a `Result` per file, in order.

        Files are read and preprocessed here while earlier batches are at the
        server. A file that cannot be read, is over `max_file_bytes` or
        `max_pixels` (checked before it is read whole or decoded), or holds
        no digit gives a `Result` with an error, and the others go on; a
        server error stops the run.
        """
        paths = list(paths)
        with concurrent.futures.ThreadPoolExecutor(requests_in_flight) as pool:
            pending = []
            for start in range(0, len(paths), batch_size):
                results, images = [], []
                for path in paths[start : start + batch_size]:
                    try:
                        images.append(
                            preprocessing.preprocess_file(path, max_file_bytes, max_pixels)
                        )
                        results.append(Result(path))
                    except preprocessing.PreprocessingError as error:
                        results.append(Result(path, error=str(error)))
                future = pool.submit(self.predict, signature, images) if images else None
                pending.append((results, future))
                # Keep a bounded number of batches ahead of the answers.
                while len(pending) > requests_in_flight:
                    yield from _collect(*pending.pop(0))
            for results, future in pending:
                yield from _collect(results, future)


def _collect(results, future):
    probabilities = iter(future.result() if future is not None else [])
    for result in results:
        if result.error is None:
            result.probabilities = next(probabilities)
        yield result


# The one-line errors both transports give, worded alike.


def unreachable(server: str, reason: str) -> ClientError:
    """No connection to the server (`reason`: connection refused, unknown host, ...)."""
    return ClientError(
        f"cannot reach the model server at {server} ({reason}); "
        "start code/model_server.py ('make serve') or TensorFlow Serving in Docker "
        "('docker compose up'), see Instructions.md"
    )


def timed_out(server: str, timeout: float) -> ClientError:
    """No complete answer within the request's deadline."""
    return ClientError(f"no complete answer from {server} within {timeout:g} s (--timeout)")


def answer_too_large(source: str, limit: int, size: int | None = None) -> ClientError:
    """An answer over `max_answer_bytes` (its size, when the server declared it)."""
    of_size = f"of {size:,} bytes " if size is not None else ""
    return ClientError(
        f"the answer {of_size}from {source} is larger than the limit of "
        f"{limit:,} bytes (--max-answer-size)"
    )


def server_error(status: str, message: object) -> ClientError:
    """The server's own error: `HTTP 404` or `NOT_FOUND`, and its message."""
    return ClientError(f"the model server answered {status}: {message}")


def unexpected_answer(request: str, server: str, protocol: str) -> ClientError:
    """An answer that is not TensorFlow Serving's."""
    return ClientError(
        f"the {request} answer of {server} is not TensorFlow Serving's: "
        f"is --server the {protocol} API of a model server?"
    )
