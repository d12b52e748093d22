"""The photo-like groups of `photo_bench.py`: MNIST digits and handwriting
fonts drawn as a phone would see them.

Each group pushes one difficulty across its range (size, pen, blur, motion,
JPEG, light, chalk, fonts; `mixed` is the bench's original set) and draws
one photo of one source at a time with its own seeded generator, together
with the same ink as it lies on the page before the camera (a `Drawing`).
The camera itself (paper, light, blur, noise) is `make_test_images`'s.

It is imported, not run: `photo_bench.py` (or the tests' configuration) puts
code/ on the import path first.

Typical usage:
    from photo_groups import GROUPS, group_rng
    drawing = GROUPS["pen"].draw(digit, group_rng(0, "pen"))
"""

import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
from make_test_images import photograph, spec_coverage, turned

from mnist_serving import config, preprocessing

FONT_LIST = Path(__file__).with_name("handwriting_fonts.txt")

# An MNIST digit fills 20 of its 28 rows: the enlarged 28x28 image that
# `draw_photo` places is this much taller than the digit itself.
FRAME = config.IMAGE_SIZE / config.DIGIT_BOX_SIZE

# Pens of the `pen` group, each as likely: hairline to marker, as the width of
# the line over the digit's height (the hairline is about one pixel wide).
PENS = {
    "hairline": (0.0, 0.0),
    "ballpoint": (0.015, 0.035),
    "fineliner": (0.035, 0.07),
    "felt tip": (0.07, 0.13),
    "marker": (0.13, 0.2),
}
HAIRLINE = (0.7, 1.3)  # pixels

# The skeleton of an MNIST digit is found at this size at most, then its
# distance map is enlarged to the photo's scale.
SKELETON_SIZE = 384

# Fonts are rendered at this size (pixels per em), then scaled down.
GLYPH_EM = 400


# Pages: size, digit height and placement.


def page(rng, long_sides, heights, log_height=False):
    """A 4:3 photo, either way up, and a digit on it.

    Args:
        long_sides: Range of the photo's longer side in pixels (log-uniform).
        heights: Range of the digit's height as a fraction of the photo's
            shorter side (log-uniform when `log_height`, else uniform).

    Returns:
        (size as (width, height), the digit's height in pixels, its centre
        as fractions of the width and height, where it fits whole).
    """
    long_side = round(math.exp(rng.uniform(*np.log(long_sides))))
    short_side = round(long_side * 3 / 4)
    size = (long_side, short_side) if rng.random() < 0.5 else (short_side, long_side)
    fraction = math.exp(rng.uniform(*np.log(heights))) if log_height else rng.uniform(*heights)
    height = max(8, round(fraction * short_side))
    # A digit, turned a little, spans at most 0.6 of its height each way.
    centre = tuple(
        rng.uniform(*sorted((0.6 * height / side, 1 - 0.6 * height / side))) for side in size
    )
    return size, height, centre


def paper_and_pen(rng):
    """Paper, ink and light of an ordinary photo of a note (BGR colours)."""
    ink = rng.uniform(15, 110, size=3)
    if rng.random() < 0.3:  # A blue ballpoint: much more blue than red (BGR).
        ink = np.array([rng.uniform(110, 170), rng.uniform(40, 90), rng.uniform(10, 40)])
    return {
        "paper": tuple(rng.uniform(175, 250, size=3)),
        "ink": tuple(ink),
        "light": (rng.uniform(0.7, 1.0), 1.0),
        "angle": rng.uniform(-10, 10),
        "blur": rng.uniform(0.0, 1.2),
        "noise": rng.uniform(0.0, 4.0),
        "grey": bool(rng.random() < 0.2),
    }


def mnist_photo_spec(rng, long_sides, heights, strokes=(0.7, 1.3), log_height=False):
    """A `draw_photo` spec of an ordinary photo of an MNIST digit (see `page`),
    its pen `strokes` times MNIST's width; and the digit's height in pixels."""
    size, height, centre = page(rng, long_sides, heights, log_height)
    spec = paper_and_pen(rng) | {
        "size": size,
        "centre": centre,
        "digit_height": round(height * FRAME),
        "stroke": rng.uniform(*strokes),
    }
    return spec, height


def as_jpeg(image, quality=85):
    """The image as a phone stores it: JPEG-compressed and decoded again."""
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    return preprocessing.decode_image(encoded.tobytes()) if ok else image


def maybe_jpeg(photo, rng):
    """Half of the photos as JPEG (quality 85), half as they were drawn."""
    return as_jpeg(photo) if rng.random() < 0.5 else photo


class Drawing(NamedTuple):
    """A group's photo, and the same ink as drawn on the page before the
    camera (no paper, light, blur, noise or JPEG) in MNIST form."""

    photo: np.ndarray
    drawn: np.ndarray


def photographed(coverage, spec, rng, jpeg=maybe_jpeg):
    """The `Drawing` of the ink `coverage` photographed as `spec` says; `jpeg`
    stores the photo (by default half of them as JPEG)."""
    drawn = preprocessing.to_mnist(np.rint(np.clip(coverage, 0.0, 1.0) * 255).astype(np.uint8))
    return Drawing(jpeg(photograph(coverage, spec, rng), rng), drawn)


# The groups. Each draws one photo of one digit with its own random generator.


def draw_mixed(digit, rng):
    """This bench's original set: random size, placement, pen, light and camera."""
    width, height = (int(value) for value in rng.integers(240, 801, size=2))
    paper = rng.uniform(175, 250, size=3)
    ink = rng.uniform(15, 110, size=3)
    if rng.random() < 0.3:
        ink = np.array([rng.uniform(110, 170), rng.uniform(40, 90), rng.uniform(10, 40)])
    spec = {
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
    return photographed(spec_coverage(digit, spec), spec, rng)


def draw_size(digit, rng):
    """Digit height 5% to 80% of photos of 0.3 to 5 megapixels (log-uniform)."""
    spec, _ = mnist_photo_spec(rng, (640, 2592), (0.05, 0.8), log_height=True)
    return photographed(spec_coverage(digit, spec), spec, rng)


def draw_pen(digit, rng):
    """The digit's centre line redrawn with a hairline, ballpoint, fineliner,
    felt tip or marker."""
    size, height, centre = page(rng, (800, 2400), (0.15, 0.7))
    spec = paper_and_pen(rng) | {"size": size, "centre": centre}
    narrowest, widest = PENS[list(PENS)[rng.integers(len(PENS))]]
    pen = rng.uniform(*HAIRLINE) if widest == 0 else rng.uniform(narrowest, widest) * height
    coverage = pen_coverage(digit, round(height * FRAME), pen, spec["angle"])
    return photographed(coverage, spec, rng)


def draw_blur(digit, rng):
    """Out of focus: Gaussian blur up to 3.5% of the digit's height."""
    spec, height = mnist_photo_spec(rng, (480, 1600), (0.3, 0.75))
    spec["blur"] = rng.uniform(0.005, 0.035) * height
    return photographed(spec_coverage(digit, spec), spec, rng)


def draw_motion(digit, rng):
    """Camera shake: a straight motion blur up to 10% of the digit's height."""
    spec, height = mnist_photo_spec(rng, (480, 1600), (0.3, 0.75))
    spec["motion"] = rng.uniform(0.01, 0.1) * height
    return photographed(spec_coverage(digit, spec), spec, rng)


def draw_jpeg(digit, rng):
    """JPEG at quality 30 to 95, small digits included."""
    spec, _ = mnist_photo_spec(rng, (320, 1600), (0.15, 0.75))
    return photographed(
        spec_coverage(digit, spec),
        spec,
        rng,
        jpeg=lambda photo, rng: as_jpeg(photo, quality=rng.integers(30, 96)),
    )


def draw_light(digit, rng):
    """Uneven light: a falloff to 20..70% across the page and, in 60% of the
    photos, a soft shadow at 30..70% of the light."""
    spec, _ = mnist_photo_spec(rng, (480, 1600), (0.25, 0.7))
    spec["light"] = (rng.uniform(0.2, 0.7), 1.0)
    if rng.random() < 0.6:
        spec["shadow"] = rng.uniform(0.3, 0.7)
    return photographed(spec_coverage(digit, spec), spec, rng)


def draw_chalk(digit, rng):
    """Chalk on a green or black board: light grainy strokes on a dark, smudged
    surface."""
    spec, _ = mnist_photo_spec(rng, (480, 1600), (0.25, 0.7), strokes=(1.0, 1.8))
    spec |= {
        "grain": rng.uniform(0.1, 0.4),
        "texture": rng.uniform(0.04, 0.1),
        "blur": rng.uniform(0.5, 1.5),
    }
    if rng.random() < 0.6:  # Green board.
        spec["paper"] = (rng.uniform(40, 70), rng.uniform(70, 100), rng.uniform(30, 55))
    else:
        spec["paper"] = tuple(np.full(3, rng.uniform(25, 55)))
    spec["ink"] = tuple(rng.uniform(200, 240) - rng.uniform(0, 25, size=3))
    return photographed(spec_coverage(digit, spec), spec, rng)


def draw_font(glyph, rng):
    """A digit typed in a handwriting font, printed and photographed."""
    font, digit = glyph
    size, height, centre = page(rng, (480, 1600), (0.25, 0.75))
    spec = paper_and_pen(rng) | {"size": size, "centre": centre}
    return photographed(glyph_coverage(font, digit, height, spec["angle"]), spec, rng)


@dataclass(frozen=True)
class Group:
    description: str
    draw: object  # (digit or (font, digit), rng) -> Drawing


GROUPS = {
    "mixed": Group("the original set: random size, pen, light, blur, noise", draw_mixed),
    "size": Group("digit 5% to 80% of the photo's height, 0.3 to 5 MP", draw_size),
    "pen": Group("hairline, ballpoint, fineliner, felt tip, marker", draw_pen),
    "blur": Group("out of focus: Gaussian blur to 3.5% of the digit", draw_blur),
    "motion": Group("camera shake: motion blur to 10% of the digit", draw_motion),
    "jpeg": Group("JPEG quality 30 to 95", draw_jpeg),
    "light": Group("light falling to 20%, shadows", draw_light),
    "chalk": Group("chalk on a green or black board", draw_chalk),
    "fonts": Group("handwriting fonts, printed and photographed", draw_font),
}
MNIST_GROUPS = [name for name in GROUPS if name != "fonts"]


# Ink drawn from other sources than the MNIST digit's own strokes.


def pen_coverage(digit, frame_height, pen, angle):
    """The MNIST digit's centre line drawn with a round pen `pen` pixels wide.

    The skeleton of the digit's ink (`preprocessing.ink_mask`, the ink that
    `stroke_width` measures: a lower level fills the gaps of a 4's top or a
    9's loop before the pen is chosen) is found at a moderate size; its
    distance map, enlarged to the photo's scale, gives each pixel's coverage
    by the pen (anti-aliased, and thinner than a pixel where the pen is).
    """
    from skimage.morphology import skeletonize

    work = min(frame_height, SKELETON_SIZE)
    enlarged = cv2.resize(digit, (work, work), interpolation=cv2.INTER_CUBIC)
    ink = preprocessing.ink_mask(enlarged)
    skeleton = skeletonize(ink)
    distance = cv2.distanceTransform(
        np.where(skeleton, 0, 255).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE
    )
    distance = cv2.resize(distance, (frame_height, frame_height), interpolation=cv2.INTER_LINEAR)
    distance *= frame_height / work
    coverage = np.clip(pen / 2 + 0.5 - distance, 0.0, 1.0)
    return turned(coverage, angle)


def read_font_list(path):
    """[(Debian package, font file)] of the fonts group, in the list's order."""
    entries = []
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            package, font = line.split()
            entries.append((package, Path(font)))
    return entries


@cache
def rendered_glyph(font, digit):
    """A digit in a font as ink coverage (0..1), cropped to its ink."""
    from matplotlib.ft2font import FT2Font

    face = FT2Font(str(font))
    face.set_size(GLYPH_EM, 72)  # 72 dpi: points are pixels.
    face.set_text(str(digit), 0.0)
    face.draw_glyphs_to_bitmap(antialiased=True)
    bitmap = np.asarray(face.get_image(), dtype=np.float32) / 255.0
    left, top, width, height = cv2.boundingRect((bitmap > 0).astype(np.uint8))
    return bitmap[top : top + height, left : left + width]


def glyph_coverage(font, digit, height, angle):
    """A digit in a font, its ink `height` pixels tall, turned by `angle`."""
    glyph = rendered_glyph(font, digit)
    scale = height / glyph.shape[0]
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    glyph = cv2.resize(glyph, None, fx=scale, fy=scale, interpolation=interpolation)
    # Room around the digit as in MNIST's frame, then turned.
    margin = round(height * (FRAME - 1) / 2)
    framed = cv2.copyMakeBorder(glyph, *(margin,) * 4, cv2.BORDER_CONSTANT, value=0)
    return turned(np.clip(framed, 0.0, 1.0), angle)


# Which sources a group draws, and with which generator.


def group_rng(seed, name):
    """Each group's own generator: a group draws the same photos whichever
    other groups run. The mixed group keeps this bench's original seeding."""
    if name == "mixed":
        return np.random.default_rng(seed)
    return np.random.default_rng([seed, *name.encode()])


def group_sources(name, count, test_images, test_labels, fonts):
    """What a group draws: (sources, labels, the MNIST digits or None).

    MNIST group k draws test digits k x count onwards (wrapping round); the
    fonts group types each digit in each font in turn.
    """
    if name == "fonts":
        sources = [(fonts[i % len(fonts)], (i // len(fonts)) % 10) for i in range(count)]
        return sources, np.array([digit for _, digit in sources]), None
    first = MNIST_GROUPS.index(name) * count
    chosen = (first + np.arange(count)) % len(test_images)
    return test_images[chosen], test_labels[chosen], test_images[chosen]
