"""The MNIST loader reads the offline copy and rejects damaged files with a clear error."""

import hashlib

import numpy as np
import pytest

from mnist_serving import config, data


def test_offline_copy_has_the_keras_layout(mnist):
    (x_train, y_train), (x_test, y_test) = mnist
    assert (x_train.shape, x_train.dtype) == ((60000, 28, 28), np.uint8)
    assert (y_train.shape, y_test.shape, x_test.shape) == ((60000,), (10000,), (10000, 28, 28))


def test_offline_copy_is_the_real_mnist(mnist):
    # The checks of data/README.md: label counts, first labels, hashes.
    (x_train, y_train), (_, y_test) = mnist
    assert np.bincount(y_train).tolist() == [
        5923,
        6742,
        5958,
        6131,
        5842,
        5421,
        5918,
        6265,
        5851,
        5949,
    ]
    assert np.bincount(y_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert y_train[:5].tolist() == [5, 0, 4, 1, 9]
    assert y_test[:5].tolist() == [7, 2, 1, 0, 4]
    assert hashlib.sha256(x_train.tobytes()).hexdigest().startswith("741c988805d008ac")


def save_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def complete_arrays(mnist):
    (x_train, y_train), (x_test, y_test) = mnist
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def test_a_missing_array_is_named_in_the_error(tmp_path, mnist):
    arrays = complete_arrays(mnist)
    del arrays["y_test"]
    path = save_npz(tmp_path / "partial.npz", **arrays)
    with pytest.raises(data.DatasetError, match="has no array 'y_test'"):
        data.load_mnist(path)


def test_a_wrong_shape_is_an_error(tmp_path, mnist):
    arrays = complete_arrays(mnist)
    arrays["x_test"] = arrays["x_test"][:100]
    path = save_npz(tmp_path / "short.npz", **arrays)
    with pytest.raises(
        data.DatasetError,
        match=r"'x_test' is uint8\[100, 28, 28\], expected uint8\[10000, 28, 28\]",
    ):
        data.load_mnist(path)


def test_a_wrong_dtype_is_an_error(tmp_path, mnist):
    arrays = complete_arrays(mnist)
    arrays["x_train"] = arrays["x_train"].astype(np.float32)
    path = save_npz(tmp_path / "float.npz", **arrays)
    with pytest.raises(data.DatasetError, match="'x_train' is float32"):
        data.load_mnist(path)


def test_labels_outside_0_to_9_are_an_error(tmp_path, mnist):
    arrays = complete_arrays(mnist)
    arrays["y_train"] = arrays["y_train"].copy()
    arrays["y_train"][0] = 10
    path = save_npz(tmp_path / "labels.npz", **arrays)
    with pytest.raises(data.DatasetError, match="labels outside 0-9"):
        data.load_mnist(path)


def test_a_truncated_file_is_an_error(tmp_path):
    path = tmp_path / "truncated.npz"
    path.write_bytes(config.DEFAULT_DATA_PATH.read_bytes()[:100_000])
    with pytest.raises(data.DatasetError, match=r"not a readable \.npz file"):
        data.load_mnist(path)


def test_a_file_that_is_not_npz_is_an_error(tmp_path):
    path = tmp_path / "notes.npz"
    path.write_text("not an archive")
    with pytest.raises(data.DatasetError, match=r"not a readable \.npz file"):
        data.load_mnist(path)


def test_model_input_refuses_images_not_in_mnist_form():
    with pytest.raises(
        ValueError, match=r"expected uint8 images of 28x28, got uint8 \[2, 32, 32\]"
    ):
        data.to_model_input(np.zeros((2, 32, 32), dtype=np.uint8))


def test_model_input_is_float32_in_0_to_1_with_a_channel_axis(mnist):
    images = data.to_model_input(mnist[1][0][:3])
    assert images.shape == (3, 28, 28, 1) and images.dtype == np.float32
    assert images.min() == 0.0 and images.max() == 1.0
