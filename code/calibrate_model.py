"""Fits the calibration temperature of a trained cnnModel.h5, without training it again.

The trainer fits the temperature itself; this script does the same for a model
already trained (by an older trainer, or elsewhere): it takes the run's seeded
validation split again (seed, --limit and validation size from the metrics
JSON beside the model), fits the temperature on it, measures the expected
calibration error on the test set before and after, and records the result in
the metrics JSON, where export_model.py reads it.

Typical usage:

    python calibrate_model.py
    python calibrate_model.py --model /tmp/cnnModel.h5 --dry-run
"""

import argparse
import json
import sys
from pathlib import Path

from mnist_serving import calibration, cli, config, interrupts


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=cli.HelpFormatter,
    )
    parser.add_argument(
        "--model", type=Path, default=config.DEFAULT_MODEL_PATH, help="the trained Keras model"
    )
    parser.add_argument(
        "--data", type=Path, default=config.DEFAULT_DATA_PATH, help="MNIST .npz file"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed of the training run's validation split (default: from the metrics JSON)",
    )
    parser.add_argument(
        "--validation-size",
        type=int,
        default=None,
        help="validation images of the training run (default: from the metrics JSON)",
    )
    parser.add_argument(
        "--limit",
        type=int,
        default=None,
        metavar="N",
        help="the run's --limit (default: from the metrics JSON; none without one)",
    )
    parser.add_argument(
        "--figures",
        type=Path,
        default=config.FIGURES_DIR,
        help="folder for the reliability diagram, calibration.png",
    )
    parser.add_argument("--no-figures", action="store_true", help="do not draw the figure")
    parser.add_argument(
        "--dry-run", action="store_true", help="print the results; write no file and no figure"
    )
    arguments = parser.parse_args(argv)
    for name in ("validation_size", "limit"):
        value = getattr(arguments, name)
        if value is not None and value <= 0:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    return arguments


def run_settings(arguments, metrics, metrics_file):
    """(seed, validation size, limit) of the training run: flags first, then the metrics."""
    seed = arguments.seed if arguments.seed is not None else metrics.get("seed")
    validation_size = arguments.validation_size or metrics.get("validation_images")
    limit = arguments.limit or metrics.get("limit")
    if seed is None or not validation_size:
        raise calibration.CalibrationError(
            f"{metrics_file} does not give the run's seed and validation images: "
            "pass --seed and --validation-size as the model was trained"
        )
    return seed, validation_size, limit


def calibrate(arguments):
    metrics_file = config.metrics_path(arguments.model)
    metrics = calibration.read_metrics(metrics_file) if metrics_file.exists() else {}
    seed, validation_size, limit = run_settings(arguments, metrics, metrics_file)

    from mnist_serving import data, export, training

    (train_images, train_labels), (test_images, test_labels) = data.load_mnist(arguments.data)
    if limit:
        train_images, train_labels = train_images[:limit], train_labels[:limit]
    _, (validation_images, validation_labels) = training.split_validation(
        train_images, train_labels, validation_size, seed
    )
    model = export.load_keras_model(arguments.model)

    def predict(images):
        return model.predict(data.to_model_input(images), batch_size=500, verbose=0)

    test_probabilities = predict(test_images)
    result = calibration.calibrate(
        predict(validation_images), validation_labels, test_probabilities, test_labels
    )
    print(
        f"Validation split of the training run: seed {seed}, {validation_size} images"
        + (f" of the first {limit}" if limit else "")
    )
    print(calibration.describe(result))
    if arguments.dry_run:
        return

    # A metrics file of the trainer already says how the model was trained.
    for key, value in (("seed", seed), ("validation_images", validation_size), ("limit", limit)):
        metrics.setdefault(key, value)
    metrics["calibration"] = result
    saved = f"calibrate_model.py: interrupted after saving the temperature to {metrics_file}"
    if not arguments.no_figures:
        saved += "; the reliability diagram was not drawn"
    with interrupts.held_then_end(saved):
        training.atomic_write(
            metrics_file, lambda path: Path(path).write_text(json.dumps(metrics, indent=2) + "\n")
        )
    print(f"Saved the temperature to {metrics_file}")
    if not arguments.no_figures:
        from mnist_serving import figures

        with interrupts.end_at_once(saved):
            path = figures.plot_calibration(
                arguments.figures / "calibration.png",
                test_labels,
                test_probabilities,
                result["temperature"],
            )
        print(f"Saved the reliability diagram to {path}")


def main(argv=None):
    arguments = parse_arguments(argv)
    if not arguments.model.is_file():
        sys.exit(
            f"calibrate_model.py: error: no trained model at {arguments.model}: "
            "run model_trainer.py first"
        )
    from mnist_serving.data import DatasetError
    from mnist_serving.export import ExportError

    interrupted = "calibrate_model.py: interrupted; the metrics file was left as it was"
    try:
        with interrupts.end_at_once(interrupted):
            calibrate(arguments)
    except (calibration.CalibrationError, DatasetError, ExportError, ValueError) as error:
        sys.exit(f"calibrate_model.py: error: {error}")
    except OSError as error:
        sys.exit(f"calibrate_model.py: error: {error.filename or ''}: {error.strerror or error}")


if __name__ == "__main__":
    main()
