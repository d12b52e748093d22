"""The gRPC side of the client, and TF Serving's own client pattern, against model_server.py.

What the client shares with REST (output, flags, exit statuses, folders) is
tested over both protocols in test_client.py; here are the parts of its own:
gRPC addresses, the deadline and answer bound mapped on gRPC's, loading
tensorflow-serving-api without TensorFlow's runtime, and the example of
Instructions.md written as TF Serving's examples are (stub plus
`tf.make_tensor_proto`), run as printed there.
"""

import re
import socket
import subprocess
import sys

import cv2
import numpy as np
import pytest
import tensorflow as tf
from conftest import run_script
from grpc_fixtures import Stubs
from server_fixtures import ServerProcess
from tensorflow_serving.apis import get_model_metadata_pb2

from mnist_serving import config, data


@pytest.fixture(scope="module")
def server(export_base):
    with ServerProcess(f"--model_base_path={export_base}") as running:
        yield running


@pytest.fixture(scope="module")
def digit(tmp_path_factory, mnist):
    path = tmp_path_factory.mktemp("grpc_client") / "digit.png"
    cv2.imwrite(str(path), mnist[1][0][0])
    return path


def classify(address, *arguments):
    return run_script(
        "serving_request.py", "--protocol", "grpc", "--server", address, *arguments, timeout=300
    )


@pytest.mark.parametrize(
    "address", ["http://localhost:8500", "localhost", "localhost:0", "host:99999", ":8500"]
)
def test_a_grpc_address_is_host_and_port(digit, address):
    result = classify(address, "-i", digit)
    assert result.returncode == 2
    assert f"expected an address such as localhost:8500, got '{address}'" in result.stderr


def test_help_names_each_protocols_default_server():
    result = run_script("serving_request.py", "--help")
    text = " ".join(result.stdout.split())
    assert "--protocol {rest,grpc}" in text
    assert "http://localhost:8501 for REST, localhost:8500 for gRPC" in text


def test_a_grpc_server_that_does_not_answer_times_out_in_one_line(digit):
    # A socket that accepts connections and never answers: a hung server.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        result = classify(address, "--timeout", "1", "-i", digit)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"serving_request.py: error: no complete answer from {address} within 1 s (--timeout)"
    )


def test_an_answer_over_the_limit_is_refused_by_grpc(server, digit):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = config.MODEL_NAME
    with Stubs(server.grpc_target) as stubs:
        size = stubs.prediction.GetModelMetadata(request, timeout=60).ByteSize()
    at_limit = classify(server.grpc_target, "-i", digit, "--max-answer-size", size)
    assert at_limit.returncode == 0, at_limit.stderr
    under = classify(server.grpc_target, "-i", digit, "--max-answer-size", size - 1)
    assert under.returncode == 1
    assert under.stderr.strip() == (
        f"serving_request.py: error: the answer of {size:,} bytes from {server.grpc_target} "
        f"(GetModelMetadata) is larger than the limit of {size - 1:,} bytes (--max-answer-size)"
    )


def test_the_rest_port_given_for_grpc_is_one_line(server, digit):
    result = classify(f"127.0.0.1:{server.port}", "-i", digit)
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("serving_request.py: error: ")


def test_the_grpc_client_loads_no_tensorflow_runtime_and_tensorflow_still_loads_after(
    server, mnist, tmp_path
):
    # Then TensorFlow itself is imported in the same process: its protos and
    # the client's are one and the same.
    code = f"""
import sys
import numpy as np
from mnist_serving import client
with client.ServingClient("{server.grpc_target}", protocol="grpc") as serving:
    probabilities = serving.predict(serving.signature(), np.load(sys.argv[1]))
print("runtime loaded:", "tensorflow.python" in sys.modules)
print("probabilities:", probabilities.shape)
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2
request = predict_pb2.PredictRequest()
request.inputs["x"].CopyFrom(tf.make_tensor_proto(probabilities))
print("round trip:", bool((tf.make_ndarray(request.inputs["x"]) == probabilities).all()))
"""
    images_file = tmp_path / "three_digits.npy"
    np.save(images_file, mnist[1][0][:3])
    result = subprocess.run(
        [sys.executable, "-c", code, str(images_file)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=config.CODE_DIR,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines() == [
        "runtime loaded: False",
        "probabilities: (3, 10)",
        "round trip: True",
    ]


EXAMPLE_MARKER = "<!-- The TF Serving example pattern; tests/test_grpc_client.py runs it. -->"


def instructions_example():
    """The Python block that follows the marker in Instructions.md."""
    text = (config.PROJECT_DIR / "Instructions.md").read_text()
    after = text[text.index(EXAMPLE_MARKER) :]
    return re.search(r"```python\n(.*?)```", after, re.DOTALL).group(1)


def test_tf_servings_example_pattern_in_instructions_works_unchanged(server, export_base, mnist):
    code = instructions_example()
    assert 'grpc.insecure_channel("localhost:8500")' in code
    # The one change: the port the test server listens on.
    code = code.replace('"localhost:8500"', f'"{server.grpc_target}"')
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=config.PROJECT_DIR,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    printed = dict(line.split(":", 1) for line in result.stdout.splitlines())
    images, labels = mnist[1][0][:8], mnist[1][1][:8]
    loaded = tf.saved_model.load(str(export_base / "1"))
    expected = loaded.signatures["serving_default"](image=data.to_model_input(images))
    expected_digits = expected["probabilities"].numpy().argmax(axis=1)
    assert printed["predicted"].strip() == str(expected_digits)
    assert printed["labels"].strip() == str(labels)
