"""Versioned SavedModel export for TensorFlow Serving, and its checks.

TensorFlow Serving watches a base path (`my_digit_classifier/`) and serves
the highest integer-named subfolder. An export therefore goes to a hidden,
non-numeric folder beside the versions, is checked there, and only then is
renamed to its version number: the server never sees a half-written or
unverified version.
"""

import shutil
import tempfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2

from mnist_serving import calibration, config, data, leftovers, savedmodel, warmup


class ExportError(Exception):
    """The model cannot be exported or the export did not check out."""


def next_version(export_base: str | Path) -> int:
    """1 when `export_base` holds no version, else the highest version plus 1."""
    versions = savedmodel.version_numbers(export_base)
    return versions[-1] + 1 if versions else 1


def load_keras_model(path: str | Path) -> keras.Model:
    """Loads the trained Keras model (`cnnModel.h5`) for inference.

    Raises:
        ExportError: The file is missing or is not a Keras model.
    """
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"no trained model at {path}: run model_trainer.py first")
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as error:  # noqa: BLE001 - h5py and Keras raise many kinds.
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ExportError(f"{path} is not a readable Keras model: {reason}") from None


def calibrated_probabilities(probabilities: tf.Tensor, temperature: float) -> tf.Tensor:
    """`softmax(log(probabilities) / temperature)` in TensorFlow.

    The same formula as `calibration.apply_temperature`, for the export.
    """
    floor = tf.constant(calibration.PROBABILITY_FLOOR, probabilities.dtype)
    return tf.nn.softmax(tf.math.log(tf.maximum(probabilities, floor)) / temperature)


def build_archive(model: keras.Model, temperature: float = 1.0) -> keras.export.ExportArchive:
    """Wraps `model` in an ExportArchive with the two serving signatures.

    `serving_default` takes float32 images (N, 28, 28, 1) in 0..1, white on
    black, under the name `image`. `predict_png` takes the same images as PNG
    files (`{"b64": ...}` in JSON): a 28x28 grey PNG is about 300 bytes where
    the same image as a JSON list of floats is about 9 KB. Both return
    `probabilities` (N, 10), calibrated with `temperature` (see
    `calibration`), and `digit` (N,), their argmax.
    """
    # No `archive.track(model)`: the endpoints capture the model's variables
    # themselves, and tracking the model as well would store every weight
    # twice (keras-team/keras#23553): 200 MB instead of 100 MB on disk and in
    # the server's memory.
    archive = keras.export.ExportArchive()

    def outputs(images):
        probabilities = calibrated_probabilities(model(images, training=False), temperature)
        digits = tf.argmax(probabilities, axis=1, output_type=tf.int64)
        return {config.PROBABILITIES_OUTPUT: probabilities, config.DIGIT_OUTPUT: digits}

    @tf.function(input_signature=[tf.TensorSpec([None, *config.IMAGE_SHAPE], tf.float32)])
    def image(image):
        return outputs(image)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def image_png(image_png):
        def decode(png):
            pixels = tf.io.decode_png(png, channels=1)
            fitted = tf.image.resize_with_crop_or_pad(pixels, config.IMAGE_SIZE, config.IMAGE_SIZE)
            return fitted, tf.shape(pixels)[:2]

        pixels, sizes = tf.map_fn(
            decode,
            image_png,
            fn_output_signature=(
                tf.TensorSpec(config.IMAGE_SHAPE, tf.uint8),
                tf.TensorSpec([2], tf.int32),
            ),
        )
        # Checked after the loop: inside it, TensorFlow does not order an
        # assertion before the ops that follow it.
        size_check = tf.debugging.assert_equal(
            sizes,
            tf.fill(tf.shape(sizes), config.IMAGE_SIZE),
            message=f"{config.PNG_INPUT_NAME} must be a "
            f"{config.IMAGE_SIZE}x{config.IMAGE_SIZE} PNG",
        )
        with tf.control_dependencies([size_check]):
            pixels = tf.identity(pixels)
        return outputs(tf.cast(pixels, tf.float32) / config.PIXEL_MAX)

    # The argument names above become the signatures' input names.
    archive.add_endpoint(config.DEFAULT_SIGNATURE, image)
    archive.add_endpoint(config.PNG_SIGNATURE, image_png)
    return archive


def describe_signature(signature_def) -> str:
    """The text `saved_model_cli show --signature_def NAME` prints for one signature."""

    def tensor_lines(kind, tensors):
        lines = [f"The given SavedModel SignatureDef contains the following {kind}(s):"]
        for key in sorted(tensors):
            tensor = tensors[key]
            dims = [dim.size for dim in tensor.tensor_shape.dim]
            shape = (
                "unknown_rank"
                if tensor.tensor_shape.unknown_rank
                else ("(" + ", ".join(str(size) for size in dims) + ")")
            )
            lines += [
                f"  {kind}s['{key}'] tensor_info:",
                f"      dtype: {types_pb2.DataType.Name(tensor.dtype)}",
                f"      shape: {shape}",
                f"      name: {tensor.name}",
            ]
        return lines

    lines = tensor_lines("input", signature_def.inputs)
    lines += tensor_lines("output", signature_def.outputs)
    lines.append(f"Method name is: {signature_def.method_name}")
    return "\n".join(lines)


def _tensor_specs(tensors):
    """{name: (dtype enum, [dim sizes])} of a signature's inputs or outputs."""
    return {
        key: (tensor.dtype, [dim.size for dim in tensor.tensor_shape.dim])
        for key, tensor in tensors.items()
    }


def check_export(
    saved_model_dir: str | Path,
    model: keras.Model,
    images: np.ndarray,
    batch_sizes: tuple[int, ...] = (1, 32),
    temperature: float = 1.0,
) -> None:
    """Reloads an export and checks it against the Keras model it came from.

    Checks the signatures' names, dtypes and shapes, then compares both
    signatures with `model`'s probabilities calibrated with `temperature`, on
    `images` (uint8, N x 28 x 28) at each batch size.

    Raises:
        ExportError: A signature is missing or differs from the Keras model.
    """
    try:
        signature_defs = savedmodel.read_signature_defs(saved_model_dir)
    except savedmodel.SavedModelError as error:
        raise ExportError(str(error)) from None
    outputs = {
        config.PROBABILITIES_OUTPUT: (types_pb2.DT_FLOAT, [-1, config.NUM_CLASSES]),
        config.DIGIT_OUTPUT: (types_pb2.DT_INT64, [-1]),
    }
    expected = {
        config.DEFAULT_SIGNATURE: (
            {config.INPUT_NAME: (types_pb2.DT_FLOAT, [-1, *config.IMAGE_SHAPE])},
            outputs,
        ),
        config.PNG_SIGNATURE: ({config.PNG_INPUT_NAME: (types_pb2.DT_STRING, [-1])}, outputs),
    }
    for name, (inputs, outputs) in expected.items():
        if name not in signature_defs:
            raise ExportError(f"signature '{name}' is missing")
        signature = signature_defs[name]
        actual = (_tensor_specs(signature.inputs), _tensor_specs(signature.outputs))
        if actual != (inputs, outputs) or signature.method_name != config.PREDICT_METHOD:
            raise ExportError(f"signature '{name}' has inputs and outputs {actual}")

    loaded = tf.saved_model.load(str(saved_model_dir))
    for batch_size in batch_sizes:
        batch = np.asarray(images[:batch_size])
        floats = data.to_model_input(batch)
        expected = calibration.apply_temperature(
            model.predict(floats, batch_size=batch_size, verbose=0), temperature
        )
        # TensorFlow's own PNG encoder: the signature must read any valid PNG.
        pngs = tf.stack([tf.io.encode_png(image[..., np.newaxis]) for image in batch])
        results = {
            config.DEFAULT_SIGNATURE: loaded.signatures[config.DEFAULT_SIGNATURE](
                **{config.INPUT_NAME: tf.constant(floats)}
            ),
            config.PNG_SIGNATURE: loaded.signatures[config.PNG_SIGNATURE](
                **{config.PNG_INPUT_NAME: pngs}
            ),
        }
        for name, result in results.items():
            probabilities = result[config.PROBABILITIES_OUTPUT].numpy()
            digits = result[config.DIGIT_OUTPUT].numpy()
            if not np.allclose(probabilities, expected, rtol=1e-4, atol=1e-6):
                raise ExportError(
                    f"signature '{name}' differs from the Keras model at batch size {batch_size} "
                    f"(temperature {temperature})"
                )
            if not np.array_equal(digits, probabilities.argmax(axis=1)):
                raise ExportError(f"signature '{name}' returns digits that are not the argmax")


def export_model(
    model: keras.Model,
    export_base: str | Path,
    version: int | None = None,
    overwrite: bool = False,
    check_images: np.ndarray | None = None,
    warmup_images: np.ndarray | None = None,
    temperature: float = 1.0,
) -> tuple[int, Path]:
    """Exports `model` as `export_base/<version>/`, complete or not at all.

    Args:
        model: The trained Keras model.
        export_base: The model's base path, e.g. `my_digit_classifier/`.
        version: A positive integer; by default the next free version.
        overwrite: Replace an existing version instead of refusing.
        check_images: uint8 images (N x 28 x 28) to compare the export with
            the Keras model on before it is published; None skips the check.
        warmup_images: uint8 images (at least 8) whose requests go into the
            version's warm-up file (`warmup.WARMUP_FILE`); None writes none.
        temperature: The calibration temperature (> 0) both signatures apply
            to the model's probabilities; 1 leaves them as they are.

    Returns:
        `(version, path)` of the published export.

    What killed exports left under `export_base` is removed first (see
    `leftovers`), with a line on stderr for each.

    Raises:
        ExportError: Bad version, existing version, unwritable base path, or a
            failed check. No version under `export_base` is changed then.
    """
    try:
        temperature = calibration.check_temperature(temperature)
    except calibration.CalibrationError as error:
        raise ExportError(str(error)) from None
    export_base = Path(export_base)
    leftovers.clean_export_base(export_base)
    version = next_version(export_base) if version is None else int(version)
    if version <= 0:
        raise ExportError(f"version must be a positive integer, got {version}")
    target = export_base / str(version)
    if target.exists() and not overwrite:
        raise ExportError(f"version {version} already exists at {target} (use --overwrite)")
    try:
        export_base.mkdir(parents=True, exist_ok=True)
        staging = Path(
            tempfile.mkdtemp(prefix=leftovers.export_staging_prefix(version), dir=export_base)
        )
    except OSError as error:
        raise ExportError(f"cannot write under {export_base}: {error.strerror}") from None
    try:
        build_archive(model, temperature).write_out(str(staging), verbose=False)
        if warmup_images is not None:
            warmup.write_warmup_file(staging, warmup.digit_warmup_logs(warmup_images))
        if check_images is not None:
            check_export(staging, model, check_images, temperature=temperature)
        if target.exists():
            retired = Path(
                tempfile.mkdtemp(prefix=leftovers.retired_version_prefix(version), dir=export_base)
            )
            target.rename(retired / "old")
            staging.rename(target)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            staging.rename(target)
    except OSError as error:
        raise ExportError(f"cannot write {target}: {error}") from None
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return version, target
