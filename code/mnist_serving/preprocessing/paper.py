"""Step 3 of the recipe, the paper: its level, which side of it the ink is on
(polarity) and, under uneven light, a map of its brightness, made on a
thumbnail with a morphological opening wider than the strokes."""

import math
from typing import NamedTuple

import cv2
import numpy as np

from mnist_serving import config
from mnist_serving.preprocessing.measures import (
    TAIL_FRACTION,
    _border,
    _border_pieces,
    _levels_at,
    _quantiles,
    _row_medians,
    _subsample,
)
from mnist_serving.preprocessing.width import _mean_distance_width

# The lighting counts as uneven when the middle half of the border ring's
# grey levels (the interquartile range, which ink touching the border does
# not move) spreads over more than this fraction of the ink's contrast. The
# background is then estimated from a small thumbnail by a morphological
# opening with a disc a third of the thumbnail's size, wider than any stroke,
# and a light blur.
UNEVEN_LIGHTING = 0.1
LIGHTING_MIN_SIZE = 2 * config.IMAGE_SIZE
LIGHTING_THUMBNAIL_SIZE = 128
LIGHTING_KERNEL_FRACTION = 1 / 3
LIGHTING_BLUR_SIGMA = 1.0
# Under uneven light, the polarity is judged on what stands out from its
# neighbourhood by more than this fraction of the strongest contrast (see
# `_ink_is_dark`).
POLARITY_TAIL = 0.5
# The map is then made again with a disc BACKGROUND_STROKES times as wide as
# the ink's strokes (see `_stroke_sized_background`).
BACKGROUND_STROKES = 4
BACKGROUND_DISC_PIXELS = 9

# Where nothing stands out at the working size, a hairline is looked for at a
# finer size against the paper's median over this many pixels around it.
HAIRLINE_WINDOW = 9


class _Paper(NamedTuple):
    """What the ink is measured against: see `_measure_paper`."""

    dark_ink: bool
    # The paper's grey level, in the image where the ink is the bright part.
    level: float
    # The paper's brightness map at working size under uneven light (the ink
    # the bright part), or None when the light is even.
    background: np.ndarray | None


def _measure_paper(grey):
    """The ink's polarity, the paper's level and, under uneven light, its map.

    The paper's colour is the median of the border ring. The darkest and
    lightest pixels are compared with it: whichever is farther is the ink,
    so dark ink on light paper is inverted and MNIST's white-on-black is not.
    """
    border = _subsample(_border(grey))
    (paper,) = _quantiles(border, (0.5,))
    darkest, lightest = _levels_at(grey, (TAIL_FRACTION, 1 - TAIL_FRACTION))
    dark_ink = paper - darkest > lightest - paper
    ink = darkest if dark_ink else lightest
    contrast = max(abs(paper - ink), 1.0)
    # Lighting is judged on the border's paper only: a tightly cropped digit
    # can cover much of the border.
    paper_border = border[(border > (paper + ink) / 2) == dark_ink]
    low_border, high_border = _quantiles(paper_border, (0.25, 0.75))
    uneven = high_border - low_border > UNEVEN_LIGHTING * contrast
    other_side = lightest - paper if dark_ink else paper - darkest
    if not uneven and other_side > UNEVEN_LIGHTING * contrast:
        # Something stands out on both sides of the paper: the ink, and a
        # part of the page under other light (a lit edge of a page mostly in
        # shadow, a flash's hot spot), which the border's median leaves out
        # and which would be taken for ink. The pieces of the border's sides
        # then differ. (Ink that touches the border of a tight crop fills
        # some pieces too, but has nothing beyond the paper on the other
        # side.)
        pieces = _row_medians(_border_pieces(grey))
        uneven = bool(np.ptp(pieces) > UNEVEN_LIGHTING * contrast)
    if not (uneven and min(grey.shape) >= LIGHTING_MIN_SIZE):
        return _Paper(dark_ink, 255.0 - paper if dark_ink else paper, None)
    # One thumbnail serves the polarity and the map: the map of dark ink is
    # made on its negative.
    thumbnail = _lighting_thumbnail(grey)
    dark_ink = _ink_is_dark(thumbnail)
    if dark_ink:
        thumbnail = thumbnail._replace(extended=255.0 - thumbnail.extended)
    level = 255.0 - paper if dark_ink else paper
    return _Paper(dark_ink, level, _opened_map(thumbnail, grey.shape, LIGHTING_BLUR_SIGMA))


def _ink_is_dark(thumbnail):
    """Whether the ink is darker than the paper, judged under uneven light on
    the `thumbnail` (`_lighting_thumbnail`) of the image.

    The border's median can be the shadow's or the light's, so each pixel of
    the lighting thumbnail is compared with its own neighbourhood instead:
    the median over the background's disc, which is paper as long as ink
    covers less than half of it. Light multiplies paper and ink alike, so the
    comparison is a ratio: dark ink absorbs most of the light where it is,
    light ink on a dark board reflects several times as much, while a
    shadow's edge only changes the light by a fraction.
    """
    extended, disc, margin = thumbnail
    levels = cv2.convertScaleAbs(extended)
    # The median is taken at half the size, where it costs an eighth, and
    # enlarged: the paper's level varies slowly.
    half_size = cv2.resize(levels, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    paper = cv2.medianBlur(half_size, 2 * (disc.shape[0] // 4) + 1)
    paper = cv2.resize(paper, levels.shape[::-1], interpolation=cv2.INTER_LINEAR)
    inside = (slice(margin, -margin), slice(margin, -margin))
    ratio = np.log((levels[inside] + np.float32(1)) / (paper[inside] + np.float32(1)))
    # What stands out beyond half the strongest contrast either way, summed:
    # where a bold digit covers more than half of the disc, the median is
    # ink and the paper inside its loops stands out as strongly as the ink
    # does elsewhere, but over a much smaller area. (A sum of all the
    # contrast would weigh the paper's noise as much as a hairline.)
    tail = np.float32(POLARITY_TAIL) * max(-float(ratio.min()), float(ratio.max()))
    return bool(np.maximum(-ratio - tail, 0).sum() > np.maximum(ratio - tail, 0).sum())


class _Thumbnail(NamedTuple):
    """A thumbnail for the lighting: see `_lighting_thumbnail`."""

    extended: np.ndarray  # The thumbnail, extended by `margin` on each side.
    disc: np.ndarray  # The structuring element of the opening.
    margin: int


def _lighting_thumbnail(grey, factor=None, radius=None):
    """A thumbnail for the lighting, shrunk by `factor` (by default to
    LIGHTING_THUMBNAIL_SIZE); the disc of `radius` on it (by default
    LIGHTING_KERNEL_FRACTION of it, wider than any stroke, and then a
    square); and the margin it is extended by (a `_Thumbnail`).

    The margin is a point reflection at the edges, which continues a
    brightness gradient: with a plain mirror or repeated edge, the opening
    would underestimate the paper along the brighter edges.
    """
    height, width = grey.shape
    # Whole blocks, as in _shrink; the map is stretched back
    # over the dropped sliver, which a smooth map does not notice.
    factor = factor or math.ceil(max(height, width) / LIGHTING_THUMBNAIL_SIZE)
    rows, columns = max(1, height // factor), max(1, width // factor)
    whole_blocks = grey[: rows * factor, : columns * factor]
    thumbnail = cv2.resize(whole_blocks, (columns, rows), interpolation=cv2.INTER_AREA)
    # The default, wide element is a square: OpenCV opens with a rectangle
    # row by row, then column by column, several times faster than with a
    # disc, and a square wider than any stroke removes the ink as well. A
    # few strokes wide (`radius` given), it is a disc, which follows a
    # shadow's edge at any angle.
    shape = cv2.MORPH_ELLIPSE if radius else cv2.MORPH_RECT
    radius = radius or max(1, round(LIGHTING_KERNEL_FRACTION * max(rows, columns) / 2))
    diameter = 2 * radius + 1
    disc = cv2.getStructuringElement(shape, (diameter, diameter))
    margin = 2 * radius
    return _Thumbnail(_point_reflected(thumbnail, margin), disc, margin)


def _point_reflected(image, margin):
    """`image` extended by `margin` on each side, each side's margin a point
    reflection about its edge (numpy's odd reflection, at a fraction of
    `np.pad`'s cost, done by OpenCV's mirror one axis at a time)."""
    if margin >= min(image.shape):  # Only numpy reflects more than once.
        return np.pad(image, margin, mode="reflect", reflect_type="odd")
    for top_bottom, left_right in (((margin,) * 2, (0, 0)), ((0, 0), (margin,) * 2)):
        sides = (*top_bottom, *left_right)
        mirrored = cv2.copyMakeBorder(image, *sides, cv2.BORDER_REFLECT_101)
        edges = cv2.copyMakeBorder(image, *sides, cv2.BORDER_REPLICATE)
        image = 2 * edges - mirrored
    return image


def _opened_map(thumbnail, shape, blur_sigma):
    """The paper's brightness map under uneven light, ink removed, at `shape`.

    On the `thumbnail` (`_lighting_thumbnail`), a morphological opening with
    its disc, wider than any stroke, removes the (bright) ink and keeps the
    slowly varying paper; a blur of `blur_sigma` (if any) smooths the disc's
    corners away; the map is scaled back up.
    """
    extended, disc, margin = thumbnail
    smooth = cv2.morphologyEx(extended, cv2.MORPH_OPEN, disc, borderType=cv2.BORDER_REPLICATE)
    if blur_sigma:
        smooth = cv2.GaussianBlur(smooth, (0, 0), blur_sigma, borderType=cv2.BORDER_REPLICATE)
    smooth = np.ascontiguousarray(smooth[margin:-margin, margin:-margin])
    return cv2.resize(smooth, shape[::-1], interpolation=cv2.INTER_LINEAR)


def _stroke_sized_background(bright, ink):
    """The paper's map (`_opened_map`) again, with a disc
    BACKGROUND_STROKES times as wide as the strokes of `ink` (the uint8 ink
    found with the first map); None when that disc is not much smaller than
    the image.

    It is opened on a thumbnail shrunk so that the disc measures about
    BACKGROUND_DISC_PIXELS across, and not blurred: an opening keeps a
    shadow's edge where it is, a blur would move it into the ink.
    """
    diameter = BACKGROUND_STROKES * max(_mean_distance_width(ink), 1.0)
    factor = max(1, int(diameter // BACKGROUND_DISC_PIXELS))
    radius = max(1, round(diameter / factor / 2))
    if 2 * radius + 1 >= max(bright.shape) // factor / 2:
        return None
    return _opened_map(_lighting_thumbnail(bright, factor, radius), bright.shape, blur_sigma=0)


def _hairline_paper(grey):
    """The paper for a hairline (a `_Paper`): its level, as `_measure_paper`
    measures it; its map, the median over HAIRLINE_WINDOW pixels around each
    pixel of the image where the ink is the bright part (see `_signed_ink`);
    and the ink's polarity, judged against that median.

    A line a pixel or two wide never fills half the window; the paper's
    blotches and light are wider and stay in the map. The line stands out
    from it on one side only, and the paper's noise on both: the ink is on
    the side whose TAIL_FRACTION of the pixels stands out further.
    (`_measure_paper` judges uneven light on a thumbnail, where a hairline
    has faded into the paper, and makes a map a hairline does not use.)
    """
    (paper,) = _quantiles(_subsample(_border(grey)), (0.5,))
    # Dark ink first, the usual case: its map then costs one median.
    for dark_ink in (True, False):
        bright = cv2.convertScaleAbs(255.0 - grey if dark_ink else grey)
        median = cv2.medianBlur(bright, HAIRLINE_WINDOW)
        # Shifted by 128 into uint8 for `_levels_at`'s histogram: the line
        # covers too few pixels for a subsample to find it.
        deviation = cv2.subtract(bright, median, dtype=cv2.CV_16S) + 128
        below, above = _levels_at(
            np.clip(deviation, 0, 255).astype(np.uint8), (TAIL_FRACTION, 1 - TAIL_FRACTION)
        )
        if above - 128 >= 128 - below:
            break
    return _Paper(dark_ink, 255.0 - paper if dark_ink else paper, median.astype(np.float32))
