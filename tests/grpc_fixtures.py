"""Helpers of the gRPC tests: TF Serving's official stubs, requests, and errors as values."""

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import (
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

# A generous deadline: calls of the tests answer in well under a second.
DEADLINE_SECONDS = 60


class Stubs:
    """PredictionService and ModelService stubs on one channel to a server's gRPC port."""

    def __init__(self, target, options=()):
        self.channel = grpc.insecure_channel(target, options=list(options))
        self.prediction = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.model = model_service_pb2_grpc.ModelServiceStub(self.channel)

    def close(self):
        self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.close()


def predict_request(model, inputs, signature="", version=None, label=None, output_filter=()):
    """A PredictRequest whose inputs (alias -> array) are written by tf.make_tensor_proto."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    for alias, value in inputs.items():
        request.inputs[alias].CopyFrom(tf.make_tensor_proto(value))
    request.output_filter.extend(output_filter)
    return request


def half_request(model, values, **keywords):
    """A PredictRequest of float32 values for a half_plus model (input `x`, [-1, 1])."""
    x = np.asarray(values, dtype=np.float32).reshape(-1, 1)
    return predict_request(model, {"x": x}, **keywords)


def outputs_of(response):
    """alias -> numpy array of a PredictResponse, read with tf.make_ndarray."""
    return {alias: tf.make_ndarray(proto) for alias, proto in response.outputs.items()}


def error_of(call, request, timeout=DEADLINE_SECONDS):
    """(status code name, details) of a call that must fail."""
    try:
        call(request, timeout=timeout)
    except grpc.RpcError as error:
        return error.code().name, error.details()
    raise AssertionError("the call succeeded")
