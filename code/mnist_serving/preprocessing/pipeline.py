"""The recipe's steps composed: `to_mnist` on a decoded image, `preprocess_file`
on a file (see the package's docstring for the steps)."""

from pathlib import Path

import cv2
import numpy as np

from mnist_serving import config
from mnist_serving.preprocessing.errors import PreprocessingError
from mnist_serving.preprocessing.fitting import _centre_by_mass, _fit_to_box, _half_way_crop
from mnist_serving.preprocessing.grey import _to_grey, _working_copy
from mnist_serving.preprocessing.ink import (
    _ink_levels,
    _remove_specks,
    _signed_ink,
    _stretch,
    _suppress_noise,
)
from mnist_serving.preprocessing.paper import (
    _hairline_paper,
    _measure_paper,
    _stroke_sized_background,
)
from mnist_serving.preprocessing.reading import read_image
from mnist_serving.preprocessing.strokes import (
    DETAIL_SIZE,
    FINE_DETAIL_SIZE,
    THICK_STROKE,
    THIN_STROKE,
    _cut_strokes,
    _digit_detail,
    _relative_width,
    _with_mnist_stroke_width,
)

# Larger photos are shrunk by a whole factor so that their longer side has
# at most this many pixels (and more than half as many) before anything
# else: plenty for a digit that fills a tenth of the frame, and it keeps a
# 12-megapixel photo fast. Area averaging also averages noise, and OpenCV
# averages whole blocks of pixels several times faster than fractional ones.
WORKING_SIZE = 512
# Where nothing stands out at WORKING_SIZE, the ink is looked for once more
# at up to this size before the image is called blank.
FINE_WORKING_SIZE = 2048


def preprocess_file(
    path: str | Path,
    max_file_bytes: int = config.MAX_FILE_BYTES,
    max_pixels: int = config.MAX_IMAGE_PIXELS,
) -> np.ndarray:
    """Reads an image file and returns its digit in MNIST form.

    Args:
        path: The image file (any format OpenCV reads).
        max_file_bytes: The largest file read (see `read_file`).
        max_pixels: The most pixels decoded (see `decode_image`).

    Returns:
        uint8 array (28, 28): white digit on black, as in MNIST.

    Raises:
        ImageTooLargeError: The file or the image is over its limit.
        PreprocessingError: The file is unreadable, not an image, or blank.
    """
    image = read_image(path, max_file_bytes, max_pixels)
    try:
        return to_mnist(image)
    except PreprocessingError as error:
        raise PreprocessingError(f"{path}: {error}") from None


def to_mnist(image: np.ndarray, steps: dict | None = None) -> np.ndarray:
    """Turns a decoded image of one digit into an MNIST image.

    Args:
        image: A numpy array (H, W) or (H, W, C) with 1 (grey), 2 (grey and
            alpha), 3 (BGR) or 4 (BGRA) channels; uint8, uint16, bool or
            float (0..1). An image already in MNIST form comes back unchanged,
            or one grey level brighter when its brightest pixel is below 255;
            the exception is a speck far from the digit, which is removed (0.3%
            of MNIST's test digits keep one in a corner).
        steps: Optional dict. When given, it receives the intermediate
            images by step name (`grey`, `denoised`, `ink`, `normalised`,
            `cropped`, `strokes`, `fitted`, `mnist`), for figures and
            debugging.

    Returns:
        uint8 array (28, 28): the digit white on black, its longer side 20
        pixels, its centre of mass on pixel (14, 14); its brightest pixel 255.

    Raises:
        PreprocessingError: The array is not an image, or no ink stands out
            from the background (a blank or pure-noise image).
    """
    record = steps.__setitem__ if steps is not None else _ignore
    full, scale = _to_grey(image)
    try:
        factor, paper, signed, levels, stretched = _find_ink(full, scale, WORKING_SIZE, record)
    except PreprocessingError:
        if max(full.shape) <= WORKING_SIZE:
            raise
        # A line thinner than the working copy's pixels can average away
        # below the paper's noise: a finer copy is searched before the
        # photo is called blank.
        factor, paper, signed, levels, stretched = _find_ink(
            full, scale, FINE_WORKING_SIZE, record, hairline=True
        )
    ink = _remove_specks(stretched)
    record("normalised", ink)
    left, top, width, height = cv2.boundingRect(ink)
    if max(width, height) * factor <= config.DIGIT_BOX_SIZE:
        # At MNIST's size or smaller: nothing finer to be had (MNIST digits
        # take this way and come back as they are).
        cropped = strokes = ink[top : top + height, left : left + width]
    else:
        box = (left, top, width, height)
        specks = cv2.subtract(stretched, ink)
        cropped, found = _digit_detail(full, scale, factor, box, paper, signed, levels, ink, specks)
        cut = _cut_strokes(cropped, found)
        relative_width = _relative_width(cut.strokes)
        full_size = max(width, height) * factor
        if relative_width < THIN_STROKE and full_size > DETAIL_SIZE:
            # A thin pen's line is fainter than its noise once averaged down
            # to DETAIL_SIZE: it is cut again where it is still whole.
            size = min(FINE_DETAIL_SIZE, full_size)
            cropped, found = _digit_detail(
                full, scale, factor, box, paper, signed, levels, ink, specks, size
            )
            cut = _cut_strokes(cropped, found)
            relative_width = _relative_width(cut.strokes)
        paper_level, floor, _ = levels
        if factor == 1 and floor == paper_level and THIN_STROKE <= relative_width <= THICK_STROKE:
            # A drawing or a clean scan (noiseless paper, at full
            # resolution) whose strokes have MNIST's width is fitted from
            # its ink as it is, as the web page fits a drawing.
            strokes = _half_way_crop(ink)
        else:
            strokes = _with_mnist_stroke_width(cropped, found, cut, relative_width)
    record("cropped", cropped)
    record("strokes", strokes)
    fitted = _fit_to_box(strokes)
    record("fitted", fitted)
    result = _centre_by_mass(fitted)
    record("mnist", result)
    return result


def _ignore(name, value):
    """Stands in for `steps[name] = value` when no steps are asked for."""


def _record_ink(record, signed):
    """Records the signed ink, clipped to 0..255, when steps are asked for
    (the clip of a whole working copy would cost as much as a step)."""
    if record is not _ignore:
        record("ink", np.clip(signed, 0, 255))


def _find_ink(full, scale, working_size, record, hairline=False):
    """Steps 1 to 4 on a working copy of at most `working_size` pixels.

    With `hairline`, the ink is measured against the paper's median a few
    pixels around (`_hairline_paper`): a line a pixel or two wide stands out
    from it, the paper's blotches and light do not.

    Returns:
        (factor the copy was shrunk by, paper, signed ink, ink levels,
        stretched uint8 ink).

    Raises:
        PreprocessingError: No ink stands out from the paper.
    """
    grey, factor = _working_copy(full, scale, working_size)
    record("grey", grey)
    grey = _suppress_noise(grey)
    record("denoised", grey)
    paper = _hairline_paper(grey) if hairline else _measure_paper(grey)
    signed = _signed_ink(grey, paper, paper.background)
    _record_ink(record, signed)
    levels = _ink_levels(signed, mapped=paper.background is not None)
    stretched = _stretch(signed, levels)
    if paper.background is not None and not hairline and not _lone_inner_piece(stretched):
        paper, signed, levels, stretched = _with_stroke_sized_map(
            grey, paper, signed, levels, stretched, record
        )
    return factor, paper, signed, levels, stretched


def _lone_inner_piece(ink):
    """Whether `ink` (found with the first map of the paper) is one piece
    clear of the image's border.

    The first map is too coarse for a sharp shadow: what it leaves of the
    shadow's edge stands out as ink where the edge meets the border, or as
    crumbs beside the digit. Ink in one piece clear of the border holds no
    such remains; the second map, a fifth of the recipe's time, is then not
    made.
    """
    if ink[0].any() or ink[-1].any() or ink[:, 0].any() or ink[:, -1].any():
        return False
    return cv2.connectedComponents((ink > 0).view(np.uint8), connectivity=8)[0] == 2


def _with_stroke_sized_map(grey, paper, signed, levels, stretched, record):
    """(paper, signed ink, ink levels, stretched ink) against a second map of
    the paper, its disc a few of the ink's strokes wide; those given, found
    with the first map, where no second map is made or no ink stands out
    against it.

    The first map's disc is sized for the largest digit, and a shadow's edge
    narrower than it is taken for ink; the second map keeps those edges. It
    can leave part of a soft shadow standing along the border, whose spread
    then passes for the paper's noise and buries the ink.
    """
    bright = 255.0 - grey if paper.dark_ink else grey
    background = _stroke_sized_background(bright, stretched)
    if background is None:
        return paper, signed, levels, stretched
    finer_paper = paper._replace(background=background)
    finer_signed = _signed_ink(grey, finer_paper, background)
    try:
        finer_levels = _ink_levels(finer_signed, mapped=True)
    except PreprocessingError:
        return paper, signed, levels, stretched
    _record_ink(record, finer_signed)
    return finer_paper, finer_signed, finer_levels, _stretch(finer_signed, finer_levels)
