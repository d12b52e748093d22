"""Trains and evaluates the two-branch CNN on MNIST, and saves cnnModel.h5.

The model of the original design (25,927,246 parameters) is trained on the
training set, less a held-out validation set, for 5 epochs; it is then
evaluated once on the training and the test set. A calibration temperature
is fitted on the validation set (see mnist_serving/calibration.py). The model
is saved to `cnnModel.h5` next to this script, its metrics and temperature to
`cnnModel.metrics.json`, and the figures of the manual to `figures/`.

Typical usage:

    python model_trainer.py
    python model_trainer.py --epochs 1 --limit 2000 --output /tmp/smoke.h5 --figures /tmp/figures
"""

import argparse
import json
import sys
from pathlib import Path

from mnist_serving import cli, config


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=cli.HelpFormatter,
    )
    parser.add_argument("--epochs", type=int, default=5, help="passes over the training set")
    parser.add_argument("--batch-size", type=int, default=128, help="images per training step")
    parser.add_argument(
        "--limit",
        type=int,
        default=None,
        metavar="N",
        help="train on the first N training images only, for smoke runs (default: all)",
    )
    parser.add_argument(
        "--validation-size",
        type=int,
        default=5000,
        help="training images held out to validate each epoch (0: none); "
        "with --limit, at most a tenth of N",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of every random choice")
    parser.add_argument(
        "--data",
        type=Path,
        default=config.DEFAULT_DATA_PATH,
        help="MNIST .npz file; when it is absent, Keras downloads MNIST",
    )
    parser.add_argument(
        "--output", type=Path, default=config.DEFAULT_MODEL_PATH, help="the model file to write"
    )
    parser.add_argument(
        "--figures",
        type=Path,
        default=config.FIGURES_DIR,
        help="folder for the figures (dataset, model, curves, confusion matrix, errors, "
        "calibration)",
    )
    parser.add_argument("--no-figures", action="store_true", help="do not draw the figures")
    arguments = parser.parse_args(argv)
    for name in ("epochs", "batch_size", "limit"):
        value = getattr(arguments, name)
        if value is not None and value <= 0:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    if arguments.validation_size < 0:
        parser.error("--validation-size must be 0 or more")
    if arguments.output.suffix != ".h5":
        parser.error(f"--output must end in .h5 (the original design's format): {arguments.output}")
    return arguments


def print_evaluation(name, metrics):
    print(
        f"Accuracy over {name} set is: {metrics['accuracy']:.2%} "
        f"({metrics['misclassified']} of {metrics['images']} misclassified)"
    )


def print_per_class(metrics):
    print("Misclassified test images per class:")
    print("  digit  " + " ".join(f"{digit:>5}" for digit in metrics["per_class"]))
    print("  images " + " ".join(f"{c['images']:>5}" for c in metrics["per_class"].values()))
    print("  wrong  " + " ".join(f"{c['misclassified']:>5}" for c in metrics["per_class"].values()))


def train(arguments):
    from mnist_serving import data

    (train_images, train_labels), (test_images, test_labels) = data.load_mnist(arguments.data)
    # TensorFlow is imported only now, so that --help and errors in the
    # arguments or the data answer at once, without its start-up messages.
    import keras
    import tensorflow as tf

    from mnist_serving import calibration, figures, model, training

    print("Dimensions of Training set images: ", train_images.shape)
    print("Dimensions of Testing set images: ", test_images.shape)
    if arguments.limit is not None:
        train_images, train_labels = (
            train_images[: arguments.limit],
            train_labels[: arguments.limit],
        )
    validation_size = arguments.validation_size
    if arguments.limit is not None:
        validation_size = min(validation_size, arguments.limit // 10)

    training.make_deterministic(arguments.seed)
    (fit_images, fit_labels), (validation_images, validation_labels) = training.split_validation(
        train_images, train_labels, validation_size, arguments.seed
    )
    classifier = model.build_model()
    classifier.summary(line_length=100)

    steps_per_epoch = -(-len(fit_images) // arguments.batch_size)
    training.compile_for_training(classifier, steps_per_epoch * arguments.epochs)
    dataset = training.make_training_dataset(
        data.to_model_input(fit_images),
        training.one_hot(fit_labels),
        arguments.batch_size,
        arguments.seed,
    )
    validation = None
    if len(validation_images):
        validation = (data.to_model_input(validation_images), training.one_hot(validation_labels))
    print(
        f"Training on {len(fit_images)} images, validating on {len(validation_images)}, "
        f"for {arguments.epochs} epochs"
    )
    with training.Stopwatch() as stopwatch:
        # The progress bar on a terminal; one line per epoch in logs and pipes.
        history = classifier.fit(
            dataset,
            epochs=arguments.epochs,
            validation_data=validation,
            shuffle=False,  # The dataset shuffles itself, with the seed.
            verbose=1 if sys.stdout.isatty() else 2,
            callbacks=[training.RunTimeEstimate(steps_per_epoch * arguments.epochs)],
        )

    # The test set is used here, once, after training.
    train_metrics, _ = training.evaluate(
        classifier, data.to_model_input(train_images), train_labels
    )
    test_probabilities = classifier.predict(
        data.to_model_input(test_images), batch_size=500, verbose=0
    )
    test_metrics, test_predicted = training.evaluate_predictions(test_probabilities, test_labels)
    print_evaluation("training", train_metrics)
    print_evaluation("testing", test_metrics)
    print_per_class(test_metrics)
    calibration_metrics = calibration.calibrate(
        classifier.predict(validation[0], batch_size=500, verbose=0) if validation else None,
        validation_labels,
        test_probabilities,
        test_labels,
    )
    print(calibration.describe(calibration_metrics))

    metrics = {
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
        "seed": arguments.seed,
        "epochs": arguments.epochs,
        "batch_size": arguments.batch_size,
        "limit": arguments.limit,
        "training_images": len(fit_images),
        "validation_images": len(validation_images),
        "seconds": round(stopwatch.seconds, 1),
        "images_per_second": round(len(fit_images) * arguments.epochs / stopwatch.seconds, 1),
        "history": {
            name: [float(value) for value in values] for name, values in history.history.items()
        },
        "train": train_metrics,
        "test": test_metrics,
        "calibration": calibration_metrics,
    }
    metrics_file = config.metrics_path(arguments.output)
    training.save_model(classifier, arguments.output)
    training.atomic_write(
        metrics_file, lambda path: Path(path).write_text(json.dumps(metrics, indent=2) + "\n")
    )
    print(f"Saved the model to {arguments.output} and its metrics to {metrics_file}")

    if not arguments.no_figures:
        folder = arguments.figures
        figures.plot_dataset_examples(folder / "datasetExample.png", train_images, train_labels)
        figures.plot_model(folder / "model.png", classifier)
        figures.plot_training_curves(folder / "trainingCurves.png", metrics["history"])
        figures.plot_confusion_matrix(
            folder / "confusionMatrix.png",
            training.confusion_matrix(test_labels, test_predicted),
        )
        calibrated = calibration.apply_temperature(
            test_probabilities, calibration_metrics["temperature"]
        )
        figures.plot_misclassified(
            folder / "misclassified.png",
            test_images,
            test_labels,
            test_predicted,
            calibrated.max(axis=1),
        )
        figures.plot_calibration(
            folder / "calibration.png",
            test_labels,
            test_probabilities,
            calibration_metrics["temperature"],
        )
        print(f"Saved the figures to {folder}")


def main(argv=None):
    arguments = parse_arguments(argv)
    from mnist_serving.data import DatasetError

    try:
        train(arguments)
    except DatasetError as error:
        sys.exit(f"model_trainer.py: error: {error}")
    except OSError as error:
        sys.exit(f"model_trainer.py: error: {error.filename or ''}: {error.strerror or error}")
    except KeyboardInterrupt:
        sys.exit(f"model_trainer.py: interrupted; {arguments.output} was left as it was")


if __name__ == "__main__":
    main()
