"""model_server.py's command line: flags, config files and startup failures.

Mistakes in flags or files end the program with one clear line and a
non-zero status, never a traceback. Errors found before any model is touched
are checked by calling `main()` directly; startup failures run the real
program.
"""

import socket
import subprocess
import sys

import model_server
import pytest
from server_fixtures import ServerProcess, copy_version, save_half_plus

from mnist_serving import config
from mnist_serving.server_process import MODEL_SERVER_SCRIPT


def run_main(capsys, *arguments):
    """Runs main() in this process; returns (exit status, stderr lines)."""
    try:
        status = model_server.main(list(arguments))
    except SystemExit as exit_:
        status = exit_.code
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return status, lines


def run_program(*arguments):
    """Runs model_server.py to its end; returns the completed process."""
    return subprocess.run(
        [
            sys.executable,
            str(MODEL_SERVER_SCRIPT),
            "--rest_api_port=0",
            "--port=0",
            *map(str, arguments),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.fixture(scope="module")
def half_plus(tmp_path_factory):
    return save_half_plus(tmp_path_factory.mktemp("cli") / "half_plus_two", 2.0)


def test_help_shows_tf_serving_flag_names_and_defaults(capsys):
    with pytest.raises(SystemExit) as exit_:
        model_server.main(["--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for flag in (
        "--rest_api_port",
        "--model_name",
        "--model_base_path",
        "--model_config_file",
        "--file_system_poll_wait_seconds",
        "--rest_api_timeout_in_ms",
        "--enable_batching",
        "--batching_parameters_file",
        "--monitoring_config_file",
        "--port",
        "--rest_api_host",
    ):
        assert flag in text
    assert "(default: 8501)" in text
    assert "(default: 127.0.0.1)" in text
    assert f"(default: {config.MODEL_NAME}," in text
    assert f"(default: {config.DEFAULT_EXPORT_BASE})" in text


def test_bad_flag_value_is_one_line_error(capsys):
    status, lines = run_main(capsys, "--rest_api_port=abc")
    assert status == 2
    assert len(lines) == 1
    assert "--rest_api_port: invalid int value: 'abc'" in lines[0]


def test_limit_flags_say_what_tf_serving_does_instead(capsys):
    with pytest.raises(SystemExit):
        model_server.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for flag in (
        "--max_images_per_request",
        "--max_images_in_flight",
        "--max_pixels_per_image",
        "--max_pixels_per_request",
        "--rest_api_max_json_values",
        "--rest_api_max_bytes_in_flight",
    ):
        # The flag's entry in the list of options, up to its default.
        entry = text.rsplit(f"{flag} {flag.lstrip('-').upper()}", 1)[1]
        assert "model_server.py only" in entry.split("(default: ", 1)[0]


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--max_images_per_request=0"], "--max_images_per_request must be positive"),
        (["--max_pixels_per_image=-1"], "--max_pixels_per_image must be positive"),
        (
            ["--max_images_per_request=9", "--max_images_in_flight=8"],
            "--max_images_per_request must not be more than --max_images_in_flight",
        ),
        (
            ["--rest_api_max_request_bytes=2000", "--rest_api_max_bytes_in_flight=1000"],
            "--rest_api_max_request_bytes must not be more than --rest_api_max_bytes_in_flight",
        ),
    ],
)
def test_limits_that_cannot_work_are_one_line_errors(capsys, flags, expected):
    status, lines = run_main(capsys, *flags)
    assert status == 1
    assert lines == [f"model_server.py: error: {expected}"]


def test_empty_base_path_is_tf_serving_error(capsys):
    status, lines = run_main(capsys, "--model_base_path=")
    assert status == 1
    assert lines == [
        "model_server.py: error: Both server_options.model_base_path and "
        "server_options.model_config_file are empty!"
    ]


def test_unreadable_model_config_file_is_one_line_error(capsys, tmp_path):
    status, lines = run_main(capsys, f"--model_config_file={tmp_path / 'missing.config'}")
    assert status == 1
    assert len(lines) == 1
    assert "--model_config_file: cannot read" in lines[0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "model_config_list { config { name: 'a' base_path: '/x' colour: 'red' } }",
            'has no field named "colour"',
        ),
        (
            "model_config_list { config { name: 'a' base_path: '/x' } config { name: 'a' "
            "base_path: '/y' } }",
            "Illegal to list model a multiple times in config list",
        ),
        ("model_config_list { config { base_path: '/x' } }", "a model config has no name"),
        ("model_config_list {", "is not a valid ModelServerConfig"),
    ],
    ids=["unknown field", "model listed twice", "no name", "syntax"],
)
def test_invalid_model_config_file_is_one_line_error(capsys, tmp_path, text, expected):
    path = tmp_path / "models.config"
    path.write_text(text)
    status, lines = run_main(capsys, f"--model_config_file={path}")
    assert status == 1
    assert len(lines) == 1
    assert expected in lines[0]


def test_batching_parameters_without_enable_batching_is_tf_serving_error(capsys, tmp_path):
    path = tmp_path / "batching.config"
    path.write_text("max_batch_size { value: 8 }")
    status, lines = run_main(capsys, f"--batching_parameters_file={path}")
    assert status == 1
    assert lines == [
        "model_server.py: error: server_options.batching_parameters_file is set without "
        "setting server_options.enable_batching to true."
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "max_batch_size { value: 8 } batch_size_please: 3",
            'has no field named "batch_size_please"',
        ),
        (
            "max_batch_size { value: 8 } allowed_batch_sizes: 4",
            "Last entry in allowed_batch_sizes must match max_batch_size",
        ),
        ("max_batch_size { value: 0 }", "max_batch_size must be positive"),
    ],
    ids=["unknown field", "allowed sizes", "zero batch size"],
)
def test_invalid_batching_parameters_are_one_line_error(capsys, tmp_path, text, expected):
    path = tmp_path / "batching.config"
    path.write_text(text)
    status, lines = run_main(capsys, "--enable_batching", f"--batching_parameters_file={path}")
    assert status == 1
    assert len(lines) == 1
    assert expected in lines[0]


def test_unknown_field_in_monitoring_config_is_one_line_error(capsys, tmp_path):
    path = tmp_path / "monitoring.config"
    path.write_text("prometheus_config { enable: true, port: 9090 }")
    status, lines = run_main(capsys, f"--monitoring_config_file={path}")
    assert status == 1
    assert len(lines) == 1
    assert 'has no field named "port"' in lines[0]


def test_port_in_use_is_one_line_error(half_plus, tmp_path):
    base = copy_version(half_plus, tmp_path / "half_plus_two", 1).parent
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_program(f"--model_base_path={base}", f"--rest_api_port={port}")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"model_server.py: Failed to start HTTP/REST server at 127.0.0.1:{port}: "
        "Address already in use"
    )


def test_only_version_failing_to_load_stops_startup_like_tf_serving(tmp_path):
    broken = tmp_path / "half_plus_two" / "1"
    broken.mkdir(parents=True)
    (broken / "saved_model.pb").write_bytes(b"garbage")
    result = run_program(f"--model_base_path={broken.parent}", "--model_name=half_plus_two")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith(
        "model_server.py: Failed to start server. Error: UNKNOWN: 1 model(s) did not become "
        "available: {{name: half_plus_two version: 1} due to error: DATA_LOSS: "
    )


@pytest.mark.parametrize(
    ("version", "answer"),
    [
        (1, (200, {"predictions": [2.5]})),
        (5, (404, {"error": "Servable not found for request: Specific(half_plus_two, 5)"})),
    ],
    ids=["version on disk", "version not on disk"],
)
def test_labels_at_start_up_need_allow_version_labels_for_unavailable_models(
    half_plus, tmp_path, version, answer
):
    # TF Serving assigns labels before it loads the versions they name: even a
    # label on the one version on disk stops start-up without the flag.
    base = copy_version(half_plus, tmp_path / "half_plus_two", 1).parent
    path = tmp_path / "models.config"
    path.write_text(
        f"model_config_list {{ config {{ name: 'half_plus_two' base_path: '{base}' "
        f"version_labels {{ key: 'stable' value: {version} }} }} }}"
    )
    result = run_program(f"--model_config_file={path}")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "model_server.py: Failed to start server. Error: FAILED_PRECONDITION: Request to "
        f"assign label to version {version} of model half_plus_two, which is not currently "
        "available for inference"
    )
    with ServerProcess(
        f"--model_config_file={path}", "--allow_version_labels_for_unavailable_models=true"
    ) as server:
        response = server.post(
            "/v1/models/half_plus_two/labels/stable:predict", json={"instances": [1.0]}
        )
        assert (response.status_code, response.json()) == answer


def test_verbose_logs_one_line_per_request(half_plus, tmp_path):
    base = copy_version(half_plus, tmp_path / "half_plus_two", 1).parent
    with ServerProcess(
        f"--model_base_path={base}", "--model_name=half_plus_two", "--verbose"
    ) as server:
        server.post("/v1/models/half_plus_two:predict", json={"instances": [1.0]})
        server.get("/v1/models/nope")
        server.wait_for_log(r"POST /v1/models/half_plus_two:predict 200 [0-9.]+ ms$")
        server.wait_for_log(r"GET /v1/models/nope 404 [0-9.]+ ms$")


def test_missing_base_path_is_logged_and_the_server_still_starts(tmp_path):
    missing = tmp_path / "not_exported_yet"
    with ServerProcess(f"--model_base_path={missing}") as server:
        server.wait_for_log(f"Could not find base path {missing} for servable {config.MODEL_NAME}")
        response = server.get(f"/v1/models/{config.MODEL_NAME}")
        assert response.status_code == 404


def test_shipped_serving_configs_are_valid():
    from mnist_serving.serving.batching import read_batching_parameters
    from mnist_serving.serving.metrics import read_monitoring_config
    from mnist_serving.serving.model_config import read_model_config_file

    folder = config.PROJECT_DIR / "serving_config"
    for name in ("models.config", "models.local.config"):
        (model,) = read_model_config_file(folder / name)
        assert model.name == config.MODEL_NAME
        assert model.labels == {"stable": 1, "canary": 2}
    assert read_batching_parameters(folder / "batching.config").max_batch_size == 64
    assert read_monitoring_config(folder / "monitoring.config") == (
        "/monitoring/prometheus/metrics"
    )
