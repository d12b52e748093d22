"""Exports cnnModel.h5 as a versioned SavedModel that TensorFlow Serving loads.

Writes `my_digit_classifier/<version>/` (`saved_model.pb` and `variables/`)
with two signatures: `serving_default` (float32 images) and `predict_png`
(PNG bytes), and `assets.extra/tf_serving_warmup_requests`: requests of real
test digits that TensorFlow Serving replays before the version serves. Both
signatures return probabilities calibrated with the temperature the trainer
fitted and recorded in `cnnModel.metrics.json` beside the model. The
version appears complete or not at all, and only after the export has been
reloaded and compared with the Keras model.

Typical usage:

    python export_model.py
    python export_model.py --version 2 --overwrite
    python export_model.py --temperature 1    # the probabilities as the model gives them
"""

import argparse
import sys
from pathlib import Path

from mnist_serving import calibration, cli, config

# Test digits the export is compared on, at two batch sizes.
CHECK_IMAGES = 32
# Test digits in the warm-up requests (batches of 1 and 8, both signatures).
WARMUP_IMAGES = 8


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=cli.HelpFormatter,
    )
    parser.add_argument(
        "--model", type=Path, default=config.DEFAULT_MODEL_PATH, help="the trained Keras model"
    )
    parser.add_argument(
        "--export-base",
        type=Path,
        default=config.DEFAULT_EXPORT_BASE,
        help="the model's base path, where TensorFlow Serving looks for versions",
    )
    parser.add_argument(
        "--model-name",
        default=config.MODEL_NAME,
        help="model name; the export goes to the --export-base folder, which is "
        "named after the model unless given",
    )
    parser.add_argument(
        "--version",
        type=int,
        default=None,
        help="version number (a positive integer); default: 1, or the highest existing + 1",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace the version if it exists")
    parser.add_argument(
        "--data",
        type=Path,
        default=config.DEFAULT_DATA_PATH,
        help="MNIST .npz whose test digits the export is checked on",
    )
    parser.add_argument(
        "--temperature",
        type=float,
        default=None,
        help="calibration temperature (> 0) applied to the probabilities; 1 leaves them "
        "as the model gives them (default: the one in the metrics JSON beside --model)",
    )
    arguments = parser.parse_args(argv)
    if arguments.temperature is not None:
        try:
            calibration.check_temperature(arguments.temperature)
        except calibration.CalibrationError as error:
            parser.error(f"--{error}")
    if arguments.version is not None and arguments.version <= 0:
        parser.error(f"--version must be a positive integer, got {arguments.version}")
    if (
        arguments.model_name != config.MODEL_NAME
        and arguments.export_base == config.DEFAULT_EXPORT_BASE
    ):
        arguments.export_base = config.PROJECT_DIR / arguments.model_name
    return arguments


def read_temperature(arguments):
    """The temperature to export with, and where it comes from; exits when there is none.

    Without a recorded temperature the export stops rather than fall back to
    1: the served probabilities would silently be the uncalibrated ones, and
    a warning is easily lost among TensorFlow's start-up lines.
    """
    if arguments.temperature is not None:
        return arguments.temperature, "--temperature"
    metrics_file = config.metrics_path(arguments.model)
    try:
        return calibration.read_temperature(metrics_file), str(metrics_file)
    except calibration.CalibrationError as error:
        sys.exit(
            f"export_model.py: error: {error}, so no calibration temperature: run "
            f"calibrate_model.py --model {arguments.model} to fit one, or pass "
            "--temperature 1 to export the probabilities as the model gives them"
        )


def main(argv=None):
    arguments = parse_arguments(argv)
    if not arguments.model.is_file():
        # Said before TensorFlow is imported, so the error is the only output.
        sys.exit(
            f"export_model.py: error: no trained model at {arguments.model}: "
            "run model_trainer.py first"
        )
    temperature, source = read_temperature(arguments)
    from mnist_serving import data, export, savedmodel, warmup

    try:
        model = export.load_keras_model(arguments.model)
        (_, _), (test_images, _) = data.load_mnist(arguments.data)
        version, path = export.export_model(
            model,
            arguments.export_base,
            version=arguments.version,
            overwrite=arguments.overwrite,
            check_images=test_images[:CHECK_IMAGES],
            warmup_images=test_images[:WARMUP_IMAGES],
            temperature=temperature,
        )
    except (export.ExportError, data.DatasetError) as error:
        sys.exit(f"export_model.py: error: {error}")
    except KeyboardInterrupt:
        sys.exit("export_model.py: interrupted; no version was written")

    print(f"Exported version {version} of '{arguments.model_name}' to {path}")
    print(f"Probabilities calibrated with temperature T = {temperature:.4f} ({source})")
    print(
        f"Checked: reloaded, same calibrated probabilities as the Keras model on {CHECK_IMAGES} "
        "test digits at batch sizes 1 and 32, through both signatures."
    )
    print(f"Warm-up requests for TensorFlow Serving: {path / warmup.WARMUP_FILE}")
    signatures = savedmodel.read_signature_defs(path)
    for name in (config.DEFAULT_SIGNATURE, config.PNG_SIGNATURE):
        print(f"\nsignature_def['{name}']:")
        print(export.describe_signature(signatures[name]))


if __name__ == "__main__":
    main()
