"""Training recipe, evaluation and safe saving of the digit classifier.

The recipe adds no parameter to the original architecture: random affine
distortions of the training digits (small rotations, scalings, shears and
shifts, as handwriting varies), label smoothing, and a learning rate that
warms up, then decays along a cosine to zero by the last step.
"""

import logging
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from mnist_serving import config, leftovers

# Random affine distortion of training digits, in MNIST's 28x28 frame.
MAX_ROTATION_DEGREES = 12.0
MAX_SCALE_CHANGE = 0.12
MAX_SHEAR = 0.15
MAX_SHIFT_PIXELS = 2.5

PEAK_LEARNING_RATE = 1e-3
WARMUP_FRACTION = 0.1
LABEL_SMOOTHING = 0.1
WEIGHT_DECAY = 1e-4


def make_deterministic(seed: int) -> None:
    """Seeds Python, NumPy, TensorFlow and Keras, and asks for deterministic ops.

    With the same seed, the same data and the same machine, training gives the
    same weights and so the same metrics.
    """
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def split_validation(
    images: np.ndarray, labels: np.ndarray, validation_size: int, seed: int
) -> tuple:
    """Holds out a random, seeded validation set from the training set.

    Returns:
        `(train_images, train_labels), (validation_images, validation_labels)`.
    """
    if validation_size <= 0:
        return (images, labels), (images[:0], labels[:0])
    if validation_size >= len(images):
        raise ValueError(
            f"validation size {validation_size} leaves no training images out of {len(images)}"
        )
    order = np.random.default_rng(seed).permutation(len(images))
    held_out, kept = order[:validation_size], order[validation_size:]
    return (images[kept], labels[kept]), (images[held_out], labels[held_out])


def _random_affine_transforms(batch_size, seed):
    """Projective transforms (8 numbers each) mapping output to input pixels."""
    seeds = tf.random.experimental.stateless_split(seed, 5)

    def uniform(index, limit):
        return tf.random.stateless_uniform([batch_size], seeds[index], minval=-limit, maxval=limit)

    angle = uniform(0, math.radians(MAX_ROTATION_DEGREES))
    scale = 1.0 + uniform(1, MAX_SCALE_CHANGE)
    shear = uniform(2, MAX_SHEAR)
    shift_x = uniform(3, MAX_SHIFT_PIXELS)
    shift_y = uniform(4, MAX_SHIFT_PIXELS)
    cos, sin = tf.cos(angle), tf.sin(angle)
    # Forward map A = rotation . shear . scale about the image centre; the
    # transform op wants the inverse map, from output to input coordinates.
    a00, a01 = scale * cos, scale * (cos * shear - sin)
    a10, a11 = scale * sin, scale * (sin * shear + cos)
    determinant = a00 * a11 - a01 * a10
    i00, i01 = a11 / determinant, -a01 / determinant
    i10, i11 = -a10 / determinant, a00 / determinant
    centre = (config.IMAGE_SIZE - 1) / 2.0
    out_x, out_y = centre + shift_x, centre + shift_y
    offset_x = centre - (i00 * out_x + i01 * out_y)
    offset_y = centre - (i10 * out_x + i11 * out_y)
    zeros = tf.zeros_like(angle)
    return tf.stack([i00, i01, offset_x, i10, i11, offset_y, zeros, zeros], axis=1)


def augment(images: tf.Tensor, seed: int) -> tf.Tensor:
    """Applies one random affine distortion per image.

    Args:
        images: float32 tensor (N, 28, 28, 1).
        seed: int tensor of shape (2,), the stateless random seed.
    """
    transforms = _random_affine_transforms(tf.shape(images)[0], seed)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=transforms,
        output_shape=tf.shape(images)[1:3],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
    )


def make_training_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    seed: int,
    shards: int = 1,
    shard_index: int = 0,
) -> tf.data.Dataset:
    """Shuffled, batched, distorted training data as a `tf.data.Dataset`.

    With `shards` > 1 (one per worker), this is worker `shard_index`'s share:
    every worker shuffles alike (same seed) and keeps its own `len(images) //
    shards` images of each epoch, so that the workers see disjoint images and
    take the same number of steps; each distorts its images with its own seeds.
    """
    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    dataset = dataset.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    # One stateless seed per batch, new at every epoch: reproducible and safe
    # to compute in parallel.
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    if shards > 1:
        share = len(images) // shards
        dataset = dataset.take(share * shards).shard(shards, shard_index)
        seeds = seeds.shard(shards, shard_index)
    batch_seeds = seeds.batch(2)
    dataset = tf.data.Dataset.zip((dataset.batch(batch_size), batch_seeds)).map(
        lambda batch, batch_seed: (augment(batch[0], batch_seed), batch[1]),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    return dataset.prefetch(tf.data.AUTOTUNE)


def compile_for_training(model: keras.Model, steps: int) -> None:
    """Compiles `model` with the recipe's optimizer, schedule and loss."""
    warmup_steps = max(1, int(steps * WARMUP_FRACTION))
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=PEAK_LEARNING_RATE / 10,
        decay_steps=max(1, steps - warmup_steps),
        alpha=0.0,
        warmup_target=PEAK_LEARNING_RATE,
        warmup_steps=warmup_steps,
    )
    model.compile(
        optimizer=keras.optimizers.AdamW(learning_rate=schedule, weight_decay=WEIGHT_DECAY),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=LABEL_SMOOTHING),
        metrics=["accuracy"],
    )


def one_hot(labels: np.ndarray) -> np.ndarray:
    """Labels 0-9 as float32 one-hot rows (the loss smooths them)."""
    return keras.utils.to_categorical(labels, config.NUM_CLASSES).astype("float32")


def evaluate(
    model: keras.Model, images: np.ndarray, labels: np.ndarray, batch_size: int = 500
) -> dict:
    """Classifies `images` with `model`; see `evaluate_predictions`."""
    probabilities = model.predict(images, batch_size=batch_size, verbose=0)
    return evaluate_predictions(probabilities, labels)


def evaluate_predictions(probabilities: np.ndarray, labels: np.ndarray) -> dict:
    """Counts what went wrong, per class, given the predicted probabilities.

    Returns:
        `(metrics, predicted)`: a dict with `images`, `accuracy`,
        `misclassified`, `per_class` (digit -> images, misclassified), and the
        predicted digit of every image.
    """
    predicted = probabilities.argmax(axis=1)
    wrong = predicted != labels
    per_class = {
        str(digit): {
            "images": int((labels == digit).sum()),
            "misclassified": int((wrong & (labels == digit)).sum()),
        }
        for digit in range(config.NUM_CLASSES)
    }
    metrics = {
        "images": len(labels),
        "accuracy": float(1.0 - wrong.mean()),
        "misclassified": int(wrong.sum()),
        "per_class": per_class,
    }
    return metrics, predicted


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Counts (true class, predicted class) pairs in a 10x10 int array."""
    matrix = np.zeros((config.NUM_CLASSES, config.NUM_CLASSES), dtype=np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    return matrix


class Stopwatch:
    """Measures the wall time of a block: `with Stopwatch() as watch: ...`."""

    def __enter__(self) -> "Stopwatch":
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.seconds = time.perf_counter() - self.start


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Writes a file through `write(temporary_path)`, then renames it to `path`.

    The temporary file sits in the same folder, so the rename is atomic: a run
    that fails or is interrupted leaves any previous file at `path` untouched.
    Temporary files that killed writes of `path` left are removed first (see
    `leftovers`), with a line on stderr for each.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    leftovers.clean_temporary_files(path)
    handle, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=leftovers.temporary_file_prefix(path), suffix=path.suffix
    )
    os.close(handle)
    try:
        write(temporary)
        # mkstemp makes the file private (0600); give it the usual permissions.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def save_model(model: keras.Model, path: str | Path) -> None:
    """Saves `model` for inference as HDF5, atomically (see `atomic_write`).

    The optimizer state is left out: it would triple the file, and the file
    is exported for serving, not trained further.
    """
    # Keras 3 logs that HDF5 is a legacy format at every save; the format is
    # the original design's choice, so the warning only adds noise here.
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)
    try:
        atomic_write(path, lambda temporary: model.save(temporary, include_optimizer=False))
    finally:
        absl_logger.setLevel(level)


def format_duration(seconds: float) -> str:
    """A duration as people say it: `40 s`, `12 min`, `1 h 05 min`."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


class RunTimeEstimate(keras.callbacks.Callback):
    """Prints once, early in training, an estimate of the whole run's training time.

    The Keras progress bar estimates one epoch; this adds the whole run, from
    the time per step measured on the first steps after the first `skip`
    (which include building the graph), over `measured` steps or half the
    run if that is shorter. The estimate covers the training steps; each
    epoch's validation and the evaluation after training come on top.
    """

    def __init__(self, total_steps: int, skip: int = 2, measured: int = 10) -> None:
        super().__init__()
        self.total_steps = total_steps
        self.skip = skip
        self.measured = max(1, min(measured, (total_steps - skip) // 2))
        self.steps = 0

    def on_train_begin(self, logs=None):
        self.steps = 0
        self.train_start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        if self.steps == self.skip:
            self.window_start = time.perf_counter()
        elif self.steps == self.skip + self.measured:
            now = time.perf_counter()
            per_step = (now - self.window_start) / self.measured
            estimate = now - self.train_start + per_step * (self.total_steps - self.steps)
            # On a terminal, the line must not land in the middle of the progress bar.
            start = "\n" if sys.stdout.isatty() else ""
            print(
                f"{start}Estimated training time: {format_duration(estimate)} for "
                f"{self.total_steps} steps at {per_step:.2f} s/step (measured on steps "
                f"{self.skip + 1}-{self.steps}; validation and evaluation come on top)",
                flush=True,
            )
