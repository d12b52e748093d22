"""Measures training with one worker against two local workers, and the all-reduce per step.

Trains the same subset with the same seed twice, one run after the other:
`model_trainer.py` alone, then `train_workers.py --workers 2` (two processes on
127.0.0.1, MultiWorkerMirroredStrategy, the same --batch-size per worker),
and prints the images/s of each (from their metrics JSON: training and
validation, as `Model.fit` reports them) and their ratio. Two workers on one
machine share its cores, so they are not expected to be faster; the figure
shows what the exchange of gradients costs.

It also prints, from the model's trainable variables, the bytes that each
step all-reduces (float32 gradients of every trainable variable), and each
layer's share of them and of the arithmetic (multiply-adds per image).

Typical usage:
    nice -n 10 python bench/distributed_bench.py --limit 3000 --epochs 1
"""

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_DIR / "code"))

from mnist_serving import config  # noqa: E402 - after the path set-up that finds mnist_serving.

FLOAT32_BYTES = 4


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--limit", type=int, default=3000, help="training images (trainer's)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs of each run")
    parser.add_argument("--batch-size", type=int, default=128, help="images per step and worker")
    parser.add_argument("--workers", type=int, default=2, help="workers of the second run")
    return parser.parse_args(argv)


def layer_sizes():
    """[(layer name, trainable parameters, multiply-adds per image)] of the model."""
    from mnist_serving import model

    classifier = model.build_model()
    sizes = []
    for layer in classifier.layers:
        parameters = sum(math.prod(weight.shape) for weight in layer.trainable_weights)
        if not parameters:
            continue
        # Each kernel weight is used once per output position (Conv2D) or once (Dense).
        positions = math.prod(layer.output.shape[1:-1]) if len(layer.output.shape) > 2 else 1
        sizes.append((layer.name, parameters, positions * math.prod(layer.kernel.shape)))
    return sizes


def print_all_reduce(workers):
    sizes = layer_sizes()
    parameters = sum(size for _, size, _ in sizes)
    operations = sum(multiply_adds for _, _, multiply_adds in sizes)
    step_bytes = parameters * FLOAT32_BYTES
    print(f"Trainable parameters: {parameters:,}")
    print(
        f"All-reduced per step: {step_bytes:,} bytes ({step_bytes / 2**20:.1f} MiB) "
        "of float32 gradients"
    )
    # A ring all-reduce sends, and receives, 2 (N-1)/N of the data on each worker.
    sent = 2 * (workers - 1) / workers * step_bytes
    print(
        f"Ring all-reduce with {workers} workers: each sends and receives "
        f"{sent / 2**20:.1f} MiB per step"
    )
    header = f"{'parameters':>12} {'of bytes':>8} {'multiply-adds/image':>20} {'of ops':>6}"
    print(f"{'layer':<10} {header}")
    for name, size, multiply_adds in sorted(sizes, key=lambda item: -item[1]):
        print(
            f"{name:<10} {size:>12,} {size / parameters:>8.2%} {multiply_adds:>20,} "
            f"{multiply_adds / operations:>6.1%}"
        )


def train(command, folder, arguments):
    """Runs a training command; returns its metrics."""
    output = Path(folder) / "cnnModel.h5"
    result = subprocess.run(
        [
            *command,
            "--limit",
            str(arguments.limit),
            "--epochs",
            str(arguments.epochs),
            "--batch-size",
            str(arguments.batch_size),
            "--no-figures",
            "--output",
            str(output),
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    return json.loads(output.with_name("cnnModel.metrics.json").read_text())


def main(argv=None):
    arguments = parse_arguments(argv)
    print_all_reduce(arguments.workers)
    python = sys.executable
    runs = [
        ("1 worker (model_trainer.py)", [python, str(config.CODE_DIR / "model_trainer.py")]),
        (
            f"{arguments.workers} workers (train_workers.py)",
            [
                python,
                str(config.CODE_DIR / "train_workers.py"),
                "--workers",
                str(arguments.workers),
            ],
        ),
    ]
    print(
        f"\n{arguments.limit} training images, {arguments.epochs} epoch(s), "
        f"batch {arguments.batch_size} per worker, {os.cpu_count()} CPUs"
    )
    print(f"{'run':<32} {'workers':>7} {'images':>7} {'seconds':>8} {'images/s':>9} {'ratio':>6}")
    baseline = None
    for name, command in runs:
        with tempfile.TemporaryDirectory() as folder:
            metrics = train(command, folder, arguments)
        speed = metrics["images_per_second"]
        baseline = baseline or speed
        print(
            f"{name:<32} {metrics['workers']:>7} {metrics['training_images']:>7} "
            f"{metrics['seconds']:>8.1f} {speed:>9.1f} {speed / baseline:>6.2f}"
        )


if __name__ == "__main__":
    main()
