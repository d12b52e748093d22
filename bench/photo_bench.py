"""Accuracy on photo-like digits: are they classified as well as MNIST digits?

Draws the first N MNIST test digits as a phone would see them on paper (the
drawing code of `code/make_test_images.py`, with random sizes, placement,
rotation, pen width, paper and ink colours, uneven light, blur, noise, and
JPEG compression for half of them), then classifies each with the exported
model in this process after:

- `preprocessing.to_mnist`, the project's recipe;
- the naive recipe of many public examples: grey, resize to 28x28, invert.

It prints the accuracy of both beside the accuracy on the same digits as
they are in MNIST. The model is the project's highest export.

Typical usage:
    python bench/photo_bench.py
    python bench/photo_bench.py --images 500 --seed 3
"""

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

PROJECT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_DIR / "code"))

from make_test_images import draw_photo  # noqa: E402 - found through the path above.

from mnist_serving import cli, config, data, preprocessing, savedmodel  # noqa: E402


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=cli.HelpFormatter
    )
    parser.add_argument("--images", type=int, default=2000, help="MNIST test digits to draw")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random drawings")
    parser.add_argument(
        "--model-base", type=Path, default=config.DEFAULT_EXPORT_BASE, help="the model's base path"
    )
    return parser.parse_args(argv)


def random_spec(rng):
    """A random sheet of paper, pen and light for `draw_photo`."""
    width, height = (int(value) for value in rng.integers(240, 801, size=2))
    paper = rng.uniform(175, 250, size=3)
    ink = rng.uniform(15, 110, size=3)
    if rng.random() < 0.3:  # A blue ballpoint: much more blue than red (BGR).
        ink = np.array([rng.uniform(110, 170), rng.uniform(40, 90), rng.uniform(10, 40)])
    return {
        "size": (width, height),
        "digit_height": int(rng.uniform(0.35, 0.8) * min(width, height)),
        "centre": tuple(rng.uniform(0.38, 0.62, size=2)),
        "angle": rng.uniform(-10, 10),
        "stroke": rng.uniform(0.5, 2.0),
        "paper": tuple(paper),
        "ink": tuple(ink),
        "light": (rng.uniform(0.5, 1.0), 1.0),
        "blur": rng.uniform(0.0, 1.5),
        "noise": rng.uniform(0.0, 6.0),
        "grey": bool(rng.random() < 0.2),
    }


def as_jpeg(image, quality=85):
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return preprocessing.decode_image(encoded.tobytes()) if ok else image


def naive(image):
    """Grey, squeezed to 28x28, inverted: what many public examples do."""
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return 255 - cv2.resize(
        grey, (config.IMAGE_SIZE, config.IMAGE_SIZE), interpolation=cv2.INTER_AREA
    )


def main(argv=None):
    arguments = parse_arguments(argv)
    import tensorflow as tf

    versions = savedmodel.version_numbers(arguments.model_base)
    if not versions:
        sys.exit(
            f"photo_bench.py: error: no export in {arguments.model_base}: run make train export"
        )
    signature = tf.saved_model.load(str(arguments.model_base / str(versions[-1]))).signatures[
        config.DEFAULT_SIGNATURE
    ]

    def classify(images):
        outputs = signature(**{config.INPUT_NAME: tf.constant(data.to_model_input(images))})
        return outputs[config.PROBABILITIES_OUTPUT].numpy().argmax(axis=1)

    (_, _), (test_images, test_labels) = data.load_mnist()
    digits, labels = test_images[: arguments.images], test_labels[: arguments.images]
    rng = np.random.default_rng(arguments.seed)
    ours, squeezed, blank = [], [], 0
    drawing_seconds = preprocessing_seconds = 0.0
    for digit in digits:
        start = time.perf_counter()
        photo = draw_photo(digit, random_spec(rng), rng)
        if rng.random() < 0.5:
            photo = as_jpeg(photo)
        drawing_seconds += time.perf_counter() - start
        start = time.perf_counter()
        try:
            ours.append(preprocessing.to_mnist(photo))
        except preprocessing.PreprocessingError:
            ours.append(np.zeros((config.IMAGE_SIZE, config.IMAGE_SIZE), np.uint8))
            blank += 1  # Counted as wrong: the recipe found no digit.
        preprocessing_seconds += time.perf_counter() - start
        squeezed.append(naive(photo))

    rows = [
        ("MNIST digits as they are", classify(digits)),
        ("photo-like, project's preprocessing", classify(np.stack(ours))),
        ("photo-like, naive resize + invert", classify(np.stack(squeezed))),
    ]
    print(
        f"{len(digits)} MNIST test digits, model version {versions[-1]}; "
        f"drawing {drawing_seconds / len(digits) * 1e3:.1f} ms, "
        f"preprocessing {preprocessing_seconds / len(digits) * 1e3:.1f} ms per photo"
    )
    for name, predicted in rows:
        print(f"{name:<40}{np.mean(predicted == labels):>8.2%}")
    if blank:
        print(f"({blank} photos were reported blank by the preprocessing and counted wrong)")


if __name__ == "__main__":
    main()
