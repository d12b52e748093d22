"""Trains and evaluates the two-branch CNN on MNIST, and saves cnnModel.h5.

The model of the original design (25,927,246 parameters) is trained on the
training set, less a held-out validation set, for 5 epochs; it is then
evaluated once on the training and the test set. A calibration temperature
is fitted on the validation set (see mnist_serving/calibration.py). The model
is saved to `cnnModel.h5` next to this script, its metrics and temperature to
`cnnModel.metrics.json`, and the figures of the manual to `figures/`.

With a TF_CONFIG that names several workers (as Kubeflow's TFJob sets it), each
worker runs this script: they train together under
`tf.distribute.MultiWorkerMirroredStrategy`, and only the chief writes files.
`train_workers.py` starts such workers on this machine.

Typical usage:

    python model_trainer.py
    python model_trainer.py --epochs 1 --limit 2000 --output /tmp/smoke.h5 --figures /tmp/figures
    TF_CONFIG='{"cluster": {"worker": ["host1:2222", "host2:2222"]},
                "task": {"type": "worker", "index": 0}}' python model_trainer.py
"""

import argparse
import json
import sys
from pathlib import Path

from mnist_serving import cli, config

# Upper bound of --worker-timeout and --startup-timeout: a day.
MAX_TIMEOUT_SECONDS = 86400


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=cli.HelpFormatter,
    )
    parser.add_argument("--epochs", type=int, default=5, help="passes over the training set")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=128,
        help="images per training step on each worker: with N workers (TF_CONFIG), "
        "a step takes N times as many",
    )
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
    parser.add_argument(
        "--worker-timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="with several workers: stop when another worker has not answered for this "
        "long (heartbeats, gradient exchange); it must exceed the chief's validation "
        "at the end of each epoch, which the others wait for",
    )
    parser.add_argument(
        "--startup-timeout",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="with several workers: stop unless all have started within this long",
    )
    arguments = parser.parse_args(argv)
    for name in ("epochs", "batch_size", "limit"):
        value = getattr(arguments, name)
        if value is not None and value <= 0:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    for name in ("worker_timeout", "startup_timeout"):
        value = getattr(arguments, name)
        if not 0 < value <= MAX_TIMEOUT_SECONDS:
            parser.error(
                f"--{name.replace('_', '-')} must be more than 0 and at most "
                f"{MAX_TIMEOUT_SECONDS} seconds, got {value:g}"
            )
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
    from mnist_serving import data, distributed

    cluster = distributed.cluster_from_environment()
    (train_images, train_labels), (test_images, test_labels) = data.load_mnist(arguments.data)
    # TensorFlow is imported only now, so that --help and errors in the
    # arguments or the data answer at once, without its start-up messages.
    import keras
    import tensorflow as tf

    from mnist_serving import calibration, figures, interrupts, model, training

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

    strategy = None
    if cluster.is_distributed:
        # Joins the other workers; TensorFlow's distributed runtime starts first.
        strategy = distributed.start(cluster, arguments.worker_timeout, arguments.startup_timeout)
    training.make_deterministic(arguments.seed)
    (fit_images, fit_labels), (validation_images, validation_labels) = training.split_validation(
        train_images, train_labels, validation_size, arguments.seed
    )
    with distributed.scope(strategy):
        classifier = model.build_model()
    if cluster.is_chief:
        classifier.summary(line_length=100)

    steps_per_epoch = distributed.steps_per_epoch(
        len(fit_images), arguments.batch_size, cluster.workers
    )
    with distributed.scope(strategy):
        training.compile_for_training(classifier, steps_per_epoch * arguments.epochs)

    def make_dataset(shards=1, shard_index=0):
        return training.make_training_dataset(
            data.to_model_input(fit_images),
            training.one_hot(fit_labels),
            arguments.batch_size,
            arguments.seed,
            shards,
            shard_index,
        )

    validation = None
    if len(validation_images):
        validation = (data.to_model_input(validation_images), training.one_hot(validation_labels))
    print(
        f"Training on {len(fit_images)} images, validating on {len(validation_images)}, "
        f"for {arguments.epochs} epochs"
    )
    if cluster.is_distributed:
        print(
            f"Worker {cluster.worker_index} of {cluster.workers}"
            f"{' (chief)' if cluster.is_chief else ''}: "
            f"{len(fit_images) // cluster.workers} images per epoch, global batch "
            f"{arguments.batch_size * cluster.workers}, {steps_per_epoch} steps per epoch"
            f"{', validating' if cluster.is_chief else ''}"
        )
    # The progress bar on a terminal; one line per epoch in logs and pipes.
    verbose = 1 if sys.stdout.isatty() else 2
    estimate = training.RunTimeEstimate(steps_per_epoch * arguments.epochs)
    with training.Stopwatch() as stopwatch:
        if strategy is None:
            history = classifier.fit(
                make_dataset(),
                epochs=arguments.epochs,
                validation_data=validation,
                shuffle=False,  # The dataset shuffles itself, with the seed.
                verbose=verbose,
                callbacks=[estimate],
            )
        else:
            history = distributed.fit(
                classifier,
                strategy,
                cluster,
                make_dataset,
                arguments.epochs,
                steps_per_epoch,
                arguments.worker_timeout,
                validation=validation if cluster.is_chief else None,
                verbose=verbose,
                callbacks=[estimate],
            )
    if strategy is not None:
        # Evaluation and saving go on alone, outside the strategy.
        classifier = distributed.local_copy(classifier)
        if not cluster.is_chief:
            distributed.discard_model(classifier)
            distributed.wait_for_everyone(cluster)
            print(f"Worker {cluster.worker_index} done; the chief wrote the model")
            return

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
        "workers": cluster.workers,
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
    saved = f"model_trainer.py: interrupted after saving {arguments.output} and {metrics_file}"
    if not arguments.no_figures:
        saved += "; not all the figures were drawn"
    # The model and its metrics (with the temperature the export reads) go together.
    with interrupts.held_then_end(saved):
        training.save_model(classifier, arguments.output)
        training.atomic_write(
            metrics_file, lambda path: Path(path).write_text(json.dumps(metrics, indent=2) + "\n")
        )
    print(f"Saved the model to {arguments.output} and its metrics to {metrics_file}")
    with interrupts.end_at_once(saved):
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
        if cluster.is_distributed:
            distributed.wait_for_everyone(cluster)


def main(argv=None):
    arguments = parse_arguments(argv)
    from mnist_serving import distributed, interrupts
    from mnist_serving.data import DatasetError

    interrupted = f"model_trainer.py: interrupted; {arguments.output} was left as it was"
    with distributed.prompt_exit(), interrupts.end_at_once(interrupted):
        try:
            train(arguments)
        except (DatasetError, distributed.ClusterError) as error:
            sys.exit(f"model_trainer.py: error: {error}")
        except distributed.WorkerError as error:
            sys.exit(f"model_trainer.py: error: {error}; {arguments.output} was left as it was")
        except OSError as error:
            sys.exit(f"model_trainer.py: error: {error.filename or ''}: {error.strerror or error}")


if __name__ == "__main__":
    main()
