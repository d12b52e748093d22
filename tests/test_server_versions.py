"""Model versions as TF Serving handles them: found by polling, swapped without failures.

One real server polls six models every 0.2 s; each test works on its own
model, publishing, breaking and removing version folders while the server
runs, exactly as an exporter or an operator would.
"""

import shutil
import threading

import numpy as np
import pytest
import requests
from server_fixtures import (
    ServerProcess,
    copy_version,
    save_half_plus,
    version_states,
    wait_until,
    write_warmup_requests,
)

MODELS = ("swap", "broken", "retry", "removal", "hidden", "empty", "warmed", "bad_warmup")


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    """SavedModels answering 0.5 * x + offset, by offset."""
    folder = tmp_path_factory.mktemp("builds")
    return {
        offset: save_half_plus(folder / f"plus_{offset}", float(offset)) for offset in (2, 3, 4)
    }


@pytest.fixture(scope="module")
def bases(tmp_path_factory, builds):
    folder = tmp_path_factory.mktemp("bases")
    paths = {name: folder / name for name in MODELS}
    for name in ("swap", "broken", "retry", "removal", "hidden"):
        copy_version(builds[2], paths[name], 1)
    paths["empty"].mkdir()
    warmed = folder / "warmed_build"
    shutil.copytree(builds[2], warmed)
    write_warmup_requests(
        warmed, [{"x": np.array([[1.0]], np.float32)}, {"x": np.array([[2.0]], np.float32)}]
    )
    copy_version(warmed, paths["warmed"], 1)
    copy_version(builds[2], paths["bad_warmup"], 1)
    return paths


@pytest.fixture(scope="module")
def bad_warmup_build(tmp_path_factory, builds):
    """A SavedModel whose warm-up file holds one record that is not a PredictionLog."""
    import tensorflow as tf

    bad = tmp_path_factory.mktemp("bad_warmup") / "build"
    shutil.copytree(builds[3], bad)
    (bad / "assets.extra").mkdir()
    with tf.io.TFRecordWriter(str(bad / "assets.extra" / "tf_serving_warmup_requests")) as writer:
        writer.write(b"\xff not a PredictionLog")
    return bad


def write_config(path, bases):
    entries = "".join(
        f'  config {{ name: "{name}" base_path: "{base}" }}\n' for name, base in bases.items()
    )
    path.write_text("model_config_list {\n" + entries + "}\n")


@pytest.fixture(scope="module")
def config_file(tmp_path_factory, bases):
    path = tmp_path_factory.mktemp("config") / "models.config"
    write_config(path, bases)
    return path


@pytest.fixture(scope="module")
def server(config_file):
    with ServerProcess(
        f"--model_config_file={config_file}",
        "--file_system_poll_wait_seconds=0.2",
        "--model_config_file_poll_wait_seconds=0.2",
    ) as process:
        yield process


def answer(server, model):
    response = server.post(f"/v1/models/{model}:predict", json={"instances": [1.0]})
    return response.status_code, response.json()


def test_base_path_without_versions_logs_tf_serving_warning_and_still_serves(server, bases):
    server.wait_for_log(
        f"No versions of servable empty found under base path {bases['empty']}. Did you "
        r"forget to name your leaf directory as a number \(eg. '/1/'\)\?"
    )
    response = server.get("/v1/models/empty")
    assert response.status_code == 404
    assert response.json() == {"error": "Could not find any versions of model empty"}
    assert answer(server, "empty") == (
        404,
        {"error": "Servable not found for request: Latest(empty)"},
    )


def test_version_published_later_is_loaded_without_restart(server, bases, builds):
    copy_version(builds[3], bases["empty"], 1)
    wait_until(lambda: version_states(server, "empty") == {1: "AVAILABLE"})
    assert answer(server, "empty") == (200, {"predictions": [3.5]})


def test_new_version_replaces_the_old_one_with_no_failed_request(server, bases, builds):
    assert answer(server, "swap") == (200, {"predictions": [2.5]})
    results = []
    stop = threading.Event()

    def client():
        with requests.Session() as session:
            while not stop.is_set():
                try:
                    response = session.post(
                        f"{server.url}/v1/models/swap:predict",
                        json={"instances": [1.0]},
                        timeout=60,
                    )
                    results.append((response.status_code, response.json()))
                except requests.RequestException as error:
                    results.append((None, repr(error)))

    clients = [threading.Thread(target=client) for _ in range(4)]
    for thread in clients:
        thread.start()
    try:
        wait_until(lambda: len(results) > 20)
        copy_version(builds[3], bases["swap"], 2)
        wait_until(lambda: (200, {"predictions": [3.5]}) in results[-4:])
        seen = len(results)
        wait_until(lambda: len(results) > seen + 20)
    finally:
        stop.set()
        for thread in clients:
            thread.join()
    failures = [result for result in results if result[0] != 200]
    assert failures == []
    assert {result[1]["predictions"][0] for result in results} == {2.5, 3.5}
    assert version_states(server, "swap") == {2: "AVAILABLE", 1: "END"}


def test_broken_version_shows_end_with_its_error_while_the_old_one_serves(server, bases):
    broken = bases["broken"] / "2"
    broken.mkdir()
    (broken / "saved_model.pb").write_bytes(b"this is not a SavedModel")
    wait_until(lambda: version_states(server, "broken").get(2) == "END")
    statuses = server.get("/v1/models/broken").json()["model_version_status"]
    assert statuses[0]["version"] == "2"
    assert statuses[0]["status"]["error_code"] != "OK"
    assert statuses[0]["status"]["error_message"]
    assert statuses[1] == {
        "version": "1",
        "state": "AVAILABLE",
        "status": {"error_code": "OK", "error_message": ""},
    }
    assert answer(server, "broken") == (200, {"predictions": [2.5]})


def test_failed_version_is_retried_when_its_folder_changes(server, bases, builds):
    broken = bases["retry"] / "2"
    broken.mkdir()
    (broken / "saved_model.pb").write_bytes(b"this is not a SavedModel")
    wait_until(lambda: version_states(server, "retry").get(2) == "END")
    shutil.rmtree(broken)
    # Rebuilt in place, file by file, the way a slow copy would do it.
    shutil.copytree(builds[4], broken)
    wait_until(lambda: version_states(server, "retry") == {2: "AVAILABLE", 1: "END"})
    assert answer(server, "retry") == (200, {"predictions": [4.5]})
    server.wait_for_log(r"changed; retrying servable \{name: retry version: 2\}")


def test_removed_version_is_unloaded_once_another_is_available(server, bases, builds):
    copy_version(builds[3], bases["removal"], 2)
    wait_until(lambda: version_states(server, "removal") == {2: "AVAILABLE", 1: "END"})
    shutil.rmtree(bases["removal"] / "2")
    # Version 1 is the newest on disk again: it is loaded, then 2 goes.
    wait_until(lambda: version_states(server, "removal") == {2: "END", 1: "AVAILABLE"})
    assert answer(server, "removal") == (200, {"predictions": [2.5]})


def test_last_version_keeps_serving_when_every_folder_disappears(server, bases):
    wait_until(lambda: version_states(server, "removal").get(1) == "AVAILABLE")
    shutil.rmtree(bases["removal"] / "1")
    server.wait_for_log("No versions of servable removal found")
    assert version_states(server, "removal")[1] == "AVAILABLE"
    assert answer(server, "removal") == (200, {"predictions": [2.5]})


def test_hidden_and_non_numeric_folders_are_not_versions(server, bases, builds):
    shutil.copytree(builds[3], bases["hidden"] / ".export-7-staging")
    shutil.copytree(builds[3], bases["hidden"] / "backup")
    shutil.copytree(builds[3], bases["hidden"] / "8.tmp")
    # A real version published after them: once it is loaded, a poll has seen them all.
    copy_version(builds[4], bases["hidden"], 2)
    wait_until(lambda: version_states(server, "hidden") == {2: "AVAILABLE", 1: "END"})
    assert answer(server, "hidden") == (200, {"predictions": [4.5]})


def test_warmup_requests_are_replayed_when_a_version_loads(server, bases):
    warmup_file = bases["warmed"] / "1" / "assets.extra" / "tf_serving_warmup_requests"
    server.wait_for_log(
        f"Finished reading warmup data for model at {warmup_file}. "
        "Number of warmup records read: 2. Elapsed time"
    )
    assert answer(server, "warmed") == (200, {"predictions": [2.5]})


def test_a_warmup_record_that_is_not_a_prediction_log_fails_the_load(
    server, bases, bad_warmup_build
):
    copy_version(bad_warmup_build, bases["bad_warmup"], 2)
    wait_until(lambda: version_states(server, "bad_warmup").get(2) == "END")
    status = server.get("/v1/models/bad_warmup/versions/2").json()["model_version_status"][0]
    assert status["status"]["error_code"] == "INVALID_ARGUMENT"
    assert status["status"]["error_message"].startswith("Failed to parse warmup record: ")
    # Version 1 keeps serving.
    assert answer(server, "bad_warmup") == (200, {"predictions": [2.5]})


def test_model_config_file_changes_add_and_remove_models(server, bases, builds, config_file):
    late = copy_version(builds[4], bases["warmed"].parent / "late", 1).parent
    remaining = {name: path for name, path in bases.items() if name != "warmed"}
    write_config(config_file, {**remaining, "late": late})
    wait_until(lambda: version_states(server, "late") == {1: "AVAILABLE"})
    assert answer(server, "late") == (200, {"predictions": [4.5]})
    wait_until(lambda: server.get("/v1/models/warmed").status_code == 404)
    assert answer(server, "warmed")[0] == 404
