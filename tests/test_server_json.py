"""TF Serving's JSON conventions, checked on model_server.py's converters directly.

The API tests send these through a real server; here the edge cases that are
tedious over HTTP (number formatting, parse error offsets, quoting of long
values) are checked on the functions that implement them.
"""

import math

import numpy as np
import pytest

from mnist_serving import json_parsing, rest_json
from mnist_serving.status import ServingError


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (999999.0, "999999.0"),
        (9000000.0, "9e+06"),
        (0.00003, "3e-05"),
        (555557.5, "555557.5"),
        (0.1, "0.1"),
        (1435774380.0, "1.43577434e+09"),
        (-2.0, "-2.0"),
        (math.nan, "NaN"),
        (math.inf, "Infinity"),
        (-math.inf, "-Infinity"),
    ],
)
def test_float32_values_are_written_as_tf_serving_writes_them(value, text):
    assert rest_json.format_decimal(value) == text


def test_doubles_use_up_to_17_digits():
    assert rest_json.format_decimal(0.1 + 0.2, double=True) == "0.30000000000000004"
    assert rest_json.format_decimal(0.5, double=True) == "0.5"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"   ", "The document is empty. at offset: 3"),
        (b'{"a" 1}', "Missing a colon after a name of object member. at offset: 5"),
        (b'{"a": 1 "b": 2}', "Missing a comma or '}' after an object member. at offset: 8"),
        (b"[1 2]", "Missing a comma or ']' after an array element. at offset: 3"),
        (b"{1: 2}", "Missing a name for object member. at offset: 1"),
        (b'{"a": "\\x"}', "Invalid escape character in string. at offset: 7"),
        (b'{"a": "abc', "Missing a closing quotation mark in string. at offset: 10"),
        (b"[1e]", "Miss exponent in number. at offset: 3"),
        (b"[1e999]", "Number too big to be stored in double. at offset: 1"),
        (b"[tru]", "Invalid value. at offset: 1"),
    ],
)
def test_parse_errors_name_rapidjson_reason_and_offset(body, message):
    with pytest.raises(ServingError) as error:
        json_parsing.parse_json(body)
    assert error.value.code == "INVALID_ARGUMENT"
    assert error.value.message == "JSON Parse error: " + message


def test_nan_and_infinity_tokens_are_accepted_as_rapidjson_does():
    document = json_parsing.parse_json(b'{"inputs": [NaN, Infinity, -Infinity, Inf, -Inf]}')
    values = document["inputs"]
    assert math.isnan(values[0])
    assert values[1:] == [math.inf, -math.inf, math.inf, -math.inf]


def test_bytes_after_a_complete_document_are_ignored():
    assert json_parsing.parse_json(b'{"inputs": [1]} and then some') == {"inputs": [1]}


def test_documents_nested_deeper_than_orjson_allows_still_parse():
    depth = 5000
    document = json_parsing.parse_json(b'{"inputs": ' + b"[" * depth + b"]" * depth + b"}")
    value, levels = document["inputs"], 1
    while value:
        value, levels = value[0], levels + 1
    assert levels == depth


def test_quoted_values_are_cut_to_256_bytes():
    document = {"instances": list(range(1000)), "inputs": 1}
    with pytest.raises(ServingError) as error:
        rest_json.predict_request_to_tensors(document, {"x": 1})
    quoted = error.value.message.removeprefix("JSON Value: ").split(" Not formatted")[0]
    assert len(quoted.encode()) == 256


def test_row_format_adds_the_batch_dimension():
    tensors, request_format = rest_json.predict_request_to_tensors(
        {"instances": [[1, 2], [3, 4], [5, 6]]}, {"x": 1}
    )
    assert request_format == rest_json.ROW_FORMAT
    assert tensors["x"].shape == (3, 2)
    assert tensors["x"].dtype == np.float32


def test_columnar_format_keeps_shapes_as_written():
    tensors, request_format = rest_json.predict_request_to_tensors(
        {"inputs": {"x": 2.5, "y": [[1], [2]]}}, {"x": 1, "y": 9}
    )
    assert request_format == rest_json.COLUMNAR_FORMAT
    assert tensors["x"].shape == ()
    assert tensors["y"].shape == (2, 1)
    assert tensors["y"].dtype == np.int64


def test_integer_inputs_refuse_decimals_and_out_of_range_values():
    for value in (1.0, 2**31):
        with pytest.raises(ServingError) as error:
            rest_json.predict_request_to_tensors({"inputs": [value]}, {"x": 3})
        assert "is not of expected type: int32" in error.value.message


def test_unsupported_dtype_is_501_unimplemented():
    with pytest.raises(ServingError) as error:
        rest_json.predict_request_to_tensors({"inputs": [1.0]}, {"x": 19})
    assert error.value.code == "UNIMPLEMENTED"
    assert error.value.http_status == 501
    assert error.value.message == "Conversion of JSON Value: 1.0 to type: half"


def test_columnar_output_of_several_dimensions_is_written_one_value_per_line():
    body = rest_json.make_predict_response(
        {"y": np.array([[1, 2]], dtype=np.int64)}, rest_json.COLUMNAR_FORMAT
    )
    assert body.decode() == (
        '{\n    "outputs": [\n        [\n            1,\n            2\n        ]\n    ]\n}'
    )


def test_row_output_with_zero_instances_is_an_empty_list():
    body = rest_json.make_predict_response(
        {"y": np.zeros((0, 3), dtype=np.float32)}, rest_json.ROW_FORMAT
    )
    assert body.decode() == '{\n    "predictions": []\n}'


def test_outputs_of_different_batch_sizes_cannot_be_rows():
    with pytest.raises(ServingError) as error:
        rest_json.make_predict_response({"a": np.zeros(2), "b": np.zeros(3)}, rest_json.ROW_FORMAT)
    assert error.value.message == "Tensor name: b has inconsistent batch size: 3 expecting: 2"


def test_narrow_integer_inputs_keep_the_low_bits_as_tensorflow_does():
    # TF Serving accepts any int32 for a uint8 input and TensorFlow keeps its low 8 bits.
    for document in ({"inputs": [300, -1, 5]}, {"inputs": [[300], [-1], [5]]}):
        tensors, _ = rest_json.predict_request_to_tensors(document, {"x": 4})
        assert tensors["x"].reshape(-1).tolist() == [44, 255, 5]
        assert tensors["x"].dtype == np.uint8
    ragged_free_slow_path = {"inputs": [300, True]}
    with pytest.raises(ServingError):
        rest_json.predict_request_to_tensors(ragged_free_slow_path, {"x": 4})


@pytest.mark.parametrize(
    "body",
    [
        b'{"instances": [[1, 2.5], [3e2, -4]]}',
        b'{"signature_name": "s", "inputs": [[[0.5]], [[1]]]}',
        b'{\n  "instances": [\n    [1, 2]\n  ],\n  "signature_name": "s"\n}',
    ],
)
def test_dense_fast_path_reads_what_the_general_path_reads(body):
    dense = rest_json.parse_dense_request(body)
    assert dense is not None
    document = json_parsing.parse_json(body)
    tensors, request_format = rest_json.predict_request_to_tensors(
        document, {"x": rest_json.DataType.DT_FLOAT}
    )
    assert dense.signature_name == document.get("signature_name", "")
    assert dense.request_format == request_format
    np.testing.assert_array_equal(dense.tensor(rest_json.DataType.DT_FLOAT), tensors["x"])


@pytest.mark.parametrize(
    "body",
    [
        b'{"instances": []}',
        b'{"instances": [[1], [2, 3]]}',
        b'{"instances": [[1]2]}',
        b'{"instances": [1,,2]}',
        b'{"instances": [1.]}',
        b'{"instances": [01]}',
        b'{"instances": [NaN]}',
        b'{"instances": [true]}',
        b'{"instances": [1e999]}',
        b'{"instances": [1], "inputs": [1]}',
        b'{"instances": [1]} trailing',
        b'{"signature_name": 3, "instances": [1]}',
    ],
)
def test_dense_fast_path_leaves_anything_unusual_to_the_general_path(body):
    assert rest_json.parse_dense_request(body) is None
