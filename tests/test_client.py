"""serving_request.py classifies image files through the real local model server.

The behaviours every protocol shares run over REST and over gRPC
(`--protocol grpc`): same flags, same output, same exit statuses.
"""

import json
import shutil
import socket
import subprocess
import sys
import time

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import run_script
from server_fixtures import ServerProcess

from mnist_serving import client, config, data, export, model, preprocessing


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory, export_base):
    """A base path with version 1 (the shared export) and a different version 2."""
    base = tmp_path_factory.mktemp("client") / "my_digit_classifier"
    shutil.copytree(export_base / "1", base / "1")
    keras.utils.set_random_seed(1)
    export.export_model(model.build_model(), base, version=2)
    return base


@pytest.fixture(scope="module")
def server(two_versions, tmp_path_factory):
    """model_server.py serving both versions, labelled stable (1) and canary (2)."""
    config_file = tmp_path_factory.mktemp("config") / "models.config"
    config_file.write_text(
        f"""model_config_list {{ config {{
          name: "my_digit_classifier" base_path: "{two_versions}" model_platform: "tensorflow"
          model_version_policy {{ all {{}} }}
          version_labels {{ key: "stable" value: 1 }}
          version_labels {{ key: "canary" value: 2 }}
        }} }}"""
    )
    # Labels given at start-up need this flag, in TF Serving as in model_server.py.
    with ServerProcess(
        f"--model_config_file={config_file}", "--allow_version_labels_for_unavailable_models=true"
    ) as running:
        yield running


@pytest.fixture(scope="module")
def images(tmp_path_factory, mnist):
    """A folder of real files: MNIST test digits as PNG, one as JPEG, and two bad files."""
    folder = tmp_path_factory.mktemp("images")
    test_images = mnist[1][0]
    for index in range(12):
        cv2.imwrite(str(folder / f"digit_{index}.png"), test_images[index])
    cv2.imwrite(str(folder / "digit_12.jpg"), test_images[12])
    (folder / "notes.txt").write_text("not an image")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    return folder


def expected_probabilities(version_dir, paths):
    """What the export gives in-process for the same preprocessed files."""
    loaded = tf.saved_model.load(str(version_dir))
    pixels = np.stack([preprocessing.preprocess_file(path) for path in paths])
    outputs = loaded.signatures["serving_default"](image=data.to_model_input(pixels))
    return outputs["probabilities"].numpy()


@pytest.fixture(params=config.PROTOCOLS)
def protocol(request):
    """Each protocol of the client in turn: rest, grpc."""
    return request.param


# How each protocol names a server's error status in the client's one line.
ERROR_STATUS = {"rest": "HTTP 404", "grpc": "NOT_FOUND"}


def classify(server, *arguments, protocol="rest"):
    """serving_request.py against the server's port of `protocol`."""
    address = server.grpc_target if protocol == "grpc" else server.url
    return run_script(
        "serving_request.py", "--protocol", protocol, "--server", address, *arguments, timeout=300
    )


def parse_line(line):
    name, digit, probability = line.split()
    return name, int(digit), float(probability.strip("(%)")) / 100


def test_one_image_prints_its_class_and_probability(server, images, two_versions, protocol):
    result = classify(server, "-i", images / "digit_3.png", protocol=protocol)
    assert result.returncode == 0, result.stderr
    [line] = result.stdout.splitlines()
    name, digit, probability = parse_line(line)
    expected = expected_probabilities(two_versions / "2", [images / "digit_3.png"])[0]
    assert name == "digit_3.png"
    # Version 2 is untrained, so its top classes may differ in the 7th digit:
    # any class within float32 tolerance of the top one is the same answer.
    assert expected[digit] == pytest.approx(expected.max(), abs=1e-6)
    assert probability == pytest.approx(expected.max(), abs=5e-5)


def test_the_original_commands_work_as_written(server, images):
    single = classify(server, "-i", images / "digit_0.png", "-d", "True")
    assert single.returncode == 0, single.stderr
    assert single.stdout.startswith("digit_0.png  ")
    with_probabilities = classify(server, "-i", images / "digit_0.png", "-d", "True", "-p", "True")
    assert with_probabilities.returncode == 0
    assert "probability" in with_probabilities.stdout.splitlines()[0]


def test_a_folder_is_classified_in_name_order_and_bad_files_are_reported(server, images, protocol):
    result = classify(server, "-i", images, "-d", "False", protocol=protocol)
    assert result.returncode == 1  # Some files failed.
    lines = result.stdout.splitlines()
    names = [line.split()[0] for line in lines[:15]]
    assert names == ["broken.png"] + [f"digit_{i}.png" for i in range(12)] + [
        "digit_12.jpg",
        "notes.txt",
    ]
    assert "failed:" in lines[0] and "failed:" in lines[14]
    assert lines[15] == "15 images: 13 classified, 2 failed"
    assert lines[16].startswith("per class: ")
    assert sum(int(item.split(":")[1]) for item in lines[16][11:].split()) == 13
    assert lines[17].startswith("failed: broken.png (") and lines[18].startswith(
        "failed: notes.txt ("
    )


def test_folder_results_match_the_export_in_process(server, images, two_versions, protocol):
    paths = [images / f"digit_{i}.png" for i in range(12)]
    expected = expected_probabilities(two_versions / "2", paths)
    result = classify(server, "-i", images, "--json", "-p", protocol=protocol)
    records = [json.loads(line) for line in result.stdout.splitlines()]
    by_name = {record["file"]: record for record in records}
    for path, probabilities in zip(paths, expected, strict=True):
        record = by_name[path.name]
        assert record["class"] == int(np.argmax(record["probabilities"]))
        assert probabilities[record["class"]] == pytest.approx(probabilities.max(), abs=1e-6)
        np.testing.assert_allclose(record["probabilities"], probabilities, atol=1e-6)


def test_json_gives_one_object_per_image_and_the_summary_on_stderr(server, images, protocol):
    result = classify(server, "-i", images, "--json", protocol=protocol)
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == 15
    assert {"file", "class", "probability"} == set(records[1])
    assert {"file", "error"} == set(records[0])
    assert "15 images: 13 classified, 2 failed" in result.stderr


def test_probabilities_flag_prints_all_ten(server, images):
    result = classify(server, "-i", images / "digit_5.png", "-p")
    header, row = result.stdout.splitlines()
    assert header.split()[3:] == [str(digit) for digit in range(10)]
    percentages = [float(value.rstrip("%")) for value in row.split()[3:]]
    assert len(percentages) == 10
    assert sum(percentages) == pytest.approx(100, abs=0.1)


def test_both_signatures_give_the_same_answer(server, images, protocol):
    png = classify(
        server, "-i", images, "--json", "-p", "--signature", "predict_png", protocol=protocol
    )
    floats = classify(
        server, "-i", images, "--json", "-p", "--signature", "serving_default", protocol=protocol
    )
    for first, second in zip(png.stdout.splitlines(), floats.stdout.splitlines(), strict=True):
        first, second = json.loads(first), json.loads(second)
        assert first["file"] == second["file"]
        if "error" not in first:
            np.testing.assert_allclose(first["probabilities"], second["probabilities"], atol=1e-6)


def test_small_batches_give_the_same_results(server, images):
    # TensorFlow's CPU kernels may sum in another order for another batch size,
    # so probabilities agree to float32 tolerance, not bit for bit.
    whole = classify(server, "-i", images, "--json", "-p")
    in_threes = classify(server, "-i", images, "--json", "-p", "--batch-size", "3")
    assert_same_records(whole.stdout, in_threes.stdout)


def assert_same_records(first_output, second_output):
    """`--json -p` outputs with the same files, order, classes and errors, and close floats."""
    pairs = zip(first_output.splitlines(), second_output.splitlines(), strict=True)
    for first, second in ((json.loads(one), json.loads(other)) for one, other in pairs):
        first_floats = [first.pop("probability", 0.0), *first.pop("probabilities", [])]
        second_floats = [second.pop("probability", 0.0), *second.pop("probabilities", [])]
        assert first == second  # Files, order, classes and errors are exact.
        np.testing.assert_allclose(first_floats, second_floats, atol=1e-6)


def test_a_version_is_chosen_with_a_flag(server, images, two_versions, protocol):
    path = images / "digit_7.png"
    first = expected_probabilities(two_versions / "1", [path])[0]
    second = expected_probabilities(two_versions / "2", [path])[0]
    assert not np.allclose(first, second)  # The two versions differ, so the test can tell.
    for version, expected in (("1", first), ("2", second)):
        result = classify(
            server, "-i", path, "--json", "-p", "--model-version", version, protocol=protocol
        )
        record = json.loads(result.stdout)
        np.testing.assert_allclose(record["probabilities"], expected, atol=1e-6)


def test_a_version_is_chosen_by_its_label(server, images, two_versions, protocol):
    path = images / "digit_7.png"
    for label, version in (("stable", "1"), ("canary", "2")):
        expected = expected_probabilities(two_versions / version, [path])[0]
        result = classify(
            server, "-i", path, "--json", "-p", "--model-label", label, protocol=protocol
        )
        np.testing.assert_allclose(json.loads(result.stdout)["probabilities"], expected, atol=1e-6)


def test_an_unknown_version_gives_the_servers_message(server, images, protocol):
    result = classify(
        server, "-i", images / "digit_1.png", "--model-version", "9", protocol=protocol
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"serving_request.py: error: the model server answered {ERROR_STATUS[protocol]}: "
        "Servable not found for request: Specific(my_digit_classifier, 9)"
    )


def test_an_unknown_model_gives_the_servers_message(server, images, protocol):
    result = classify(
        server, "-i", images / "digit_1.png", "--model-name", "no_such_model", protocol=protocol
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"serving_request.py: error: the model server answered {ERROR_STATUS[protocol]}: "
        "Servable not found for request: Latest(no_such_model)"
    )


def wait_until_listening(port, seconds=30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on port {port}")


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_server_down_is_one_line_that_says_how_to_start_one(images, protocol):
    port = free_port()
    address = f"127.0.0.1:{port}" if protocol == "grpc" else f"http://127.0.0.1:{port}"
    result = run_script(
        "serving_request.py",
        "--protocol",
        protocol,
        "--server",
        address,
        "-i",
        images / "digit_1.png",
    )
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(
        f"serving_request.py: error: cannot reach the model server at {address} "
        "(connection refused)"
    )
    assert "model_server.py" in line and "docker" in line.lower()


def test_grpc_and_rest_give_the_same_records_image_for_image(server, images):
    for signature in (config.PNG_SIGNATURE, config.DEFAULT_SIGNATURE):
        arguments = ("-i", images, "--json", "-p", "--signature", signature)
        rest = classify(server, *arguments, protocol="rest")
        grpc = classify(server, *arguments, protocol="grpc")
        assert (rest.returncode, grpc.returncode) == (1, 1)  # The two bad files.
        assert rest.stderr == grpc.stderr  # The summary.
        assert_same_records(rest.stdout, grpc.stdout)


def test_a_missing_path_is_a_usage_error(tmp_path):
    result = run_script("serving_request.py", "-i", tmp_path / "nothing.png")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"serving_request.py: error: no such file or folder: {tmp_path / 'nothing.png'}"
    )


def test_an_empty_folder_is_a_usage_error(tmp_path):
    result = run_script("serving_request.py", "-i", tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == f"serving_request.py: error: no files in {tmp_path}"


def test_a_bad_boolean_is_a_usage_error(images):
    result = run_script("serving_request.py", "-i", images, "-p", "maybe")
    assert result.returncode == 2
    assert "expected True or False, got 'maybe'" in result.stderr


@pytest.mark.parametrize(
    "address", ["localhost:8501", "ftp://host", "http://", "http://host:99999"]
)
def test_a_malformed_server_address_is_a_usage_error(images, address):
    result = run_script("serving_request.py", "--server", address, "-i", images)
    assert result.returncode == 2
    assert f"expected an address such as http://localhost:8501, got '{address}'" in result.stderr


def test_a_server_that_is_not_tensorflow_serving_is_one_line(images, tmp_path):
    # A real HTTP server that answers every GET with JSON of another kind.
    (tmp_path / "v1" / "models" / "my_digit_classifier").mkdir(parents=True)
    (tmp_path / "v1" / "models" / "my_digit_classifier" / "metadata").write_text('{"a": 1}')
    port = free_port()
    with subprocess.Popen(
        [
            sys.executable,
            "-m",
            "http.server",
            str(port),
            "--bind",
            "127.0.0.1",
            "--directory",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    ) as other:
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until_listening(port)
            result = run_script("serving_request.py", "--server", url, "-i", images / "digit_1.png")
        finally:
            other.terminate()
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"serving_request.py: error: the metadata answer of {url} is not TensorFlow "
        "Serving's: is --server the REST API of a model server?"
    )


def test_version_and_label_together_are_a_usage_error(images):
    result = run_script(
        "serving_request.py", "-i", images, "--model-version", "1", "--model-label", "stable"
    )
    assert result.returncode == 2
    assert "not allowed with argument" in result.stderr


def test_recursive_finds_images_in_subfolders(server, tmp_path, mnist):
    (tmp_path / "a" / "b").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "top.png"), mnist[1][0][0])
    cv2.imwrite(str(tmp_path / "a" / "b" / "deep.png"), mnist[1][0][1])
    flat = classify(server, "-i", tmp_path, "--json")
    deep = classify(server, "-i", tmp_path, "--json", "-r")
    assert [json.loads(line)["file"] for line in flat.stdout.splitlines()] == ["top.png"]
    assert [json.loads(line)["file"] for line in deep.stdout.splitlines()] == [
        "a/b/deep.png",
        "top.png",
    ]


def test_the_client_library_waits_for_a_model_that_is_served(server, protocol):
    address = server.grpc_target if protocol == "grpc" else server.url
    with client.ServingClient(address, protocol=protocol) as serving:
        serving.wait_until_available(5)
        assert serving.signature().name == "predict_png"


def test_a_server_that_does_not_answer_times_out_in_one_line(images):
    # A socket that accepts connections and never answers: a hung server.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        result = run_script(
            "serving_request.py", "--server", url, "--timeout", "1", "-i", images / "digit_1.png"
        )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"serving_request.py: error: no complete answer from {url} within 1 s (--timeout)"
    )
