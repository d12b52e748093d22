"""Steps 2 to 4 of the recipe, the ink: noise suppressed, the ink separated from
the paper (`paper` measures it), stretched to 0..255 and rid of specks far
from the digit."""

import cv2
import numpy as np

from mnist_serving.preprocessing.errors import PreprocessingError
from mnist_serving.preprocessing.measures import (
    TAIL_FRACTION,
    _border,
    _border_pieces,
    _levels_at,
    _pieces_noise,
    _quantiles,
    _spread,
    _subsample,
)

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

# The paper's level and noise are the median and the robust spread of the
# border ring, less the ink touching it. Up to PAPER_NOISE_SIGMAS
# standard deviations above the paper's level is paper and becomes 0. Ink
# is what stands more than INK_NOISE_SIGMAS standard deviations and
# MIN_INK_CONTRAST grey levels above the paper; there must be at least
# MIN_INK_PIXELS such pixels, on less than MAX_INK_FRACTION of the image
# (beyond that, no background is left to tell the ink from). A threshold
# tied to the noise finds a thin digit that covers 0.1% of a photo, where
# Otsu's threshold, made for two classes of similar size, would split the
# paper's noise instead. Against a map of the paper (uneven light), the
# border's spread is mostly the map's slow error along a band of light,
# and INK_NOISE_SIGMAS of it can reach past the ink of a marker's digit in
# the shade: whether anything stands out is then judged on the noise within
# each twelfth of the ring (the median of their spreads), which that error
# hardly moves.
PAPER_NOISE_SIGMAS = 5.0
PAPER_QUANTILE = 0.999
INK_NOISE_SIGMAS = 8.0
MIN_INK_CONTRAST = 12.0
MIN_INK_PIXELS = 4
MAX_INK_FRACTION = 0.7

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
    if mapped:
        ink_noise = min(paper_noise, _pieces_noise(_border_pieces(signed_ink)))
    else:
        ink_noise = paper_noise
    ink_threshold = paper_level + max(INK_NOISE_SIGMAS * ink_noise, MIN_INK_CONTRAST)
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
