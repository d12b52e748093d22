"""Steps 2 to 4 of the recipe: noise suppressed, the paper's level, lighting and
the ink's polarity measured, and the ink separated from the paper, stretched to
0..255 and rid of specks far from the digit."""

import math
from typing import NamedTuple

import cv2
import numpy as np

from mnist_serving import config
from mnist_serving.preprocessing.errors import PreprocessingError
from mnist_serving.preprocessing.measures import (
    _border,
    _border_pieces,
    _levels_at,
    _quantiles,
    _row_medians,
    _spread,
    _subsample,
)
from mnist_serving.preprocessing.width import _mean_distance_width

# A pixel this many grey levels above its brightest or below its darkest
# neighbour is an impulse (salt or pepper). MNIST digits have at most three
# such pixels, so a median filter is applied only when more than this
# fraction of the pixels are impulses.
IMPULSE_MARGIN = 64
IMPULSE_FRACTION = 0.01

# Sensor noise, in grey levels (standard deviation): above this, the image is
# smoothed before the ink is looked for. Clean scans and MNIST measure 0.
NOISE_LEVEL = 4.0
NOISE_BLUR_SIGMA = 1.0

# The darkest and lightest 0.02% of the pixels stand for the ink: whichever is
# farther from the paper's colour is the ink's side.
TAIL_FRACTION = 0.0002

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

# The paper's level and noise are the median and the robust spread of the
# border ring, less the ink touching it. Up to PAPER_NOISE_SIGMAS
# standard deviations above the paper's level is paper and becomes 0. Ink
# is what stands more than INK_NOISE_SIGMAS standard deviations and
# MIN_INK_CONTRAST grey levels above the paper; there must be at least
# MIN_INK_PIXELS such pixels, on less than MAX_INK_FRACTION of the image
# (beyond that, no background is left to tell the ink from). A threshold
# tied to the noise finds a thin digit that covers 0.1% of a photo, where
# Otsu's threshold, made for two classes of similar size, would split the
# paper's noise instead.
PAPER_NOISE_SIGMAS = 5.0
PAPER_QUANTILE = 0.999
INK_NOISE_SIGMAS = 8.0
MIN_INK_CONTRAST = 12.0
MIN_INK_PIXELS = 4
MAX_INK_FRACTION = 0.7

# Where nothing stands out at the working size, a hairline is looked for at a
# finer size against the paper's median over this many pixels around it.
HAIRLINE_WINDOW = 9

# Connected pieces of ink with at least this fraction of the largest piece's
# area make up the digit; smaller pieces are kept only if they lie within
# this fraction of the digit's size from its bounding box (MNIST digits often
# have small detached pieces; a speck of dirt far away must not stretch the
# crop).
MAIN_PIECE_FRACTION = 0.1
NEAR_DIGIT_FRACTION = 0.1

# The eight neighbours of a pixel, without the pixel itself.
_NEIGHBOURS = np.array([[1, 1, 1], [1, 0, 1], [1, 1, 1]], dtype=np.uint8)


def _suppress_noise(grey):
    """Removes impulse noise and smooths sensor noise, when measured present.

    Filtering every image would erase MNIST's one- and two-pixel strokes, so
    each filter runs only when its kind of noise is found.
    """
    # The tests run on a byte copy: morphology and the median filter are
    # several times faster on bytes than on floats.
    levels = cv2.convertScaleAbs(grey)
    salt = cv2.subtract(levels, cv2.dilate(levels, _NEIGHBOURS)) > IMPULSE_MARGIN
    pepper = cv2.subtract(cv2.erode(levels, _NEIGHBOURS), levels) > IMPULSE_MARGIN
    median = cv2.medianBlur(levels, 3)
    # Robust noise level, measured before any filtering (a median-filtered
    # image barely differs from its own median): the median distance to the
    # 3x3 median, scaled to a standard deviation. Impulses hardly move it;
    # flat paper and MNIST's black background give 0.
    noise = _spread(_subsample(levels).astype(np.float32) - _subsample(median))
    if np.count_nonzero(salt) + np.count_nonzero(pepper) > IMPULSE_FRACTION * grey.size:
        grey = median.astype(np.float32)
    if noise > NOISE_LEVEL:
        grey = cv2.GaussianBlur(grey, (0, 0), NOISE_BLUR_SIGMA)
    return grey


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


def _signed_ink(grey, paper, background):
    """Signed ink strength: positive on ink, about 0 on the paper.

    Under uneven light (`background`, the paper's map for these pixels), dark
    ink is measured as the fraction of the local paper's light it absorbs
    (light multiplies paper and ink alike), in grey levels of the typical
    paper.
    """
    if paper.dark_ink:
        grey = 255.0 - grey
    if background is None:
        return grey - np.float32(paper.level)
    if not paper.dark_ink:
        return grey - background
    paper_light = np.maximum(255.0 - background, 1.0)
    return (grey - background) * (np.float32(255.0 - paper.level) / paper_light)


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


def _ink_levels(signed_ink, mapped=False):
    """The signed ink strengths that become 0 (the paper) and 255 (the
    strongest ink); checks that there is ink.

    The paper's level plus its noise becomes 0 and the strongest ink 255.
    For an MNIST image both are already 0 and 255, so nothing changes.

    Args:
        signed_ink: The signed ink strengths (`_signed_ink`).
        mapped: Whether they were measured against a map of the paper
            (uneven light), which leaves errors, not noise, on the paper.

    Returns:
        (paper, floor, gain): the paper's level, the level that becomes 0
        (the paper's plus its noise), and the gain that takes the strongest
        ink to 255: ink = (signed ink - floor) x gain.

    Raises:
        PreprocessingError: No ink stands out from the background.
    """
    # The paper is measured on the border ring, less any ink touching it.
    (strongest,) = _levels_at(np.clip(signed_ink, 0, 255), (1 - TAIL_FRACTION,))
    border = _subsample(_border(signed_ink))
    (middle,) = _quantiles(border, (0.5,))
    paper = border[border <= (middle + strongest) / 2]
    if paper.size == 0:
        paper = _subsample(signed_ink)
    (paper_level,) = _quantiles(paper, (0.5,))
    paper_noise = _spread(paper)
    ink_threshold = paper_level + max(INK_NOISE_SIGMAS * paper_noise, MIN_INK_CONTRAST)
    # Counted, not gathered: a gather of the ink pixels costs many times more.
    ink_count = np.count_nonzero(signed_ink > ink_threshold)
    if ink_count < MIN_INK_PIXELS:
        raise PreprocessingError("blank image: no ink found")
    ink_fraction = ink_count / signed_ink.size
    if ink_fraction > MAX_INK_FRACTION:
        raise PreprocessingError(
            f"blank image: no ink found ({ink_fraction:.0%} of the image stands out)"
        )
    floor = paper_level + PAPER_NOISE_SIGMAS * paper_noise
    if mapped:
        # Measured against a map of the paper (`mapped`), what is left of
        # the paper is not noise around a level but the map's error, never
        # below 0 where the map follows the paper closely: its spread can
        # be 0. The floor is at least the paper's PAPER_QUANTILE.
        (paper_top,) = _quantiles(paper, (PAPER_QUANTILE,))
        floor = max(floor, paper_top)
    # The strongest ink is the image's maximum: there is ink above the
    # threshold.
    peak = min(float(signed_ink.max()), 255.0)
    return paper_level, floor, 255.0 / (peak - floor)


def _stretch(signed_ink, levels):
    """uint8 ink from 0 (paper) to 255 (the strongest ink)."""
    _, floor, gain = levels
    stretched = (signed_ink - np.float32(floor)) * np.float32(gain)
    # OpenCV rounds half to even and saturates at 255 as np.rint and a clip
    # do, in a third less time; the absolute value it takes changes nothing
    # once the negatives are 0.
    return cv2.convertScaleAbs(np.maximum(stretched, np.float32(0)))


def _remove_specks(ink):
    """Zeroes pieces of ink that are small and far from the digit.

    Raises:
        PreprocessingError: Nothing is left (cannot happen after
            `_ink_levels`, but a blank result must never pass).
    """
    found = (ink > 0).view(np.uint8)
    # Counting the pieces costs a fraction of measuring them, and most
    # photos hold one piece: the digit.
    count = cv2.connectedComponents(found, connectivity=8)[0]
    if count <= 1:
        raise PreprocessingError("blank image: no ink found")
    if count == 2:
        return ink
    count, labels, stats, _ = cv2.connectedComponentsWithStats(found, connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA]
    main = areas >= MAIN_PIECE_FRACTION * areas.max()
    left = stats[1:, cv2.CC_STAT_LEFT]
    top = stats[1:, cv2.CC_STAT_TOP]
    right = left + stats[1:, cv2.CC_STAT_WIDTH]
    bottom = top + stats[1:, cv2.CC_STAT_HEIGHT]
    box_left, box_top = left[main].min(), top[main].min()
    box_right, box_bottom = right[main].max(), bottom[main].max()
    margin = max(1, round(NEAR_DIGIT_FRACTION * max(box_right - box_left, box_bottom - box_top)))
    near = (
        (right >= box_left - margin)
        & (left <= box_right + margin)
        & (bottom >= box_top - margin)
        & (top <= box_bottom + margin)
    )
    keep = np.concatenate([[False], main | near])
    if keep[1:].all():
        return ink
    return np.where(keep[labels], ink, 0).astype(np.uint8)


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


def _hairline_paper(grey, dark_ink):
    """The paper's map for a hairline: the median over HAIRLINE_WINDOW
    pixels around each pixel of the image where the ink is the bright part
    (see `_signed_ink`). A line a pixel or two wide never fills half the
    window; the paper's blotches and light are wider and stay in the map."""
    bright = cv2.convertScaleAbs(255.0 - grey if dark_ink else grey)
    return cv2.medianBlur(bright, HAIRLINE_WINDOW).astype(np.float32)
