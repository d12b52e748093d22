"""model_server.py under load: concurrent clients, slow clients, batching, timeouts, metrics,
a full worker pool, shutdown.

Predictions that must stay in progress use the `gate` model, which computes
until the test opens its gate: no test depends on how fast this machine is.
"""

import signal
import socket
import threading

import pytest
import requests
from server_fixtures import Gate, ServerProcess, copy_version, save_gate, save_half_plus

from mnist_serving.serving.errors import ServingError

# Connections that are opened and then say nothing.
IDLE_CONNECTIONS = 200


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("load")
    half = copy_version(save_half_plus(folder / "build_half", 2.0), folder / "half", 1).parent
    gate = copy_version(save_gate(folder / "build_gate"), folder / "gate", 1).parent
    config_file = folder / "models.config"
    config_file.write_text(
        "model_config_list {\n"
        f'  config {{ name: "half_plus_two" base_path: "{half}" }}\n'
        f'  config {{ name: "gate" base_path: "{gate}" }}\n'
        "}\n"
    )
    return {"half": half, "gate": gate, "config": config_file, "folder": folder}


@pytest.fixture(scope="module")
def server(models):
    with ServerProcess(f"--model_config_file={models['config']}") as process:
        yield process


@pytest.fixture(scope="module")
def batching_server(models):
    parameters = models["folder"] / "batching.config"
    parameters.write_text(
        "max_batch_size { value: 16 }\n"
        "batch_timeout_micros { value: 200000 }\n"
        "max_enqueued_batches { value: 100 }\n"
        "num_batch_threads { value: 1 }\n"
        "allowed_batch_sizes: 4\n"
        "allowed_batch_sizes: 16\n"
    )
    monitoring = models["folder"] / "monitoring.config"
    monitoring.write_text(
        'prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }\n'
    )
    with ServerProcess(
        "--model_name=half_plus_two",
        f"--model_base_path={models['half']}",
        "--enable_batching=true",
        f"--batching_parameters_file={parameters}",
        f"--monitoring_config_file={monitoring}",
    ) as process:
        yield process


def predict_value(server, value, model="half_plus_two"):
    response = requests.post(
        f"{server.url}/v1/models/{model}:predict", json={"instances": [value]}, timeout=120
    )
    return response.status_code, response.json()


def held_prediction(server, gate):
    """Starts a `gate` prediction in a thread; returns (thread, answer holder)."""
    answer = {}

    def post():
        response = requests.post(
            f"{server.url}/v1/models/gate:predict", json=gate.request, timeout=120
        )
        answer["status"], answer["body"] = response.status_code, response.json()

    thread = threading.Thread(target=post)
    thread.start()
    return thread, answer


def run_clients(count, work):
    """Runs `work(index)` on `count` threads released together; returns results by index."""
    barrier = threading.Barrier(count)
    results = [None] * count

    def client(index):
        barrier.wait()
        results[index] = work(index)

    threads = [threading.Thread(target=client, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_concurrent_clients_each_get_their_own_answer(server):
    def work(index):
        return [predict_value(server, float(index * 10 + round_)) for round_ in range(5)]

    results = run_clients(12, work)
    for index, answers in enumerate(results):
        for round_, answer in enumerate(answers):
            assert answer == (200, {"predictions": [0.5 * (index * 10 + round_) + 2.0]})


def test_a_slow_request_does_not_block_the_others(server, tmp_path):
    gate = Gate(tmp_path / "gate")
    thread, slow = held_prediction(server, gate)
    try:
        gate.wait_until_started()
        # The slow prediction is still computing: quick ones are answered meanwhile.
        quick = [predict_value(server, 1.0) for _ in range(3)]
        assert slow == {}
    finally:
        gate.open()
        thread.join()
    assert quick == [(200, {"predictions": [2.5]})] * 3
    assert slow == {"status": 200, "body": {"predictions": [1]}}


def test_idle_and_slow_clients_do_not_hold_up_a_prediction(server):
    idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(IDLE_CONNECTIONS)]
    slow = socket.create_connection(("127.0.0.1", server.port))
    body = b'{"instances": [1.0]}'
    sent = threading.Event()
    done = threading.Event()

    def trickle():
        # One byte a second, as a client on a very bad link would send.
        slow.sendall(
            b"POST /v1/models/half_plus_two:predict HTTP/1.1\r\nHost: x\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
        )
        for byte in body:
            if done.wait(1.0):
                return
            slow.sendall(bytes([byte]))
        sent.set()

    thread = threading.Thread(target=trickle)
    thread.start()
    try:
        assert predict_value(server, 3.0) == (200, {"predictions": [3.5]})
        # Answered while the slow client's body was still arriving.
        assert not sent.is_set()
    finally:
        done.set()
        thread.join()
        for connection in [*idle, slow]:
            connection.close()


def test_full_worker_pool_answers_503_at_once(models, tmp_path):
    gate = Gate(tmp_path / "gate")
    with ServerProcess(
        f"--model_config_file={models['config']}",
        "--rest_api_num_threads=1",
        "--rest_api_max_queued_requests=0",
    ) as server:
        thread, held = held_prediction(server, gate)
        try:
            gate.wait_until_started()
            status, body = predict_value(server, 1.0)
        finally:
            gate.open()
            thread.join()
        assert status == 503
        assert body["error"].startswith("The server is at capacity: 1 requests running")
        assert held["status"] == 200
        assert predict_value(server, 1.0) == (200, {"predictions": [2.5]})


def test_metrics_page_is_off_without_a_monitoring_config(server):
    response = server.get("/monitoring/prometheus/metrics")
    assert response.status_code == 404


def test_batching_merges_concurrent_requests_and_answers_each(batching_server):
    before = _metric(batching_server, "batching_session:processed_batch_size_count")
    results = run_clients(12, lambda index: predict_value(batching_server, float(index)))
    assert results == [(200, {"predictions": [0.5 * index + 2.0]}) for index in range(12)]
    batches = _metric(batching_server, "batching_session:processed_batch_size_count") - before
    assert 1 <= batches < 12


def test_batch_padded_to_an_allowed_size_answers_only_the_real_rows(batching_server):
    response = requests.post(
        f"{batching_server.url}/v1/models/half_plus_two:predict",
        json={"instances": [1.0, 2.0, 3.0]},
        timeout=60,
    )
    assert response.json() == {"predictions": [2.5, 3.0, 3.5]}


def test_request_larger_than_max_batch_size_is_refused(batching_server):
    response = requests.post(
        f"{batching_server.url}/v1/models/half_plus_two:predict",
        json={"instances": [1.0] * 17},
        timeout=60,
    )
    assert response.status_code == 400
    assert response.json() == {"error": "Task size 17 is larger than maximum input batch size 16"}


def test_metrics_page_counts_requests_as_tf_serving_names_them(batching_server):
    assert predict_value(batching_server, 1.0)[0] == 200
    requests.post(
        f"{batching_server.url}/v1/models/nope:predict", json={"instances": [1.0]}, timeout=60
    )
    response = batching_server.get("/monitoring/prometheus/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/plain"
    page = response.text
    # Untyped: prometheus_client would add `_total` to a counter's name, TF Serving does not.
    assert "# TYPE :tensorflow:serving:request_count untyped" in page
    assert _metric(batching_server, 'request_count{model_name="half_plus_two",status="OK"}') >= 1
    # A model the server does not serve is counted under one label for all such names.
    assert _metric(batching_server, 'request_count{model_name="",status="NOT_FOUND"}') == 1
    assert "# TYPE :tensorflow:serving:request_latency histogram" in page
    labels = 'API="predict",entrypoint="REST"'
    model = 'model_name="half_plus_two"'
    assert f':tensorflow:serving:request_latency_bucket{{{labels},le="10.0",{model}}}' in page
    assert f':tensorflow:serving:request_latency_bucket{{{labels},le="+Inf",{model}}}' in page
    assert _metric(batching_server, f"request_latency_count{{{labels},{model}}}") >= 1


def _metric(server, name):
    """The value of one `:tensorflow:serving:<name> <value>` line (0 if absent)."""
    for line in server.get("/monitoring/prometheus/metrics").text.splitlines():
        if line.startswith(f":tensorflow:serving:{name} "):
            return float(line.rsplit(" ", 1)[1])
    return 0


def test_prediction_over_the_time_limit_gets_504(models, tmp_path):
    gate = Gate(tmp_path / "gate")
    with ServerProcess(
        f"--model_config_file={models['config']}", "--rest_api_timeout_in_ms=300"
    ) as server:
        try:
            response = requests.post(
                f"{server.url}/v1/models/gate:predict", json=gate.request, timeout=60
            )
        finally:
            gate.open()
        assert (response.status_code, response.json()) == (
            504,
            {"error": "Timed out waiting for notification"},
        )
        assert predict_value(server, 1.0) == (200, {"predictions": [2.5]})


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_the_server_cleanly_after_in_flight_requests(models, tmp_path, signal_number):
    gate = Gate(tmp_path / "gate")
    server = ServerProcess(f"--model_config_file={models['config']}")
    thread, held = held_prediction(server, gate)
    try:
        gate.wait_until_started()
        server.process.send_signal(signal_number)
        server.wait_for_log("Stopped accepting connections")
        # The port is closed to new connections while the held request finishes.
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", server.port), 5):
            pass
    finally:
        gate.open()
        thread.join()
    assert server.process.wait(60) == 0
    server.stop()
    assert held == {"status": 200, "body": {"predictions": [1]}}
    assert "Server stopped" in server.log
    assert "Traceback" not in server.log


def test_large_batch_splitting_runs_a_request_in_pieces(models):
    import numpy as np

    from mnist_serving.serving.batching import BatchingParameters, BatchScheduler
    from mnist_serving.serving.limits import Job
    from mnist_serving.serving.loaded_version import LoadedVersion
    from mnist_serving.serving.metrics import Metrics

    parameters = BatchingParameters(
        max_batch_size=8,
        enable_large_batch_splitting=True,
        max_execution_batch_size=2,
        num_batch_threads=1,
    )
    metrics = Metrics()
    scheduler = BatchScheduler(parameters, metrics)
    try:
        servable = LoadedVersion("half_plus_two", 1, models["half"] / "1")
        rows = np.array([[1.0], [2.0], [3.0], [4.0], [5.0]], dtype=np.float32)
        outputs = scheduler.run(servable, "serving_default", {"x": rows}, Job(60))
        np.testing.assert_array_equal(outputs["y"], 0.5 * rows + 2.0)
        page = metrics.prometheus_page().decode()
        assert ":tensorflow:serving:batching_session:processed_batch_size_count 3.0" in page
        with pytest.raises(ServingError) as error:
            scheduler.run(servable, "serving_default", {"x": np.ones((9, 1), np.float32)}, Job(60))
        assert error.value.message == "Task size 9 is larger than maximum input batch size 8"
    finally:
        scheduler.close()
