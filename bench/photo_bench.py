"""Accuracy on photo-like digits: are they classified as well as MNIST digits?

Draws MNIST test digits as a phone would see them, in named groups that each
push one difficulty across its range (`photo_groups.py` draws them), and
classifies every photo with the model in this process after:

- `preprocessing.to_mnist`, the project's recipe;
- the naive recipe of many public examples: grey, resize to 28x28, invert.

Each group draws its own N MNIST test digits (group k takes digits k*N to
(k+1)*N - 1; with N = 1250 the eight MNIST groups cover the test set once)
and is printed beside the accuracy on the same digits as they are in MNIST,
with the stroke width (`preprocessing.stroke_width`) of the 28x28 results
beside MNIST's. Between the two, the `drawn` column classifies each photo's
ink as it lies on the page, before the camera (the same pen, size and turn;
no paper, light, blur, noise or JPEG), after the same recipe: what the
drawing changes (a page turned by up to 10 degrees, another pen) and what
the camera does are told apart. The `fonts` group has no MNIST counterpart: its digits are typed in
the handwriting fonts of bench/handwriting_fonts.txt, which `make fonts`
installs; missing fonts are reported and make the exit status 1.

Everything is seeded: the same command draws the same photos. The `mixed`
group is this bench's original set (its first N photos). The last line
times the recipe on 1-megapixel JPEG photos against decoding them.

Typical usage:
    python bench/photo_bench.py --model code/cnnModel.h5
    python bench/photo_bench.py --images 1250 --model code/cnnModel.h5
    python bench/photo_bench.py --images 50 --groups size pen fonts
"""

import argparse
import math
import sys
import time
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

PROJECT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_DIR / "code"))
sys.path.insert(0, str(PROJECT_DIR / "bench"))

# Found through the paths above.
from make_test_images import draw_photo  # noqa: E402
from photo_groups import (  # noqa: E402
    FONT_LIST,
    FRAME,
    GROUPS,
    group_rng,
    group_sources,
    paper_and_pen,
    read_font_list,
)
from recipe_timing import best_times  # noqa: E402

from mnist_serving import cli, config, data, preprocessing, savedmodel  # noqa: E402

ONE_MEGAPIXEL = (1155, 866)


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=cli.HelpFormatter
    )
    parser.add_argument("--images", type=int, default=300, help="photos per group")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random drawings")
    parser.add_argument(
        "--groups",
        nargs="+",
        choices=list(GROUPS),
        default=list(GROUPS),
        metavar="GROUP",
        help=f"groups to draw, of: {' '.join(GROUPS)} (default: all)",
    )
    parser.add_argument(
        "--timed-photos",
        type=int,
        default=30,
        help="1-megapixel photos to time the recipe on (0: no timing)",
    )
    parser.add_argument(
        "--fonts",
        type=Path,
        default=FONT_LIST,
        help="the fonts group's list: Debian package and font file per line",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--model", type=Path, help="a Keras model file (cnnModel.h5) instead of an export"
    )
    source.add_argument(
        "--model-base",
        type=Path,
        default=config.DEFAULT_EXPORT_BASE,
        help="an export's base path: its highest version is used",
    )
    arguments = parser.parse_args(argv)
    if arguments.images < 1:
        parser.error(f"--images must be a positive integer, got {arguments.images}")
    if arguments.timed_photos < 0:
        parser.error(f"--timed-photos must be 0 or more, got {arguments.timed_photos}")
    return arguments


# Classification and the table.


def naive(image):
    """Grey, squeezed to 28x28, inverted: what many public examples do."""
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return 255 - cv2.resize(
        grey, (config.IMAGE_SIZE, config.IMAGE_SIZE), interpolation=cv2.INTER_AREA
    )


def load_classifier(arguments):
    """(name of the model, function from MNIST-form images to classes)."""
    import tensorflow as tf

    if arguments.model is not None:
        import keras

        if not arguments.model.is_file():
            sys.exit(f"photo_bench.py: error: no model file {arguments.model}")
        model = keras.models.load_model(arguments.model, compile=False)

        def classify(images):
            probabilities = model.predict(data.to_model_input(images), batch_size=256, verbose=0)
            return probabilities.argmax(axis=1)

        return str(arguments.model), classify
    versions = savedmodel.version_numbers(arguments.model_base)
    if not versions:
        sys.exit(
            f"photo_bench.py: error: no export in {arguments.model_base}: run make train export"
        )
    version = arguments.model_base / str(versions[-1])
    signature = tf.saved_model.load(str(version)).signatures[config.DEFAULT_SIGNATURE]

    def classify(images):
        predicted = []
        for start in range(0, len(images), 256):
            batch = data.to_model_input(images[start : start + 256])
            outputs = signature(**{config.INPUT_NAME: tf.constant(batch)})
            predicted.append(outputs[config.PROBABILITIES_OUTPUT].numpy().argmax(axis=1))
        return np.concatenate(predicted)

    return str(version), classify


class GroupInputs(NamedTuple):
    """A group's photos in MNIST form three ways, and the recipe's cost."""

    ours: np.ndarray  # After the recipe; black where it found no digit.
    naive: np.ndarray  # After the naive recipe.
    drawn: np.ndarray  # The same ink before the camera, after the recipe.
    blank: np.ndarray  # Whether the recipe found each photo blank.
    seconds: float  # The recipe's time on the photos.


def group_inputs(group, sources, rng):
    """Draws each photo of a group and turns it into the model's inputs at once,
    so that only one photo is held at a time (a 5-megapixel photo takes 15 MB)."""
    ours, naive_inputs, drawn, blank, seconds = [], [], [], [], 0.0
    for source in sources:
        drawing = group.draw(source, rng)
        start = time.perf_counter()
        try:
            ours.append(preprocessing.to_mnist(drawing.photo))
            blank.append(False)
        except preprocessing.PreprocessingError:
            ours.append(np.zeros((config.IMAGE_SIZE, config.IMAGE_SIZE), np.uint8))
            blank.append(True)
        seconds += time.perf_counter() - start
        naive_inputs.append(naive(drawing.photo))
        drawn.append(drawing.drawn)
    return GroupInputs(
        np.stack(ours), np.stack(naive_inputs), np.stack(drawn), np.array(blank), seconds
    )


def read_right(predicted: np.ndarray, labels: np.ndarray, blank: np.ndarray) -> np.ndarray:
    """Whether each photo was read right: its predicted class is its label
    and the recipe found a digit. A photo found blank is wrong whatever the
    model makes of the black input that stands in for it (the client reports
    it as an error, not as a digit)."""
    return (predicted == labels) & ~blank


def paired_margin(right: np.ndarray, mnist_right: np.ndarray) -> float:
    """Half the 95% interval of the accuracy difference `right - mnist_right`,
    in points, for the same digits classified two ways.

    The photo and the MNIST digit of each pair are read by the same model, so
    the difference is measured on the pairs (the normal approximation of
    McNemar's setting): only the digits read right one way and wrong the other
    add to it. A group's difference is a target met only where it is beyond
    this margin.
    """
    changes = right.astype(np.int8) - mnist_right.astype(np.int8)
    if len(changes) < 2:
        return float("nan")
    return 100 * 1.96 * float(changes.std(ddof=1)) / math.sqrt(len(changes))


def width_quartiles(images):
    """Quartiles of `preprocessing.stroke_width` over MNIST-form images."""
    widths = [preprocessing.stroke_width(image) for image in images]
    return "{:.2f} {:.2f} {:.2f}".format(*np.percentile(widths, [25, 50, 75]))


def one_megapixel_jpegs(digits, seed):
    """JPEG bytes (quality 85) of a 1-megapixel photo of each digit: 1155x866,
    colour, the digit in the middle, 10% to 70% of the height."""
    rng = np.random.default_rng([seed, 1])
    encoded = []
    for digit in digits:
        spec = paper_and_pen(rng) | {
            "size": ONE_MEGAPIXEL,
            "centre": (0.5, 0.5),
            "digit_height": round(rng.uniform(0.1, 0.7) * ONE_MEGAPIXEL[1] * FRAME),
            "stroke": rng.uniform(0.7, 1.3),
            "grey": False,
        }
        photo = draw_photo(digit, spec, rng)
        encoded.append(cv2.imencode(".jpg", photo, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes())
    return encoded


def time_one_megapixel(digits, seed):
    """Milliseconds per 1-megapixel JPEG photo of each digit: decoding it, and the recipe."""
    decoding, recipe = best_times(
        one_megapixel_jpegs(digits, seed),
        preprocessing.decode_image,
        preprocessing.to_mnist,
        rounds=3,  # The best of three: other jobs share the machine.
    )
    return decoding * 1e3, recipe * 1e3


HEADER = (
    f"{'group':<8}{'photos':>7}{'MNIST':>9}{'drawn':>9}{'photos':>9}{'diff':>7}{'margin':>7}"
    f"{'camera':>8}"
    f"{'naive':>8}{'width':>17}{'MNIST width':>17}  what"
)


def main(argv=None):
    arguments = parse_arguments(argv)
    fonts = read_font_list(arguments.fonts)
    missing = [(package, font) for package, font in fonts if not font.is_file()]
    present = [font for _, font in fonts if font.is_file()]
    fonts_missing = "fonts" in arguments.groups and bool(missing)
    if fonts_missing:
        packages = " ".join(sorted({package for package, _ in missing}))
        warning = (
            f"photo_bench.py: WARNING: {len(missing)} of the {len(fonts)} handwriting fonts "
            f"of {arguments.fonts} are missing ({packages}): install them with `make fonts` "
            "(apt-get, as root)"
        )
        print(warning, file=sys.stderr)
    model_name, classify = load_classifier(arguments)
    (_, _), (test_images, test_labels) = data.load_mnist()
    count = arguments.images
    print(
        f"{count} photos per group, seed {arguments.seed}, model {model_name}\n"
        "Accuracy on the same digits as they are in MNIST; as drawn on the page (pen, size "
        "and turn, before the camera) and\nas photos, after the project's preprocessing "
        "(diff: photos - MNIST, and its margin: half its 95% interval on these pairs;\ncamera: "
        "photos - drawn; in points); as photos after the naive recipe. Stroke width of the "
        "28x28 photos,\nquartiles in pixels (preprocessing.stroke_width).\n"
    )
    print(HEADER)
    totals = np.zeros(4, dtype=int)  # Photos, right as MNIST, as drawn, as photos.
    photos_right, mnist_digits_right = [], []  # Of each MNIST group, for the margin.
    photo_count, seconds = 0, 0.0
    for name in arguments.groups:
        group = GROUPS[name]
        if name == "fonts" and not present:
            print(f"{name:<8}NOT RUN: none of the fonts is installed (make fonts)", flush=True)
            continue
        sources, labels, originals = group_sources(name, count, test_images, test_labels, present)
        rng = group_rng(arguments.seed, name)
        inputs = group_inputs(group, sources, rng)
        photo_count, seconds = photo_count + len(sources), seconds + inputs.seconds
        right = read_right(classify(inputs.ours), labels, inputs.blank)
        drawn_right = classify(inputs.drawn) == labels
        naive_right = classify(inputs.naive) == labels
        camera = f"{100 * (right.mean() - drawn_right.mean()):+.2f}"
        mnist_cell, difference, margin, mnist_width = "-", "", "", "-"
        if originals is not None:  # The fonts group has no MNIST digits.
            mnist_right = classify(originals) == labels
            mnist_cell = f"{mnist_right.mean():.2%}"
            difference = f"{100 * (right.mean() - mnist_right.mean()):+.2f}"
            margin = f"{paired_margin(right, mnist_right):.2f}"
            mnist_width = width_quartiles(originals)
            totals += [len(labels), mnist_right.sum(), drawn_right.sum(), right.sum()]
            photos_right.append(right)
            mnist_digits_right.append(mnist_right)
        blank = int(inputs.blank.sum())
        what = group.description + (f" ({blank} found blank)" if blank else "")
        print(
            f"{name:<8}{len(sources):>7}{mnist_cell:>9}{drawn_right.mean():>9.2%}"
            f"{right.mean():>9.2%}{difference:>7}{margin:>7}{camera:>8}{naive_right.mean():>8.1%}"
            f"{width_quartiles(inputs.ours):>17}{mnist_width:>17}  {what}",
            flush=True,
        )
        if name == "fonts":
            fonts_used = np.array([font.stem for font, _ in sources])
            print(
                "  by font: "
                + ", ".join(
                    f"{stem} {right[fonts_used == stem].mean():.0%}"
                    for stem in dict.fromkeys(fonts_used)
                ),
                flush=True,
            )
    if totals[0] > count:
        mnist_accuracy, drawn_accuracy, accuracy = totals[1:] / totals[0]
        margin = paired_margin(np.concatenate(photos_right), np.concatenate(mnist_digits_right))
        print(
            f"{'MNIST groups':<15}{totals[0]:>6}{mnist_accuracy:>9.2%}{drawn_accuracy:>9.2%}"
            f"{accuracy:>9.2%}{100 * (accuracy - mnist_accuracy):>+7.2f}{margin:>7.2f}"
            f"{100 * (accuracy - drawn_accuracy):>+8.2f}"
        )
    print(f"\npreprocessing: {seconds / max(1, photo_count) * 1e3:.1f} ms per photo on average")
    if arguments.timed_photos:
        decoding, recipe = time_one_megapixel(test_images[: arguments.timed_photos], arguments.seed)
        print(
            f"preprocessing: {recipe:.1f} ms per 1-megapixel JPEG photo, "
            f"{recipe / decoding:.2f} times the {decoding:.1f} ms of decoding it"
        )
    if fonts_missing:
        print(warning, file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
