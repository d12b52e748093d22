"""Shared fixtures: real models, real exports, real files in temporary folders."""

import keras
import pytest

from mnist_serving import data, export, model


@pytest.fixture(scope="session")
def mnist():
    """MNIST from the project's offline copy: ((x_train, y_train), (x_test, y_test))."""
    return data.load_mnist()


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
