"""TF Serving's REST request and response bodies: parsing JSON, writing predictions.

Request bodies are parsed as TF Serving's rapidjson settings parse them (NaN
and Infinity tokens accepted, bytes after a complete document ignored);
responses carry TF Serving's keys and its number formatting (6 significant
digits when they read back exactly, else 9 for float32 and 17 for float64),
written compactly: the values are TF Serving's, the whitespace is not.

Speed matters on the happy path (a request of 64 MNIST images is a 1 MB
JSON document): a body that is one dense array of numbers is read without
building a Python object per row (`parse_dense_request`).

Memory is bounded before parsing: a JSON value becomes a Python object of 30
to 80 bytes, so a body's values are counted first (`check_json_values`).
Numbers of any length are read as rapidjson reads them: integers that do not
fit 64 bits become doubles, and a number beyond a double's range is a parse
error, never a Python int of thousands of digits.
"""

import base64
import json
import math
import re

import numpy as np
import orjson

from mnist_serving.serving.json_tensors import (
    BASE64_KEY,
    BYTES_SUFFIX,
    COLUMNAR_FORMAT,
    ERROR_KEY,
    FLOAT_TYPES,
    INSTANCES_KEY,
    MAX_TENSOR_RANK,
    NUMPY_DTYPES,
    OUTPUTS_KEY,
    PREDICTIONS_KEY,
    ROW_FORMAT,
    invalid_argument,
    predict_request_to_tensors,
    read_signature_name,
)
from mnist_serving.serving.json_text import format_floats, json_string
from mnist_serving.text import printable

# ---------------------------------------------------------------------------
# Request bodies
# ---------------------------------------------------------------------------

# A JSON string literal, or one of rapidjson's spellings of non-finite numbers
# that Python's json module does not take (`Inf`, `-Inf`, `-NaN`).
_STRING_OR_SPECIAL_NUMBER = re.compile(r'"(?:[^"\\]|\\.)*"|(-?)(Inf|NaN)\b')


def _python_spelling(match: re.Match) -> str:
    if match.group(2) is None:
        return match.group(0)  # A string literal: left alone.
    return "NaN" if match.group(2) == "NaN" else match.group(1) + "Infinity"


def check_json_values(body: bytes, limit: int) -> None:
    """Refuses a body of more than `limit` JSON values, before it is parsed.

    The values are counted from the body's commas and opening brackets: an
    upper bound (a comma inside a string counts too), taken at memory speed.

    Raises:
        ServingError: INVALID_ARGUMENT naming the limit and its flag.
    """
    values = body.count(b",") + body.count(b"[") + body.count(b"{") + 1
    if values > limit:
        raise invalid_argument(
            f"The JSON body holds up to {values:,} values (counted from its commas and "
            f"brackets): more than the limit of {limit:,} (--rest_api_max_json_values)"
        )


class _NumberTooBigError(ValueError):
    """A JSON number beyond a double's range (rapidjson's kParseErrorNumberTooBig)."""


# JSON integers rapidjson keeps as integers: those that fit int64 or uint64.
_SMALLEST_INTEGER = -(2**63)
_LARGEST_INTEGER = 2**64 - 1


def _json_double(literal: str) -> float:
    value = float(literal)
    if math.isinf(value):
        raise _NumberTooBigError(literal)
    return value


def _json_integer(literal: str) -> int | float:
    # 20 characters hold any 64-bit integer; longer ones are not converted to
    # int at all (Python refuses more than 4,300 digits).
    if len(literal) <= 20:
        value = int(literal)
        if _SMALLEST_INTEGER <= value <= _LARGEST_INTEGER:
            return value
    return _json_double(literal)


def parse_json(body: bytes):
    """Parses a request body the way TF Serving's rapidjson settings do.

    NaN, Inf, Infinity and their negatives are accepted and bytes after a
    complete document are ignored. orjson parses the usual body; Python's
    json module takes the rest. Errors keep TF Serving's leading words
    (`JSON Parse error: `), with Python's reason and offset.

    Returns:
        The parsed document (any JSON value; callers check it is an object).

    Raises:
        ServingError: INVALID_ARGUMENT with `JSON Parse error: ...`.
    """
    if not body:
        raise invalid_argument("JSON Parse error: The document is empty")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass  # NaN tokens, trailing bytes or deep nesting: the slower parser below.
    text = _STRING_OR_SPECIAL_NUMBER.sub(_python_spelling, body.decode("utf-8", "surrogateescape"))
    start = len(text) - len(text.lstrip(" \t\n\r"))
    if start == len(text):
        raise invalid_argument("JSON Parse error: The document is empty")
    decoder = json.JSONDecoder(parse_float=_json_double, parse_int=_json_integer)
    try:
        document, _ = decoder.raw_decode(text, start)
    except json.JSONDecodeError as error:
        raise invalid_argument(f"JSON Parse error: {error.msg} at offset: {error.pos}") from None
    except _NumberTooBigError as error:
        literal = str(error)
        if len(literal) > 24:
            literal = f"{literal[:20]}... ({len(literal):,} characters)"
        raise invalid_argument(
            f"JSON Parse error: Number too big to be stored in double: {literal}"
        ) from None
    except RecursionError:
        raise invalid_argument("JSON Parse error: The document is nested too deeply") from None
    return document


class PredictBody:
    """A `:predict` body, read as far as the signature name (before the model is looked up).

    TF Serving parses the body before it looks up the model, so malformed
    JSON is a 400 even for an unknown model. Bodies that are one dense array
    of numbers skip the general parse altogether.
    """

    def __init__(self, body: bytes):
        """Reads the body.

        Raises:
            ServingError: The body is not JSON, or its signature name is not a string.
        """
        self.body = body
        self.dense = parse_dense_request(body)
        if self.dense is not None:
            self.document = None
            self.signature_name = self.dense.signature_name
        else:
            self.document = parse_json(body)
            self.signature_name = read_signature_name(self.document)

    def tensors(self, input_dtypes: dict[str, int]) -> tuple[dict[str, np.ndarray], str]:
        """The input tensors for a signature's inputs, and the request format.

        Raises:
            ServingError: TF Serving's message for every malformed request.
        """
        if self.dense is not None and len(input_dtypes) == 1:
            ((name, dtype),) = input_dtypes.items()
            if dtype in FLOAT_TYPES:
                return {name: self.dense.tensor(dtype)}, self.dense.request_format
        if self.document is None:
            self.document = parse_json(self.body)
        # numpy would read a stray boolean as 0 or 1: without any, numbers take the fast path.
        mentions_booleans = b"true" in self.body or b"false" in self.body
        return predict_request_to_tensors(self.document, input_dtypes, mentions_booleans)


# ---------------------------------------------------------------------------
# The dense numeric fast path
# ---------------------------------------------------------------------------

# `{"signature_name": "...", "instances": [` (signature optional) at the start
# of a body, and `], "signature_name": "..."}` at its end.
_DENSE_HEAD = re.compile(
    rb'\s*\{\s*(?:"signature_name"\s*:\s*"([^"\\]*)"\s*,\s*)?"(instances|inputs)"\s*:\s*\['
)
_DENSE_TAIL = re.compile(rb'\]\s*(?:,\s*"signature_name"\s*:\s*"([^"\\]*)"\s*)?\}\s*\Z')
_NUMBER_BYTES = b"0123456789.eE+-"
_TAIL_WINDOW = 4096


class DenseRequest:
    """A predict body that is one dense array of plain numbers.

    Found without building a Python list per row: the structure of the
    array (brackets and commas only) is checked to be regular with numpy,
    then the numbers are parsed as one flat list. That is 3-4 times faster
    than parsing a 1 MB body of images the general way.
    """

    def __init__(self, signature_name: str, key: str, values: list, dims: list[int]):
        self.signature_name = signature_name
        self.key = key
        self.values = values
        self.dims = dims

    @property
    def request_format(self) -> str:
        """ROW_FORMAT for `instances`, COLUMNAR_FORMAT for `inputs`."""
        return ROW_FORMAT if self.key == INSTANCES_KEY else COLUMNAR_FORMAT

    def tensor(self, dtype: int) -> np.ndarray:
        """The numbers as a tensor of a float dtype (any JSON number is a valid float)."""
        with np.errstate(over="ignore"):
            return np.array(self.values, dtype=NUMPY_DTYPES[dtype]).reshape(self.dims)


def parse_dense_request(body: bytes) -> "DenseRequest | None":
    """A DenseRequest when the body is `{"instances"|"inputs": <dense numbers>}`, else None.

    `signature_name` may come first or last. Anything else (other keys,
    strings, booleans, NaN, ragged or empty lists, invalid numbers, trailing
    bytes) returns None, and the body then takes the general, faithful path:
    whatever this accepts, that path would accept with the same meaning.
    """
    head = _DENSE_HEAD.match(body)
    if head is None:
        return None
    start = max(head.end(), len(body) - _TAIL_WINDOW)
    tail = _DENSE_TAIL.search(body, start)
    if tail is None or (head.group(1) is not None and tail.group(1) is not None):
        return None
    compact = body[head.end() - 1 : tail.start() + 1].translate(None, b" \t\n\r")
    skeleton = compact.translate(None, _NUMBER_BYTES)
    if skeleton.translate(None, b"[],"):
        return None
    codes = np.frombuffer(compact, dtype=np.uint8)
    # Numbers and lists must be separated by commas: `]` is followed by `,`
    # or `]`, and `[` preceded by `[` or `,`.
    after_close = codes[1:][codes[:-1] == ord("]")]
    before_open = codes[:-1][codes[1:] == ord("[")]
    if np.any((after_close != ord(",")) & (after_close != ord("]"))) or np.any(
        (before_open != ord(",")) & (before_open != ord("["))
    ):
        return None
    dims = _regular_dims(skeleton)
    if dims is None:
        return None
    try:
        values = orjson.loads(b"[" + compact.translate(None, b"[]") + b"]")
    except orjson.JSONDecodeError:
        return None
    if len(values) != math.prod(dims):
        return None
    name = head.group(1) if head.group(1) is not None else tail.group(1)
    signature_name = name.decode("utf-8", "surrogateescape") if name is not None else ""
    return DenseRequest(signature_name, head.group(2).decode(), values, dims)


def _regular_dims(skeleton):
    """The shape of a nested list from its brackets and commas, if it is regular.

    In a regular array of shape (n1, ..., nr), the commas at nesting depth d
    number n1 * ... * n(d-1) * (nd - 1); the shape found that way is then
    confirmed by rebuilding the skeleton it implies.
    """
    rank = len(skeleton) - len(skeleton.lstrip(b"["))
    if not 0 < rank <= MAX_TENSOR_RANK:
        return None
    codes = np.frombuffer(skeleton, dtype=np.uint8)
    depth = np.cumsum((codes == ord("[")).astype(np.int64) - (codes == ord("]")))
    counts = np.bincount(depth[codes == ord(",")], minlength=rank + 1)
    if len(counts) > rank + 1:
        return None
    dims = []
    product = 1
    for level in range(1, rank + 1):
        commas = int(counts[level])
        if commas % product:
            return None
        size = commas // product + 1
        dims.append(size)
        product *= size
    expected = b""
    for size in reversed(dims):
        expected = b"[" + b",".join([expected] * size) + b"]"
    return dims if expected == skeleton else None


def _leaf_texts(name: str, array: np.ndarray) -> list[str]:
    """The JSON text of every element of an output tensor, flat, in C order."""
    dtype = array.dtype
    flat = array.reshape(-1)
    if dtype == np.float32 or dtype == np.float64:
        return format_floats(flat)
    if dtype.kind in "iu":
        return [str(value) for value in flat.tolist()]
    if dtype == np.bool_:
        return ["true" if value else "false" for value in flat.tolist()]
    if dtype.kind in "OSU":
        # String outputs whose alias ends in _bytes are binary: {"b64": ...}.
        as_bytes = name.endswith(BYTES_SUFFIX)
        texts = []
        for value in flat.tolist():
            raw = value if isinstance(value, bytes) else str(value).encode("utf-8")
            if as_bytes:
                encoded = base64.b64encode(raw).decode("ascii")
                texts.append(f'{{"{BASE64_KEY}": "{encoded}"}}')
            else:
                texts.append(json_string(raw.decode("utf-8", "surrogateescape")))
        return texts
    names = {"float16": "half", "complex64": "complex64", "complex128": "complex128"}
    raise invalid_argument(
        f"Failed to write JSON value for tensor type: {names.get(dtype.name, dtype.name)}"
    )


def _nest(texts: list[str], shape: tuple[int, ...]) -> str:
    """The nested JSON arrays of a tensor of `shape` from its leaves' texts (C order)."""
    items = texts
    for depth in range(len(shape) - 1, -1, -1):
        size = shape[depth]
        if size == 0:
            items = ["[]"] * math.prod(shape[:depth])
        else:
            items = [
                "[" + ",".join(items[start : start + size]) + "]"
                for start in range(0, len(items), size)
            ]
    return items[0]


def make_predict_response(outputs: dict[str, np.ndarray], request_format: str) -> bytes:
    """The response body of a predict request, with TF Serving's keys and numbers.

    Args:
        outputs: Output alias -> numpy array.
        request_format: ROW_FORMAT (`instances` -> `predictions`) or
            COLUMNAR_FORMAT (`inputs` -> `outputs`). With one output its
            name is left out, as TF Serving does.

    Raises:
        ServingError: Row format with an output of rank 0 or with outputs of
            different batch sizes, or an output dtype JSON cannot carry.
    """
    if not outputs:
        raise invalid_argument("Cannot convert empty tensor map to JSON")
    names = sorted(outputs)
    texts = {name: _leaf_texts(name, outputs[name]) for name in names}
    if request_format == COLUMNAR_FORMAT:
        values = {name: _nest(texts[name], outputs[name].shape) for name in names}
        key = OUTPUTS_KEY
        body = _object(values) if len(names) > 1 else values[names[0]]
    else:
        key = PREDICTIONS_KEY
        body = "[" + ",".join(_rows(names, outputs, texts)) + "]"
    return _encode('{"' + key + '": ' + body + "}")


def _rows(names: list[str], outputs: dict[str, np.ndarray], texts: dict[str, list[str]]):
    """The JSON text of each instance of a row-format response."""
    batch_size = None
    for name in names:
        shape = outputs[name].shape
        if not shape:
            raise invalid_argument(f"Tensor name: {name} has no shape information ")
        if batch_size is not None and shape[0] != batch_size:
            raise invalid_argument(
                f"Tensor name: {name} has inconsistent batch size: {shape[0]} "
                f"expecting: {batch_size}"
            )
        batch_size = shape[0]
    per_row = {name: math.prod(outputs[name].shape[1:]) for name in names}
    for row in range(batch_size):
        values = {
            name: _nest(
                texts[name][row * per_row[name] : (row + 1) * per_row[name]],
                outputs[name].shape[1:],
            )
            for name in names
        }
        yield _object(values) if len(names) > 1 else values[names[0]]


def _object(values: dict[str, str]) -> str:
    return "{" + ",".join(json_string(name) + ": " + text for name, text in values.items()) + "}"


def make_error_body(message: str) -> bytes:
    """`{"error": "<message>"}`, TF Serving's error body, always valid UTF-8.

    Bytes that were not UTF-8 (in a model name from the URL, or a string of the
    body quoted in the message) become U+FFFD.
    """
    return ('{"' + ERROR_KEY + '": ' + json_string(printable(message)) + "}").encode()


def _encode(text: str) -> bytes:
    # surrogateescape carries raw bytes of string outputs through unchanged.
    return text.encode("utf-8", "surrogateescape")


def status_json(response) -> bytes:
    """A GetModelStatusResponse as TF Serving prints it (protobuf's JSON printer)."""
    from google.protobuf import json_format

    return json_format.MessageToJson(
        response, always_print_fields_with_no_presence=True, indent=1
    ).encode()


def metadata_json(model_name: str, version: int, signature_defs: dict) -> bytes:
    """The metadata answer: `model_spec` and the signature map nested as TF Serving nests it."""
    from google.protobuf import json_format
    from tensorflow_serving.apis import get_model_metadata_pb2, model_pb2

    model_spec = model_pb2.ModelSpec(name=model_name)
    model_spec.version.value = version
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    for key, signature in signature_defs.items():
        signature_map.signature_def[key].CopyFrom(signature)

    def to_dict(message):
        return json_format.MessageToDict(
            message, always_print_fields_with_no_presence=True, preserving_proto_field_name=True
        )

    document = {
        "model_spec": to_dict(model_spec),
        "metadata": {"signature_def": to_dict(signature_map)},
    }
    return orjson.dumps(document, option=orjson.OPT_INDENT_2)
