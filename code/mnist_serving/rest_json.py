"""JSON <-> tensors for TensorFlow Serving's REST API, with its exact error texts.

TensorFlow Serving parses request bodies with rapidjson, turns them into
tensors checking only input names and dtypes (never declared shapes), and
writes responses with rapidjson's PrettyWriter. This module reproduces that
behaviour: the same accepted inputs, the same error messages, the same number
formatting and the same layout, so that a client cannot tell the servers
apart.

Speed matters on the happy path (a request of 64 MNIST images is a 1 MB
JSON document): a body that is one dense array of numbers is read without
building a Python object per row (`parse_dense_request`), and other parsed
documents (`json_parsing.parse_json`) are converted with one numpy call per
input. Only when those fast paths decline (NaN tokens, mixed types, ragged
lists, ...) does a slower, faithful walk of the document run; it is the one
that produces TensorFlow Serving's error messages.
"""

import base64
import binascii
import math
import re

import numpy as np
import orjson

from mnist_serving.status import ServingError


class DataType:
    """The DataType enum values this module needs (tensorflow/core/framework/types.proto).

    Spelled out so that importing this module does not import TensorFlow.
    """

    DT_FLOAT = 1
    DT_DOUBLE = 2
    DT_INT32 = 3
    DT_UINT8 = 4
    DT_INT16 = 5
    DT_INT8 = 6
    DT_STRING = 7
    DT_INT64 = 9
    DT_BOOL = 10
    DT_UINT32 = 22
    DT_UINT64 = 23


# Request and response keys of TensorFlow Serving's JSON API.
SIGNATURE_KEY = "signature_name"
INSTANCES_KEY = "instances"
INPUTS_KEY = "inputs"
PREDICTIONS_KEY = "predictions"
OUTPUTS_KEY = "outputs"
ERROR_KEY = "error"
BASE64_KEY = "b64"
BYTES_SUFFIX = "_bytes"

# Values quoted in error messages are cut to this many bytes, as TF Serving does.
MAX_DEBUG_STRING_BYTES = 256
# numpy (which holds the tensors) allows no more dimensions than this.
MAX_TENSOR_RANK = 64
# rapidjson's PrettyWriter indents by four spaces.
INDENT = "    "

ROW_FORMAT = "row"
COLUMNAR_FORMAT = "columnar"

_NUMPY_DTYPES = {
    DataType.DT_FLOAT: np.float32,
    DataType.DT_DOUBLE: np.float64,
    DataType.DT_INT32: np.int32,
    DataType.DT_INT16: np.int16,
    DataType.DT_INT8: np.int8,
    DataType.DT_UINT8: np.uint8,
    DataType.DT_INT64: np.int64,
    DataType.DT_UINT32: np.uint32,
    DataType.DT_UINT64: np.uint64,
    DataType.DT_BOOL: np.bool_,
    DataType.DT_STRING: np.object_,
}
_FLOAT_TYPES = (DataType.DT_FLOAT, DataType.DT_DOUBLE)
# The JSON integers each integer dtype accepts: rapidjson's IsInt, IsInt64,
# IsUint and IsUint64. int16, int8 and uint8 take any int32, as in TF Serving.
_INTEGER_RANGES = {
    DataType.DT_INT32: (-(2**31), 2**31 - 1),
    DataType.DT_INT16: (-(2**31), 2**31 - 1),
    DataType.DT_INT8: (-(2**31), 2**31 - 1),
    DataType.DT_UINT8: (-(2**31), 2**31 - 1),
    DataType.DT_INT64: (-(2**63), 2**63 - 1),
    DataType.DT_UINT32: (0, 2**32 - 1),
    DataType.DT_UINT64: (0, 2**64 - 1),
}


def dtype_name(dtype):
    """TensorFlow's name of a DataType enum value (`DataTypeString`): 7 -> 'string'."""
    from tensorflow.core.framework import types_pb2 as tensorflow_types

    try:
        return tensorflow_types.DataType.Name(dtype)[3:].lower()
    except ValueError:
        return f"unknown dtype {dtype}"


def invalid_argument(message):
    """A ServingError with code INVALID_ARGUMENT."""
    return ServingError("INVALID_ARGUMENT", message)


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

    def __init__(self, signature_name, key, values, dims):
        self.signature_name = signature_name
        self.key = key
        self.values = values
        self.dims = dims

    @property
    def request_format(self):
        """ROW_FORMAT for `instances`, COLUMNAR_FORMAT for `inputs`."""
        return ROW_FORMAT if self.key == INSTANCES_KEY else COLUMNAR_FORMAT

    def tensor(self, dtype):
        """The numbers as a tensor of a float dtype (any JSON number is a valid float)."""
        with np.errstate(over="ignore"):
            return np.array(self.values, dtype=_NUMPY_DTYPES[dtype]).reshape(self.dims)


def parse_dense_request(body):
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


# ---------------------------------------------------------------------------
# Writing JSON text as rapidjson does
# ---------------------------------------------------------------------------

_STRING_ESCAPES = {index: f"\\u{index:04X}" for index in range(0x20)}
_STRING_ESCAPES.update(
    {ord("\b"): "\\b", ord("\f"): "\\f", ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"}
)
_STRING_ESCAPES.update({ord('"'): '\\"', ord("\\"): "\\\\"})


def json_string(text):
    """`text` as a JSON string literal, escaped as rapidjson's writer does."""
    return '"' + text.translate(_STRING_ESCAPES) + '"'


def format_decimal(value, double=False):
    """One float as TF Serving writes it (`WriteDecimal`).

    Six significant digits when they read back as the same float32 (or
    float64 when `double`), otherwise 9 (or 17); `.0` appended to integral
    values; NaN and infinities as bare `NaN`, `Infinity`, `-Infinity`.
    """
    return _format_floats(np.array([value], dtype=np.float64 if double else np.float32))[0]


def _format_floats(values):
    """Formats a flat float32 or float64 array; returns a list of strings."""
    if values.size == 0:
        return []
    is_double = values.dtype == np.float64
    wide = values.astype(np.float64)
    finite = np.isfinite(values)
    with np.errstate(invalid="ignore", over="ignore"):
        texts = np.char.mod("%.6g", wide)
        read_back = texts.astype(np.float64)
        if not is_double:
            read_back = read_back.astype(np.float32)
        imprecise = (read_back != values) & finite
        if imprecise.any():
            texts = texts.astype(object)
            texts[imprecise] = np.char.mod("%.17g" if is_double else "%.9g", wide[imprecise])
    result = texts.tolist()
    for index, text in enumerate(result):
        if "." not in text and "e" not in text:
            if finite[index]:
                result[index] = text + ".0"
            elif text == "nan" or text == "-nan":
                result[index] = "NaN"
            else:
                result[index] = "-Infinity" if text.startswith("-") else "Infinity"
    return result


def _leaf_texts(name, array):
    """The JSON text of every element of an output tensor, flat, in C order."""
    dtype = array.dtype
    flat = array.reshape(-1)
    if dtype == np.float32 or dtype == np.float64:
        return _format_floats(flat)
    if dtype.kind in "iu":
        return [str(value) for value in flat.tolist()]
    if dtype == np.bool_:
        return ["true" if value else "false" for value in flat.tolist()]
    if dtype.kind in "OSU":
        as_bytes = name.endswith(BYTES_SUFFIX)
        texts = []
        for value in flat.tolist():
            raw = value if isinstance(value, bytes) else str(value).encode("utf-8")
            if as_bytes:
                texts.append(_B64_OBJECT_MARK + base64.b64encode(raw).decode("ascii"))
            else:
                texts.append(json_string(raw.decode("utf-8", "surrogateescape")))
        return texts
    raise invalid_argument(
        f"Failed to write JSON value for tensor type: {_numpy_dtype_name(dtype)}"
    )


# Marks a leaf that is written as a {"b64": ...} object, which rapidjson lays
# out over several lines even inside a one-line array.
_B64_OBJECT_MARK = "\x00b64:"


def _numpy_dtype_name(dtype):
    names = {"float16": "half", "complex64": "complex64", "complex128": "complex128"}
    return names.get(dtype.name, dtype.name)


def _write_leaf(text, level):
    if text.startswith(_B64_OBJECT_MARK):
        encoded = text[len(_B64_OBJECT_MARK) :]
        return (
            "{\n" + INDENT * (level + 1) + f'"{BASE64_KEY}": "{encoded}"\n' + INDENT * level + "}"
        )
    return text


def _write_tensor(texts, shape, level, one_line, offset=0):
    """Writes the nested arrays of a tensor; returns (text, next offset).

    `level` is the number of JSON containers open around the value, which
    sets the indentation; `one_line` is rapidjson's kFormatSingleLineArray.
    """
    if not shape:
        return _write_leaf(texts[offset], level), offset + 1
    size = shape[0]
    if size == 0:
        return "[]", offset
    parts = []
    for _ in range(size):
        part, offset = _write_tensor(texts, shape[1:], level + 1, one_line, offset)
        parts.append(part)
    if one_line:
        return "[" + ", ".join(parts) + "]", offset
    inner = INDENT * (level + 1)
    return "[\n" + inner + (",\n" + inner).join(parts) + "\n" + INDENT * level + "]", offset


def make_predict_response(outputs, request_format):
    """The response body of a predict request, laid out as TF Serving does.

    Args:
        outputs: Output alias -> numpy array.
        request_format: ROW_FORMAT (`instances` -> `predictions`) or
            COLUMNAR_FORMAT (`inputs` -> `outputs`).

    Returns:
        The body as bytes.

    Raises:
        ServingError: Row format with an output of rank 0 or with outputs of
            different batch sizes, or an output dtype JSON cannot carry.
    """
    if not outputs:
        raise invalid_argument("Cannot convert empty tensor map to JSON")
    names = sorted(outputs)
    if request_format == ROW_FORMAT:
        return _make_row_response(names, outputs)
    return _make_columnar_response(names, outputs)


def _make_row_response(names, outputs):
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
    texts = {name: _leaf_texts(name, outputs[name]) for name in names}
    offsets = dict.fromkeys(names, 0)
    items = []
    for _ in range(batch_size):
        if len(names) == 1:
            name = names[0]
            item, offsets[name] = _write_tensor(
                texts[name], outputs[name].shape[1:], 2, True, offsets[name]
            )
            items.append(item)
            continue
        members = []
        for name in names:
            value, offsets[name] = _write_tensor(
                texts[name], outputs[name].shape[1:], 3, True, offsets[name]
            )
            members.append(INDENT * 3 + json_string(name) + ": " + value)
        items.append("{\n" + ",\n".join(members) + "\n" + INDENT * 2 + "}")
    if not items:
        body = "[]"
    elif len(names) == 1:
        body = "[" + ", ".join(items) + "\n" + INDENT + "]"
    else:
        body = "[" + ",".join("\n" + INDENT * 2 + item for item in items) + "\n" + INDENT + "]"
    return _encode("{\n" + INDENT + json_string(PREDICTIONS_KEY) + ": " + body + "\n}")


def _make_columnar_response(names, outputs):
    if len(names) == 1:
        name = names[0]
        value, _ = _write_tensor(_leaf_texts(name, outputs[name]), outputs[name].shape, 1, False)
    else:
        members = []
        for name in names:
            text, _ = _write_tensor(_leaf_texts(name, outputs[name]), outputs[name].shape, 2, False)
            members.append(INDENT * 2 + json_string(name) + ": " + text)
        value = "{\n" + ",\n".join(members) + "\n" + INDENT + "}"
    return _encode("{\n" + INDENT + json_string(OUTPUTS_KEY) + ": " + value + "\n}")


def make_error_body(message):
    """`{"error": "<message>"}` as TF Serving writes it."""
    return _encode("{\n" + INDENT + json_string(ERROR_KEY) + ": " + json_string(message) + "\n}")


def _encode(text):
    # surrogateescape carries raw bytes of string outputs through unchanged.
    return text.encode("utf-8", "surrogateescape")


def debug_string(value):
    """A JSON value as TF Serving quotes it in errors: pretty, cut to 256 bytes."""
    if isinstance(value, float):
        # A lone decimal is written like an output value.
        text = format_decimal(value, double=float(np.float32(value)) != value)
    else:
        text = _pretty(value, MAX_DEBUG_STRING_BYTES + 1)
    encoded = text.encode("utf-8", "surrogateescape")
    if len(encoded) > MAX_DEBUG_STRING_BYTES:
        encoded = encoded[:MAX_DEBUG_STRING_BYTES]
    return encoded.decode("utf-8", "ignore")


def _pretty(value, budget):
    """rapidjson PrettyWriter text of `value`, stopping once `budget` chars exist.

    Iterative, so a deeply nested document cannot exhaust the stack.
    """
    pieces = []
    length = 0
    # Work items: ("value", value, level) or ("text", string).
    work = [("value", value, 0)]
    while work and length < budget:
        item = work.pop()
        if item[0] == "text":
            pieces.append(item[1])
            length += len(item[1])
            continue
        _, current, level = item
        if isinstance(current, list | dict) and current:
            inner = INDENT * (level + 1)
            is_list = isinstance(current, list)
            entries = current if is_list else list(current.items())
            closing = "\n" + INDENT * level + ("]" if is_list else "}")
            work.append(("text", closing))
            for index in range(len(entries) - 1, -1, -1):
                entry = entries[index]
                if is_list:
                    work.append(("value", entry, level + 1))
                    prefix = inner
                else:
                    work.append(("value", entry[1], level + 1))
                    prefix = inner + json_string(str(entry[0])) + ": "
                work.append(("text", ("," if index else "") + "\n" + prefix))
            work.append(("text", "[" if is_list else "{"))
            continue
        pieces.append(_scalar_text(current))
        length += len(pieces[-1])
    return "".join(pieces)


def _scalar_text(value):
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return json_string(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return repr(value)
    if isinstance(value, list):
        return "[]"
    if isinstance(value, dict):
        return "{}"
    return str(value)


def json_type_name(value):
    """rapidjson's name of a value's type, as TF Serving's messages use it."""
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


# ---------------------------------------------------------------------------
# Predict requests: JSON -> tensors
# ---------------------------------------------------------------------------


def read_signature_name(document):
    """The `signature_name` of a parsed request ('' when absent).

    Raises:
        ServingError: The body is not an object, or `signature_name` is not a string.
    """
    if not isinstance(document, dict):
        raise invalid_argument(f"JSON Value: {debug_string(document)} Is not object")
    name = document.get(SIGNATURE_KEY, "")
    if not isinstance(name, str):
        raise invalid_argument(
            f"JSON Value: {debug_string(document)} not formatted correctly. "
            "'signature_name' key must be a string value."
        )
    return name


def predict_request_to_tensors(document, input_dtypes, body_mentions_booleans=True):
    """Converts a parsed predict request into input tensors.

    Args:
        document: The parsed body (a dict; see `read_signature_name`).
        input_dtypes: Signature input alias -> DataType enum value.
        body_mentions_booleans: False when the raw body contains neither
            `true` nor `false`, which lets numbers take the numpy fast path
            (numpy would silently read a stray boolean as 0 or 1).

    Returns:
        `(tensors, request_format)`: alias -> numpy array, and ROW_FORMAT or
        COLUMNAR_FORMAT.

    Raises:
        ServingError: With TF Serving's message for every malformed request.
    """
    if not input_dtypes:
        raise invalid_argument("Failed to get input map for signature")
    has_instances = INSTANCES_KEY in document
    has_inputs = INPUTS_KEY in document
    if has_instances and has_inputs:
        raise invalid_argument(
            f"JSON Value: {debug_string(document)} Not formatted correctly expecting only "
            f"one of '{INPUTS_KEY}' or '{INSTANCES_KEY}' keys to exist "
        )
    if has_instances:
        instances = document[INSTANCES_KEY]
        if not isinstance(instances, list):
            raise invalid_argument(
                f"JSON Value: {debug_string(document)} Expecting '{INSTANCES_KEY}' "
                "to be an list/array"
            )
        if not instances:
            raise invalid_argument(
                f"JSON Value: {debug_string(document)} No values in '{INSTANCES_KEY}' array"
            )
        fast = _fast_row_tensors(instances, input_dtypes, body_mentions_booleans)
        if fast is not None:
            return fast, ROW_FORMAT
        return _row_tensors(instances, input_dtypes), ROW_FORMAT
    if has_inputs:
        inputs = document[INPUTS_KEY]
        fast = _fast_columnar_tensors(inputs, input_dtypes, body_mentions_booleans)
        if fast is not None:
            return fast, COLUMNAR_FORMAT
        return _columnar_tensors(inputs, input_dtypes), COLUMNAR_FORMAT
    raise invalid_argument(f"Missing '{INPUTS_KEY}' or '{INSTANCES_KEY}' key")


def is_base64_object(value):
    """True for `{"b64": "<string>"}` and nothing else."""
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get(BASE64_KEY), str)


def decode_base64(text):
    """Standard-alphabet base64, padding optional, as absl::Base64Unescape takes it.

    Raises:
        ServingError: `Unable to base64 decode`.
    """
    encoded = text.encode("ascii", "replace")
    encoded += b"=" * (-len(encoded) % 4)
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise invalid_argument("Unable to base64 decode") from None


# The fast path: one numpy call per input, declining anything unusual.


def _fast_row_tensors(instances, input_dtypes, body_mentions_booleans):
    first = instances[0]
    names = list(input_dtypes)
    if isinstance(first, dict) and not is_base64_object(first):
        columns = {name: [] for name in names}
        for element in instances:
            if not isinstance(element, dict) or element.keys() != columns.keys():
                return None
            for name in names:
                columns[name].append(element[name])
        values = columns
    elif len(names) == 1:
        values = {names[0]: instances}
    else:
        return None
    tensors = {}
    for name, value in values.items():
        tensor = _fast_tensor(value, input_dtypes[name], body_mentions_booleans)
        if tensor is None or tensor.ndim == 0:
            return None
        tensors[name] = tensor
    return tensors


def _fast_columnar_tensors(inputs, input_dtypes, body_mentions_booleans):
    names = list(input_dtypes)
    if isinstance(inputs, dict) and not is_base64_object(inputs):
        if not all(name in inputs for name in names):
            return None
        values = {name: inputs[name] for name in names}
    elif len(names) == 1:
        values = {names[0]: inputs}
    else:
        return None
    tensors = {}
    for name, value in values.items():
        tensor = _fast_tensor(value, input_dtypes[name], body_mentions_booleans)
        if tensor is None:
            return None
        tensors[name] = tensor
    return tensors


def _fast_tensor(value, dtype, body_mentions_booleans):
    if dtype == DataType.DT_STRING:
        return _fast_string_tensor(value)
    target = _NUMPY_DTYPES.get(dtype)
    if target is None:
        return None
    if dtype != DataType.DT_BOOL and body_mentions_booleans:
        return None
    try:
        array = np.array(value)
    except (ValueError, TypeError, OverflowError, RecursionError):
        return None
    kind = array.dtype.kind
    if dtype == DataType.DT_BOOL:
        return array if kind == "b" else None
    if dtype in _FLOAT_TYPES:
        if kind not in "iuf":
            return None
        with np.errstate(over="ignore"):
            return array.astype(target, copy=False)
    if kind not in "iu":
        return None
    if array.size:
        low, high = _INTEGER_RANGES[dtype]
        if int(array.min()) < low or int(array.max()) > high:
            return None
    return array.astype(target, copy=False)


def _fast_string_tensor(value):
    if not isinstance(value, list):
        return None
    decoded = []
    for item in value:
        if type(item) is str:
            decoded.append(item.encode("utf-8", "surrogateescape"))
        elif is_base64_object(item):
            try:
                decoded.append(decode_base64(item[BASE64_KEY]))
            except ServingError:
                return None
        else:
            return None
    array = np.empty(len(decoded), dtype=object)
    array[:] = decoded
    return array


# The faithful path: TF Serving's own walk of the document, message for message.


def _dense_shape(value):
    """The shape implied by the first element at every level of nesting."""
    dims = []
    while isinstance(value, list):
        dims.append(len(value))
        if not value:
            break
        value = value[0]
    if len(dims) > MAX_TENSOR_RANK:
        raise invalid_argument(
            f"Too many dimensions in tensor: {len(dims)} (at most {MAX_TENSOR_RANK})"
        )
    return dims


def _convert_leaf(value, dtype):
    """One JSON scalar as a Python value of `dtype`, or TF Serving's error."""
    if dtype == DataType.DT_STRING:
        if isinstance(value, str):
            return value.encode("utf-8", "surrogateescape")
        raise _type_error(value, dtype)
    if dtype not in _NUMPY_DTYPES:
        raise ServingError(
            "UNIMPLEMENTED",
            f"Conversion of JSON Value: {debug_string(value)} to type: {dtype_name(dtype)}",
        )
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if dtype in _FLOAT_TYPES:
        if not is_number:
            raise _type_error(value, dtype)
        return value
    if dtype == DataType.DT_BOOL:
        if not isinstance(value, bool):
            raise _type_error(value, dtype)
        return value
    low, high = _INTEGER_RANGES[dtype]
    if not is_number or not isinstance(value, int) or not low <= value <= high:
        raise _type_error(value, dtype)
    return value


def _type_error(value, dtype):
    return invalid_argument(
        f"JSON Value: {debug_string(value)} Type: {json_type_name(value)} "
        f"is not of expected type: {dtype_name(dtype)}"
    )


def _fill(value, level, dims, dtype, leaves):
    """Appends the leaves of `value` to `leaves`, checking it is dense."""
    rank = len(dims)
    if not isinstance(value, list):
        if level != rank:
            raise invalid_argument(
                f"JSON Value: {debug_string(value)} found at incorrect level: {level + 1} "
                f"in the JSON DOM. Expected at level: {rank}"
            )
        if isinstance(value, dict):
            if dtype != DataType.DT_STRING:
                raise _type_error(value, dtype)
            if not is_base64_object(value):
                raise invalid_argument(
                    f"JSON Value: {debug_string(value)} not formatted correctly for base64 data"
                )
            leaves.append(decode_base64(value[BASE64_KEY]))
            return
        leaves.append(_convert_leaf(value, dtype))
        return
    if level >= rank:
        raise invalid_argument(f"Encountered list at unexpected level: {level} expected < {rank}")
    if len(value) != dims[level]:
        raise invalid_argument(
            f"Encountered list at unexpected size: {len(value)} at level: {level} "
            f"expected size: {dims[level]}"
        )
    for element in value:
        _fill(element, level + 1, dims, dtype, leaves)


def _tensor_from_leaves(leaves, dims, dtype):
    target = _NUMPY_DTYPES.get(dtype)
    if target is None:
        # Only reachable with no leaves at all: an empty tensor of that dtype.
        import tensorflow as tf

        return tf.zeros(dims, dtype=tf.dtypes.as_dtype(dtype))
    if dtype == DataType.DT_STRING:
        array = np.empty(len(leaves), dtype=object)
        array[:] = leaves
        return array.reshape(dims)
    if target in (np.float32, np.float64, np.bool_):
        with np.errstate(over="ignore"):
            return np.array(leaves, dtype=target).reshape(dims)
    # Narrow integer types keep the low bits of an int32, as TensorFlow does
    # when it reads int_val into a uint8 or int16 tensor.
    wide = np.array(leaves, dtype=np.uint64 if target == np.uint64 else np.int64)
    return wide.astype(target).reshape(dims)


def _tensor_from_json(value, dtype):
    dims = _dense_shape(value)
    leaves = []
    _fill(value, 0, dims, dtype, leaves)
    return _tensor_from_leaves(leaves, dims, dtype)


def _shape_string(dims):
    return "[" + ",".join(str(size) for size in dims) + "]"


def _status_string(error):
    return f"{error.code}: {error.message}"


def _row_tensors(instances, input_dtypes):
    first = instances[0]
    if not isinstance(first, dict) and len(input_dtypes) > 1:
        raise invalid_argument(
            "instances is a plain list, but expecting list of objects as multiple input "
            "tensors required as per tensorinfo_map"
        )

    def is_element_object(value):
        return isinstance(value, dict) and not is_base64_object(value)

    elements_are_objects = is_element_object(first)
    input_names = sorted(input_dtypes)
    leaves = {}
    shapes = {}

    def add_item(item, name):
        if name not in input_dtypes:
            raise invalid_argument(f"JSON object: does not have named input: {name}")
        dims = _dense_shape(item)
        item_leaves = []
        _fill(item, 0, dims, input_dtypes[name], item_leaves)
        if name not in shapes:
            shapes[name] = dims
            leaves[name] = item_leaves
            return
        expected_size = math.prod(shapes[name])
        if expected_size != len(item_leaves):
            raise invalid_argument(
                f"Expecting tensor size: {expected_size} but got: {len(item_leaves)}"
            )
        if shapes[name] != dims:
            raise invalid_argument(
                f"Expecting shape {_shape_string(shapes[name])} but got: {_shape_string(dims)}"
            )
        leaves[name].extend(item_leaves)

    for index, element in enumerate(instances):
        if elements_are_objects:
            if not is_element_object(element):
                raise invalid_argument(
                    f"Expecting object but got list at item {index} of input list"
                )
            for name, item in element.items():
                try:
                    add_item(item, name)
                except ServingError as error:
                    raise invalid_argument(
                        f"Failed to process element: {index} key: {name} of 'instances' "
                        f"list. Error: {_status_string(error)}"
                    ) from None
            if set(element) != set(input_names):
                raise invalid_argument(
                    f"Failed to process element: {index} of 'instances' list. JSON object: "
                    f"{debug_string(element)} keys must be equal to: {','.join(input_names)}"
                )
        else:
            if is_element_object(element):
                raise invalid_argument(
                    f"Expecting value/list but got object at item {index} of input list"
                )
            try:
                add_item(element, input_names[0])
            except ServingError as error:
                raise invalid_argument(
                    f"Failed to process element: {index} of 'instances' list. "
                    f"Error: {_status_string(error)}"
                ) from None
    return {
        name: _tensor_from_leaves(leaves[name], [len(instances), *shapes[name]], dtype)
        for name, dtype in input_dtypes.items()
        if name in shapes
    }


def _columnar_tensors(inputs, input_dtypes):
    if not isinstance(inputs, dict) or is_base64_object(inputs):
        if len(input_dtypes) > 1:
            raise invalid_argument(
                "inputs is a plain value/list, but expecting an object as multiple input "
                "tensors required as per tensorinfo_map"
            )
        ((name, dtype),) = input_dtypes.items()
        return {name: _tensor_from_json(inputs, dtype)}
    tensors = {}
    for name in sorted(input_dtypes):
        if name not in inputs:
            raise invalid_argument(f"Missing named input: {name} in 'inputs' object.")
        tensors[name] = _tensor_from_json(inputs[name], input_dtypes[name])
    return tensors
