"""The server's two error types: a failed request or load, and a bad configuration.

Every failure the server reports to a client carries one of TensorFlow's
status codes (`INVALID_ARGUMENT`, `NOT_FOUND`, ...). The REST transport maps
the code to an HTTP status exactly as TF Serving's `ToHTTPStatusCode` does,
and TensorFlow runtime errors keep their own code and the first lines of
their message. Flags and files that cannot work raise `ConfigError`, which
`model_server.py` prints as one line.
"""

import re

# TensorFlow's status code names by number (tensorflow/core/protobuf/error_codes.proto).
CODE_NAMES = {
    0: "OK",
    1: "CANCELLED",
    2: "UNKNOWN",
    3: "INVALID_ARGUMENT",
    4: "DEADLINE_EXCEEDED",
    5: "NOT_FOUND",
    6: "ALREADY_EXISTS",
    7: "PERMISSION_DENIED",
    8: "RESOURCE_EXHAUSTED",
    9: "FAILED_PRECONDITION",
    10: "ABORTED",
    11: "OUT_OF_RANGE",
    12: "UNIMPLEMENTED",
    13: "INTERNAL",
    14: "UNAVAILABLE",
    15: "DATA_LOSS",
    16: "UNAUTHENTICATED",
}
CODE_NUMBERS = {name: number for number, name in CODE_NAMES.items()}

# TF Serving's ToHTTPStatusCode (model_servers/http_server.cc).
HTTP_STATUS = {
    "OK": 200,
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
    "UNAUTHENTICATED": 401,
}


class ConfigError(Exception):
    """Flags or configuration files the server cannot work with; the message is one line."""


class ServingError(Exception):
    """A failed request or load: TensorFlow status code name and message."""

    def __init__(self, code: str, message: str, http_status: int | None = None):
        """An error of status `code`; `http_status` overrides TF Serving's mapping of it."""
        super().__init__(message)
        self.code = code
        self.message = message
        self._http_status = http_status

    @property
    def http_status(self) -> int:
        """The HTTP status TF Serving answers with for this code."""
        return self._http_status or HTTP_STATUS.get(self.code, 500)

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


# Lines TensorFlow adds around an op's message that TF Serving never shows.
_NOISE_LINES = re.compile(
    r"^(Graph execution error:|Detected at node .*|<stack traces unavailable>|\s*File .*|\s*)$"
)
_OP_SUFFIX = re.compile(r"\s*\[Op:[^\]]*\]\s*$")
# At most this many lines of a runtime error reach the client.
MAX_ERROR_LINES = 2


def from_tensorflow_error(error: Exception) -> ServingError:
    """A ServingError from an exception raised while running a model.

    TensorFlow's `OpError`s keep their status code; the Python-side errors a
    signature call can raise (bad argument types or shapes) are
    INVALID_ARGUMENT. Only the first meaningful lines of the message are
    kept: never a Python traceback.
    """
    import tensorflow as tf

    if isinstance(error, tf.errors.OpError):
        code = CODE_NAMES.get(error.error_code, "UNKNOWN")
        text = error.message or str(error)
    elif isinstance(error, TypeError | ValueError):
        code = "INVALID_ARGUMENT"
        text = str(error)
    else:
        code = "INTERNAL"
        text = f"{type(error).__name__}: {error}"
    return ServingError(code, first_lines(text) or type(error).__name__)


def first_lines(text: str, limit: int = MAX_ERROR_LINES) -> str:
    """The first `limit` lines of an error message that carry information."""
    lines = [line.rstrip() for line in str(text).splitlines()]
    kept = [line for line in lines if not _NOISE_LINES.match(line)][:limit]
    if kept:
        kept[-1] = _OP_SUFFIX.sub("", kept[-1])
    return "\n".join(kept).strip()
