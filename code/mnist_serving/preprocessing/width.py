"""Stroke width measured: the average width of a digit's strokes, in pixels."""

import math

import cv2
import numpy as np

# stroke_width enlarges images up to STROKE_SMALL_IMAGE pixels (MNIST's), and
# thin strokes, STROKE_ENLARGEMENT times, to no more than
# STROKE_LARGEST_ENLARGED pixels.
STROKE_SMALL_IMAGE = 64
STROKE_ENLARGEMENT = 4
STROKE_LARGEST_ENLARGED = 512
# A pixel is ink where it reaches this share of the image's brightest level:
# the half-way edge of MNIST's anti-aliased strokes.
INK_LEVEL = 0.5


def ink_mask(digit: np.ndarray) -> np.ndarray:
    """Where a white-on-black image is ink: its pixels that reach INK_LEVEL
    of its brightest level (a boolean array of its shape)."""
    level = digit.max() * INK_LEVEL
    if np.issubdtype(digit.dtype, np.integer):
        # The same pixels, compared in the image's own type: 14 times faster
        # on uint8 than against a float.
        level = digit.dtype.type(math.ceil(level))
    return digit >= level


def stroke_width(digit: np.ndarray) -> float:
    """The average width of a digit's strokes, in the image's pixels.

    The ink is `ink_mask`'s (white on black, as `to_mnist` returns it);
    each ink pixel's distance to the nearest
    background pixel is averaged. Across a stroke of width w those distances
    average w/4, plus the half pixel between a pixel's centre and its edge:
    the width is 4 x (mean distance - 1/2). Images of MNIST's size, and
    strokes narrower than STROKE_ENLARGEMENT pixels, are measured on the
    image enlarged STROKE_ENLARGEMENT times (linear interpolation; less for
    images over a quarter of STROKE_LARGEST_ENLARGED), so that the edge
    falls between pixels as it does in the drawing.

    Args:
        digit: A grey image, white ink on black (uint8, or float 0..255).

    Returns:
        The stroke width in pixels of `digit`, 0.0 for an image without ink.
    """
    digit = np.asarray(digit, dtype=np.float32)
    if digit.size == 0 or digit.max() <= 0:
        return 0.0
    longer = max(digit.shape)
    if longer > STROKE_SMALL_IMAGE:
        width = _mean_distance_width(digit)
        # Large images are enlarged less, or not at all: the time grows with
        # the square of the size, and one pixel matters less there.
        enlargement = min(STROKE_ENLARGEMENT, STROKE_LARGEST_ENLARGED // longer)
        if width >= STROKE_ENLARGEMENT or enlargement <= 1:
            return width
    else:
        enlargement = STROKE_ENLARGEMENT
    enlarged = cv2.resize(
        digit, None, fx=enlargement, fy=enlargement, interpolation=cv2.INTER_LINEAR
    )
    return _mean_distance_width(enlarged) / enlargement


def _mean_distance_width(digit):
    """4 x (mean distance of the ink to the background - 1/2): see stroke_width.

    `digit` is white ink on black, uint8 or float32.
    """
    ink = ink_mask(digit).view(np.uint8)
    # Cropped to the ink: the padding's ring of background is as near to
    # every ink pixel as the background beyond it, and a whole photo's
    # distance map costs many times more.
    left, top, width, height = cv2.boundingRect(ink)
    ink = ink[top : top + height, left : left + width]
    distance = cv2.distanceTransform(
        cv2.copyMakeBorder(ink, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0),
        cv2.DIST_L2,
        cv2.DIST_MASK_PRECISE,
    )
    return 4 * (float(distance[1:-1, 1:-1][ink > 0].mean()) - 0.5)
