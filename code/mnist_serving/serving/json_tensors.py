"""TF Serving's JSON <-> tensor rules (its json_tensor.cc): values, dtypes, error texts.

TensorFlow Serving turns request JSON into tensors checking only input names
and dtypes (never declared shapes), and quotes offending values in its error
messages in rapidjson's pretty layout, cut to 256 bytes. This module follows
those rules message for message. A request's documents are converted with one
numpy call per input when they are plain; only when that fast path declines
(NaN, mixed types, ragged lists, ...) does the slower, faithful walk of the
document run, and it is the one that produces TF Serving's messages.
"""

import base64
import binascii
import math

import numpy as np

from mnist_serving.serving.errors import ServingError
from mnist_serving.serving.json_text import debug_string, json_type_name
from mnist_serving.tensor_proto import DataType

# Request and response keys of TensorFlow Serving's JSON API.
SIGNATURE_KEY = "signature_name"
INSTANCES_KEY = "instances"
INPUTS_KEY = "inputs"
PREDICTIONS_KEY = "predictions"
OUTPUTS_KEY = "outputs"
ERROR_KEY = "error"
BASE64_KEY = "b64"
BYTES_SUFFIX = "_bytes"

# numpy (which holds the tensors) allows no more dimensions than this.
MAX_TENSOR_RANK = 64

ROW_FORMAT = "row"
COLUMNAR_FORMAT = "columnar"

NUMPY_DTYPES = {
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
FLOAT_TYPES = (DataType.DT_FLOAT, DataType.DT_DOUBLE)
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


def dtype_name(dtype: int) -> str:
    """TensorFlow's name of a DataType enum value (`DataTypeString`): 7 -> 'string'."""
    from tensorflow.core.framework import types_pb2 as tensorflow_types

    try:
        return tensorflow_types.DataType.Name(dtype)[3:].lower()
    except ValueError:
        return f"unknown dtype {dtype}"


def invalid_argument(message: str) -> ServingError:
    """A ServingError with code INVALID_ARGUMENT."""
    return ServingError("INVALID_ARGUMENT", message)


# ---------------------------------------------------------------------------
# Predict requests: JSON -> tensors
# ---------------------------------------------------------------------------


def read_signature_name(document: object) -> str:
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


def predict_request_to_tensors(
    document: dict, input_dtypes: dict[str, int], body_mentions_booleans: bool = True
) -> tuple[dict[str, np.ndarray], str]:
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


def is_base64_object(value: object) -> bool:
    """True for `{"b64": "<string>"}` and nothing else."""
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get(BASE64_KEY), str)


def decode_base64(text: str) -> bytes:
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
    target = NUMPY_DTYPES.get(dtype)
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
    if dtype in FLOAT_TYPES:
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
    if dtype not in NUMPY_DTYPES:
        raise ServingError(
            "UNIMPLEMENTED",
            f"Conversion of JSON Value: {debug_string(value)} to type: {dtype_name(dtype)}",
        )
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if dtype in FLOAT_TYPES:
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
    target = NUMPY_DTYPES.get(dtype)
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
