"""`make demo` trains only when code/cnnModel.h5 is missing or older than what it is made from.

The real Makefile runs in a copy of the project whose file times the tests
set; `make -n` prints what a run would do without doing it, and
`make --question` says whether a target is up to date. Nothing is trained.
"""

import ast
import os
import shutil
import subprocess

import pytest

from mnist_serving import config

MODEL = "code/cnnModel.h5"
# The file times of the copy: sources first, then the model trained from them.
SOURCES_TIME = 1_700_000_000
MODEL_TIME = SOURCES_TIME + 100
LATER = SOURCES_TIME + 200
# Trainer imports that change no weight, left out of the Makefile's list:
# arguments, figures, and the clean-up of files that failed runs left behind.
NOT_TRAINING = {"cli", "figures", "interrupts", "leftovers"}


@pytest.fixture
def project(tmp_path):
    """The Makefile, requirements, data and code in a temporary folder, all of one time."""
    for name in ("Makefile", "requirements.txt", "requirements-test.txt", "data/mnist.npz"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(config.PROJECT_DIR / name, tmp_path / name)
    shutil.copytree(
        config.CODE_DIR,
        tmp_path / "code",
        ignore=shutil.ignore_patterns("*.h5", "*.json", "__pycache__", ".*"),
    )
    # An installed venv, so that make -n shows no installation.
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / ".runtime-installed").touch()
    for path in tmp_path.rglob("*"):
        os.utime(path, (SOURCES_TIME, SOURCES_TIME))
    return tmp_path


def make(project, *arguments):
    return subprocess.run(
        ["make", "--no-print-directory", "-C", str(project), *arguments],
        capture_output=True,
        text=True,
        timeout=60,
    )


def trained(project, when=MODEL_TIME):
    """Puts a model in the copy, as a training run at time `when` leaves it."""
    model = project / MODEL
    model.write_bytes(b"a trained model")
    os.utime(model, (when, when))
    return project


def training_sources(project):
    result = make(
        project,
        "--eval=print-training-sources: ; @echo $(TRAINING_SOURCES)",
        "print-training-sources",
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_make_demo_trains_when_there_is_no_model(project):
    plan = make(project, "-n", "demo")
    assert plan.returncode == 0, plan.stderr
    assert ".venv/bin/python code/model_trainer.py" in plan.stdout
    assert plan.stdout.index("model_trainer.py") < plan.stdout.index("export_model.py")


def test_a_second_make_demo_does_not_train(project):
    trained(project)
    assert make(project, "--question", MODEL).returncode == 0
    plan = make(project, "-n", "demo")
    assert plan.returncode == 0, plan.stderr
    assert "model_trainer.py" not in plan.stdout
    assert ".venv/bin/python code/export_model.py" in plan.stdout
    assert "model_server.py" in plan.stdout and "serving_request.py" in plan.stdout


@pytest.mark.parametrize(
    "source",
    [
        "data/mnist.npz",
        "requirements.txt",
        "code/model_trainer.py",
        "code/mnist_serving/training.py",
        "code/mnist_serving/model.py",
        "code/mnist_serving/calibration.py",
    ],
)
def test_touching_a_training_source_makes_demo_train(project, source):
    trained(project)
    os.utime(project / source, (LATER, LATER))
    assert make(project, "--question", MODEL).returncode == 1
    assert "model_trainer.py" in make(project, "-n", "demo").stdout


@pytest.mark.parametrize(
    "source",
    [
        "code/export_model.py",
        "code/serving_request.py",
        "code/mnist_serving/figures.py",
        "code/mnist_serving/serving/server.py",
    ],
)
def test_touching_code_that_changes_no_weight_does_not_train(project, source):
    trained(project)
    os.utime(project / source, (LATER, LATER))
    assert make(project, "--question", MODEL).returncode == 0


def test_a_model_older_than_its_sources_is_trained_again(project):
    trained(project, when=SOURCES_TIME - 100)
    assert make(project, "--question", MODEL).returncode == 1


def test_make_train_always_trains(project):
    trained(project)
    plan = make(project, "-n", "train")
    assert plan.returncode == 0, plan.stderr
    assert ".venv/bin/python code/model_trainer.py" in plan.stdout


def test_a_new_venv_alone_does_not_make_the_model_out_of_date(project):
    trained(project)
    os.utime(project / ".venv" / ".runtime-installed", (LATER, LATER))
    assert make(project, "--question", MODEL).returncode == 0


def package_imports(path):
    """The mnist_serving modules a Python file imports."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "mnist_serving":
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mnist_serving."):
            names.add(node.module.split(".")[1])
    return names


def test_the_training_sources_are_the_package_modules_the_trainer_uses(project):
    package = config.CODE_DIR / "mnist_serving"
    used, pending = {"__init__"}, package_imports(config.CODE_DIR / "model_trainer.py")
    while pending:
        name = pending.pop()
        if name in used or name in NOT_TRAINING:
            continue
        used.add(name)
        pending |= package_imports(package / f"{name}.py")
    listed = training_sources(project)
    assert sorted(f"code/mnist_serving/{name}.py" for name in used) == sorted(
        source for source in listed if source.startswith("code/mnist_serving/")
    )
    assert {"data/mnist.npz", "requirements.txt", "code/model_trainer.py"} <= set(listed)
