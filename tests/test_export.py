"""export_model.py writes a checked, versioned SavedModel that TensorFlow Serving loads."""

import numpy as np
import pytest
import tensorflow as tf
from conftest import run_script

from mnist_serving import calibration, export, savedmodel
from mnist_serving.client import encode_png


@pytest.fixture(scope="module")
def loaded(export_base):
    return tf.saved_model.load(str(export_base / "1"))


def tensor_specs(tensors):
    return {
        key: (tf.dtypes.as_dtype(tensor.dtype).name, [dim.size for dim in tensor.tensor_shape.dim])
        for key, tensor in tensors.items()
    }


def test_serving_default_takes_image_and_returns_probabilities_and_digit(export_base):
    signature = savedmodel.read_signature_defs(export_base / "1")["serving_default"]
    assert signature.method_name == "tensorflow/serving/predict"
    assert tensor_specs(signature.inputs) == {"image": ("float32", [-1, 28, 28, 1])}
    assert tensor_specs(signature.outputs) == {
        "probabilities": ("float32", [-1, 10]),
        "digit": ("int64", [-1]),
    }


def test_predict_png_takes_png_strings_and_returns_the_same_outputs(export_base):
    signature = savedmodel.read_signature_defs(export_base / "1")["predict_png"]
    assert signature.method_name == "tensorflow/serving/predict"
    assert tensor_specs(signature.inputs) == {"image_png": ("string", [-1])}
    assert set(signature.outputs) == {"probabilities", "digit"}


@pytest.mark.parametrize("batch_size", [1, 7])
def test_the_export_gives_the_keras_models_probabilities(
    loaded, untrained_model, mnist, batch_size
):
    images = mnist[1][0][100 : 100 + batch_size]
    floats = (images / 255.0).astype(np.float32)[..., None]
    result = loaded.signatures["serving_default"](image=tf.constant(floats))
    expected = untrained_model.predict(floats, verbose=0)
    np.testing.assert_allclose(result["probabilities"].numpy(), expected, rtol=1e-4, atol=1e-6)
    # The digit is the argmax of the export's own probabilities; against Keras's,
    # it may only differ where two classes tie to float32 tolerance.
    probabilities = result["probabilities"].numpy()
    np.testing.assert_array_equal(result["digit"].numpy(), probabilities.argmax(axis=1))
    chosen = expected[np.arange(batch_size), result["digit"].numpy()]
    np.testing.assert_allclose(chosen, expected.max(axis=1), rtol=1e-4, atol=1e-6)


def test_png_and_float_signatures_agree(loaded, mnist):
    images = mnist[1][0][:5]
    floats = loaded.signatures["serving_default"](
        image=tf.constant((images / 255.0).astype(np.float32)[..., None])
    )
    pngs = loaded.signatures["predict_png"](
        image_png=tf.constant([encode_png(image) for image in images])
    )
    np.testing.assert_allclose(
        pngs["probabilities"].numpy(), floats["probabilities"].numpy(), atol=1e-6
    )


def test_predict_png_refuses_a_png_that_is_not_28_by_28(loaded):
    wrong_size = encode_png(np.zeros((30, 28), np.uint8))
    with pytest.raises(tf.errors.InvalidArgumentError, match="image_png must be a 28x28 PNG"):
        loaded.signatures["predict_png"](image_png=tf.constant([wrong_size]))


@pytest.fixture(scope="module")
def calibrated_export(tmp_path_factory, untrained_model, mnist):
    """Version 1 of the CNN exported with a temperature of 0.25."""
    base = tmp_path_factory.mktemp("calibrated")
    _, path = export.export_model(
        untrained_model, base, temperature=0.25, check_images=mnist[1][0][:8]
    )
    return path


def test_both_signatures_return_the_probabilities_calibrated_with_the_temperature(
    calibrated_export, untrained_model, mnist
):
    images = mnist[1][0][:6]
    floats = (images / 255.0).astype(np.float32)[..., None]
    keras_probabilities = untrained_model.predict(floats, verbose=0)
    expected = calibration.apply_temperature(keras_probabilities, 0.25)
    # The temperature must show, or the comparison below would prove nothing.
    assert not np.allclose(expected, keras_probabilities, rtol=1e-4, atol=1e-6)
    loaded = tf.saved_model.load(str(calibrated_export))
    for result in (
        loaded.signatures["serving_default"](image=tf.constant(floats)),
        loaded.signatures["predict_png"](
            image_png=tf.constant([encode_png(image) for image in images])
        ),
    ):
        probabilities = result["probabilities"].numpy()
        np.testing.assert_allclose(probabilities, expected, rtol=1e-4, atol=1e-6)
        np.testing.assert_array_equal(result["digit"].numpy(), probabilities.argmax(axis=1))


def test_the_export_check_compares_with_the_calibrated_probabilities(
    calibrated_export, untrained_model, mnist
):
    images = mnist[1][0][:4]
    export.check_export(calibrated_export, untrained_model, images, temperature=0.25)
    with pytest.raises(export.ExportError, match="differs from the Keras model"):
        export.check_export(calibrated_export, untrained_model, images, temperature=1.0)


@pytest.mark.parametrize("temperature", [0, -1, float("nan")])
def test_a_temperature_that_is_not_above_0_is_refused(tmp_path, untrained_model, temperature):
    with pytest.raises(export.ExportError, match="temperature must be a finite number above 0"):
        export.export_model(untrained_model, tmp_path, temperature=temperature)
    assert list(tmp_path.iterdir()) == []


def test_versions_count_up_from_1(tmp_path, untrained_model):
    base = tmp_path / "my_digit_classifier"
    assert export.export_model(untrained_model, base)[0] == 1
    assert export.export_model(untrained_model, base)[0] == 2
    assert savedmodel.version_numbers(base) == [1, 2]


def test_the_next_version_follows_the_highest_and_ignores_other_folders(tmp_path):
    base = tmp_path / "models"
    for name in ("3", "00000010", ".export-11-abc", "notes", "7b"):
        (base / name).mkdir(parents=True)
    assert savedmodel.version_numbers(base) == [3, 10]
    assert export.next_version(base) == 11


def test_an_existing_version_is_not_overwritten(tmp_path, untrained_model):
    base = tmp_path / "models"
    (base / "1").mkdir(parents=True)
    (base / "1" / "marker").write_text("keep me")
    with pytest.raises(
        export.ExportError, match=r"version 1 already exists at .* \(use --overwrite\)"
    ):
        export.export_model(untrained_model, base, version=1)
    assert (base / "1" / "marker").read_text() == "keep me"


def test_overwrite_replaces_a_version_whole(tmp_path, untrained_model):
    base = tmp_path / "models"
    (base / "1").mkdir(parents=True)
    (base / "1" / "marker").write_text("old")
    export.export_model(untrained_model, base, version=1, overwrite=True)
    assert sorted(path.name for path in (base / "1").iterdir()) == [
        "assets",
        "fingerprint.pb",
        "saved_model.pb",
        "variables",
    ]
    assert sorted(path.name for path in base.iterdir()) == ["1"]


def test_a_failed_check_publishes_nothing(tmp_path, untrained_model):
    base = tmp_path / "models"
    # Images of the wrong size make the check fail after the SavedModel is written.
    with pytest.raises(Exception):  # noqa: B017 - any failure will do; the folder is the point.
        export.export_model(untrained_model, base, check_images=np.zeros((4, 30, 30), np.uint8))
    assert list(base.iterdir()) == []


def test_version_zero_or_less_is_refused(tmp_path, untrained_model):
    with pytest.raises(export.ExportError, match="positive integer"):
        export.export_model(untrained_model, tmp_path, version=0)


@pytest.fixture(scope="module")
def trained_model_file(smoke_training):
    return smoke_training[0] / "cnnModel.h5"


def test_the_script_exports_and_prints_the_signature_as_saved_model_cli(
    tmp_path, trained_model_file
):
    base = tmp_path / "my_digit_classifier"
    result = run_script("export_model.py", "--model", trained_model_file, "--export-base", base)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"Exported version 1 of 'my_digit_classifier' to {base / '1'}" in result.stdout
    assert (
        "  inputs['image'] tensor_info:\n      dtype: DT_FLOAT\n      shape: (-1, 28, 28, 1)"
        in result.stdout
    )
    assert (
        "  outputs['digit'] tensor_info:\n      dtype: DT_INT64\n      shape: (-1)" in result.stdout
    )
    assert "Method name is: tensorflow/serving/predict" in result.stdout
    assert (base / "1" / "saved_model.pb").is_file() and (base / "1" / "variables").is_dir()


def test_the_script_exports_with_the_temperature_of_the_metrics_beside_the_model(
    tmp_path, smoke_training
):
    folder, _ = smoke_training
    metrics_file = folder / "cnnModel.metrics.json"
    temperature = calibration.read_temperature(metrics_file)
    result = run_script(
        "export_model.py", "--model", folder / "cnnModel.h5", "--export-base", tmp_path
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (
        f"Probabilities calibrated with temperature T = {temperature:.4f} ({metrics_file})"
        in result.stdout
    )


def test_the_script_refuses_a_model_without_a_temperature_and_says_how_to_get_one(
    tmp_path, trained_model_file
):
    lone = tmp_path / "lone.h5"
    lone.write_bytes(trained_model_file.read_bytes())
    result = run_script("export_model.py", "--model", lone, "--export-base", tmp_path / "models")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"export_model.py: error: no metrics file {tmp_path / 'lone.metrics.json'}, so no "
        f"calibration temperature: run calibrate_model.py --model {lone} to fit one, or pass "
        "--temperature 1 to export the probabilities as the model gives them"
    )
    assert not (tmp_path / "models").exists()


def test_the_temperature_flag_overrides_the_metrics(tmp_path, trained_model_file):
    result = run_script(
        "export_model.py",
        "--model",
        trained_model_file,
        "--export-base",
        tmp_path,
        "--temperature",
        "1",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Probabilities calibrated with temperature T = 1.0000 (--temperature)" in result.stdout


def test_the_script_refuses_an_existing_version_in_one_line(tmp_path, trained_model_file):
    base = tmp_path / "models"
    (base / "4").mkdir(parents=True)
    result = run_script(
        "export_model.py", "--model", trained_model_file, "--export-base", base, "--version", 4
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"export_model.py: error: version 4 already exists at {base / '4'} (use --overwrite)"
    )


def test_a_missing_model_is_one_clear_line(tmp_path):
    result = run_script(
        "export_model.py", "--model", tmp_path / "none.h5", "--export-base", tmp_path
    )
    assert result.returncode == 1
    missing = tmp_path / "none.h5"
    assert result.stderr.strip() == (
        f"export_model.py: error: no trained model at {missing}: run model_trainer.py first"
    )


def test_a_corrupt_model_is_one_clear_line(tmp_path):
    corrupt = tmp_path / "cnnModel.h5"
    corrupt.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    result = run_script(
        "export_model.py",
        "--model",
        corrupt,
        "--export-base",
        tmp_path / "models",
        "--temperature",
        "1",
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"export_model.py: error: {corrupt} is not a readable Keras model")
    assert "Traceback" not in result.stderr


def test_an_unwritable_export_base_is_one_clear_line(tmp_path, trained_model_file):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    result = run_script(
        "export_model.py", "--model", trained_model_file, "--export-base", blocker / "models"
    )
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(f"export_model.py: error: cannot write under {blocker / 'models'}")
    )


def test_a_temperature_of_zero_is_a_usage_error():
    result = run_script("export_model.py", "--temperature", 0)
    assert result.returncode == 2
    assert "--temperature must be a finite number above 0, got 0.0" in result.stderr


def test_version_zero_is_a_usage_error():
    result = run_script("export_model.py", "--version", 0)
    assert result.returncode == 2
    assert "--version must be a positive integer, got 0" in result.stderr


def test_only_ascii_digit_folders_are_versions(tmp_path):
    # str.isdigit() and int() accept more than TensorFlow Serving does.
    for name in ("2", "²", "٣", "+4", " 5"):
        (tmp_path / name).mkdir()
    assert savedmodel.version_numbers(tmp_path) == [2]
