"""model_server.py's gRPC port beside its REST port: one server, one set of models and metrics.

Start-up and flags, hot version swaps under gRPC load, REST and gRPC at the
same time, reloading the model config at run time, warm-up, and a clean stop
of both ports. Predictions that must stay in progress use the `gate` model,
which computes until the test opens its gate.
"""

import shutil
import socket
import threading

import grpc
import model_server
import numpy as np
import pytest
import requests
from grpc_fixtures import Stubs, error_of, half_request, outputs_of, predict_request
from server_fixtures import (
    Gate,
    ServerProcess,
    copy_version,
    save_gate,
    save_half_plus,
    wait_until,
    write_warmup_requests,
)
from tensorflow_serving.apis import get_model_status_pb2, model_management_pb2
from tensorflow_serving.config import model_server_config_pb2

HALF = "half_plus_two"
AVAILABLE = get_model_status_pb2.ModelVersionStatus.AVAILABLE
END = get_model_status_pb2.ModelVersionStatus.END


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    """SavedModels to publish as versions: y = 0.5 x + 2 and + 3, and the gate."""
    folder = tmp_path_factory.mktemp("grpc_builds")
    return {
        "two": save_half_plus(folder / "two", 2.0),
        "three": save_half_plus(folder / "three", 3.0),
        "gate": save_gate(folder / "gate"),
    }


def model_config(folder, **bases):
    """A model config file serving each name from its base path."""
    path = folder / "models.config"
    entries = "".join(
        f'  config {{ name: "{name}" base_path: "{base}" }}\n' for name, base in bases.items()
    )
    path.write_text(f"model_config_list {{\n{entries}}}\n")
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory, builds):
    folder = tmp_path_factory.mktemp("grpc_server")
    bases = {
        HALF: copy_version(builds["two"], folder / HALF, 1).parent,
        "swap": copy_version(builds["two"], folder / "swap", 1).parent,
        "warmed": copy_version(builds["two"], folder / "warmed", 1).parent,
        "gate": copy_version(builds["gate"], folder / "gate", 1).parent,
    }
    monitoring = folder / "monitoring.config"
    monitoring.write_text('prometheus_config { enable: true, path: "/metrics" }\n')
    return {"config": model_config(folder, **bases), "monitoring": monitoring, **bases}


@pytest.fixture(scope="module")
def server(models):
    with ServerProcess(
        f"--model_config_file={models['config']}",
        f"--monitoring_config_file={models['monitoring']}",
        "--file_system_poll_wait_seconds=0.2",
    ) as process:
        yield process


@pytest.fixture(scope="module")
def stubs(server):
    with Stubs(server.grpc_target) as opened:
        yield opened


def status_of(stubs, model):
    """{version: state} of a model over gRPC ({} while it is unknown)."""
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = model
    try:
        response = stubs.model.GetModelStatus(request, timeout=60)
    except grpc.RpcError:
        return {}
    return {entry.version: entry.state for entry in response.model_version_status}


def rest_prediction(server, model, value):
    response = requests.post(
        f"{server.url}/v1/models/{model}:predict", json={"instances": [[value]]}, timeout=60
    )
    return response.status_code, response.json()


# Start-up and flags


def test_start_up_logs_the_grpc_port_then_the_rest_port(server):
    grpc_line = server.wait_for_log(r"Running gRPC ModelServer at 127\.0\.0\.1:\d+ \.\.\.")
    rest_line = server.wait_for_log(r"Exporting HTTP/REST API at:127\.0\.0\.1:\d+ \.\.\.")
    assert server.lines.index(grpc_line) < server.lines.index(rest_line)
    assert server.grpc_port != server.port


def run_main(capsys, *arguments):
    try:
        status = model_server.main(list(arguments))
    except SystemExit as exit_:
        status = exit_.code
    return status, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            ["--port=8501", "--rest_api_port=8501"],
            "model_server.py: error: server_options.http_port cannot be same as grpc_port (8501). "
            "Please use a different port for HTTP/REST API.",
        ),
        (["--port=70000"], "model_server.py: error: --port must be between 0 and 65535, got 70000"),
        (["--grpc_max_threads=0"], "model_server.py: error: --grpc_max_threads must be positive"),
        (
            ["--grpc_channel_arguments=grpc.max_receive_message_length"],
            "model_server.py: error: --grpc_channel_arguments: expected key=value, "
            "got 'grpc.max_receive_message_length'",
        ),
    ],
    ids=["same port twice", "port out of range", "no gRPC thread", "argument without value"],
)
def test_bad_grpc_flags_are_one_line_errors(capsys, arguments, message):
    assert run_main(capsys, *arguments) == (1, [message])


def test_grpc_channel_arguments_are_read_as_tf_serving_reads_them():
    from mnist_serving.serving.options import parse_grpc_channel_arguments

    assert parse_grpc_channel_arguments(
        "grpc.max_receive_message_length=4096,grpc.primary_user_agent=mine, grpc.x = 12"
    ) == (
        ("grpc.max_receive_message_length", 4096),
        ("grpc.primary_user_agent", "mine"),
        ("grpc.x", 12),
    )


def test_a_grpc_port_in_use_stops_start_up_in_one_line(models):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config_flag = f"--model_config_file={models['config']}"
        process = ServerProcess(config_flag, f"--port={port}", wait=False)
        assert process.process.wait(180) == 1
        process.stop()
    assert process.lines[-1] == (
        f"model_server.py: Failed to start gRPC server at 127.0.0.1:{port}: Address already in use"
    )


@pytest.fixture(scope="module")
def bounded_server(models):
    """One gRPC call at a time, messages of at most 4096 bytes, every call logged."""
    with ServerProcess(
        f"--model_config_file={models['config']}",
        "--grpc_max_threads=1",
        "--grpc_channel_arguments=grpc.max_receive_message_length=4096",
        "--verbose",
    ) as process:
        yield process


def gate_request(gate):
    return predict_request("gate", {"gate": np.array([str(gate.folder).encode()], object)})


def test_a_message_over_grpc_max_receive_message_length_is_refused(bounded_server):
    with Stubs(bounded_server.grpc_target) as stubs:
        small = stubs.prediction.Predict(half_request(HALF, [1.0] * 100), timeout=60)
        assert outputs_of(small)["y"].ravel().tolist() == [2.5] * 100
        large = half_request(HALF, [1.0] * 2000)
        assert error_of(stubs.prediction.Predict, large) == (
            "RESOURCE_EXHAUSTED",
            f"SERVER: Received message larger than max ({large.ByteSize()} vs. 4096)",
        )


def test_a_call_beyond_grpc_max_threads_is_resource_exhausted(bounded_server, tmp_path):
    gate = Gate(tmp_path / "gate")
    with Stubs(bounded_server.grpc_target) as stubs:
        held = stubs.prediction.Predict.future(gate_request(gate), timeout=120)
        try:
            gate.wait_until_started()
            refused = error_of(stubs.prediction.Predict, half_request(HALF, [1.0]))
        finally:
            gate.open()
        assert outputs_of(held.result())["waited"].tolist() == [1]
        assert refused == ("RESOURCE_EXHAUSTED", "Concurrent RPC limit exceeded!")
        assert outputs_of(stubs.prediction.Predict(half_request(HALF, [1.0]), timeout=60))


def test_a_prediction_past_the_clients_deadline_is_deadline_exceeded(bounded_server, tmp_path):
    gate = Gate(tmp_path / "gate")
    with Stubs(bounded_server.grpc_target) as stubs:
        try:
            answer = error_of(stubs.prediction.Predict, gate_request(gate), timeout=1)
        finally:
            gate.open()
        assert answer[0] == "DEADLINE_EXCEEDED"
        # The server is free again for the next call once the call it gave up on
        # has ended on its side too (its one gRPC slot is held until then).
        assert wait_until(lambda: _answers(stubs, half_request(HALF, [2.0])))


def _answers(stubs, request):
    """Whether a Predict call succeeds; False while the server is at its call limit."""
    try:
        return bool(outputs_of(stubs.prediction.Predict(request, timeout=60)))
    except grpc.RpcError as error:
        if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
            raise
        return False


def test_verbose_logs_one_line_per_grpc_call(bounded_server):
    with Stubs(bounded_server.grpc_target) as stubs:
        stubs.prediction.Predict(half_request(HALF, [1.0]), timeout=60)
        error_of(stubs.prediction.Predict, half_request("nope", [1.0]))
    bounded_server.wait_for_log(r"gRPC Predict OK [0-9.]+ ms$")
    bounded_server.wait_for_log(r"gRPC Predict NOT_FOUND [0-9.]+ ms$")


# One data plane for both protocols


def test_a_hot_swap_under_grpc_load_fails_no_call_and_both_protocols_see_it(
    server, stubs, models, builds
):
    answers, failures = [], []
    stop = threading.Event()

    def load():
        while not stop.is_set():
            try:
                response = stubs.prediction.Predict(half_request("swap", [1.0]), timeout=60)
                answers.append((response.model_spec.version.value, outputs_of(response)["y"]))
            except grpc.RpcError as error:
                failures.append((error.code().name, error.details()))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: len(answers) >= 8)
        copy_version(builds["three"], models["swap"], 2)
        wait_until(lambda: any(version == 2 for version, _ in answers), timeout=120)
        # The same manager serves REST: version 2 is what it answers now too.
        assert rest_prediction(server, "swap", 1.0) == (200, {"predictions": [[3.5]]})
        wait_until(lambda: status_of(stubs, "swap") == {2: AVAILABLE, 1: END}, timeout=120)
        seen = len(answers)
        wait_until(lambda: len(answers) >= seen + 8)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert failures == []
    for version, value in answers:
        assert value.tolist() == [[2.5 if version == 1 else 3.5]]
    assert answers[-1][0] == 2


def metric(server, name):
    """The value of `:tensorflow:serving:<name>` on the metrics page (0 if absent)."""
    for line in server.get("/metrics").text.splitlines():
        if line.startswith(f":tensorflow:serving:{name} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_rest_and_grpc_at_once_are_answered_and_counted_in_the_same_metrics(server, stubs):
    count = f'request_count{{model_name="{HALF}",status="OK"}}'
    grpc_latency = f'request_latency_count{{API="Predict",entrypoint="GRPC",model_name="{HALF}"}}'
    rest_latency = f'request_latency_count{{API="predict",entrypoint="REST",model_name="{HALF}"}}'
    before = [metric(server, name) for name in (count, grpc_latency, rest_latency)]
    rounds = 10
    barrier = threading.Barrier(8)
    results = {}

    def grpc_client(index):
        barrier.wait()
        for round_ in range(rounds):
            value = float(index * 100 + round_)
            response = stubs.prediction.Predict(half_request(HALF, [value]), timeout=60)
            results[("grpc", index, round_)] = (value, outputs_of(response)["y"].item())

    def rest_client(index):
        barrier.wait()
        for round_ in range(rounds):
            value = float(index * 100 + round_)
            _, body = rest_prediction(server, HALF, value)
            results[("rest", index, round_)] = (value, body["predictions"][0][0])

    threads = [threading.Thread(target=grpc_client, args=(index,)) for index in range(4)]
    threads += [threading.Thread(target=rest_client, args=(index,)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 80
    for value, answer in results.values():
        assert answer == 0.5 * value + 2.0
    after = [metric(server, name) for name in (count, grpc_latency, rest_latency)]
    assert [new - old for new, old in zip(after, before, strict=True)] == [80, 40, 40]


def test_grpc_errors_are_counted_with_their_status(server, stubs):
    # Names the server does not serve are all counted under one empty label.
    name = 'request_count{model_name="",status="NOT_FOUND"}'
    before = metric(server, name)
    error_of(stubs.prediction.Predict, half_request("unknown_model", [1.0]))
    assert metric(server, name) == before + 1


def test_a_version_is_available_to_grpc_only_after_its_warm_up_records_ran(
    server, stubs, models, builds, tmp_path
):
    build = tmp_path / "warmed_build"
    shutil.copytree(builds["three"], build)
    inputs = [{"x": np.ones((1, 1), np.float32)}, {"x": np.ones((8, 1), np.float32)}]
    write_warmup_requests(build, inputs)
    copy_version(build, models["warmed"], 2)
    wait_until(lambda: status_of(stubs, "warmed").get(2) == AVAILABLE, timeout=120)
    warmup_file = models["warmed"] / "2" / "assets.extra" / "tf_serving_warmup_requests"
    # Logged before the version became AVAILABLE, so already there.
    assert any(
        f"Finished reading warmup data for model at {warmup_file}. "
        "Number of warmup records read: 2." in line
        for line in server.lines
    )
    response = stubs.prediction.Predict(half_request("warmed", [1.0]), timeout=60)
    assert (response.model_spec.version.value, outputs_of(response)["y"].item()) == (2, 3.5)


# Reloading the model config at run time


@pytest.fixture(scope="module")
def reload_models(tmp_path_factory, builds):
    folder = tmp_path_factory.mktemp("grpc_reload")
    return {
        HALF: copy_version(builds["two"], folder / HALF, 1).parent,
        "three": copy_version(builds["three"], folder / "three", 1).parent,
    }


@pytest.fixture(scope="module")
def reload_server(reload_models):
    base = reload_models[HALF]
    with ServerProcess(f"--model_name={HALF}", f"--model_base_path={base}") as process:
        yield process


def reload_request(metric_names=(), **bases):
    request = model_management_pb2.ReloadConfigRequest(metric_names=list(metric_names))
    for name, base in bases.items():
        request.config.model_config_list.config.add(name=name, base_path=str(base))
    return request


def test_reload_replaces_the_served_models_for_both_protocols(reload_server, reload_models):
    with Stubs(reload_server.grpc_target) as stubs:
        swapped = reload_request(
            metric_names=["/tensorflow/serving/request_count"], three=reload_models["three"]
        )
        try:
            response = stubs.model.HandleReloadConfigRequest(swapped, timeout=120)
            assert response.status.error_code == 0 and response.status.error_message == ""
            assert [metric.name for metric in response.metric] == [
                "/tensorflow/serving/request_count"
            ]
            # Answered once the new model is loaded: it serves at once, on both ports.
            answer = stubs.prediction.Predict(half_request("three", [1.0]), timeout=60)
            assert outputs_of(answer)["y"].item() == 3.5
            assert rest_prediction(reload_server, "three", 1.0) == (200, {"predictions": [[3.5]]})
            assert error_of(stubs.prediction.Predict, half_request(HALF, [1.0])) == (
                "NOT_FOUND",
                f"Servable not found for request: Latest({HALF})",
            )
            assert rest_prediction(reload_server, HALF, 1.0)[0] == 404
        finally:
            back = reload_request(**{HALF: reload_models[HALF]})
            stubs.model.HandleReloadConfigRequest(back, timeout=120)
        assert outputs_of(stubs.prediction.Predict(half_request(HALF, [1.0]), timeout=60))


def labelled_request(base):
    request = reload_request(**{HALF: base})
    request.config.model_config_list.config[0].version_labels["stable"] = 5
    return request


RELOAD_ERRORS = {
    "no model config list": (
        lambda models: model_management_pb2.ReloadConfigRequest(),
        "INVALID_ARGUMENT",
        "ServerModelConfig type not supported by HandleReloadConfigRequest. Only "
        "ModelConfigList is currently supported",
    ),
    "a model twice": (
        lambda models: reload_request_twice(models[HALF]),
        "INVALID_ARGUMENT",
        f"Illegal to list model {HALF} multiple times in config list",
    ),
    "relative base path": (
        lambda models: reload_request(**{HALF: "relative/half"}),
        "INVALID_ARGUMENT",
        f"Expected model {HALF} to have an absolute path or URI; got base_path()=relative/half",
    ),
    "label on a version not loaded": (
        lambda models: labelled_request(models[HALF]),
        "FAILED_PRECONDITION",
        f"Request to assign label to version 5 of model {HALF}, which is not currently "
        "available for inference",
    ),
}


def reload_request_twice(base):
    request = reload_request(**{HALF: base})
    request.config.model_config_list.config.add(name=HALF, base_path=str(base))
    return request


@pytest.mark.parametrize("case", RELOAD_ERRORS)
def test_a_reload_tf_serving_refuses_changes_nothing(reload_server, reload_models, case):
    build, code, message = RELOAD_ERRORS[case]
    with Stubs(reload_server.grpc_target) as stubs:
        assert error_of(stubs.model.HandleReloadConfigRequest, build(reload_models)) == (
            code,
            message,
        )
        assert outputs_of(stubs.prediction.Predict(half_request(HALF, [1.0]), timeout=60))


def test_a_reload_of_a_custom_config_is_refused(reload_server):
    request = model_management_pb2.ReloadConfigRequest(
        config=model_server_config_pb2.ModelServerConfig()
    )
    request.config.custom_model_config.Pack(model_server_config_pb2.ModelConfigList())
    with Stubs(reload_server.grpc_target) as stubs:
        code, _ = error_of(stubs.model.HandleReloadConfigRequest, request)
    assert code == "INVALID_ARGUMENT"


# Stopping


def test_sigterm_closes_both_ports_after_the_calls_in_progress(models, tmp_path):
    gate = Gate(tmp_path / "gate")
    server = ServerProcess(f"--model_config_file={models['config']}")
    with Stubs(server.grpc_target) as stubs:
        held = stubs.prediction.Predict.future(gate_request(gate), timeout=120)
        try:
            gate.wait_until_started()
            server.process.terminate()
            server.wait_for_log("Stopped accepting connections")
            # New calls and connections are refused while the held call finishes.
            assert error_of(stubs.prediction.Predict, half_request(HALF, [1.0]))[0] == (
                "UNAVAILABLE"
            )
            with pytest.raises(OSError), socket.create_connection(("127.0.0.1", server.port), 5):
                pass
        finally:
            gate.open()
        assert outputs_of(held.result())["waited"].tolist() == [1]
    assert server.process.wait(60) == 0
    server.stop()
    for port in (server.port, server.grpc_port):
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), 5):
            pass
    assert "Server stopped" in server.log
    assert "Traceback" not in server.log
