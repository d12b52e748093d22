"""Shared fixtures: real models, real exports, real files in temporary folders."""

import signal
import subprocess
import sys

import keras
import numpy as np
import pytest

from mnist_serving import config, data, export, model, preprocessing


def pytest_addoption(parser):
    parser.addoption(
        "--web-figure",
        metavar="PNG",
        help="save the drawing page, as the full model answered it, to this file "
        "(figures/web_page.png; tests/test_web_page.py)",
    )


@pytest.fixture(scope="session")
def mnist():
    """MNIST from the project's offline copy: ((x_train, y_train), (x_test, y_test))."""
    return data.load_mnist()


@pytest.fixture(scope="session")
def mnist_stroke_widths(mnist):
    """The stroke width of every MNIST test digit, in pixels of 28x28."""
    (_, _), (test_images, _) = mnist
    return np.array([preprocessing.stroke_width(image) for image in test_images])


@pytest.fixture(scope="session")
def untrained_model():
    """The two-branch CNN with seeded random weights: real, fast to build."""
    keras.utils.set_random_seed(0)
    return model.build_model()


@pytest.fixture(scope="session")
def export_base(tmp_path_factory, untrained_model, mnist):
    """A model base path holding version 1 of a checked export of the CNN."""
    base = tmp_path_factory.mktemp("models") / "my_digit_classifier"
    export.export_model(untrained_model, base, version=1, check_images=mnist[1][0][:8])
    return base


def script_command(script, *arguments):
    """The command line of one of the project's scripts in `code/`."""
    return [sys.executable, str(config.CODE_DIR / script), *map(str, arguments)]


def default_ctrl_c():
    """`preexec_fn` of a child a test stops with SIGINT, as Ctrl-C in a terminal would.

    A suite started in the background (`make test &`) runs with SIGINT
    ignored, which its children inherit; Python then raises no
    KeyboardInterrupt in them. The child gets SIGINT's default back.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_script(script, *arguments, timeout=600, cwd=None):
    """Runs one of the project's scripts in `code/` as a user would; returns the result."""
    return subprocess.run(
        script_command(script, *arguments),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


# The figures model_trainer.py writes.
TRAINER_FIGURES = [
    "datasetExample.png",
    "model.png",
    "trainingCurves.png",
    "confusionMatrix.png",
    "misclassified.png",
    "calibration.png",
]

# A smoke run: 1,000 training images (900 to fit, 100 to validate), one epoch.
SMOKE_TRAINING = ("--epochs", 1, "--limit", 1000, "--seed", 7)


@pytest.fixture(scope="session")
def smoke_training(tmp_path_factory):
    """One real run of model_trainer.py on 1,000 training images for 1 epoch."""
    folder = tmp_path_factory.mktemp("smoke")
    result = run_script(
        "model_trainer.py",
        *SMOKE_TRAINING,
        "--output",
        folder / "cnnModel.h5",
        "--figures",
        folder / "figures",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return folder, result
