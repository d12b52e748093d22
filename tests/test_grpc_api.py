"""model_server.py's gRPC API, call by call, with TF Serving's official stubs.

One real server (a subprocess on free 127.0.0.1 ports) serves, for the whole
module, `half_plus_two` (versions 1 and 2, labels stable and canary),
`kitchen` (several signatures, inputs, outputs and dtypes) and `shaped`
(signatures shaped for TF Serving's Classify and Regress APIs). Requests are
built as TF Serving's examples build them (`tf.make_tensor_proto`), answers
read with `tf.make_ndarray`; each answer and each error is TF Serving's.
"""

import numpy as np
import pytest
import requests
import tensorflow as tf
from grpc_fixtures import Stubs, error_of, half_request, outputs_of, predict_request
from server_fixtures import (
    ServerProcess,
    copy_version,
    save_example_shaped,
    save_half_plus,
    save_kitchen,
)
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    predict_pb2,
    regression_pb2,
)

from mnist_serving import savedmodel

HALF = "half_plus_two"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("grpc_api")
    half = folder / HALF
    copy_version(save_half_plus(folder / "build_half_1", 2.0), half, 1)
    copy_version(save_half_plus(folder / "build_half_2", 3.0), half, 2)
    kitchen = copy_version(save_kitchen(folder / "build_kitchen"), folder / "kitchen", 1).parent
    shaped = copy_version(save_example_shaped(folder / "build_shaped"), folder / "shaped", 1).parent
    config_file = folder / "models.config"
    config_file.write_text(
        f"""
model_config_list {{
  config {{
    name: "{HALF}" base_path: "{half}"
    model_version_policy {{ all {{}} }}
    version_labels {{ key: "stable" value: 1 }}
    version_labels {{ key: "canary" value: 2 }}
  }}
  config {{ name: "kitchen" base_path: "{kitchen}" }}
  config {{ name: "shaped" base_path: "{shaped}" }}
}}
"""
    )
    return {"config": config_file, "half": half, "kitchen": kitchen, "shaped": shaped}


@pytest.fixture(scope="module")
def server(models):
    with ServerProcess(
        f"--model_config_file={models['config']}",
        "--allow_version_labels_for_unavailable_models=true",
    ) as process:
        yield process


@pytest.fixture(scope="module")
def stubs(server):
    with Stubs(server.grpc_target) as opened:
        yield opened


# Predict


def test_predict_answers_in_typed_fields_with_the_resolved_model_spec(stubs):
    response = stubs.prediction.Predict(half_request(HALF, [1.0, 2.0, 5.0]), timeout=60)
    # TF Serving writes its answers in the typed fields, not tensor_content.
    assert list(response.outputs["y"].float_val) == [3.5, 4.0, 5.5]
    assert [dim.size for dim in response.outputs["y"].tensor_shape.dim] == [3, 1]
    assert response.model_spec.name == HALF
    assert response.model_spec.version.value == 2
    assert response.model_spec.signature_name == "serving_default"


@pytest.mark.parametrize(
    ("choice", "expected"),
    [({"version": 1}, 2.5), ({"version": 2}, 3.5), ({"label": "stable"}, 2.5), ({}, 3.5)],
    ids=["version 1", "version 2", "label stable", "latest"],
)
def test_predict_serves_the_version_or_label_asked_for(stubs, choice, expected):
    response = stubs.prediction.Predict(half_request(HALF, [1.0], **choice), timeout=60)
    assert outputs_of(response)["y"].tolist() == [[expected]]
    assert response.model_spec.version.value == (1 if expected == 2.5 else 2)


def test_predict_runs_the_signature_named_with_several_inputs_and_dtypes(stubs):
    inputs = {"a": np.array([[1.0, 2.0], [3.0, 4.0]], np.float32), "b": np.array([10, 20])}
    inputs["b"] = inputs["b"].astype(np.int32)
    response = stubs.prediction.Predict(predict_request("kitchen", inputs), timeout=60)
    outputs = outputs_of(response)
    assert outputs["total"].tolist() == [13.0, 27.0]
    assert outputs["b_twice"].dtype == np.int32 and outputs["b_twice"].tolist() == [20, 40]
    strings = predict_request(
        "kitchen", {"text": np.array([b"ab", b"\xff\x00c"], object)}, signature="strings"
    )
    outputs = outputs_of(stubs.prediction.Predict(strings, timeout=60))
    assert outputs["length"].tolist() == [2, 3]
    assert outputs["echo_bytes"].tolist() == [b"ab", b"\xff\x00c"]
    flags = predict_request("kitchen", {"flag": np.array([True, False])}, signature="flags")
    assert outputs_of(stubs.prediction.Predict(flags, timeout=60))["negated"].tolist() == [
        False,
        True,
    ]


def test_output_filter_answers_with_the_outputs_asked_for_only(stubs):
    inputs = {"a": np.zeros((1, 2), np.float32), "b": np.array([3], np.int32)}
    request = predict_request("kitchen", inputs, output_filter=["b_twice"])
    response = stubs.prediction.Predict(request, timeout=60)
    assert list(response.outputs) == ["b_twice"]
    assert outputs_of(response)["b_twice"].tolist() == [6]


def test_typed_fields_and_tensor_content_are_both_read_as_tensorflow_reads_them(stubs):
    # tf.make_tensor_proto packs arrays in tensor_content; hand-made protos
    # use float_val, where a single value fills the whole shape.
    packed = half_request(HALF, [4.0, 4.0, 4.0])
    assert packed.inputs["x"].tensor_content
    typed = predict_pb2.PredictRequest()
    typed.model_spec.name = HALF
    typed.inputs["x"].dtype = tf.float32.as_datatype_enum
    typed.inputs["x"].tensor_shape.dim.add(size=3)
    typed.inputs["x"].tensor_shape.dim.add(size=1)
    typed.inputs["x"].float_val.append(4.0)
    answers = [outputs_of(stubs.prediction.Predict(r, timeout=60)) for r in (packed, typed)]
    assert answers[0]["y"].tolist() == answers[1]["y"].tolist() == [[5.0], [5.0], [5.0]]


def test_grpc_and_rest_give_the_same_numbers_for_the_same_request(stubs, server):
    values = [0.1, 1e-7, 123456.7, -3.25]
    grpc_answer = outputs_of(stubs.prediction.Predict(half_request(HALF, values), timeout=60))
    rest_answer = requests.post(
        f"{server.url}/v1/models/{HALF}:predict",
        json={"instances": [[value] for value in values]},
        timeout=60,
    ).json()
    np.testing.assert_array_equal(
        grpc_answer["y"], np.asarray(rest_answer["predictions"], np.float32)
    )


def wrong_content_size():
    request = half_request(HALF, [1.0, 2.0])
    request.inputs["x"].tensor_content = request.inputs["x"].tensor_content[:-1]
    return request


def huge_shape():
    request = predict_pb2.PredictRequest()
    request.model_spec.name = HALF
    request.inputs["x"].dtype = tf.float32.as_datatype_enum
    request.inputs["x"].tensor_shape.dim.add(size=2**40)
    request.inputs["x"].float_val.append(1.0)
    return request


def kitchen_inputs(**inputs):
    return predict_request("kitchen", {key: np.asarray(value) for key, value in inputs.items()})


PREDICT_ERRORS = {
    "unknown model": (
        lambda: half_request("nope", [1.0]),
        "NOT_FOUND",
        "Servable not found for request: Latest(nope)",
    ),
    "unknown version": (
        lambda: half_request(HALF, [1.0], version=7),
        "NOT_FOUND",
        f"Servable not found for request: Specific({HALF}, 7)",
    ),
    "unknown label": (
        lambda: half_request(HALF, [1.0], label="beta"),
        "INVALID_ARGUMENT",
        "Unrecognized servable version label: beta",
    ),
    "unknown signature": (
        lambda: half_request(HALF, [1.0], signature="nope"),
        "FAILED_PRECONDITION",
        'Serving signature key "nope" not found.',
    ),
    "no model spec": (predict_pb2.PredictRequest, "INVALID_ARGUMENT", "Missing ModelSpec"),
    "no model name": (
        lambda: half_request("", [1.0]),
        "INVALID_ARGUMENT",
        "ModelSpec has no name specified.",
    ),
    "wrong dtype": (
        lambda: predict_request(HALF, {"x": np.array([[1]], np.int32)}),
        "INVALID_ARGUMENT",
        "Expects arg[0] to be float but int32 is provided",
    ),
    "missing input": (
        lambda: kitchen_inputs(a=np.zeros((1, 2), np.float32)),
        "INVALID_ARGUMENT",
        "input size does not match signature: 1!=2 len({a}) != len({a,b}). Sent extra: {}. "
        "Missing but required: {b}.",
    ),
    "extra input": (
        lambda: predict_request(HALF, {"x": np.ones((1, 1), np.float32), "z": np.ones(1)}),
        "INVALID_ARGUMENT",
        "input size does not match signature: 2!=1 len({x,z}) != len({x}). Sent extra: {z}. "
        "Missing but required: {}.",
    ),
    "misnamed input": (
        lambda: kitchen_inputs(a=np.zeros((1, 2), np.float32), c=np.ones(1, np.int32)),
        "INVALID_ARGUMENT",
        "Signature input alias: b(feed name: serving_default_b:0) not found in request and no "
        "default value provided. Inputs expected to be in the request {a,c}, or default input "
        "alias set: ",
    ),
    "unknown output": (
        lambda: half_request(HALF, [1.0], output_filter=["z"]),
        "INVALID_ARGUMENT",
        "output tensor alias not found in signature: z Outputs expected to be in the set {y}.",
    ),
    "repeated output": (
        lambda: half_request(HALF, [1.0], output_filter=["y", "y"]),
        "INVALID_ARGUMENT",
        "duplicate output tensor alias: y",
    ),
    "tensor_content of the wrong size": (
        wrong_content_size,
        "INVALID_ARGUMENT",
        "tensor parsing error: x (tensor_content of 7 bytes for shape [2, 1])",
    ),
    "shape that would decode to terabytes": (
        huge_shape,
        "INVALID_ARGUMENT",
        "tensor parsing error: x (shape [1099511627776] holds 1,099,511,627,776 elements: more "
        "than the limit of 67,108,864 bytes once decoded)",
    ),
}


@pytest.mark.parametrize("case", PREDICT_ERRORS)
def test_predict_errors_carry_tf_servings_codes_and_messages(stubs, case):
    build, code, message = PREDICT_ERRORS[case]
    assert error_of(stubs.prediction.Predict, build()) == (code, message)


def test_a_shape_the_model_cannot_compute_is_tensorflows_invalid_argument(stubs):
    # As in TF Serving, shapes are left to TensorFlow: a sum over rows of a
    # tensor that has no rows fails in the runtime, with its message.
    code, message = error_of(
        stubs.prediction.Predict,
        kitchen_inputs(a=np.zeros(2, np.float32), b=np.ones(2, np.int32)),
    )
    assert code == "INVALID_ARGUMENT"
    assert "Traceback" not in message and len(message.splitlines()) <= 2


def test_a_message_over_the_receive_limit_is_resource_exhausted(stubs):
    # 64 MiB is the default bound (TF Serving reads up to 2 GiB).
    request = half_request(HALF, np.zeros(16 * 2**20 + 1, np.float32))
    code, message = error_of(stubs.prediction.Predict, request)
    assert code == "RESOURCE_EXHAUSTED"
    # gRPC core says which side refused it.
    assert message == (
        f"SERVER: Received message larger than max ({request.ByteSize()} vs. 67108864)"
    )


def test_long_messages_are_cut_at_1024_characters_as_tf_serving_cuts_them(stubs):
    label = "a" * 2000
    code, message = error_of(stubs.prediction.Predict, half_request(HALF, [1.0], label=label))
    full = f"Unrecognized servable version label: {label}"
    assert (code, message) == ("INVALID_ARGUMENT", full[:1024] + "...TRUNCATED")


# GetModelMetadata


def metadata_request(model, fields=("signature_def",), **choice):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=list(fields))
    request.model_spec.name = model
    if "version" in choice:
        request.model_spec.version.value = choice["version"]
    if "label" in choice:
        request.model_spec.version_label = choice["label"]
    return request


@pytest.mark.parametrize(("choice", "version"), [({}, 2), ({"label": "stable"}, 1)])
def test_metadata_is_the_versions_signature_def_map(stubs, models, choice, version):
    response = stubs.prediction.GetModelMetadata(metadata_request(HALF, **choice), timeout=60)
    assert response.model_spec.name == HALF
    assert response.model_spec.version.value == version
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signature_map)
    on_disk = savedmodel.read_signature_defs(models["half"] / str(version))
    assert dict(signature_map.signature_def) == on_disk


METADATA_ERRORS = {
    "no field": (
        lambda: metadata_request(HALF, fields=()),
        "INVALID_ARGUMENT",
        "GetModelMetadataRequest must specify at least one metadata_field",
    ),
    "another field": (
        lambda: metadata_request(HALF, fields=("signature_def", "graph")),
        "INVALID_ARGUMENT",
        "Metadata field graph is not supported",
    ),
    "no model spec": (
        lambda: get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"]),
        "INVALID_ARGUMENT",
        "Missing ModelSpec",
    ),
    "unknown model": (
        lambda: metadata_request("nope"),
        "NOT_FOUND",
        "Servable not found for request: Latest(nope)",
    ),
    "unknown version": (
        lambda: metadata_request(HALF, version=9),
        "NOT_FOUND",
        f"Servable not found for request: Specific({HALF}, 9)",
    ),
}


@pytest.mark.parametrize("case", METADATA_ERRORS)
def test_metadata_errors_are_tf_servings(stubs, case):
    build, code, message = METADATA_ERRORS[case]
    assert error_of(stubs.prediction.GetModelMetadata, build()) == (code, message)


# Classify, Regress and MultiInference: TF Serving's checks, then UNIMPLEMENTED.


def classification(model, signature=""):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    request.input.example_list.examples.add()
    return request


def regression(model, signature=""):
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    request.input.example_list.examples.add()
    return request


def test_classify_on_a_predict_signature_gets_tf_servings_refusal(stubs):
    code, message = error_of(stubs.prediction.Classify, classification(HALF))
    assert code == "INVALID_ARGUMENT"
    expected = 'No classification inputs found in SignatureDef: inputs {\n  key: "x"'
    assert message.startswith(expected)


def test_regress_on_a_predict_signature_gets_tf_servings_refusal(stubs):
    code, message = error_of(stubs.prediction.Regress, regression(HALF))
    assert code == "INVALID_ARGUMENT"
    assert message.startswith('No regression inputs found in SignatureDef: inputs {\n  key: "x"')
    two_outputs = regression("kitchen", "strings")
    assert error_of(stubs.prediction.Regress, two_outputs) == (
        "INVALID_ARGUMENT",
        "Expected one output Tensor.",
    )


CLASSIFY_AND_REGRESS = {
    "unknown model": (
        "Classify",
        lambda: classification("nope"),
        "NOT_FOUND",
        "Servable not found for request: Latest(nope)",
    ),
    "unknown signature": (
        "Regress",
        lambda: regression(HALF, "nope"),
        "INVALID_ARGUMENT",
        "No signature was found with the name: nope",
    ),
    "classify without model spec": (
        "Classify",
        classification_pb2.ClassificationRequest,
        "INVALID_ARGUMENT",
        "Missing ModelSpec",
    ),
    "regress without model spec": (
        "Regress",
        regression_pb2.RegressionRequest,
        "INVALID_ARGUMENT",
        "Missing ModelSpec",
    ),
    "classify-shaped signature": (
        "Classify",
        lambda: classification("shaped", "classify"),
        "UNIMPLEMENTED",
        "model_server.py does not run Classify (tf.Example input); use Predict",
    ),
    "regress-shaped signature": (
        "Regress",
        lambda: regression("shaped", "regress"),
        "UNIMPLEMENTED",
        "model_server.py does not run Regress (tf.Example input); use Predict",
    ),
}


@pytest.mark.parametrize("case", CLASSIFY_AND_REGRESS)
def test_classify_and_regress_answer_as_tf_serving_for_a_predict_only_server(stubs, case):
    call, request_of, code, message = CLASSIFY_AND_REGRESS[case]
    assert error_of(getattr(stubs.prediction, call), request_of()) == (code, message)


def multi_inference(*tasks):
    """A MultiInferenceRequest of (model, signature, method) tasks."""
    request = inference_pb2.MultiInferenceRequest()
    for model, signature, method in tasks:
        task = request.tasks.add(method_name=f"tensorflow/serving/{method}")
        task.model_spec.name = model
        task.model_spec.signature_name = signature
    request.input.example_list.examples.add()
    return request


MULTI_INFERENCE = {
    "no task": (multi_inference(), "INVALID_ARGUMENT", "ModelSpec has no name specified."),
    "two models": (
        multi_inference(("shaped", "classify", "classify"), (HALF, "", "regress")),
        "INVALID_ARGUMENT",
        "All ModelSpecs in a MultiInferenceRequest must access the same model name.",
    ),
    "a signature twice": (
        multi_inference(("shaped", "classify", "classify"), ("shaped", "classify", "regress")),
        "INVALID_ARGUMENT",
        "Duplicate evaluation of signature: classify",
    ),
    "unknown signature": (
        multi_inference(("shaped", "nope", "classify")),
        "INVALID_ARGUMENT",
        "Requested signature not found in model graph: nope",
    ),
    "predict method": (
        multi_inference(("shaped", "classify", "predict")),
        "UNIMPLEMENTED",
        "Unsupported signature method_name: tensorflow/serving/predict",
    ),
    "regress on a classify signature": (
        multi_inference(("shaped", "classify", "regress")),
        "INVALID_ARGUMENT",
        'No regression outputs found in SignatureDef: inputs {\n  key: "inputs"',
    ),
    "tasks a predict-only server checks and refuses": (
        multi_inference(("shaped", "classify", "classify"), ("shaped", "regress", "regress")),
        "UNIMPLEMENTED",
        "model_server.py does not run MultiInference (tf.Example input); use Predict",
    ),
}


@pytest.mark.parametrize("case", MULTI_INFERENCE)
def test_multi_inference_answers_as_tf_serving_for_a_predict_only_server(stubs, case):
    request, code, message = MULTI_INFERENCE[case]
    answer = error_of(stubs.prediction.MultiInference, request)
    assert answer[0] == code
    assert answer[1].startswith(message)


# GetModelStatus


def status_request(model, version=None, label=None):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = model
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    return request


def test_status_lists_every_version_newest_first(stubs):
    response = stubs.model.GetModelStatus(status_request(HALF), timeout=60)
    assert [(entry.version, entry.state) for entry in response.model_version_status] == [
        (2, get_model_status_pb2.ModelVersionStatus.AVAILABLE),
        (1, get_model_status_pb2.ModelVersionStatus.AVAILABLE),
    ]
    assert all(entry.HasField("status") for entry in response.model_version_status)
    assert all(entry.status.error_code == 0 for entry in response.model_version_status)


def test_status_of_one_version_and_of_a_label(stubs):
    one = stubs.model.GetModelStatus(status_request(HALF, version=1), timeout=60)
    assert [entry.version for entry in one.model_version_status] == [1]
    # As in TF Serving, a label is not resolved: every version is listed.
    labelled = stubs.model.GetModelStatus(status_request(HALF, label="stable"), timeout=60)
    assert [entry.version for entry in labelled.model_version_status] == [2, 1]


STATUS_ERRORS = {
    "unknown model": (
        lambda: status_request("nope"),
        "NOT_FOUND",
        "Could not find any versions of model nope",
    ),
    "unknown version": (
        lambda: status_request(HALF, version=5),
        "NOT_FOUND",
        f"Could not find version 5 of model {HALF}",
    ),
    "no model spec": (
        get_model_status_pb2.GetModelStatusRequest,
        "INVALID_ARGUMENT",
        "Missing ModelSpec",
    ),
}


@pytest.mark.parametrize("case", STATUS_ERRORS)
def test_status_errors_are_tf_servings(stubs, case):
    request_of, code, message = STATUS_ERRORS[case]
    assert error_of(stubs.model.GetModelStatus, request_of()) == (code, message)


def test_every_tensorflow_dtype_of_the_stubs_round_trips_through_the_codec():
    # The codec the server and the client share, against TensorFlow's own.
    from mnist_serving import tensor_proto

    arrays = [
        np.array([[1.5, -2.0]], np.float32),
        np.array([1e300], np.float64),
        np.array([[1, -2], [3, 4]], np.int32),
        np.array([255, 0], np.uint8),
        np.array([-32768], np.int16),
        np.array([-128, 127], np.int8),
        np.array([65535], np.uint16),
        np.array([2**62], np.int64),
        np.array([True, False]),
        np.array([2**32 - 1], np.uint32),
        np.array([2**64 - 1], np.uint64),
        np.array([1.5, -0.25], np.float16),
        np.array([1 + 2j], np.complex64),
        np.array([3 - 4j], np.complex128),
        np.array([b"a", b"\x00\xff"], object),
        np.float32(7.0),
    ]
    for array in arrays:
        for as_content in (False, True):
            ours = predict_pb2.PredictRequest().inputs["x"]
            tensor_proto.fill_tensor_proto(ours, array, as_content)
            np.testing.assert_array_equal(tf.make_ndarray(ours), array)
            theirs = tf.make_tensor_proto(array)
            read = tensor_proto.to_ndarray(theirs)
            assert read.dtype == tf.make_ndarray(theirs).dtype
            np.testing.assert_array_equal(read, array)
