"""MNIST, from the project's offline copy or from Keras' download."""

import zipfile
import zlib
from pathlib import Path

import numpy as np

from mnist_serving import config

# The arrays of keras.datasets.mnist, with the shapes and dtypes it returns.
EXPECTED_ARRAYS = {
    "x_train": ((60000, config.IMAGE_SIZE, config.IMAGE_SIZE), np.uint8),
    "y_train": ((60000,), np.uint8),
    "x_test": ((10000, config.IMAGE_SIZE, config.IMAGE_SIZE), np.uint8),
    "y_test": ((10000,), np.uint8),
}


class DatasetError(ValueError):
    """The MNIST file is missing parts, damaged or of the wrong layout."""


def load_mnist(path: str | Path = config.DEFAULT_DATA_PATH) -> tuple:
    """Loads MNIST in the layout of `keras.datasets.mnist.load_data()`.

    Args:
        path: An `.npz` file with `x_train`, `y_train`, `x_test` and `y_test`.
            When it does not exist, Keras downloads MNIST instead (and keeps
            it in ~/.keras/datasets).

    Returns:
        `((x_train, y_train), (x_test, y_test))`: uint8 images of 28x28 with
        white digits on black, and uint8 labels 0 to 9.

    Raises:
        DatasetError: The file is not a complete, valid MNIST, or it is
            absent and the download failed.
    """
    path = Path(path)
    if not path.exists():
        import keras

        try:
            return keras.datasets.mnist.load_data()
        except Exception as error:  # noqa: BLE001 - network errors come in many kinds.
            raise DatasetError(
                f"{path} does not exist and Keras could not download MNIST: {error}"
            ) from None
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in EXPECTED_ARRAYS if name in archive}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise DatasetError(f"{path} is not a readable .npz file: {error}") from None
    for name, (shape, dtype) in EXPECTED_ARRAYS.items():
        if name not in arrays:
            raise DatasetError(f"{path} has no array '{name}'")
        array = arrays[name]
        if array.shape != shape or array.dtype != dtype:
            raise DatasetError(
                f"{path}: '{name}' is {array.dtype}{list(array.shape)}, "
                f"expected {np.dtype(dtype)}{list(shape)}"
            )
    for name in ("y_train", "y_test"):
        if arrays[name].max() >= config.NUM_CLASSES:
            raise DatasetError(f"{path}: '{name}' has labels outside 0-9")
    return (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])


def to_model_input(images: np.ndarray) -> np.ndarray:
    """The model's float input from MNIST-form images: the one place that scales pixels.

    Training, evaluation, the client and the benchmarks all go through here,
    so the model always sees what it was trained on.

    Args:
        images: One uint8 image (28, 28), or several (N, 28, 28).

    Returns:
        float32 array (N, 28, 28, 1) in 0..1.

    Raises:
        ValueError: The images are not uint8 28x28.
    """
    images = np.asarray(images)
    if images.ndim == 2:
        images = images[np.newaxis]
    size = config.IMAGE_SIZE
    if images.ndim != 3 or images.shape[1:] != (size, size) or images.dtype != np.uint8:
        raise ValueError(
            f"expected uint8 images of {size}x{size}, got {images.dtype} {list(images.shape)}"
        )
    return (images.astype(np.float32) / np.float32(config.PIXEL_MAX))[..., np.newaxis]
