"""Step 1 of the recipe: any image to one grey channel, 0..255, transparency
composited onto the paper, and the shrunk working copy the ink is looked for in."""

import math

import cv2
import numpy as np

from mnist_serving.preprocessing.errors import PreprocessingError


def _to_grey(image):
    """One grey channel at full resolution, alpha composited onto the paper.

    Returns:
        (grey, scale): grey at its stored depth (uint8, uint16) or float32,
        and the factor that maps its values to 0..255.
    """
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (2, 3, 4)):
        raise PreprocessingError(f"not an image: array of shape {list(array.shape)}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise PreprocessingError("not an image: it has no pixels")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    colour_channels = 3 if array.ndim == 3 and array.shape[2] >= 3 else 1
    if array.ndim == 2:
        colour = array
    elif colour_channels == 1:
        colour = array[:, :, 0]
    else:
        colour = array[:, :, :3]
    alpha = array[:, :, colour_channels] if array.ndim == 3 and array.shape[2] in (2, 4) else None
    scale = level_scale(colour)
    if alpha is not None and alpha.min() >= _full_scale(alpha):
        alpha = None  # Fully opaque: the alpha channel changes nothing.
    if alpha is None:
        # Grey at the stored depth (fast); made float only when needed.
        if colour.dtype not in (np.uint8, np.uint16):
            colour = _as_float32(colour)
        if colour_channels == 3:
            colour = cv2.cvtColor(np.ascontiguousarray(colour), cv2.COLOR_BGR2GRAY)
        return colour, scale
    grey = _as_float32(colour) * np.float32(scale)
    if colour_channels == 3:
        grey = cv2.cvtColor(grey, cv2.COLOR_BGR2GRAY)
    opacity = np.clip(_as_float32(alpha) / np.float32(_full_scale(alpha)), 0, 1)
    return _composite_on_paper(grey, opacity), 1.0


def _working_copy(grey, scale, working_size):
    """The float32 0..255 copy that the ink is looked for in, no larger than
    `working_size`, and the whole factor it was shrunk by."""
    if grey.dtype in (np.uint8, np.uint16):
        # Shrunk at the stored depth: faster than as floats.
        small, factor = _shrink(np.ascontiguousarray(grey), working_size)
        return _as_float32(small) * np.float32(scale), factor
    return _shrink(_as_float32(grey) * np.float32(scale), working_size)


def _as_float32(array):
    """float32 copy of an array (OpenCV works on float32, not float64)."""
    return np.ascontiguousarray(array, dtype=np.float32)


def level_scale(colour: np.ndarray) -> np.ndarray:
    """The factor that maps the stored pixel values to 0..255.

    Integers are scaled by the bits they use (16-bit 0..65535 by 255/65535,
    12-bit data in a 16-bit file by 255/4095), never truncated; floats are
    taken as 0..1, or scaled by their maximum when larger.
    """
    if colour.dtype == np.uint8:
        return 1.0
    if np.issubdtype(colour.dtype, np.integer):
        if colour.min() < 0:
            raise PreprocessingError(f"not an image: negative {colour.dtype} pixels")
        bits = max(8, int(colour.max()).bit_length())
        return 255.0 / (2**bits - 1)
    if np.issubdtype(colour.dtype, np.floating):
        if not np.isfinite(colour).all():
            raise PreprocessingError("not an image: pixels that are NaN or infinite")
        if colour.min() < 0:
            raise PreprocessingError("not an image: negative pixels")
        largest = float(colour.max())
        return 255.0 if largest <= 1.0 else 255.0 / largest
    raise PreprocessingError(f"not an image: pixels of type {colour.dtype}")


def _full_scale(alpha):
    """The alpha value that means fully opaque for this dtype."""
    if np.issubdtype(alpha.dtype, np.integer):
        return np.iinfo(alpha.dtype).max
    return 1.0


def _composite_on_paper(grey, opacity):
    """Puts a partly transparent grey image onto paper of a fitting colour.

    When most of the image is opaque, it shows the paper (a photo with
    transparent corners), and the transparent parts get the paper's grey.
    When most of it is transparent, the opaque pixels are the drawing: the
    paper is white under dark ink and black under light ink.
    """
    opaque = opacity > 0.5
    opaque_count = int(np.count_nonzero(opaque))
    if opaque_count == 0:
        return np.full_like(grey, 255.0)  # Nothing drawn: blank white paper.
    if opaque_count >= 0.5 * opaque.size:
        paper = float(np.median(grey[opaque]))
    else:
        drawing = float(np.average(grey, weights=opacity))
        paper = 255.0 if drawing < 128 else 0.0
    return grey * opacity + np.float32(paper) * (1 - opacity)


def _shrink(grey, working_size):
    """Shrinks images larger than `working_size` by a whole factor (area
    mean); returns the image and the factor.

    The last rows and columns that do not fill a whole block are dropped:
    fewer than the factor, a sliver of the border.
    """
    height, width = grey.shape
    factor = math.ceil(max(height, width) / working_size)
    if factor == 1:
        return grey, 1
    height, width = max(1, height // factor), max(1, width // factor)
    whole_blocks = grey[: height * factor, : width * factor]
    return cv2.resize(whole_blocks, (width, height), interpolation=cv2.INTER_AREA), factor
