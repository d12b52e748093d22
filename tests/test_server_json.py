"""TF Serving's JSON conventions, checked on model_server.py's converters directly.

The API tests send these through a real server; here the edge cases that are
tedious over HTTP (number formatting, parse error offsets, quoting of long
values) are checked on the functions that implement them.
"""

import json
import math

import numpy as np
import pytest

from mnist_serving.serving import json_tensors, json_text, rest_codec
from mnist_serving.serving.errors import ServingError


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
    assert json_text.format_decimal(value) == text


def test_doubles_use_up_to_17_digits():
    assert json_text.format_decimal(0.1 + 0.2, double=True) == "0.30000000000000004"
    assert json_text.format_decimal(0.5, double=True) == "0.5"


@pytest.mark.parametrize(
    "body",
    [
        b"   ",
        b'{"a" 1}',
        b'{"a": 1 "b": 2}',
        b"[1 2]",
        b"{1: 2}",
        b'{"a": "\\x"}',
        b"[1e]",
        b"[tru]",
    ],
)
def test_parse_errors_are_invalid_argument_with_tf_servings_leading_words(body):
    with pytest.raises(ServingError) as error:
        rest_codec.parse_json(body)
    assert error.value.code == "INVALID_ARGUMENT"
    assert error.value.message.startswith("JSON Parse error: ")


def test_nan_and_infinity_tokens_are_accepted_as_rapidjson_does():
    document = rest_codec.parse_json(b'{"inputs": [NaN, Infinity, -Infinity, Inf, -Inf]}')
    values = document["inputs"]
    assert math.isnan(values[0])
    assert values[1:] == [math.inf, -math.inf, math.inf, -math.inf]


def test_bytes_after_a_complete_document_are_ignored():
    assert rest_codec.parse_json(b'{"inputs": [1]} and then some') == {"inputs": [1]}


def test_nan_tokens_inside_strings_are_left_alone():
    document = rest_codec.parse_json(b'{"inputs": ["Inf", "-NaN"], "x": -NaN} ')
    assert document["inputs"] == ["Inf", "-NaN"]
    assert math.isnan(document["x"])


def test_a_document_nested_too_deeply_is_a_parse_error_not_a_crash():
    depth = 100_000
    with pytest.raises(ServingError) as error:
        rest_codec.parse_json(b'{"inputs": ' + b"[" * depth + b"]" * depth + b"} trailing")
    assert error.value.message.startswith("JSON Parse error: ")


def test_quoted_values_are_cut_to_256_bytes():
    document = {"instances": list(range(1000)), "inputs": 1}
    with pytest.raises(ServingError) as error:
        json_tensors.predict_request_to_tensors(document, {"x": 1})
    quoted = error.value.message.removeprefix("JSON Value: ").split(" Not formatted")[0]
    assert len(quoted.encode()) == 256


def test_row_format_adds_the_batch_dimension():
    tensors, request_format = json_tensors.predict_request_to_tensors(
        {"instances": [[1, 2], [3, 4], [5, 6]]}, {"x": 1}
    )
    assert request_format == json_tensors.ROW_FORMAT
    assert tensors["x"].shape == (3, 2)
    assert tensors["x"].dtype == np.float32


def test_columnar_format_keeps_shapes_as_written():
    tensors, request_format = json_tensors.predict_request_to_tensors(
        {"inputs": {"x": 2.5, "y": [[1], [2]]}}, {"x": 1, "y": 9}
    )
    assert request_format == json_tensors.COLUMNAR_FORMAT
    assert tensors["x"].shape == ()
    assert tensors["y"].shape == (2, 1)
    assert tensors["y"].dtype == np.int64


def test_integer_inputs_refuse_decimals_and_out_of_range_values():
    for value in (1.0, 2**31):
        with pytest.raises(ServingError) as error:
            json_tensors.predict_request_to_tensors({"inputs": [value]}, {"x": 3})
        assert "is not of expected type: int32" in error.value.message


def test_unsupported_dtype_is_501_unimplemented():
    with pytest.raises(ServingError) as error:
        json_tensors.predict_request_to_tensors({"inputs": [1.0]}, {"x": 19})
    assert error.value.code == "UNIMPLEMENTED"
    assert error.value.http_status == 501
    assert error.value.message == "Conversion of JSON Value: 1.0 to type: half"


def test_columnar_output_keeps_the_tensors_shape():
    body = rest_codec.make_predict_response(
        {"y": np.array([[1, 2]], dtype=np.int64), "z": np.zeros((2, 0), np.float32)},
        json_tensors.COLUMNAR_FORMAT,
    )
    assert json.loads(body) == {"outputs": {"y": [[1, 2]], "z": [[], []]}}


def test_row_output_with_zero_instances_is_an_empty_list():
    body = rest_codec.make_predict_response(
        {"y": np.zeros((0, 3), dtype=np.float32)}, json_tensors.ROW_FORMAT
    )
    assert json.loads(body) == {"predictions": []}


def test_outputs_of_different_batch_sizes_cannot_be_rows():
    with pytest.raises(ServingError) as error:
        rest_codec.make_predict_response(
            {"a": np.zeros(2), "b": np.zeros(3)}, json_tensors.ROW_FORMAT
        )
    assert error.value.message == "Tensor name: b has inconsistent batch size: 3 expecting: 2"


def test_narrow_integer_inputs_keep_the_low_bits_as_tensorflow_does():
    # TF Serving accepts any int32 for a uint8 input and TensorFlow keeps its low 8 bits.
    for document in ({"inputs": [300, -1, 5]}, {"inputs": [[300], [-1], [5]]}):
        tensors, _ = json_tensors.predict_request_to_tensors(document, {"x": 4})
        assert tensors["x"].reshape(-1).tolist() == [44, 255, 5]
        assert tensors["x"].dtype == np.uint8
    ragged_free_slow_path = {"inputs": [300, True]}
    with pytest.raises(ServingError):
        json_tensors.predict_request_to_tensors(ragged_free_slow_path, {"x": 4})


@pytest.mark.parametrize(
    "body",
    [
        b'{"instances": [[1, 2.5], [3e2, -4]]}',
        b'{"signature_name": "s", "inputs": [[[0.5]], [[1]]]}',
        b'{\n  "instances": [\n    [1, 2]\n  ],\n  "signature_name": "s"\n}',
    ],
)
def test_dense_fast_path_reads_what_the_general_path_reads(body):
    dense = rest_codec.parse_dense_request(body)
    assert dense is not None
    document = rest_codec.parse_json(body)
    tensors, request_format = json_tensors.predict_request_to_tensors(
        document, {"x": json_tensors.DataType.DT_FLOAT}
    )
    assert dense.signature_name == document.get("signature_name", "")
    assert dense.request_format == request_format
    np.testing.assert_array_equal(dense.tensor(json_tensors.DataType.DT_FLOAT), tensors["x"])


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
    assert rest_codec.parse_dense_request(body) is None
