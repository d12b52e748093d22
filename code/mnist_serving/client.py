"""A client of TensorFlow Serving's REST API for the digit classifier.

It speaks only the documented API, so it works the same against TensorFlow
Serving in Docker and against `model_server.py`. Images are preprocessed
here, with `preprocessing`, and sent in batches: a few requests in flight at
once, each carrying many images. With the `predict_png` signature an image
travels as a ~300-byte PNG (`{"b64": ...}`) instead of ~9 KB of JSON floats.

Every request is bounded: `timeout` is a deadline for the whole request
(connecting, sending, and reading the whole answer), however slowly a server
answers, and an answer larger than `max_answer_bytes` is refused while it
streams in, never read whole. HTTP goes through aiohttp, whose total timeout
is such a deadline (requests and urllib3 time each read of the socket
instead), on an event loop in a thread of its own.
"""

import asyncio
import base64
import concurrent.futures
import dataclasses
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import cv2
import numpy as np
import orjson

from mnist_serving import config, data, preprocessing

# Answers are read in pieces of this size, and counted as they come.
_READ_CHUNK_BYTES = 64 * 1024


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

    Close it (or use it in a `with` block) to end its connections and thread.

    Args:
        server_url: Where TensorFlow Serving's REST API answers.
        model_name: The served model's name.
        version: A version number to pin, or None for the served default.
        label: A version label (e.g. `stable`) instead of a version.
        timeout: Seconds for each whole request, the answer read in full.
        connections: HTTP connections kept open, one per request in flight.
        max_answer_bytes: The largest answer read; a larger one is refused.
    """

    def __init__(
        self,
        server_url=config.DEFAULT_SERVER_URL,
        model_name=config.MODEL_NAME,
        version=None,
        label=None,
        timeout=config.REQUEST_TIMEOUT_SECONDS,
        connections=4,
        max_answer_bytes=config.MAX_ANSWER_BYTES,
    ):
        if version is not None and label is not None:
            raise ValueError("give a version or a label, not both")
        self.server_url = server_url.rstrip("/")
        self.model_name = model_name
        self.timeout = timeout
        self.max_answer_bytes = max_answer_bytes
        path = f"/v1/models/{urllib.parse.quote(model_name, safe='')}"
        if version is not None:
            path += f"/versions/{version}"
        elif label is not None:
            path += f"/labels/{urllib.parse.quote(label, safe='')}"
        self.model_url = self.server_url + path
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="serving-client", daemon=True
        )
        self._thread.start()
        self._session = self._run(self._open_session(connections))

    async def _open_session(self, connections):
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=connections),
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            trust_env=True,  # Proxies and .netrc from the environment, as requests reads them.
        )

    def _run(self, coroutine):
        """Runs a coroutine on the client's event loop; returns its result or raises."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def close(self):
        """Closes the connections and stops the client's thread."""
        if self._loop.is_closed():
            return
        self._run(self._session.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    async def _fetch(self, method, url, body):
        """(status, answer bytes), the answer refused past `max_answer_bytes`."""
        headers = {"Content-Type": "application/json"} if body is not None else None
        async with self._session.request(method, url, data=body, headers=headers) as response:
            declared = response.content_length
            if declared is not None and declared > self.max_answer_bytes:
                raise self._answer_too_large(url, declared)
            answer = bytearray()
            async for chunk in response.content.iter_chunked(_READ_CHUNK_BYTES):
                answer += chunk
                if len(answer) > self.max_answer_bytes:
                    raise self._answer_too_large(url)
            return response.status, answer

    def _request(self, method, url, body=None):
        try:
            status, content = self._run(self._fetch(method, url, body))
        except TimeoutError:
            raise self._timeout_error() from None
        except aiohttp.ClientConnectorError as error:
            raise ClientError(
                f"cannot reach the model server at {self.server_url} ({_reason(error)}); "
                "start code/model_server.py ('make serve') or TensorFlow Serving in Docker "
                "('docker compose up'), see Instructions.md"
            ) from None
        except aiohttp.ClientError as error:
            reason = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
            raise ClientError(f"no usable answer from {url}: {reason}") from None
        try:
            answer = orjson.loads(content)
        except orjson.JSONDecodeError:
            raise ClientError(
                f"{url} answered HTTP {status} without JSON: is "
                f"{self.server_url} a TensorFlow Serving REST API?"
            ) from None
        if status != 200:
            message = answer.get("error") if isinstance(answer, dict) else None
            raise ClientError(f"the model server answered HTTP {status}: {message or answer}")
        return answer

    def _answer_too_large(self, url, declared_bytes=None):
        size = f"of {declared_bytes:,} bytes " if declared_bytes is not None else ""
        return ClientError(
            f"the answer {size}from {url} is larger than the limit of "
            f"{self.max_answer_bytes:,} bytes (--max-answer-size)"
        )

    def _unexpected_answer(self, request):
        return ClientError(
            f"the {request} answer of {self.server_url} is not TensorFlow Serving's: "
            "is --server the REST API of a model server?"
        )

    def _timeout_error(self):
        return ClientError(
            f"no complete answer from {self.server_url} within {self.timeout:g} s (--timeout)"
        )

    def status(self) -> dict:
        """The model's version status, as TensorFlow Serving reports it."""
        return self._request("GET", self.model_url)

    def wait_until_available(self, seconds: float, poll_interval: float = 0.5) -> None:
        """Waits until the model (or the pinned version) is AVAILABLE.

        Useful right after starting a server, which loads models before it
        answers. Raises ClientError with the last problem after `seconds`.
        """
        deadline = time.monotonic() + seconds
        while True:
            try:
                states = [entry["state"] for entry in self.status()["model_version_status"]]
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
        metadata = self._request("GET", self.model_url + "/metadata")
        try:
            signatures = metadata["metadata"]["signature_def"]["signature_def"]
        except (KeyError, TypeError):
            raise self._unexpected_answer("metadata") from None
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
        inputs = signatures[name]["inputs"]
        outputs = signatures[name]["outputs"]
        if len(inputs) != 1:
            raise ClientError(f"signature '{name}' takes {len(inputs)} inputs; expected one image")
        [(input_name, input_info)] = inputs.items()
        if input_info["dtype"] not in ("DT_STRING", "DT_FLOAT"):
            raise ClientError(f"signature '{name}' takes {input_info['dtype']}, not images")
        if config.PROBABILITIES_OUTPUT in outputs:
            probabilities_output = config.PROBABILITIES_OUTPUT
        elif len(outputs) == 1:
            probabilities_output = None
        else:
            raise ClientError(f"signature '{name}' has no '{config.PROBABILITIES_OUTPUT}' output")
        return Signature(name, input_name, input_info["dtype"] == "DT_STRING", probabilities_output)

    def predict(self, signature: Signature, images: np.ndarray) -> np.ndarray:
        """Classifies MNIST-form images (uint8, N x 28 x 28) in one request.

        Returns:
            float32 probabilities, N x 10.
        """
        if signature.takes_png:
            values = [
                {"b64": base64.b64encode(encode_png(image)).decode("ascii")} for image in images
            ]
        else:
            values = data.to_model_input(images)
        body = orjson.dumps(
            {"signature_name": signature.name, "inputs": {signature.input_name: values}},
            option=orjson.OPT_SERIALIZE_NUMPY,
        )
        answer = self._request("POST", self.model_url + ":predict", body)
        try:
            outputs = answer["outputs"]
            if signature.probabilities_output is not None:
                outputs = outputs[signature.probabilities_output]
            probabilities = np.asarray(outputs, dtype=np.float32)
        except (KeyError, TypeError, ValueError):
            raise self._unexpected_answer("predict") from None
        if probabilities.shape != (len(images), config.NUM_CLASSES):
            raise ClientError(
                f"expected {len(images)} x {config.NUM_CLASSES} probabilities, "
                f"got shape {probabilities.shape}"
            )
        return probabilities

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


def _reason(error):
    """'connection refused' and the like, from an aiohttp ClientConnectorError."""
    if isinstance(error, aiohttp.ClientConnectorDNSError):
        return "unknown host"
    cause = getattr(error, "os_error", None)
    if isinstance(cause, ConnectionRefusedError):
        return "connection refused"
    text = getattr(cause, "strerror", None) or str(error) or type(error).__name__
    return text.splitlines()[0][:200]
