"""Steps 5 and 6 of the recipe for a digit larger than MNIST's box: its ink read
again at a finer size, cut into black and white strokes, and its stroke width
brought within MNIST's range."""

import math
from typing import NamedTuple

import cv2
import numpy as np

from mnist_serving import config
from mnist_serving.preprocessing.errors import PreprocessingError
from mnist_serving.preprocessing.grey import _as_float32
from mnist_serving.preprocessing.ink import (
    _NEIGHBOURS,
    PAPER_NOISE_SIGMAS,
    _signed_ink,
    _suppress_noise,
)
from mnist_serving.preprocessing.measures import (
    _border_pieces,
    _pieces_noise,
    _quantiles,
    _row_medians,
    _subsample,
)
from mnist_serving.preprocessing.width import stroke_width

# A digit larger than MNIST's box is read again at DETAIL_SIZE pixels on its
# longer side (with a margin of DETAIL_MARGIN of its size), from the
# full-resolution image when the working copy has fewer: fine enough for its
# stroke width to be measured and changed, and, as MNIST's digits were,
# area-averaged from black and white down to the box. A digit whose strokes
# measure thinner than THIN_STROKE there is read again at up to
# FINE_DETAIL_SIZE, where a thin pen's line is still above the noise.
DETAIL_SIZE = 4 * config.DIGIT_BOX_SIZE
FINE_DETAIL_SIZE = 4 * DETAIL_SIZE
DETAIL_MARGIN = 0.1

# A stroke's edge is at half the strongest ink within a square of
# LOCAL_PEAK_FRACTION of the digit's size, and never below
# MIN_STROKE_FRACTION of the digit's strongest ink (the PEAK_QUANTILE of its
# ink pixels), nor within the paper's noise. The strongest ink around is
# taken on a copy smoothed by PEAK_SMOOTHING pixels (Gaussian sigma): the
# strokes' level, not that of the brightest specks of chalk or noise, whose
# half would cut holes into the strokes (chalk, 1,250 photos: -1.04 -> -0.32
# points against MNIST).
LOCAL_PEAK_FRACTION = 0.25
MIN_STROKE_FRACTION = 0.25
PEAK_QUANTILE = 0.98
PEAK_SMOOTHING = 2.5
# Holes in the cut strokes smaller than this fraction of the digit's image
# are filled: chalk's grain leaves many; the smallest loops of MNIST's digits
# are several times larger.
SMALL_HOLE = 0.002
# A marker can all but close a digit's loops and the gaps between its
# strokes: the paper left between them is a valley in the ink, which the cut
# at half height fills before the strokes are narrowed. Where the strokes are
# thicker than MNIST's, pixels inside them that lie VALLEY_DEPTH of the peak
# below a closing with a disc VALLEY_WIDTH pixels across are cut out as
# paper; narrowing then opens the loop again (the original set's 2,000
# photos: 22 errors without, 16 with). Not in grainy ink (GRAINY_INK: the
# median distance to a 3x3 median inside the strokes, over the peak), where
# every grain of chalk would pass for a valley.
VALLEY_WIDTH = 5
VALLEY_DEPTH = 0.1
GRAINY_INK = 0.01
# In grainy ink the grain also leaves holes in the cut too large to pass for
# pinholes, and narrowing widens them into loops (a thick chalk 1 read as an
# 8). A hole there is filled where the ink smoothed by PEAK_SMOOTHING stays
# above GRAIN_LEVEL of the local peak all over it: a loop, even one that the
# chalk all but closed, dips below.
GRAIN_LEVEL = 0.55

# Stroke width (`stroke_width`) relative to the digit's longer side. MNIST's
# test digits measure 0.093 (10th percentile), 0.127 (median) and 0.18
# (90th). Strokes outside 0.09..0.18 are brought inside, by no more than
# they need: widened to 0.115, between the 10th percentile and the median
# (widening to the median closes the gaps of a hairline's 5 or 4), narrowed
# to the 75th percentile (0.15). Narrowing is tried with the shares
# NARROWING_SHARES of the way, and given up where it would break a stroke or
# lose more than LOST_IN_NARROWING of the ink (a thin stroke beside thick
# ones). The width is matched to STROKE_TOLERANCE pixels.
THIN_STROKE = 0.09
THIN_STROKE_TARGET = 0.115
THICK_STROKE = 0.18
THICK_STROKE_TARGET = 0.15
NARROWING_SHARES = (1, 2 / 3, 1 / 3)
LOST_IN_NARROWING = 0.02
STROKE_TOLERANCE = 0.25


def _digit_detail(grey, scale, factor, box, paper, signed_ink, levels, ink, specks, size=None):
    """The digit's ink at `size` (DETAIL_SIZE by default), from the largest
    resolution it needs, and where the working size found its ink.

    The digit's region (`box` at working size, and a margin) is scaled so
    that the digit's longer side measures `size`: shrunk by area
    averaging, or enlarged by linear interpolation (only the strokes'
    half-way edge is used, so that adds no blur). When the working copy has
    fewer pixels across the digit than that, the region is read again from
    the full-resolution grey image, and its ink separated with the paper's
    level, light and contrast measured at working size. The `specks` removed
    there (uint8, working size) stay removed; faint ink that did not reach
    the working size's threshold, such as a thin line averaged away, is kept.

    Returns:
        (detail, found): the float32 ink strength, about 0 on the paper (its
        noise either way) and about 255 on the strongest ink (more where the
        working size averaged a thin line away); and, on the same grid, 1
        where the working size's `ink` (uint8, specks removed) was or beside
        it, else 0.
    """
    left, top, width, height = box
    margin = max(1, round(DETAIL_MARGIN * max(width, height)))
    rows = slice(max(0, top - margin), min(specks.shape[0], top + height + margin))
    columns = slice(max(0, left - margin), min(specks.shape[1], left + width + margin))
    # Measured from the paper's level, not its noise floor: averaging down
    # lowers the noise, and a faint line must not be cut off before.
    paper_level, _, gain = levels
    size = size or DETAIL_SIZE
    if factor == 1 or max(width, height) >= size:
        region = (signed_ink[rows, columns] - np.float32(paper_level)) * np.float32(gain)
        detail = _resized(region, size / max(width, height))
    else:
        full = grey[
            rows.start * factor : rows.stop * factor, columns.start * factor : columns.stop * factor
        ]
        # Resized at the stored depth: several times faster than as floats.
        region = _resized(np.ascontiguousarray(full), size / (max(width, height) * factor))
        region = _suppress_noise(_as_float32(region) * np.float32(scale))
        background = paper.background
        if background is not None:
            background = cv2.resize(
                background[rows, columns], region.shape[::-1], interpolation=cv2.INTER_LINEAR
            )
        signed = _signed_ink(region, paper, background)
        detail = (signed - np.float32(paper_level)) * np.float32(gain)
    # Both masks are grown by a pixel at working size, then scaled.
    removed, found = (
        cv2.resize(
            cv2.dilate((mask[rows, columns] > 0).view(np.uint8), _NEIGHBOURS),
            detail.shape[::-1],
            interpolation=cv2.INTER_NEAREST,
        )
        for mask in (specks, ink)
    )
    # Not clipped at 0: the paper's noise is measured on it.
    return np.where(removed > 0, 0, detail).astype(np.float32), found


def _resized(image, ratio):
    """The image scaled by `ratio`: area averaging to shrink, linear to enlarge."""
    size = (max(1, round(image.shape[1] * ratio)), max(1, round(image.shape[0] * ratio)))
    interpolation = cv2.INTER_AREA if ratio < 1 else cv2.INTER_LINEAR
    return cv2.resize(image, size, interpolation=interpolation)


def _cut_strokes(detail, found):
    """The pen's strokes: where the ink reaches half its own height, in the
    pieces that touch the ink `found` at working size (uint8, same grid).

    Each stroke's edge is where it reaches half of the strongest ink around
    it (a square of LOCAL_PEAK_FRACTION of the digit's size), so a faint
    stroke keeps its width beside a strong one, and blur moves no edge.
    MNIST's digits were made from black-and-white NIST scans in the same way.
    Pieces away from the ink found at working size are the paper's noise,
    which the finer size has more of than the line (a hairline's paper).

    Returns:
        A `_Cut`: the uint8 0/255 strokes, cropped to them, and what
        `_with_valleys_open` needs to open the valleys of the same cut.
    """
    # The paper's level and noise, measured again at this size on the pieces
    # of the border ring (paper: the digit's box had a margin): nothing
    # within them is ink. Measured piece by piece, a lighting map's residual
    # slope across the digit is not taken for noise; the upper quartile of
    # the pieces' levels leaves out ink that reaches a few of them.
    pieces = _border_pieces(detail)
    (paper_level,) = _quantiles(_row_medians(pieces), (0.75,))
    noise = _pieces_noise(pieces)
    floor = paper_level + PAPER_NOISE_SIGMAS * noise
    inked = detail[detail > floor]
    if inked.size == 0:
        raise PreprocessingError("blank image: no ink found")
    (peak,) = _quantiles(_subsample(inked), (PEAK_QUANTILE,))
    # A square window: OpenCV takes the maximum over it row by row and then
    # column by column, many times faster than over a disc.
    window = 2 * round(LOCAL_PEAK_FRACTION * max(detail.shape) / 2) + 1
    smoothed = cv2.GaussianBlur(detail, (0, 0), PEAK_SMOOTHING)
    local_peak = cv2.dilate(smoothed, np.ones((window, window), np.uint8))
    lowest = max(MIN_STROKE_FRACTION * peak, floor)
    threshold = np.maximum(local_peak * np.float32(0.5), np.float32(lowest))
    strokes = (detail >= threshold).view(np.uint8)
    # Pinholes (chalk's grain, JPEG's ringing) are filled where most of a
    # pixel's neighbours are ink; a hairline one pixel wide stays.
    strokes = np.maximum(strokes, cv2.medianBlur(strokes, 3))
    grainy = _grainy(detail, strokes, peak)
    solid = smoothed >= local_peak * np.float32(GRAIN_LEVEL) if grainy else None
    return _Cut(_finished(strokes, found, solid=solid), strokes, peak, grainy)


def _grainy(detail, strokes, peak):
    """Whether the ink inside the 0/1 `strokes` is grainy, as chalk is: the
    median distance of its pixels to their 3x3 median, over the `peak`, is
    above GRAINY_INK. Pen and print measure below it, chalk mostly several
    times more."""
    inside = cv2.erode(strokes, np.ones((3, 3), np.uint8)) > 0
    grain = np.abs(detail - cv2.medianBlur(detail, 3))[inside]
    return grain.size > 0 and _quantiles(_subsample(grain), (0.5,))[0] > GRAINY_INK * peak


class _Cut(NamedTuple):
    """The strokes `_cut_strokes` cut, and how they were cut."""

    strokes: np.ndarray  # uint8 0/255, cropped to them.
    joined: np.ndarray  # 0/1 on the detail's grid, before pieces and holes.
    peak: float  # The digit's strongest ink.
    grainy: bool  # Whether the ink is grainy (`_grainy`).


def _finished(joined, found, valleys=None, solid=None):
    """The cut strokes (0/1) without pieces away from the ink `found` and
    with their small holes filled (but those holding `valleys`; see
    `_without_small_holes` for `solid`), cropped."""
    return _cropped(_without_small_holes(_pieces_touching(joined, found), valleys, solid))


def _with_valleys_open(detail, found, cut):
    """The strokes of `cut` (of `detail`, `found`) with the valleys between
    them left out: pixels inside the joined strokes VALLEY_DEPTH of the
    peak below what a closing with a disc VALLEY_WIDTH pixels across makes
    of the `detail`. None when there is none, or the ink is grainy (chalk),
    whose every grain would pass for a valley.
    """
    if cut.grainy:
        return None
    inside = cv2.erode(cut.joined, np.ones((3, 3), np.uint8)) > 0
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (VALLEY_WIDTH, VALLEY_WIDTH))
    dips = cv2.morphologyEx(detail, cv2.MORPH_BLACKHAT, disc) > VALLEY_DEPTH * cut.peak
    valleys = inside & dips
    if not valleys.any():
        return None
    return _finished(np.where(valleys, np.uint8(0), cut.joined), found, valleys)


def _pieces_touching(strokes, found):
    """0/1 strokes without the pieces that have no pixel in `found`."""
    count, labels = cv2.connectedComponents(strokes, connectivity=8)
    if count <= 2:
        return strokes  # One piece or none: nothing to choose from.
    touching = np.zeros(count, dtype=bool)
    touching[labels[found > 0]] = True
    touching[0] = False
    if touching[1:].all() or not touching.any():
        return strokes
    return touching[labels].view(np.uint8)


def _without_small_holes(strokes, valleys=None, solid=None):
    """0/1 strokes with their small holes filled: pieces of paper enclosed by
    ink and smaller than SMALL_HOLE of the image (chalk's grain; a digit's
    loops are larger) or, in grainy ink, `solid` all over (boolean, same
    grid: where the smoothed ink stays above GRAIN_LEVEL of its local peak),
    except those holding `valleys` (boolean, same grid)."""
    _, labels, stats, _ = cv2.connectedComponentsWithStats(1 - strokes, connectivity=4)
    height, width = strokes.shape
    left, top = stats[:, cv2.CC_STAT_LEFT], stats[:, cv2.CC_STAT_TOP]
    right = left + stats[:, cv2.CC_STAT_WIDTH]
    bottom = top + stats[:, cv2.CC_STAT_HEIGHT]
    enclosed = (left > 0) & (top > 0) & (right < width) & (bottom < height)
    filled = enclosed & (stats[:, cv2.CC_STAT_AREA] < SMALL_HOLE * strokes.size)
    if solid is not None:
        # Grain's larger holes: no pixel of them where the smoothed ink dips.
        dips = np.bincount(labels.ravel(), weights=~solid.ravel(), minlength=len(stats))
        filled |= enclosed & (dips == 0)
    filled[0] = False  # Label 0: the ink itself.
    if valleys is not None:
        filled[labels[valleys]] = False  # Cut out on purpose.
    if not filled.any():
        return strokes
    return np.where(filled[labels], np.uint8(1), strokes)


def _relative_width(strokes):
    """`stroke_width` over the strokes' longer side."""
    return stroke_width(strokes) / max(strokes.shape)


def _with_mnist_stroke_width(detail, found, cut, width):
    """The strokes of `cut` (of `detail`, `found`) widened or narrowed to
    MNIST's width when their `width` (`_relative_width`) is outside MNIST's
    range, THIN_STROKE..THICK_STROKE.

    Strokes to be narrowed first have the valleys between them left as paper
    (`_with_valleys_open`), so that narrowing opens a loop that a marker all
    but closed.
    """
    strokes = cut.strokes
    if width > THICK_STROKE:
        opened = _with_valleys_open(detail, found, cut)
        if opened is not None:
            strokes, width = opened, _relative_width(opened)
    if width < THIN_STROKE:
        return _with_stroke_width(strokes, THIN_STROKE_TARGET)[0]
    if width > THICK_STROKE:
        # Narrowing that would break a stroke or lose one is tried again
        # with less.
        for share in NARROWING_SHARES:
            target = width + share * (THICK_STROKE_TARGET - width)
            thinner, widening = _with_stroke_width(strokes, target)
            if _survives_narrowing(strokes, -widening):
                return thinner
    return strokes


def _survives_narrowing(strokes, narrowing):
    """Whether strokes narrowed by `narrowing` pixels keep all their pieces,
    and widening them back restores all but LOST_IN_NARROWING of them (a
    thin stroke beside thick ones vanishes, though no piece breaks away)."""
    padded = cv2.copyMakeBorder(strokes, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    inside = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    core = (inside > narrowing / 2).view(np.uint8)
    if cv2.connectedComponents(core)[0] != cv2.connectedComponents(padded)[0]:
        return False
    back = cv2.distanceTransform(1 - core, cv2.DIST_L2, cv2.DIST_MASK_PRECISE) <= narrowing / 2 + 1
    lost = np.count_nonzero((padded > 0) & ~back)
    return lost <= LOST_IN_NARROWING * np.count_nonzero(padded)


def _with_stroke_width(strokes, target):
    """Strokes (uint8 0/255) widened or narrowed by the same amount on each
    side until `stroke_width` over their longer side measures `target`; and
    that amount, in pixels (negative when narrowed).

    The strokes' edge is moved along their Euclidean distance map, which
    takes fractions of a pixel. Widening also enlarges the digit, and round
    ends and joins change the measure less than straight strokes, so the
    move is found in two steps: the move that a long straight stroke would
    need, then a correction from what that gave (the secant method).
    """
    margin = math.ceil(target * max(strokes.shape)) + 1
    padded = cv2.copyMakeBorder(strokes, *(margin,) * 4, cv2.BORDER_CONSTANT, value=0)
    # Distance of the background to the strokes, and of the strokes to the
    # background.
    outside = cv2.distanceTransform(255 - padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    inside = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)

    def moved(widening):
        mask = outside <= widening / 2 if widening >= 0 else inside > -widening / 2
        return _cropped(mask)

    def error(candidate):
        return stroke_width(candidate) - target * max(candidate.shape)

    start_error = error(strokes)
    # A straight stroke of width w in a digit of size L: (w + d) = t (L + d).
    widening = -start_error / (1 - target)
    result = moved(widening)
    if result.size == 0:
        return strokes, 0.0  # Narrowed away: nothing is left to measure.
    result_error = error(result)
    if abs(result_error) > STROKE_TOLERANCE and result_error != start_error:
        corrected = widening - result_error * widening / (result_error - start_error)
        if moved(corrected).size:
            widening, result = corrected, moved(corrected)
    return result, widening


def _cropped(mask):
    """A boolean mask as uint8 0/255, cropped to its true pixels."""
    strokes = mask.view(np.uint8) if mask.dtype == np.bool_ else (mask > 0).view(np.uint8)
    left, top, width, height = cv2.boundingRect(strokes)
    return strokes[top : top + height, left : left + width] * np.uint8(255)
