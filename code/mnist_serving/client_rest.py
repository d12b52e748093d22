"""The client's REST transport: TensorFlow Serving's HTTP/JSON API, through aiohttp.

Images travel as JSON: float32 pixels as nested lists, or PNG files as
`{"b64": ...}` for `predict_png`. Every request is bounded: `timeout` is a
deadline for the whole request (connecting, sending, and reading the whole
answer), however slowly a server answers, and an answer larger than
`max_answer_bytes` is refused while it streams in, never read whole. aiohttp's
total timeout is such a deadline (requests and urllib3 time each read of the
socket instead); it runs on an event loop in a thread of its own, behind a
blocking interface.
"""

import asyncio
import base64
import threading
import urllib.parse

import aiohttp
import numpy as np
import orjson

from mnist_serving.client import (
    ClientError,
    Signature,
    SignatureDefinition,
    answer_too_large,
    server_error,
    timed_out,
    unexpected_answer,
    unreachable,
)

# Answers are read in pieces of this size, and counted as they come.
_READ_CHUNK_BYTES = 64 * 1024


class RestTransport:
    """Calls one model (and optionally one version or label) over REST.

    Args:
        server: Where TensorFlow Serving's REST API answers (`http://host:port`).
        model_name: The served model's name.
        version: A version number to pin, or None for the served default.
        label: A version label (e.g. `stable`) instead of a version.
        timeout: Seconds for each whole request, the answer read in full.
        connections: HTTP connections kept open, one per request in flight.
        max_answer_bytes: The largest answer read; a larger one is refused.
    """

    protocol = "REST"

    def __init__(self, server, model_name, version, label, timeout, connections, max_answer_bytes):
        self.server = server.rstrip("/")
        self.timeout = timeout
        self.max_answer_bytes = max_answer_bytes
        path = f"/v1/models/{urllib.parse.quote(model_name, safe='')}"
        if version is not None:
            path += f"/versions/{version}"
        elif label is not None:
            path += f"/labels/{urllib.parse.quote(label, safe='')}"
        self.model_url = self.server + path
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

    def close(self) -> None:
        """Closes the connections and stops the client's thread."""
        if self._loop.is_closed():
            return
        self._run(self._session.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    async def _fetch(self, method, url, body):
        """(status, answer bytes), the answer refused past `max_answer_bytes`."""
        headers = {"Content-Type": "application/json"} if body is not None else None
        async with self._session.request(method, url, data=body, headers=headers) as response:
            declared = response.content_length
            if declared is not None and declared > self.max_answer_bytes:
                raise answer_too_large(url, self.max_answer_bytes, declared)
            answer = bytearray()
            async for chunk in response.content.iter_chunked(_READ_CHUNK_BYTES):
                answer += chunk
                if len(answer) > self.max_answer_bytes:
                    raise answer_too_large(url, self.max_answer_bytes)
            return response.status, answer

    def _request(self, method, url, body=None):
        try:
            status, content = self._run(self._fetch(method, url, body))
        except TimeoutError:
            raise timed_out(self.server, self.timeout) from None
        except aiohttp.ClientConnectorError as error:
            raise unreachable(self.server, _reason(error)) from None
        except aiohttp.ClientError as error:
            reason = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
            raise ClientError(f"no usable answer from {url}: {reason}") from None
        try:
            answer = orjson.loads(content)
        except orjson.JSONDecodeError:
            raise ClientError(
                f"{url} answered HTTP {status} without JSON: is "
                f"{self.server} a TensorFlow Serving REST API?"
            ) from None
        if status != 200:
            message = answer.get("error") if isinstance(answer, dict) else None
            raise server_error(f"HTTP {status}", message or answer)
        return answer

    def version_states(self) -> list[str]:
        """The state of each version of the model (`AVAILABLE`, `LOADING`, ...)."""
        answer = self._request("GET", self.model_url)
        try:
            return [entry["state"] for entry in answer["model_version_status"]]
        except (KeyError, TypeError):
            raise unexpected_answer("status", self.server, self.protocol) from None

    def signatures(self) -> dict[str, SignatureDefinition]:
        """The model's signatures, from its metadata."""
        metadata = self._request("GET", self.model_url + "/metadata")
        try:
            signatures = metadata["metadata"]["signature_def"]["signature_def"]
            return {
                name: SignatureDefinition(
                    inputs={alias: info["dtype"] for alias, info in signature["inputs"].items()},
                    outputs=list(signature["outputs"]),
                )
                for name, signature in signatures.items()
            }
        except (KeyError, TypeError, AttributeError):
            raise unexpected_answer("metadata", self.server, self.protocol) from None

    def predict(self, signature: Signature, inputs: np.ndarray | list[bytes]) -> np.ndarray:
        """The probabilities the signature gives for float32 images or PNG files."""
        if signature.takes_png:
            values = [{"b64": base64.b64encode(png).decode("ascii")} for png in inputs]
        else:
            values = inputs
        body = orjson.dumps(
            {"signature_name": signature.name, "inputs": {signature.input_name: values}},
            option=orjson.OPT_SERIALIZE_NUMPY,
        )
        answer = self._request("POST", self.model_url + ":predict", body)
        try:
            outputs = answer["outputs"]
            if signature.probabilities_output is not None:
                outputs = outputs[signature.probabilities_output]
            return np.asarray(outputs, dtype=np.float32)
        except (KeyError, TypeError, ValueError):
            raise unexpected_answer("predict", self.server, self.protocol) from None


def _reason(error):
    """'connection refused' and the like, from an aiohttp ClientConnectorError."""
    if isinstance(error, aiohttp.ClientConnectorDNSError):
        return "unknown host"
    cause = getattr(error, "os_error", None)
    if isinstance(cause, ConnectionRefusedError):
        return "connection refused"
    text = getattr(cause, "strerror", None) or str(error) or type(error).__name__
    return text.splitlines()[0][:200]
