"""Steps 7 and 8 of the recipe: the digit cropped, fitted into MNIST's 20x20
box and centred by its centre of mass in the 28x28 image.

Centre convention: OpenCV's moments put pixel (row, column) at the
coordinate (column, row), so a 28x28 image spans -0.5..27.5 and its geometric
centre is 13.5. MNIST's own digits have their centre of mass between 13.5 and
14.5 on both axes (mean 14.0 over the test set): MNIST moved each digit by a
whole number of pixels so that its centre of mass falls on pixel 14, which
is `IMAGE_SIZE / 2`. This module does the same, so an MNIST digit is not
moved at all and is not blurred by a sub-pixel shift.
"""

import cv2
import numpy as np

from mnist_serving import config
from mnist_serving.preprocessing.width import ink_mask

# Where the centre of mass goes, in OpenCV pixel coordinates (see above).
CENTRE = config.IMAGE_SIZE / 2


def _half_way_crop(ink):
    """uint8 ink cropped to `ink_mask` (half its strongest level), as the web
    page crops a drawing (web/mnist.js)."""
    half_way = ink_mask(ink).view(np.uint8)
    left, top, width, height = cv2.boundingRect(half_way)
    return ink[top : top + height, left : left + width]


def _fit_to_box(cropped):
    """Scales the longer side to DIGIT_BOX_SIZE, keeping the aspect ratio.

    Area averaging when shrinking gives MNIST's anti-aliased edges; the
    brightest pixel is then brought back to 255.
    """
    height, width = cropped.shape
    longer = max(height, width)
    box = config.DIGIT_BOX_SIZE
    if longer != box:
        scale = box / longer
        size = (
            min(box, max(1, round(width * scale))),
            min(box, max(1, round(height * scale))),
        )
        interpolation = cv2.INTER_AREA if longer > box else cv2.INTER_LINEAR
        cropped = cv2.resize(cropped, size, interpolation=interpolation)
    brightest = int(cropped.max())
    if 0 < brightest < 255:
        cropped = cv2.convertScaleAbs(cropped, alpha=255.0 / brightest)
    return cropped


def _centre_by_mass(digit):
    """Places the digit in a 28x28 image, its centre of mass on pixel 14.

    The shift is a whole number of pixels, as in MNIST, and is limited so
    that no ink leaves the image.
    """
    moments = cv2.moments(digit)
    height, width = digit.shape
    size = config.IMAGE_SIZE
    centre_x = moments["m10"] / moments["m00"]
    centre_y = moments["m01"] / moments["m00"]
    left = min(max(round(CENTRE - centre_x), 0), size - width)
    top = min(max(round(CENTRE - centre_y), 0), size - height)
    result = np.zeros((size, size), dtype=np.uint8)
    result[top : top + height, left : left + width] = digit
    return result
