"""The client's gRPC transport: TensorFlow Serving's PredictionService and ModelService.

Requests are tensorflow-serving-api's messages, sent with its generated stubs
over one HTTP/2 connection that the requests in flight share. Images travel
as TensorProtos: float32 pixels packed in `tensor_content` (as
`tf.make_tensor_proto` writes them), or PNG files in `string_val` for
`predict_png`; only the probabilities are asked back (`output_filter`).
TensorFlow is not loaded (`tf_serving_api`, `tensor_proto`).

The bounds are gRPC's own: `timeout` is each call's deadline, and
`max_answer_bytes` the channel's `grpc.max_receive_message_length`, so an
answer larger than that is refused by gRPC as it arrives.
"""

import re

import grpc
import numpy as np

from mnist_serving import tensor_proto, tf_serving_api
from mnist_serving.client import (
    ClientError,
    Signature,
    SignatureDefinition,
    answer_too_large,
    server_error,
    timed_out,
    unexpected_answer,
    unreachable,
)

# gRPC's message when a message exceeds the receiver's bound.
_TOO_LARGE = re.compile(r"Received message larger than max \((\d+) vs\. (\d+)\)")


class GrpcTransport:
    """Calls one model (and optionally one version or label) over gRPC.

    Args:
        server: `host:port` of TensorFlow Serving's gRPC API.
        model_name: The served model's name.
        version: A version number to pin, or None for the served default.
        label: A version label (e.g. `stable`) instead of a version.
        timeout: Each call's deadline, in seconds.
        max_answer_bytes: The largest answer read; a larger one is refused.
    """

    protocol = "gRPC"

    def __init__(self, server, model_name, version, label, timeout, max_answer_bytes):
        self.apis = tf_serving_api.load()
        self.server = server
        self.timeout = timeout
        self.max_answer_bytes = max_answer_bytes
        self._channel = grpc.insecure_channel(
            server, options=[("grpc.max_receive_message_length", max_answer_bytes)]
        )
        self._predictions = self.apis.prediction_service_pb2_grpc.PredictionServiceStub(
            self._channel
        )
        self._models = self.apis.model_service_pb2_grpc.ModelServiceStub(self._channel)
        self._model_spec = self.apis.predict_pb2.PredictRequest().model_spec
        self._model_spec.name = model_name
        if version is not None:
            self._model_spec.version.value = version
        elif label is not None:
            self._model_spec.version_label = label

    def close(self) -> None:
        """Closes the channel."""
        self._channel.close()

    def _call(self, stub, method: str, request):
        """Calls one RPC within the deadline; its errors become one-line ClientErrors."""
        try:
            return getattr(stub, method)(request, timeout=self.timeout)
        except grpc.RpcError as error:
            raise self._client_error(error, method) from None

    def _client_error(self, error: grpc.RpcError, method: str) -> ClientError:
        code, details = error.code(), error.details() or ""
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return timed_out(self.server, self.timeout)
        if code == grpc.StatusCode.UNAVAILABLE:
            return unreachable(self.server, _reason(details))
        too_large = _TOO_LARGE.search(details)
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED and too_large:
            size, limit = map(int, too_large.groups())
            if limit == self.max_answer_bytes:  # This side's bound, not the server's.
                return answer_too_large(f"{self.server} ({method})", limit, size)
        if code == grpc.StatusCode.UNIMPLEMENTED and details == "Method not found!":
            return unexpected_answer(method, self.server, self.protocol)
        return server_error(code.name, details)

    def version_states(self) -> list[str]:
        """The state of each version of the model (`AVAILABLE`, `LOADING`, ...)."""
        get_model_status_pb2 = self.apis.get_model_status_pb2
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.CopyFrom(self._model_spec)
        response = self._call(self._models, "GetModelStatus", request)
        state_name = get_model_status_pb2.ModelVersionStatus.State.Name
        return [state_name(entry.state) for entry in response.model_version_status]

    def signatures(self) -> dict[str, SignatureDefinition]:
        """The model's signatures, from its metadata."""
        get_model_metadata_pb2 = self.apis.get_model_metadata_pb2
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        request.model_spec.CopyFrom(self._model_spec)
        response = self._call(self._predictions, "GetModelMetadata", request)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        if not response.metadata["signature_def"].Unpack(signature_map):
            raise unexpected_answer("metadata", self.server, self.protocol)
        return {
            name: SignatureDefinition(
                inputs={alias: _dtype_name(info) for alias, info in signature.inputs.items()},
                outputs=list(signature.outputs),
            )
            for name, signature in signature_map.signature_def.items()
        }

    def predict(self, signature: Signature, inputs: np.ndarray | list[bytes]) -> np.ndarray:
        """The probabilities the signature gives for float32 images or PNG files."""
        request = self.apis.predict_pb2.PredictRequest()
        request.model_spec.CopyFrom(self._model_spec)
        request.model_spec.signature_name = signature.name
        values = np.array(inputs, dtype=object) if signature.takes_png else inputs
        tensor_proto.fill_tensor_proto(request.inputs[signature.input_name], values, True)
        if signature.probabilities_output is not None:
            request.output_filter.append(signature.probabilities_output)
        response = self._call(self._predictions, "Predict", request)
        outputs = dict(response.outputs)
        wanted = signature.probabilities_output
        if wanted is None and len(outputs) == 1:
            [wanted] = outputs
        if wanted not in outputs:
            raise unexpected_answer("predict", self.server, self.protocol)
        try:
            return tensor_proto.to_ndarray(outputs[wanted], self.max_answer_bytes)
        except tensor_proto.TensorProtoError:
            raise unexpected_answer("predict", self.server, self.protocol) from None


def _dtype_name(tensor_info) -> str:
    """`DT_FLOAT` and the like: the name of a TensorInfo's dtype."""
    names = tensor_info.DESCRIPTOR.fields_by_name["dtype"].enum_type.values_by_number
    return names[tensor_info.dtype].name if tensor_info.dtype in names else str(tensor_info.dtype)


def _reason(details: str) -> str:
    """'connection refused' and the like, from gRPC's UNAVAILABLE details."""
    lowered = details.lower()
    if "connection refused" in lowered:
        return "connection refused"
    if "dns resolution failed" in lowered or "name or service not known" in lowered:
        return "unknown host"
    return details.splitlines()[0][:200] if details else "unavailable"
