"""Writes test_images/ and figures/preprocessing.png from real MNIST digits.

`image_2.png` and `image_7.png` are MNIST test digits as they are. The other
images are MNIST test digits of known class drawn as a phone would see them
on paper: enlarged, dark ink on light paper, rotated a little, off-centre,
under uneven light, blurred and noisy, in several formats. Everything is
seeded, so the same command writes the same files.

Typical usage example:

    python code/make_test_images.py --images-dir test_images --figure figures/preprocessing.png
"""

import argparse
import math
from pathlib import Path

import cv2
import numpy as np

from mnist_serving import config, data, figures, preprocessing

# The MNIST test digits used, by index into x_test (true class in the name).
MNIST_EXAMPLES = {"image_2.png": 1, "image_7.png": 0}

# One entry per photo-like image: file name, MNIST test index, and how it
# is drawn. Sizes are (width, height) in pixels; `digit_height` is the
# height of the enlarged 28x28 MNIST image; colours are BGR; `centre` is
# where the digit goes, as fractions of the width and height; `stroke` is
# the pen's width relative to the MNIST digit's (1 = unchanged, down to
# THINNEST_STROKE); `light` is the darkest and brightest light across the
# page, `blur` and `noise` are standard deviations (pixels, grey levels).
PHOTOS = [
    {
        "name": "photo_3.jpg",
        "index": 30,
        "size": (640, 480),
        "digit_height": 260,
        "centre": (0.42, 0.55),
        "angle": -8.0,
        "stroke": 1.0,
        "paper": (205, 215, 222),
        "ink": (60, 55, 55),
        "light": (0.72, 1.05),
        "blur": 1.2,
        "noise": 5.0,
    },
    {
        "name": "paper_5.png",
        "index": 15,
        "size": (300, 360),
        "digit_height": 190,
        "centre": (0.55, 0.45),
        "angle": 6.0,
        "stroke": 0.8,
        "paper": (236, 236, 236),
        "ink": (100, 100, 100),
        "light": (0.92, 1.0),
        "blur": 0.8,
        "noise": 0.0,
        "grey": True,
    },
    {
        "name": "blue_pen_4.png",
        "index": 4,
        "size": (240, 320),
        "digit_height": 230,
        "centre": (0.5, 0.52),
        "angle": 3.0,
        "stroke": 0.3,
        "paper": (222, 240, 246),
        "ink": (150, 70, 30),
        "light": (0.9, 1.0),
        "blur": 0.7,
        "noise": 0.0,
    },
    {
        "name": "shadow_8.jpg",
        "index": 61,
        "size": (480, 480),
        "digit_height": 230,
        "centre": (0.5, 0.5),
        "angle": -4.0,
        "stroke": 1.3,
        "paper": (200, 205, 205),
        "ink": (35, 35, 40),
        "light": (0.4, 1.0),
        "blur": 1.5,
        "noise": 4.0,
    },
]

# A drawing app's export: black ink in the alpha channel, transparent paper.
TRANSPARENT = {"name": "transparent_9.png", "index": 9, "size": 280, "digit_height": 200}

# A flatbed scan stored with 16 bits per pixel.
SCAN_16_BIT = {"name": "scan16_6.png", "index": 11, "size": 200, "digit_height": 150}

# The example shown step by step in figures/preprocessing.png: a small digit
# written with a thin pen, in a large photo (drawn in memory, not a file of
# test_images/).
FIGURE_PHOTO = {
    "name": "a 7 in a 3000x2250 photo",
    "index": 26,
    "size": (3000, 2250),
    "digit_height": 250,
    "centre": (0.56, 0.4),
    "angle": 5.0,
    "stroke": 0.3,
    "paper": (214, 226, 232),
    "ink": (140, 60, 25),
    "light": (0.75, 1.0),
    "blur": 1.0,
    "noise": 3.0,
}

JPEG_QUALITY = 85

# Where the pen's edge is drawn on the enlarged digit (0..1): for a pen like
# MNIST's, and for the thinnest pen; and how soft the edge is.
EDGE_LEVEL = 0.35
RIDGE_LEVEL = 0.8
THINNEST_STROKE = 0.3
EDGE_SOFTNESS = 0.15


def ink_coverage(digit, height, stroke, angle):
    """How much ink covers each pixel (0..1) of an enlarged MNIST digit.

    The digit is enlarged smoothly, its edge made crisp as a pen's, its
    strokes thinned or thickened by `stroke`, and it is turned by `angle`
    degrees. The result is square, with room for the rotation.
    """
    scale = height / config.IMAGE_SIZE
    enlarged = cv2.resize(digit, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    enlarged = enlarged.astype(np.float32) / 255.0
    if stroke > 1.0:
        # MNIST strokes are about 2.5 of 28 pixels wide: a wider pen moves
        # each edge out by half the extra width.
        radius = round((stroke - 1.0) * 1.25 * scale)
        disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1,) * 2)
        enlarged = cv2.dilate(enlarged, disc)
    # A thinner pen keeps only the ridge of the strokes: the edge is drawn
    # at a higher intensity (eroding would cut the faint joins instead).
    thinning = max(0.0, 1.0 - stroke) / (1.0 - THINNEST_STROKE)
    edge = EDGE_LEVEL + (RIDGE_LEVEL - EDGE_LEVEL) * thinning
    return turned(np.clip((enlarged - edge) / EDGE_SOFTNESS, 0.0, 1.0), angle)


def turned(coverage, angle):
    """A coverage map turned by `angle` degrees about its centre, in a square
    with room for the turn."""
    side = max(coverage.shape)
    vertical, horizontal = side - coverage.shape[0], side - coverage.shape[1]
    padded = cv2.copyMakeBorder(
        coverage,
        side // 4 + vertical // 2,
        side // 4 + vertical - vertical // 2,
        side // 4 + horizontal // 2,
        side // 4 + horizontal - horizontal // 2,
        cv2.BORDER_CONSTANT,
        value=0,
    )
    centre = (padded.shape[1] / 2, padded.shape[0] / 2)
    rotation = cv2.getRotationMatrix2D(centre, angle, 1.0)
    return cv2.warpAffine(padded, rotation, padded.shape[::-1], flags=cv2.INTER_LINEAR)


def place(coverage, size, centre):
    """Puts a coverage map into an empty page of `size` at `centre` (fractions)."""
    width, height = size
    page = np.zeros((height, width), dtype=np.float32)
    left = round(centre[0] * width - coverage.shape[1] / 2)
    top = round(centre[1] * height - coverage.shape[0] / 2)
    # The part of the coverage map that falls inside the page.
    source_left, source_top = max(0, -left), max(0, -top)
    left, top = max(0, left), max(0, top)
    right = min(width, left + coverage.shape[1] - source_left)
    bottom = min(height, top + coverage.shape[0] - source_top)
    page[top:bottom, left:right] = coverage[
        source_top : source_top + bottom - top, source_left : source_left + right - left
    ]
    return page


def lighting(size, darkest, brightest, rng):
    """A smooth light falloff across the page, from `darkest` to `brightest`."""
    width, height = size
    angle = rng.uniform(0, 2 * np.pi)
    columns, rows = np.meshgrid(np.linspace(-1, 1, width), np.linspace(-1, 1, height))
    ramp = columns * np.cos(angle) + rows * np.sin(angle)
    ramp = (ramp - ramp.min()) / (ramp.max() - ramp.min())
    return (darkest + (brightest - darkest) * ramp).astype(np.float32)


def paper_texture(size, rng, strength=0.02):
    """Fibres and unevenness of paper: smoothed noise around 1."""
    width, height = size
    texture = rng.normal(0.0, 1.0, (height, width)).astype(np.float32)
    texture = cv2.GaussianBlur(texture, (0, 0), 3.0)
    return 1.0 + strength * texture / texture.std()


def draw_photo(digit, spec, rng):
    """A BGR (or grey) uint8 photo of the MNIST `digit` as `spec` describes."""
    return photograph(spec_coverage(digit, spec), spec, rng)


def spec_coverage(digit, spec):
    """The ink of the MNIST `digit` on the page that `spec` describes (its
    `digit_height`, `stroke` and `angle`), before the camera."""
    return ink_coverage(digit, spec["digit_height"], spec["stroke"], spec["angle"])


def photograph(coverage, spec, rng):
    """A BGR (or grey) uint8 photo of ink whose `coverage` map (0..1) `spec` describes.

    Besides the keys of PHOTOS (`digit_height` and `stroke` aside), `spec` may
    have `shadow` (the light in a shadow with a soft edge across the page),
    `motion` (the length in pixels of a straight camera shake), `texture`
    (the paper's or board's unevenness, 0.02 by default) and `grain` (the
    share of a chalk stroke's pixels that the chalk misses).
    """
    ink = place(coverage, spec["size"], spec["centre"])
    if spec.get("grain"):
        ink *= chalk_grain(spec["size"], spec["grain"], rng)
    ink = ink[..., np.newaxis]
    light = lighting(spec["size"], *spec["light"], rng)
    if spec.get("shadow"):
        light *= shadow(spec["size"], spec["shadow"], rng)
    paper = (
        np.array(spec["paper"], dtype=np.float32)
        * paper_texture(spec["size"], rng, spec.get("texture", 0.02))[..., np.newaxis]
    )
    pen = np.array(spec["ink"], dtype=np.float32)
    photo = (paper * (1.0 - ink) + pen * ink) * light[..., np.newaxis]
    if spec["blur"]:
        photo = cv2.GaussianBlur(photo, (0, 0), spec["blur"])
    if spec.get("motion"):
        photo = cv2.filter2D(photo, -1, motion_kernel(spec["motion"], rng.uniform(0, 180)))
    if spec["noise"]:
        photo = photo + rng.normal(0.0, spec["noise"], photo.shape).astype(np.float32)
    photo = np.clip(np.rint(photo), 0, 255).astype(np.uint8)
    if spec.get("grey"):
        photo = cv2.cvtColor(photo, cv2.COLOR_BGR2GRAY)
    return photo


def shadow(size, depth, rng):
    """Light falling to `depth` (0..1) beyond a soft-edged line across the page,
    as under a hand or a phone held over the paper."""
    width, height = size
    angle = rng.uniform(0, 2 * np.pi)
    columns, rows = np.meshgrid(
        np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32)
    )
    # The edge passes through a random point of the middle of the page.
    across = (columns - rng.uniform(0.3, 0.7) * width) * np.cos(angle) + (
        rows - rng.uniform(0.3, 0.7) * height
    ) * np.sin(angle)
    softness = rng.uniform(0.01, 0.1) * max(width, height)
    inside = 1.0 / (1.0 + np.exp(np.clip(across / softness, -50, 50)))
    return (1.0 - (1.0 - depth) * inside).astype(np.float32)


def motion_kernel(length, angle):
    """A normalised line of `length` pixels at `angle` degrees: a straight camera shake."""
    side = 2 * math.ceil(length / 2) + 1
    kernel = np.zeros((side, side), dtype=np.float32)
    centre = side // 2
    dx, dy = length / 2 * math.cos(math.radians(angle)), length / 2 * math.sin(math.radians(angle))
    # Drawn with sub-pixel precision (4 fractional bits), anti-aliased.
    shift = 16
    start = (round((centre - dx) * shift), round((centre - dy) * shift))
    end = (round((centre + dx) * shift), round((centre + dy) * shift))
    cv2.line(kernel, start, end, 1.0, 1, cv2.LINE_AA, shift=4)
    return kernel / kernel.sum()


def chalk_grain(size, missed, rng):
    """Where chalk leaves its mark (0..1): a stroke misses about `missed` of the
    board in small grains, where the board's surface is low."""
    width, height = size
    surface = cv2.GaussianBlur(
        rng.normal(0.0, 1.0, (height, width)).astype(np.float32), (0, 0), 1.2
    )
    level = np.quantile(surface[::7, ::7], missed)
    return np.clip((surface - level) / (0.5 * surface.std()) + 0.5, 0.0, 1.0)


def draw_transparent(digit, spec):
    """BGRA drawing: black ink whose coverage is the alpha channel."""
    coverage = ink_coverage(digit, spec["digit_height"], stroke=1.3, angle=0.0)
    alpha = place(coverage, (spec["size"], spec["size"]), (0.5, 0.47))
    drawing = np.zeros((spec["size"], spec["size"], 4), dtype=np.uint8)
    drawing[..., 3] = np.rint(alpha * 255).astype(np.uint8)
    return drawing


def draw_scan(digit, spec, rng):
    """16-bit grey scan: dark ink on white, faint scanner noise."""
    coverage = ink_coverage(digit, spec["digit_height"], stroke=1.0, angle=2.0)
    ink = place(coverage, (spec["size"], spec["size"]), (0.48, 0.5))
    paper, pen = 60000.0, 9000.0
    scan = paper * (1.0 - ink) + pen * ink
    scan = cv2.GaussianBlur(scan, (0, 0), 0.8) + rng.normal(0.0, 150.0, scan.shape)
    return np.clip(np.rint(scan), 0, 65535).astype(np.uint16)


def write_image(path, image):
    """Writes an image with OpenCV, in the format of the file's extension."""
    parameters = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if path.suffix == ".jpg" else []
    ok, encoded = cv2.imencode(path.suffix, image, parameters)
    if not ok:
        raise OSError(f"OpenCV could not encode {path.name}")
    path.write_bytes(encoded.tobytes())
    return path


def make_test_images(images_dir, mnist_path, seed):
    """Writes the MNIST examples and the photo-like images; returns their paths."""
    (_, _), (test_images, test_labels) = data.load_mnist(mnist_path)
    images_dir = Path(images_dir)
    images_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    written = []
    for name, index in MNIST_EXAMPLES.items():
        written.append(write_image(images_dir / name, test_images[index]))
    for spec in PHOTOS:
        photo = draw_photo(test_images[spec["index"]], spec, rng)
        written.append(write_image(images_dir / spec["name"], photo))
    drawing = draw_transparent(test_images[TRANSPARENT["index"]], TRANSPARENT)
    written.append(write_image(images_dir / TRANSPARENT["name"], drawing))
    scan = draw_scan(test_images[SCAN_16_BIT["index"]], SCAN_16_BIT, rng)
    written.append(write_image(images_dir / SCAN_16_BIT["name"], scan))
    # Each file's name ends with its true class: check it against MNIST.
    for name, index in source_indexes().items():
        if int(Path(name).stem[-1]) != int(test_labels[index]):
            raise ValueError(f"{name}: MNIST test digit {index} is a {test_labels[index]}")
    return written


def draw_figure(path, mnist_path, seed):
    """figures/preprocessing.png: FIGURE_PHOTO, as a phone stores it (JPEG), step by step."""
    (_, _), (test_images, _) = data.load_mnist(mnist_path)
    photo = draw_photo(
        test_images[FIGURE_PHOTO["index"]], FIGURE_PHOTO, np.random.default_rng(seed)
    )
    encoded = cv2.imencode(".jpg", photo, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])[1]
    example = preprocessing.decode_image(encoded.tobytes())
    return figures.plot_preprocessing_steps(
        example, path, title=f"A thin, small digit: {FIGURE_PHOTO['name']}, to MNIST form"
    )


def source_indexes():
    """{file name: index of its MNIST test digit} for every image written."""
    indexes = dict(MNIST_EXAMPLES)
    indexes.update({spec["name"]: spec["index"] for spec in PHOTOS})
    indexes[TRANSPARENT["name"]] = TRANSPARENT["index"]
    indexes[SCAN_16_BIT["name"]] = SCAN_16_BIT["index"]
    return indexes


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--images-dir",
        type=Path,
        default=config.TEST_IMAGES_DIR,
        help=f"folder for the images (default: {config.TEST_IMAGES_DIR})",
    )
    parser.add_argument(
        "--figure",
        type=Path,
        default=config.FIGURES_DIR / "preprocessing.png",
        help="figure of the preprocessing steps on "
        f"{FIGURE_PHOTO['name']} (default: {config.FIGURES_DIR / 'preprocessing.png'})",
    )
    parser.add_argument(
        "--mnist",
        type=Path,
        default=config.DEFAULT_DATA_PATH,
        help=f"MNIST .npz file (default: {config.DEFAULT_DATA_PATH})",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of paper, light and noise (default: 0)"
    )
    arguments = parser.parse_args()
    for path in make_test_images(arguments.images_dir, arguments.mnist, arguments.seed):
        print(f"{path}  {path.stat().st_size / 1024:.0f} KB")
    figure = draw_figure(arguments.figure, arguments.mnist, arguments.seed)
    print(f"{figure}  {figure.stat().st_size / 1024:.0f} KB")


if __name__ == "__main__":
    main()
