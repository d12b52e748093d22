"""TensorFlow's `TensorProto` to numpy and back, without TensorFlow.

gRPC requests carry tensors as `TensorProto` messages. `tf.make_ndarray` and
`tf.make_tensor_proto` convert them, but need TensorFlow's runtime, which the
client does not load. This module follows the rules of TensorFlow's C++
`Tensor::FromProto` and `Tensor::AsProtoField` that TF Serving applies:

- a tensor arrives either as packed bytes (`tensor_content`, which
  `tf.make_tensor_proto` writes for numeric arrays of more than one element)
  or as a typed repeated field (`float_val`, `int_val`, `string_val`, ...);
- a typed field with fewer values than the shape holds is padded with its
  last value (a single value fills the tensor), an empty one means zeros,
  extra values are ignored; packed bytes must match the shape exactly;
- an invalid shape or dtype, or packed bytes of the wrong size, cannot be
  read (`TensorProtoError`; TF Serving answers `tensor parsing error: <alias>`).

Reading is bounded: a shape that would decode to more than `max_bytes` is
refused before anything is allocated (TF would allocate it).
"""

import math

import numpy as np


class DataType:
    """TensorFlow's DataType enum values (tensorflow/core/framework/types.proto).

    Spelled out so that neither the client nor the server imports TensorFlow for them.
    """

    DT_FLOAT = 1
    DT_DOUBLE = 2
    DT_INT32 = 3
    DT_UINT8 = 4
    DT_INT16 = 5
    DT_INT8 = 6
    DT_STRING = 7
    DT_COMPLEX64 = 8
    DT_INT64 = 9
    DT_BOOL = 10
    DT_UINT16 = 17
    DT_COMPLEX128 = 18
    DT_HALF = 19
    DT_UINT32 = 22
    DT_UINT64 = 23


# dtype -> (numpy dtype, typed field of TensorProto).
_CODECS = {
    DataType.DT_FLOAT: (np.dtype("<f4"), "float_val"),
    DataType.DT_DOUBLE: (np.dtype("<f8"), "double_val"),
    DataType.DT_INT32: (np.dtype("<i4"), "int_val"),
    DataType.DT_UINT8: (np.dtype("u1"), "int_val"),
    DataType.DT_INT16: (np.dtype("<i2"), "int_val"),
    DataType.DT_INT8: (np.dtype("i1"), "int_val"),
    DataType.DT_UINT16: (np.dtype("<u2"), "int_val"),
    DataType.DT_INT64: (np.dtype("<i8"), "int64_val"),
    DataType.DT_BOOL: (np.dtype("?"), "bool_val"),
    DataType.DT_UINT32: (np.dtype("<u4"), "uint32_val"),
    DataType.DT_UINT64: (np.dtype("<u8"), "uint64_val"),
    DataType.DT_HALF: (np.dtype("<f2"), "half_val"),
    DataType.DT_COMPLEX64: (np.dtype("<c8"), "scomplex_val"),
    DataType.DT_COMPLEX128: (np.dtype("<c16"), "dcomplex_val"),
    DataType.DT_STRING: (np.dtype(object), "string_val"),
}
_DTYPES_BY_NUMPY = {
    numpy_dtype.newbyteorder("="): dtype
    for dtype, (numpy_dtype, _) in _CODECS.items()
    if dtype != DataType.DT_STRING
}
# TensorFlow's TensorShape allows at most this many dimensions.
MAX_RANK = 254
# A string element costs at least a reference in the decoded array.
_STRING_ELEMENT_BYTES = 8


class TensorProtoError(ValueError):
    """A TensorProto that cannot be read as a tensor (the message says why)."""


def numpy_dtype(dtype: int) -> np.dtype:
    """The numpy dtype of a TensorFlow DataType number (object for strings).

    Raises:
        TensorProtoError: A dtype this module does not convert.
    """
    if dtype not in _CODECS:
        raise TensorProtoError(f"unsupported dtype {dtype}")
    return _CODECS[dtype][0].newbyteorder("=")


def data_type(array: np.ndarray) -> int:
    """The TensorFlow DataType number of a numpy array (bytes and str arrays are strings)."""
    if array.dtype.kind in "OSU":
        return DataType.DT_STRING
    try:
        return _DTYPES_BY_NUMPY[array.dtype.newbyteorder("=")]
    except KeyError:
        raise TensorProtoError(f"numpy dtype {array.dtype} has no TensorFlow DataType") from None


def shape_of(proto) -> tuple[int, ...]:
    """The shape a TensorProto declares.

    Raises:
        TensorProtoError: Unknown rank, a negative (unknown) size, or too many dimensions.
    """
    shape = proto.tensor_shape
    if shape.unknown_rank:
        raise TensorProtoError("unknown rank")
    if len(shape.dim) > MAX_RANK:
        raise TensorProtoError(f"more than {MAX_RANK} dimensions")
    sizes = tuple(dim.size for dim in shape.dim)
    if any(size < 0 for size in sizes):
        raise TensorProtoError(f"unknown size in shape {list(sizes)}")
    return sizes


def to_ndarray(proto, max_bytes: int | None = None) -> np.ndarray:
    """The numpy array a TensorProto holds, read as TensorFlow reads it.

    Args:
        proto: A `tensorflow.TensorProto`.
        max_bytes: Refuse a tensor larger than this once decoded (None: no bound).

    Raises:
        TensorProtoError: What makes the proto unreadable, or too large.
    """
    if proto.dtype not in _CODECS:
        raise TensorProtoError(f"unsupported dtype {proto.dtype}")
    dtype, field = _CODECS[proto.dtype]
    shape = shape_of(proto)
    count = math.prod(shape)
    element_bytes = dtype.itemsize if proto.dtype != DataType.DT_STRING else _STRING_ELEMENT_BYTES
    if max_bytes is not None and count * element_bytes > max_bytes:
        raise TensorProtoError(
            f"shape {list(shape)} holds {count:,} elements: more than the limit of "
            f"{max_bytes:,} bytes once decoded"
        )
    if proto.tensor_content:
        if proto.dtype == DataType.DT_STRING:
            values = _decode_string_list(proto.tensor_content, count)
        else:
            content = proto.tensor_content
            if len(content) != count * dtype.itemsize:
                raise TensorProtoError(
                    f"tensor_content of {len(content)} bytes for shape {list(shape)}"
                )
            values = np.frombuffer(content, dtype=dtype)
        return values.astype(dtype.newbyteorder("="), copy=False).reshape(shape)
    values = _typed_values(proto, field, dtype)
    if len(values) == 0:
        filled = np.zeros(count, dtype=dtype)
        if proto.dtype == DataType.DT_STRING:
            filled[:] = b""
    elif len(values) >= count:
        filled = values[:count]
    else:
        filled = np.concatenate([values, np.repeat(values[-1:], count - len(values))])
    return filled.astype(dtype.newbyteorder("="), copy=False).reshape(shape)


def _typed_values(proto, field: str, dtype: np.dtype) -> np.ndarray:
    """The values of a TensorProto's typed field, as a flat numpy array of `dtype`."""
    values = getattr(proto, field)
    if field == "string_val":
        array = np.empty(len(values), dtype=object)
        array[:] = list(values)
        return array
    if field == "half_val":  # The 16 bits of each half, stored in an int32.
        return np.array(values, dtype=np.int32).astype(np.uint16).view(dtype)
    if field in ("scomplex_val", "dcomplex_val"):  # Real and imaginary parts, interleaved.
        parts = np.array(values, dtype=np.float32 if field == "scomplex_val" else np.float64)
        return parts[: len(parts) // 2 * 2].view(dtype)
    # int_val holds int8, uint8, int16 and uint16 too: cast as C++ does.
    return np.array(values, dtype=np.int64 if field == "int_val" else dtype).astype(dtype)


def _decode_string_list(content: bytes, count: int) -> np.ndarray:
    """Strings packed in `tensor_content`: `count` varint lengths, then the bytes."""
    lengths = []
    position = 0
    for _ in range(count):
        length, shift = 0, 0
        while True:
            if position >= len(content) or shift > 63:
                raise TensorProtoError("truncated string tensor_content")
            byte = content[position]
            position += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        lengths.append(length)
    if position + sum(lengths) != len(content):
        raise TensorProtoError("string tensor_content of the wrong size")
    strings = np.empty(count, dtype=object)
    for index, length in enumerate(lengths):
        strings[index] = content[position : position + length]
        position += length
    return strings


def fill_tensor_proto(proto, array: np.ndarray, as_content: bool = False) -> None:
    """Writes a numpy array into an (empty) TensorProto.

    Args:
        proto: The `tensorflow.TensorProto` to fill, e.g. `request.inputs["image"]`.
        array: The values; bytes or str arrays become DT_STRING.
        as_content: Numbers as packed bytes (`tensor_content`, as
            `tf.make_tensor_proto` writes them) instead of the typed field (as
            TF Serving writes its answers). Strings always go to `string_val`.

    Raises:
        TensorProtoError: A numpy dtype with no TensorFlow DataType.
    """
    array = np.asarray(array)
    dtype = data_type(array)
    proto.dtype = dtype
    for size in array.shape:
        proto.tensor_shape.dim.add(size=size)
    flat = array.reshape(-1)
    numpy_type, field = _CODECS[dtype]
    if dtype == DataType.DT_STRING:
        proto.string_val.extend(
            value if isinstance(value, bytes) else str(value).encode() for value in flat
        )
    elif as_content:
        proto.tensor_content = flat.astype(numpy_type, copy=False).tobytes()
    elif field == "half_val":
        proto.half_val.extend(flat.view(np.uint16).tolist())
    elif field in ("scomplex_val", "dcomplex_val"):
        getattr(proto, field).extend(flat.view(flat.real.dtype).tolist())
    else:
        getattr(proto, field).extend(flat.tolist())
