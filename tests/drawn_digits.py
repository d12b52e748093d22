"""Digits drawn with OpenCV, and what the preprocessing tests check of its results."""

import cv2
import numpy as np

from mnist_serving import config, preprocessing

SIZE = config.IMAGE_SIZE
BOX = config.DIGIT_BOX_SIZE
# First and last row or column of the central box that holds the digit.
BOX_FIRST = (SIZE - BOX) // 2
BOX_LAST = BOX_FIRST + BOX - 1


def draw_digit(digit, size=(200, 200), scale=5.0, thickness=12, ink=0, paper=255, centre=None):
    """A grey image with `digit` written by OpenCV's Hershey font.

    Args:
        size: (height, width) of the image.
        centre: (x, y) of the text's centre in pixels; the image's centre
            when None.
    """
    height, width = size
    image = np.full((height, width), paper, dtype=np.uint8)
    (text_width, text_height), _ = cv2.getTextSize(
        str(digit), cv2.FONT_HERSHEY_SIMPLEX, scale, thickness
    )
    centre_x, centre_y = centre or (width / 2, height / 2)
    origin = (round(centre_x - text_width / 2), round(centre_y + text_height / 2))
    cv2.putText(
        image, str(digit), origin, cv2.FONT_HERSHEY_SIMPLEX, scale, ink, thickness, cv2.LINE_AA
    )
    return image


def centre_of_mass(image):
    """(x, y) of the intensity-weighted centre of mass, OpenCV coordinates."""
    moments = cv2.moments(image)
    return moments["m10"] / moments["m00"], moments["m01"] / moments["m00"]


def ink_match(first, second):
    """How well two digits' ink agrees, allowing one pixel of displacement.

    The smaller of: the share of the first's ink (half intensity or more)
    within one pixel of the second's, and the other way round. 1 is a
    perfect match; a digit against another digit scores about 0.5.
    """
    first, second = (first >= 128).astype(np.uint8), (second >= 128).astype(np.uint8)
    square = np.ones((3, 3), dtype=np.uint8)
    first_covered = np.count_nonzero(first & cv2.dilate(second, square)) / np.count_nonzero(first)
    second_covered = np.count_nonzero(second & cv2.dilate(first, square)) / np.count_nonzero(second)
    return min(first_covered, second_covered)


def ink_iou(first, second):
    """Intersection over union of the pixels at half intensity or more."""
    first, second = first >= 128, second >= 128
    return np.count_nonzero(first & second) / np.count_nonzero(first | second)


def pieces_of_paper(strokes):
    """The pieces of paper that uint8 0/255 strokes leave, the one around
    them included."""
    paper = cv2.copyMakeBorder(255 - strokes, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=255)
    return cv2.connectedComponents(paper, connectivity=4)[0] - 1


def assert_mnist_form(image, box_slack=2):
    """MNIST form: uint8 28x28, black background, white digit of longer side
    20 inside the central 20x20 box (give or take `box_slack` pixels for
    digits whose mass is not at their middle), centre of mass on pixel 14."""
    assert image.shape == (SIZE, SIZE)
    assert image.dtype == np.uint8
    assert image.max() == 255
    # Background: the outer ring is black, and most pixels are.
    assert not image[0].any() and not image[-1].any()
    assert not image[:, 0].any() and not image[:, -1].any()
    assert np.median(image) == 0
    # Whole-pixel shifts put the centre of mass within half a pixel of 14.
    centre_x, centre_y = centre_of_mass(image)
    assert abs(centre_x - preprocessing.CENTRE) <= 0.5
    assert abs(centre_y - preprocessing.CENTRE) <= 0.5
    left, top, width, height = cv2.boundingRect(image)
    assert max(width, height) in (BOX - 1, BOX)
    assert left >= BOX_FIRST - box_slack and top >= BOX_FIRST - box_slack
    assert left + width - 1 <= BOX_LAST + box_slack
    assert top + height - 1 <= BOX_LAST + box_slack


def assert_one_line_error(error, start):
    """The error message starts with `start` and fits on one line."""
    message = str(error.value)
    assert message.startswith(start)
    assert "\n" not in message
