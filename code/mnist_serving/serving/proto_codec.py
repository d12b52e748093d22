"""TF Serving's protobuf requests and answers (gRPC, warm-up records) to tensors and back.

A `PredictRequest` arrives over gRPC, or from a version's warm-up file; both
are read here with the checks, in the order and with the messages of TF
Serving's `predict_util.cc` and TensorFlow's `GetInputValues`. The tensors
themselves are converted by `mnist_serving.tensor_proto`, which follows
TensorFlow's `Tensor::FromProto` without TensorFlow's overhead.
"""

import numpy as np
from tensorflow_serving.apis import get_model_metadata_pb2, model_pb2, predict_pb2

from mnist_serving import config, tensor_proto
from mnist_serving.serving.errors import ServingError
from mnist_serving.serving.json_tensors import dtype_name
from mnist_serving.serving.loaded_version import classify_or_regress_problem

SIGNATURE_DEF_FIELD = "signature_def"
# The method names of a MultiInference task, and the API each asks for.
TASK_APIS = {"tensorflow/serving/classify": "classify", "tensorflow/serving/regress": "regress"}


def invalid_argument(message: str) -> ServingError:
    return ServingError("INVALID_ARGUMENT", message)


def model_spec_address(model_spec: model_pb2.ModelSpec) -> tuple[str, int | None, str | None]:
    """(name, version, label) a ModelSpec asks for, as TF Serving's ServerCore reads it.

    Raises:
        ServingError: INVALID_ARGUMENT for a ModelSpec without a name.
    """
    if not model_spec.name:
        raise invalid_argument("ModelSpec has no name specified.")
    choice = model_spec.WhichOneof("version_choice")
    version = model_spec.version.value if choice == "version" else None
    label = model_spec.version_label if choice == "version_label" else None
    return model_spec.name, version, label


def signature_key(model_spec: model_pb2.ModelSpec) -> str:
    """The signature a ModelSpec names; `serving_default` when it names none."""
    return model_spec.signature_name or config.DEFAULT_SIGNATURE


def predict_signature(signature_defs: dict, model_spec: model_pb2.ModelSpec) -> tuple[str, object]:
    """(key, SignatureDef) a Predict request runs.

    Raises:
        ServingError: FAILED_PRECONDITION, TF Serving's answer to an unknown signature
            over gRPC (its REST API answers INVALID_ARGUMENT, with another text).
    """
    key = signature_key(model_spec)
    if key not in signature_defs:
        raise ServingError("FAILED_PRECONDITION", f'Serving signature key "{key}" not found.')
    return key, signature_defs[key]


def _joined(names) -> str:
    return ",".join(sorted(names))


def predict_inputs(
    request: predict_pb2.PredictRequest, signature, max_bytes: int | None = None
) -> dict[str, np.ndarray]:
    """The input tensors of a PredictRequest for `signature` (a SignatureDef).

    Args:
        request: The request.
        signature: The SignatureDef it runs.
        max_bytes: The largest tensor accepted, once decoded (None: no bound).

    Raises:
        ServingError: INVALID_ARGUMENT with TF Serving's message for extra or
            missing inputs, an unreadable tensor, or a dtype other than the
            signature's.
    """
    sent = set(request.inputs)
    expected = set(signature.inputs)
    defaults = set(getattr(signature, "defaults", {}))
    if len(sent) > len(expected) or (len(sent) < len(expected) and not defaults):
        raise invalid_argument(
            f"input size does not match signature: {len(sent)}!={len(expected)} "
            f"len({{{_joined(sent)}}}) != len({{{_joined(expected)}}}). "
            f"Sent extra: {{{_joined(sent - expected)}}}. "
            f"Missing but required: {{{_joined(expected - sent)}}}."
        )
    protos = {}
    for alias in sorted(expected):
        if alias in request.inputs:
            protos[alias] = request.inputs[alias]
        elif alias in defaults:
            protos[alias] = signature.defaults[alias]
        else:
            raise invalid_argument(
                f"Signature input alias: {alias}(feed name: {signature.inputs[alias].name}) not "
                "found in request and no default value provided. Inputs expected to be in the "
                f"request {{{_joined(sent)}}}, or default input alias set: {_joined(defaults)}"
            )
    tensors = {}
    for alias, proto in protos.items():
        try:
            tensors[alias] = tensor_proto.to_ndarray(proto, max_bytes)
        except tensor_proto.TensorProtoError as error:
            raise invalid_argument(f"tensor parsing error: {alias} ({error})") from None
    # The session refuses a feed whose dtype is not the placeholder's.
    for index, alias in enumerate(protos):
        sent_dtype, wanted = protos[alias].dtype, signature.inputs[alias].dtype
        if sent_dtype != wanted:
            raise invalid_argument(
                f"Expects arg[{index}] to be {dtype_name(wanted)} but "
                f"{dtype_name(sent_dtype)} is provided"
            )
    return tensors


def output_aliases(request: predict_pb2.PredictRequest, signature) -> list[str]:
    """The outputs to answer with: `output_filter` in its order, or all of the signature's.

    Raises:
        ServingError: INVALID_ARGUMENT for an unknown or repeated alias.
    """
    seen = []
    for alias in request.output_filter:
        if alias not in signature.outputs:
            raise invalid_argument(
                f"output tensor alias not found in signature: {alias} Outputs expected to be "
                f"in the set {{{_joined(signature.outputs)}}}."
            )
        if alias in seen:
            raise invalid_argument(f"duplicate output tensor alias: {alias}")
        seen.append(alias)
    return seen or sorted(signature.outputs)


def predict_response(
    model_name: str,
    signature_name: str,
    version: int,
    outputs: dict[str, np.ndarray],
    aliases: list[str],
) -> predict_pb2.PredictResponse:
    """A PredictResponse as TF Serving writes it: typed fields (`float_val`, ...), resolved spec.

    Raises:
        ServingError: INVALID_ARGUMENT for an output of a dtype TensorProto cannot carry.
    """
    response = predict_pb2.PredictResponse()
    response.model_spec.name = model_name
    response.model_spec.signature_name = signature_name
    response.model_spec.version.value = version
    for alias in aliases:
        try:
            tensor_proto.fill_tensor_proto(response.outputs[alias], outputs[alias])
        except tensor_proto.TensorProtoError as error:
            raise invalid_argument(f"output {alias}: {error}") from None
    return response


def check_metadata_fields(request: get_model_metadata_pb2.GetModelMetadataRequest) -> None:
    """TF Serving's checks of `metadata_field`: at least one, and only `signature_def`.

    Raises:
        ServingError: INVALID_ARGUMENT with TF Serving's message.
    """
    if not request.metadata_field:
        raise invalid_argument("GetModelMetadataRequest must specify at least one metadata_field")
    for field in request.metadata_field:
        if field != SIGNATURE_DEF_FIELD:
            raise invalid_argument(f"Metadata field {field} is not supported")


def metadata_response(
    model_name: str, version: int, signature_defs: dict
) -> get_model_metadata_pb2.GetModelMetadataResponse:
    """The GetModelMetadataResponse of a version: its SignatureDefMap, packed in an Any."""
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = model_name
    response.model_spec.version.value = version
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    for key, signature in signature_defs.items():
        signature_map.signature_def[key].CopyFrom(signature)
    response.metadata[SIGNATURE_DEF_FIELD].Pack(signature_map)
    return response


def check_multi_inference(request, signature_defs: dict) -> None:
    """TF Serving's checks of a MultiInferenceRequest's tasks (its multi_inference.cc).

    Every task must name the same model, a distinct signature of it, and a
    classify or regress method its signature can serve.

    Raises:
        ServingError: INVALID_ARGUMENT (UNIMPLEMENTED for another method) with
            TF Serving's message.
    """
    model_name = ""
    seen = set()
    for task in request.tasks:
        name = task.model_spec.name
        if not name:
            raise invalid_argument("Found ModelSpec with an empty model name.")
        if model_name and name != model_name:
            raise invalid_argument(
                "All ModelSpecs in a MultiInferenceRequest must access the same model name."
            )
        model_name = name
        key = signature_key(task.model_spec)
        if key in seen:
            raise invalid_argument(f"Duplicate evaluation of signature: {key}")
        seen.add(key)
        if key not in signature_defs:
            raise invalid_argument(f"Requested signature not found in model graph: {key}")
        api = TASK_APIS.get(task.method_name)
        if api is None:
            raise ServingError(
                "UNIMPLEMENTED", f"Unsupported signature method_name: {task.method_name}"
            )
        problem = classify_or_regress_problem(api, signature_defs[key])
        if problem is not None:
            raise invalid_argument(problem)
