"""Robust measures of grey levels: quantiles, spread, histogram levels, and the
border ring that tells the paper from the ink."""

import math

import cv2
import numpy as np

# The border ring that tells the paper's colour, as a fraction of the
# shorter side (at least one pixel).
BORDER_FRACTION = 0.03

# The darkest and lightest 0.02% of the pixels stand for the ink: whichever is
# farther from the paper's colour is the ink's side (`paper`), and the
# strongest 0.02% of the signed ink give its level (`ink`).
TAIL_FRACTION = 0.0002

# The median absolute deviation of normally distributed values times this is
# their standard deviation.
_MAD_TO_SIGMA = 1.4826


def _quantiles(values, fractions):
    """Values below which the given fractions of `values` lie (no interpolation).

    A plain sort: `np.percentile`'s overhead would dominate the time for a
    28x28 image, and `np.partition` is very slow on the many equal values
    of a black background.
    """
    ordered = np.sort(values, axis=None)
    last = ordered.size - 1
    return [float(ordered[min(last, max(0, round(fraction * last)))]) for fraction in fractions]


def _subsample(array, count=1024):
    """About `count` evenly spread values of a 1-D or 2-D array: enough for a
    median, and fast."""
    if array.ndim == 1:
        return array[:: max(1, array.size // count)]
    stride = max(1, math.isqrt(array.size // count))
    return array[::stride, ::stride]


def _spread(values):
    """Robust standard deviation: the median absolute deviation, scaled."""
    (middle,) = _quantiles(values, (0.5,))
    (deviation,) = _quantiles(np.abs(values - np.float32(middle)), (0.5,))
    return _MAD_TO_SIGMA * deviation


def _levels_at(image, fractions):
    """Grey levels below which the given fractions of the pixels lie.

    A 256-bin histogram: exact to one grey level, and much faster than
    sorting a photo's pixels.
    """
    # Rounded to uint8 first: OpenCV's histogram of bytes is several times
    # faster than of floats. `image` holds 0..255, so nothing is lost.
    levels = cv2.convertScaleAbs(image)
    histogram = cv2.calcHist([levels], [0], None, [256], [0, 256]).ravel()
    total = histogram.sum()
    if total == 0:
        return [0.0 for _ in fractions]
    cumulative = np.cumsum(histogram) / total
    return [float(np.searchsorted(cumulative, fraction)) for fraction in fractions]


def _border(image):
    """The pixels of a ring along the image's edges."""
    height, width = image.shape
    ring = _ring_width(image)
    if 2 * ring >= min(height, width):
        return image.ravel()
    return np.concatenate(
        [
            image[:ring].ravel(),
            image[-ring:].ravel(),
            image[ring:-ring, :ring].ravel(),
            image[ring:-ring, -ring:].ravel(),
        ]
    )


def _ring_width(image):
    """The border ring's width in pixels: BORDER_FRACTION of the shorter side."""
    return max(1, round(BORDER_FRACTION * min(image.shape)))


def _border_pieces(image, parts=3, count=64):
    """The border ring's four sides, each cut into `parts` pieces along it:
    an array of one row per piece, at most `count` values evenly taken from
    the ring's middle line (enough for a median; one array, so that the
    pieces are measured at once)."""
    middle = _ring_width(image) // 2
    lines = [image[middle], image[-1 - middle], image[:, middle], image[:, -1 - middle]]
    pieces = []
    for line in lines:
        if line.size < parts:  # A sliver of an image: each piece is all of it.
            line = np.resize(line, parts)
        length = line.size // parts
        stride = max(1, length // count)
        pieces.append(line[: length * parts].reshape(parts, length)[:, ::stride][:, :count])
    # The sides differ in length: each piece keeps as many values as the
    # shortest.
    shortest = min(piece.shape[1] for piece in pieces)
    return np.concatenate([piece[:, :shortest] for piece in pieces])


def _row_medians(rows):
    """The median of each row (no interpolation, as `_quantiles`)."""
    ordered = np.sort(rows, axis=1)
    return ordered[:, (rows.shape[1] - 1) // 2]


def _pieces_noise(pieces):
    """The paper's noise measured on the border's `pieces` (`_border_pieces`):
    the median of their spreads. A slope across the image, such as a
    lighting map's residual error, moves each piece's level but hardly its
    spread."""
    (noise,) = _quantiles(_row_spreads(pieces), (0.5,))
    return noise


def _row_spreads(rows):
    """`_spread` of each row."""
    deviations = np.abs(rows - _row_medians(rows)[:, np.newaxis])
    return _MAD_TO_SIGMA * _row_medians(deviations)
