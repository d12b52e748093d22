"""Each part imports only what it uses: the trainer, the exporter and the client never import
the server, and the server never imports the figures or the client.

Each check runs in a fresh interpreter, so that nothing another test
imported can hide an import. (matplotlib itself comes with any `import
tensorflow`: Keras' visualization module imports it when it is installed.
model_server.py's main() keeps it out of the running server, which a check of
the server process's mapped files shows; elsewhere what is checked is that the
project's own figure code stays out.)
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from server_fixtures import ServerProcess, copy_version, save_half_plus

from mnist_serving import config


def modules_after(code):
    """The names in sys.modules after running `code` in a fresh interpreter (in code/)."""
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=config.CODE_DIR,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


def server_modules(modules):
    return sorted(name for name in modules if name.startswith("mnist_serving.serving"))


@pytest.mark.parametrize(
    ("part", "code"),
    [
        ("trainer", "import model_trainer\nfrom mnist_serving import training"),
        ("exporter", "import export_model\nfrom mnist_serving import export"),
        ("client", "import serving_request\nfrom mnist_serving import client"),
    ],
)
def test_trainer_exporter_and_client_do_not_import_the_server(part, code):
    assert server_modules(modules_after(code)) == []


def test_exporter_does_not_import_the_figures():
    modules = modules_after("import export_model\nfrom mnist_serving import export")
    assert "mnist_serving.figures" not in modules


def test_client_imports_neither_matplotlib_nor_tensorflow():
    modules = modules_after("import serving_request\nfrom mnist_serving import client")
    assert not {"matplotlib", "tensorflow", "mnist_serving.figures"} & modules


def test_a_started_server_imported_neither_the_figures_nor_the_client(tmp_path):
    base = copy_version(save_half_plus(tmp_path / "build", 2.0), tmp_path / "half", 1).parent
    modules = modules_after(
        "import asyncio\n"
        "import model_server\n"
        "from mnist_serving.serving import options, server\n"
        f"args = model_server.build_parser().parse_args(['--model_base_path={base}', "
        "'--rest_api_port=0', '--port=0'])\n"
        "async def start_and_stop():\n"
        "    model_server_ = server.ModelServer(options.options_from_flags(args))\n"
        "    await model_server_.start()\n"
        "    await model_server_.close()\n"
        "asyncio.run(start_and_stop())"
    )
    assert {"mnist_serving.serving.rest", "mnist_serving.serving.grpc_transport"} <= modules
    unused = {
        "mnist_serving.figures",
        "mnist_serving.client",
        "mnist_serving.client_rest",
        "mnist_serving.client_grpc",
        "mnist_serving.tf_serving_api",
        "mnist_serving.preprocessing",
    }
    assert not unused & modules


def test_a_running_model_server_loads_no_matplotlib(tmp_path):
    base = copy_version(save_half_plus(tmp_path / "build", 2.0), tmp_path / "half", 1).parent
    with ServerProcess(f"--model_base_path={base}") as server:
        assert server.get(f"/v1/models/{config.MODEL_NAME}").status_code == 200
        mapped = Path(f"/proc/{server.pid}/maps").read_text()
    # matplotlib's compiled modules (ft2font, _path, ...) are mapped once it is imported.
    assert "/matplotlib/" not in mapped
    assert "/tensorflow/" in mapped
