"""model_server.py's REST API, request by request, against TF Serving's documented answers.

One real server (a subprocess on a free 127.0.0.1 port) serves three real
SavedModels for the whole module: `half_plus_two` (TF Serving's own test
model, versions 1 and 2, labels), `kitchen` (several signatures, inputs,
outputs and dtypes) and the project's MNIST CNN.
"""

import base64
import contextlib
import gzip
import json
import socket

import numpy as np
import pytest
import requests
from server_fixtures import ServerProcess, copy_version, save_half_plus, save_kitchen

from mnist_serving import config
from mnist_serving.client import encode_png

MAX_BODY = 4 * 2**20
HALF = "/v1/models/half_plus_two"
KITCHEN = "/v1/models/kitchen"
MNIST = f"/v1/models/{config.MODEL_NAME}"


@pytest.fixture(scope="module")
def server(tmp_path_factory, export_base):
    folder = tmp_path_factory.mktemp("api")
    half = folder / "half_plus_two"
    copy_version(save_half_plus(folder / "build_half_1", 2.0), half, 1)
    copy_version(save_half_plus(folder / "build_half_2", 3.0), half, 2)
    kitchen = folder / "kitchen"
    copy_version(save_kitchen(folder / "build_kitchen"), kitchen, 1)
    config_file = folder / "models.config"
    config_file.write_text(
        f"""
model_config_list {{
  config {{
    name: "half_plus_two" base_path: "{half}" model_platform: "tensorflow"
    model_version_policy {{ all {{}} }}
    version_labels {{ key: "stable" value: 1 }}
    version_labels {{ key: "canary" value: 2 }}
  }}
  config {{ name: "kitchen" base_path: "{kitchen}" }}
  config {{ name: "{config.MODEL_NAME}" base_path: "{export_base}" }}
}}
"""
    )
    # Labels given at start-up need this flag, in TF Serving as here.
    with ServerProcess(
        f"--model_config_file={config_file}",
        f"--rest_api_max_request_bytes={MAX_BODY}",
        "--allow_version_labels_for_unavailable_models=true",
    ) as process:
        yield process


def predict(server, path, body):
    data = body if isinstance(body, bytes) else json.dumps(body)
    return server.post(path + ":predict", data=data)


def error_of(response):
    assert response.headers["Content-Type"] == "application/json"
    return response.json()["error"]


# -- model status ----------------------------------------------------------


def test_status_lists_every_version_newest_first_with_versions_as_strings(server):
    response = server.get(HALF)
    assert response.status_code == 200
    assert response.json() == {
        "model_version_status": [
            {
                "version": "2",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            },
            {
                "version": "1",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            },
        ]
    }


def test_status_of_one_version_lists_only_that_version(server):
    statuses = server.get(HALF + "/versions/1").json()["model_version_status"]
    assert [status["version"] for status in statuses] == ["1"]


def test_status_by_label_lists_every_version_as_tf_serving_does(server):
    statuses = server.get(HALF + "/labels/stable").json()["model_version_status"]
    assert [status["version"] for status in statuses] == ["2", "1"]


def test_status_of_unknown_model_is_404_could_not_find_any_versions(server):
    response = server.get("/v1/models/nope")
    assert response.status_code == 404
    assert error_of(response) == "Could not find any versions of model nope"


def test_status_of_unknown_version_is_404_could_not_find_version(server):
    response = server.get(HALF + "/versions/9")
    assert response.status_code == 404
    assert error_of(response) == "Could not find version 9 of model half_plus_two"


def test_metadata_nests_signature_def_twice_with_dims_as_strings(server):
    response = server.get(MNIST + "/metadata")
    assert response.status_code == 200
    metadata = response.json()
    assert metadata["model_spec"] == {
        "name": config.MODEL_NAME,
        "signature_name": "",
        "version": "1",
    }
    signatures = metadata["metadata"]["signature_def"]["signature_def"]
    image = signatures[config.DEFAULT_SIGNATURE]["inputs"][config.INPUT_NAME]
    assert image["dtype"] == "DT_FLOAT"
    assert image["tensor_shape"] == {
        "dim": [{"size": size, "name": ""} for size in ("-1", "28", "28", "1")],
        "unknown_rank": False,
    }
    assert signatures[config.PNG_SIGNATURE]["inputs"][config.PNG_INPUT_NAME]["dtype"] == (
        "DT_STRING"
    )
    outputs = signatures[config.DEFAULT_SIGNATURE]["outputs"]
    assert outputs[config.DIGIT_OUTPUT]["dtype"] == "DT_INT64"
    assert signatures[config.DEFAULT_SIGNATURE]["method_name"] == config.PREDICT_METHOD


@pytest.mark.parametrize(
    ("path", "version"),
    [("", "2"), ("/versions/1", "1"), ("/labels/stable", "1"), ("/labels/canary", "2")],
)
def test_metadata_names_the_version_it_resolved(server, path, version):
    assert server.get(HALF + path + "/metadata").json()["model_spec"]["version"] == version


def test_metadata_of_unknown_model_is_404_servable_not_found(server):
    response = server.get("/v1/models/nope/metadata")
    assert response.status_code == 404
    assert error_of(response) == "Servable not found for request: Latest(nope)"


# -- predict: layouts ------------------------------------------------------


def test_row_format_with_one_output_omits_its_name(server):
    response = predict(server, HALF + "/versions/1", {"instances": [1.0, 2.0, 5.0]})
    assert response.status_code == 200
    assert response.json() == {"predictions": [2.5, 3.0, 4.5]}


def test_columnar_format_answers_outputs(server):
    response = predict(server, HALF + "/versions/1", {"inputs": [[1.0], [2.0]]})
    assert response.json() == {"outputs": [[2.5], [3.0]]}


def test_latest_version_serves_requests_without_a_version(server):
    assert predict(server, HALF, {"instances": [1.0]}).json() == {"predictions": [3.5]}


@pytest.mark.parametrize(("path", "expected"), [("/labels/stable", 2.5), ("/labels/canary", 3.5)])
def test_version_labels_select_the_version(server, path, expected):
    assert predict(server, HALF + path, {"instances": [1.0]}).json() == {"predictions": [expected]}


def test_row_format_with_several_outputs_is_a_list_of_objects(server):
    body = {"instances": [{"a": [1.0, 2.0], "b": 3}, {"a": [0.5, 0.5], "b": -1}]}
    response = predict(server, KITCHEN, body)
    assert response.status_code == 200
    assert response.json() == {
        "predictions": [{"total": 6.0, "b_twice": 6}, {"total": 0.0, "b_twice": -2}]
    }


def test_columnar_format_with_several_outputs_is_an_object_of_tensors(server):
    body = {"inputs": {"a": [[1.0, 2.0], [0.5, 0.5]], "b": [3, -1], "ignored": "extra keys"}}
    assert predict(server, KITCHEN, body).json() == {
        "outputs": {"total": [6.0, 0.0], "b_twice": [6, -2]}
    }


def test_b64_input_is_decoded_and_bytes_outputs_are_b64(server):
    body = {
        "signature_name": "strings",
        "instances": [{"b64": base64.b64encode(b"\x00\xffpng").decode()}, "plain"],
    }
    assert predict(server, KITCHEN, body).json() == {
        "predictions": [
            {"length": 5, "echo_bytes": {"b64": base64.b64encode(b"\x00\xffpng").decode()}},
            {"length": 5, "echo_bytes": {"b64": base64.b64encode(b"plain").decode()}},
        ]
    }


def test_scalar_input_goes_in_columnar_format(server):
    body = {"signature_name": "scalar", "inputs": {"rate": 0.25}}
    assert predict(server, KITCHEN, body).json() == {"outputs": 0.5}


def test_scalar_output_cannot_be_written_in_row_format(server):
    response = predict(server, KITCHEN, {"signature_name": "scalar", "instances": [0.25]})
    assert response.status_code == 400
    assert error_of(response) == "Tensor name: doubled has no shape information "


def test_bool_inputs_and_outputs(server):
    body = {"signature_name": "flags", "instances": [True, False]}
    assert predict(server, KITCHEN, body).json() == {"predictions": [False, True]}


def test_floats_are_written_as_tf_serving_writes_them(server):
    body = {"inputs": [[0.0], [0.1], [11999996.0], [1e7], ["NaN"], ["Infinity"]]}
    # NaN and Infinity are bare tokens, as TF Serving reads and writes them.
    text = json.dumps(body).replace('"NaN"', "NaN").replace('"Infinity"', "Infinity")
    response = predict(server, HALF + "/versions/1", text.encode())
    assert response.status_code == 200, response.text
    numbers = response.text.replace("\n", "").replace(" ", "")
    # 6e+06 fits in six digits; 5000002 needs all nine and gets '.0' appended.
    assert numbers == '{"outputs":[[2.0],[2.05],[6e+06],[5000002.0],[NaN],[Infinity]]}'


def test_mnist_pngs_and_float_images_give_the_same_answer(server, mnist):
    images = mnist[1][0][:3]
    pngs = [{"b64": base64.b64encode(encode_png(image)).decode()} for image in images]
    floats = (images.astype(np.float32) / 255.0)[..., np.newaxis].tolist()
    from_png = predict(
        server, MNIST, {"signature_name": config.PNG_SIGNATURE, "instances": pngs}
    ).json()["predictions"]
    from_floats = predict(server, MNIST, {"instances": floats}).json()["predictions"]
    assert [item["digit"] for item in from_png] == [item["digit"] for item in from_floats]
    np.testing.assert_allclose(
        [item["probabilities"] for item in from_png],
        [item["probabilities"] for item in from_floats],
        rtol=1e-4,
    )
    for item in from_png:
        assert item["digit"] == int(np.argmax(item["probabilities"]))


def test_image_of_the_wrong_size_gets_400_with_tensorflow_message(server):
    images = np.zeros((1, 27, 28, 1)).tolist()
    response = predict(server, MNIST, {"instances": images})
    assert response.status_code == 400
    message = error_of(response)
    assert "Traceback" not in message
    assert "reshape" in message


def test_image_of_the_wrong_rank_gets_400_instead_of_crashing(server):
    response = predict(server, MNIST, {"instances": [0.5, 0.5]})
    assert response.status_code == 400
    assert error_of(response) == (
        "Input 'image' of signature 'serving_default' must have rank 4 "
        "(shape [-1,28,28,1]), but got shape [2]"
    )
    assert server.get(MNIST).status_code == 200


# -- predict: errors with TF Serving's messages -----------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"", "JSON Parse error: The document is empty"),
        (b"[1]", "JSON Value: [\n    1\n] Is not object"),
        (
            b'{"instances": [1], "inputs": [1]}',
            'JSON Value: {\n    "instances": [\n        1\n    ],\n    "inputs": [\n        1\n'
            "    ]\n} Not formatted correctly expecting only one of 'inputs' or 'instances' "
            "keys to exist ",
        ),
        (b'{"signature_name": "serving_default"}', "Missing 'inputs' or 'instances' key"),
        (
            b'{"instances": []}',
            "JSON Value: {\n    \"instances\": []\n} No values in 'instances' array",
        ),
        (
            b'{"instances": 5}',
            "JSON Value: {\n    \"instances\": 5\n} Expecting 'instances' to be an list/array",
        ),
        (
            b'{"signature_name": 7, "instances": [1]}',
            'JSON Value: {\n    "signature_name": 7,\n    "instances": [\n        1\n    ]\n} '
            "not formatted correctly. 'signature_name' key must be a string value.",
        ),
        (
            b'{"signature_name": "nope", "instances": [1.0]}',
            'Serving signature name: "nope" not found in signature def',
        ),
        (
            b'{"instances": ["a"]}',
            "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
            'JSON Value: "a" Type: String is not of expected type: float',
        ),
        (
            b'{"instances": [true]}',
            "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
            "JSON Value: true Type: True is not of expected type: float",
        ),
        (
            b'{"instances": [{"b64": "aGk="}]}',
            "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
            'JSON Value: {\n    "b64": "aGk="\n} Type: Object is not of expected type: float',
        ),
        (
            b'{"instances": [[1.0], [2.0, 3.0]]}',
            "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: "
            "Expecting tensor size: 1 but got: 2",
        ),
        (
            b'{"inputs": [[1.0], [2.0, 3.0]]}',
            "Encountered list at unexpected size: 2 at level: 1 expected size: 1",
        ),
        (
            b'{"inputs": [[1.0], 2.0]}',
            "JSON Value: 2.0 found at incorrect level: 2 in the JSON DOM. Expected at level: 2",
        ),
    ],
    ids=[
        "empty body",
        "not an object",
        "both instances and inputs",
        "neither instances nor inputs",
        "empty instances",
        "instances not a list",
        "signature_name not a string",
        "unknown signature",
        "string for a float",
        "bool for a float",
        "b64 for a float",
        "ragged instances",
        "ragged inputs",
        "scalar at the wrong level",
    ],
)
def test_malformed_predict_request_gets_400_with_tf_serving_message(server, body, expected):
    response = predict(server, HALF, body)
    assert response.status_code == 400
    assert error_of(response) == expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            {"instances": [{"a": [1.0, 2.0]}]},
            "Failed to process element: 0 of 'instances' list. JSON object: {\n    \"a\": [\n"
            "        1.0,\n        2.0\n    ]\n} keys must be equal to: a,b",
        ),
        (
            {"instances": [[1.0, 2.0]]},
            "instances is a plain list, but expecting list of objects as multiple input "
            "tensors required as per tensorinfo_map",
        ),
        ({"inputs": {"a": [[1.0, 2.0]]}}, "Missing named input: b in 'inputs' object."),
        (
            {"inputs": [[1.0, 2.0]]},
            "inputs is a plain value/list, but expecting an object as multiple input tensors "
            "required as per tensorinfo_map",
        ),
        (
            {"instances": [{"a": [1.0, 2.0], "b": 1.5}]},
            "Failed to process element: 0 key: b of 'instances' list. Error: INVALID_ARGUMENT: "
            "JSON Value: 1.5 Type: Number is not of expected type: int32",
        ),
        (
            {"signature_name": "strings", "instances": [{"b64": "a-_b"}]},
            "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
            "Unable to base64 decode",
        ),
        (
            {"signature_name": "strings", "instances": [1]},
            "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
            "JSON Value: 1 Type: Number is not of expected type: string",
        ),
    ],
    ids=[
        "object without every input",
        "plain list for two inputs",
        "columnar input missing",
        "plain value for two inputs",
        "decimal for an int32",
        "url-safe base64",
        "number for a string",
    ],
)
def test_malformed_multi_input_request_gets_400_with_tf_serving_message(server, body, expected):
    response = predict(server, KITCHEN, body)
    assert response.status_code == 400
    assert error_of(response) == expected


@pytest.mark.parametrize("body", [b"instances = [1, 2]", b'{"instances": [1.]}'])
def test_body_that_is_not_json_gets_400_json_parse_error(server, body):
    response = predict(server, HALF, body)
    assert response.status_code == 400
    assert error_of(response).startswith("JSON Parse error: ")


def test_malformed_json_to_unknown_model_is_400_before_the_model_lookup(server):
    response = predict(server, "/v1/models/nope", b"{not json")
    assert response.status_code == 400
    assert error_of(response).startswith("JSON Parse error: ")


def test_unknown_model_gets_404_with_servable_not_found(server):
    response = predict(server, "/v1/models/nope", {"instances": [1.0]})
    assert response.status_code == 404
    assert error_of(response) == "Servable not found for request: Latest(nope)"


def test_unknown_version_gets_404_with_servable_not_found(server):
    response = predict(server, HALF + "/versions/9", {"instances": [1.0]})
    assert response.status_code == 404
    assert error_of(response) == "Servable not found for request: Specific(half_plus_two, 9)"


def test_unknown_label_gets_400_unrecognized_label(server):
    response = predict(server, HALF + "/labels/beta", {"instances": [1.0]})
    assert response.status_code == 400
    assert error_of(response) == "Unrecognized servable version label: beta"


# -- classify and regress: TF Serving's checks on predict-only models ---------


@pytest.mark.parametrize(
    ("path", "api", "expected"),
    [
        (KITCHEN, "classify", "Expected one input Tensor."),
        (KITCHEN, "regress", "Expected one input Tensor."),
        (MNIST, "classify", "No classification inputs found in SignatureDef: "),
        (MNIST, "regress", "Expected one output Tensor."),
        (HALF, "regress", "No regression inputs found in SignatureDef: "),
    ],
)
def test_classify_and_regress_on_a_predict_signature_get_400_with_tf_serving_message(
    server, path, api, expected
):
    response = server.post(f"{path}:{api}", json={"examples": [{"x": 1.0}]})
    assert response.status_code == 400
    assert error_of(response).startswith(expected)


def test_classify_with_an_unknown_signature_gets_400(server):
    response = server.post(f"{HALF}:classify", json={"signature_name": "nope", "examples": []})
    assert response.status_code == 400
    assert error_of(response) == "No signature was found with the name: nope"


@pytest.mark.parametrize("api", ["classify", "regress"])
def test_classify_and_regress_on_an_unknown_model_get_404_first(server, api):
    response = server.post(f"/v1/models/nope:{api}", json={"examples": [{"x": 1.0}]})
    assert response.status_code == 404
    assert error_of(response) == "Servable not found for request: Latest(nope)"


# -- URLs, methods, headers --------------------------------------------------


def test_paths_are_case_insensitive_as_in_tf_serving(server):
    assert server.get("/V1/MODELS/half_plus_two").status_code == 200


def test_url_encoded_model_name_is_decoded(server):
    assert server.get("/v1/models/half%5Fplus%5Ftwo").status_code == 200


def test_query_strings_are_ignored(server):
    assert predict(server, HALF + "/versions/1", {"instances": [1.0]}).json() == (
        server.post(HALF + "/versions/1:predict?verbose=1", json={"instances": [1.0]}).json()
    )


def test_every_answer_of_the_api_is_json(server):
    answers = [
        server.get(HALF),
        server.get(HALF + "/metadata"),
        predict(server, HALF, {"instances": [1.0]}),
        predict(server, HALF, b"oops"),
        server.get("/v1/nothing"),
    ]
    for response in answers:
        assert response.headers["Content-Type"] == "application/json"
        response.json()


# -- bodies and connections --------------------------------------------------


def test_gzip_request_body_is_decompressed(server):
    body = gzip.compress(json.dumps({"instances": [1.0, 2.0]}).encode())
    response = server.post(
        HALF + "/versions/1:predict", data=body, headers={"Content-Encoding": "gzip"}
    )
    assert response.json() == {"predictions": [2.5, 3.0]}


def test_chunked_request_body_is_read(server):
    def chunks():
        yield b'{"instances": '
        yield b"[1.0, 2.0]}"

    response = server.post(HALF + "/versions/1:predict", data=chunks())
    assert response.json() == {"predictions": [2.5, 3.0]}


def test_keep_alive_connection_serves_many_requests(server):
    with requests.Session() as session:
        for value in range(5):
            response = session.post(
                server.url + HALF + "/versions/1:predict",
                data=json.dumps({"instances": [float(value)]}),
                timeout=60,
            )
            assert response.json() == {"predictions": [0.5 * value + 2.0]}


def test_client_hanging_up_mid_request_disturbs_no_one(server):
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", server.port)) as connection:
            connection.sendall(
                b"POST /v1/models/half_plus_two:predict HTTP/1.1\r\nHost: x\r\n"
                b'Content-Length: 1000\r\n\r\n{"instances": [1.0'
            )
    assert predict(server, HALF, {"instances": [1.0]}).json() == {"predictions": [3.5]}


@pytest.mark.parametrize(
    "raw",
    [
        b"\x00\xff\xfe garbage\r\n\r\n",
        b"GET\r\n\r\n",
        b"POST /v1/models/half_plus_two:predict HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
        b"POST /v1/models/half_plus_two:predict HTTP/1.1\r\n"
        b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n",
    ],
    ids=["binary", "no path", "negative length", "bad chunk", "huge request line"],
)
def test_broken_http_does_not_take_the_server_down(server, raw):
    with socket.create_connection(("127.0.0.1", server.port)) as connection:
        connection.settimeout(10)
        connection.sendall(raw)
        with contextlib.suppress(TimeoutError, ConnectionError):
            connection.recv(65536)
    assert server.get(HALF).status_code == 200
    assert server.process.poll() is None
