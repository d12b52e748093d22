"""Any picture of one handwritten digit, turned into an MNIST image.

MNIST digits are white on black, fitted into a 20x20 box with their aspect
ratio kept, anti-aliased, and placed in a 28x28 image so that their centre of
mass is at the centre. A model trained on them reads a phone photo of a digit
on paper only after the same recipe: dark ink becomes white on black, the
paper's shading and noise go, the digit is cropped, fitted and centred. This
module is that recipe, the one that the client, the server, the tests and
the figures all use:

1. `grey`: any dtype and channel layout to one grey channel, 0..255 as float;
   transparency is composited onto the paper colour; large photos are shrunk
   (area averaging) to a working size, where the digit is looked for. The
   full-resolution grey image is kept for step 5.
2. `denoised`: salt-and-pepper noise (median filter) and sensor noise
   (gaussian blur), each only when it is measured to be there.
3. `ink`: polarity (ink darker or lighter than the paper) and background
   level, or a background map when the lighting is uneven; ink is made the
   bright part, the paper 0.
4. `normalised`: the paper's residual noise is cut off and the ink stretched
   to 0..255 (uint8); specks far from the digit are removed.
5. `cropped`: the digit's ink. A digit no larger than MNIST's box is cropped
   as it is (MNIST digits come back unchanged). A larger one is read again
   at DETAIL_SIZE across, from the full-resolution image when the working
   copy has fewer pixels across it: area-averaged down, or enlarged.
6. `strokes`: for a larger digit, its strokes in black and white, cut where
   each reaches half its own height, and widened or narrowed to MNIST's
   stroke width (`stroke_width`) when measured to be outside MNIST's range.
   A drawing or clean scan (noiseless paper, at full resolution) whose
   strokes are within that range keeps its ink as it is instead, cropped
   where it is half-way up (as web/mnist.js crops a drawing).
7. `fitted`: the longer side scaled to 20, the aspect ratio kept, by area
   averaging, as MNIST's digits were from NIST's black and white scans.
8. `mnist`: the 28x28 result, centred by its centre of mass.

Centre convention: OpenCV's moments put pixel (row, column) at the
coordinate (column, row), so a 28x28 image spans -0.5..27.5 and its geometric
centre is 13.5. MNIST's own digits have their centre of mass between 13.5 and
14.5 on both axes (mean 14.0 over the test set): MNIST moved each digit by a
whole number of pixels so that its centre of mass falls on pixel 14, which
is `IMAGE_SIZE / 2`. This module does the same, so an MNIST digit is not
moved at all and is not blurred by a sub-pixel shift.
"""

import io
import math
import os
import warnings
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import PIL.Image

from mnist_serving import config

# Where the centre of mass goes, in OpenCV pixel coordinates (see above).
CENTRE = config.IMAGE_SIZE / 2

# Larger photos are shrunk by a whole factor so that their longer side has
# at most this many pixels (and more than half as many) before anything
# else: plenty for a digit that fills a tenth of the frame, and it keeps a
# 12-megapixel photo fast. Area averaging also averages noise, and OpenCV
# averages whole blocks of pixels several times faster than fractional ones.
WORKING_SIZE = 512
# Where nothing stands out at WORKING_SIZE, the ink is looked for once more
# at up to this size before the image is called blank.
FINE_WORKING_SIZE = 2048

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

# The border ring that tells the paper's colour, as a fraction of the
# shorter side (at least one pixel).
BORDER_FRACTION = 0.03

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

# A digit larger than MNIST's box is read again at DETAIL_SIZE pixels on its
# longer side (with a margin of DETAIL_MARGIN of its size), from the
# full-resolution image when the working copy has fewer: fine enough for its
# stroke width to be measured and changed, and, as MNIST's digits were,
# area-averaged from black and white down to the box. A digit whose strokes
# measure thinner than THIN_STROKE there is read again at up to
# FINE_DETAIL_SIZE, where a thin pen's line is still above the noise.
DETAIL_SIZE = 4 * config.DIGIT_BOX_SIZE
FINE_DETAIL_SIZE = 4 * DETAIL_SIZE
DETAIL_MARGIN = 0.05

# A stroke's edge is at half the strongest ink within a square of
# LOCAL_PEAK_FRACTION of the digit's size, and never below
# MIN_STROKE_FRACTION of the digit's strongest ink (the PEAK_QUANTILE of its
# ink pixels), nor within the paper's noise.
LOCAL_PEAK_FRACTION = 0.25
MIN_STROKE_FRACTION = 0.25
PEAK_QUANTILE = 0.98
# Holes in the cut strokes smaller than this fraction of the digit's image
# are filled: chalk's grain leaves many; the smallest loops of MNIST's digits
# are several times larger.
SMALL_HOLE = 0.002

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

# stroke_width enlarges images up to STROKE_SMALL_IMAGE pixels (MNIST's), and
# thin strokes, STROKE_ENLARGEMENT times, to no more than
# STROKE_LARGEST_ENLARGED pixels.
STROKE_SMALL_IMAGE = 64
STROKE_ENLARGEMENT = 4
STROKE_LARGEST_ENLARGED = 512

_JPEG_SIGNATURE = b"\xff\xd8\xff"
# The eight neighbours of a pixel, without the pixel itself.
_NEIGHBOURS = np.array([[1, 1, 1], [1, 0, 1], [1, 1, 1]], dtype=np.uint8)


class PreprocessingError(ValueError):
    """The input cannot become an MNIST image: unreadable, not an image, blank."""


# A file's size (config.MAX_FILE_BYTES) is checked before it is read whole,
# and its pixels (config.MAX_IMAGE_PIXELS) before it is decoded: a 20000x20000
# PNG of 2 MB decodes to 1.6 GB, and the steps below take about 20 bytes per
# pixel of an RGBA image. The pixels are read from the header by Pillow, in
# these formats (Pillow's names), which both Pillow and OpenCV read; Radiance
# HDR, PFM and PAM, which OpenCV reads but Pillow does not, are refused.
_HEADER_FORMATS = ("PNG", "JPEG", "TIFF", "WEBP", "BMP", "GIF", "AVIF", "JPEG2000", "PPM", "SUN")


class ImageTooLargeError(PreprocessingError):
    """A file or an image over a size limit; nothing of it was decoded."""


def image_size(encoded: bytes) -> tuple[int, int]:
    """The (width, height) of an encoded image, read from its header alone.

    Pillow parses the header (PNG's IHDR, JPEG's frame header...) without
    decoding a pixel, in well under a millisecond whatever the image's size.

    Raises:
        PreprocessingError: Not an image of a format whose header is read here.
        ImageTooLargeError: Over Pillow's own bound, twice `PIL.Image.MAX_IMAGE_PIXELS`
            (178,956,970 pixels), beyond which it does not report the size.
    """
    try:
        with warnings.catch_warnings():
            # Pillow warns above its MAX_IMAGE_PIXELS; the caller's limit decides.
            warnings.simplefilter("ignore", PIL.Image.DecompressionBombWarning)
            with PIL.Image.open(io.BytesIO(encoded), formats=_HEADER_FORMATS) as header:
                return header.size
    except PIL.Image.DecompressionBombError:
        bound = 2 * PIL.Image.MAX_IMAGE_PIXELS
        raise ImageTooLargeError(
            f"image of more than {bound:,} pixels (Pillow's bound for a decompression bomb)"
        ) from None
    except Exception:  # noqa: BLE001 - Pillow's parsers raise many kinds on bad bytes.
        raise PreprocessingError(
            "not an image OpenCV can read with its size checked first "
            "(PNG, JPEG, TIFF, WebP, BMP, GIF, AVIF, JPEG 2000, PNM, Sun raster)"
        ) from None


def decode_image(encoded: bytes, max_pixels: int = config.MAX_IMAGE_PIXELS) -> np.ndarray:
    """Decodes an image file's bytes into an array, as the file stores it.

    PNG, JPEG, TIFF, WebP, BMP and the other formats of `image_size`, with
    their bit depth and alpha channel. JPEG photos are turned as their EXIF
    orientation says, as a phone's gallery shows them. The image's size is
    read from its header first: an image over `max_pixels` is refused before
    any memory is spent on its pixels.

    Args:
        encoded: The file's bytes (`bytes`, `bytearray` or a uint8 array).
        max_pixels: The most pixels (width x height) an image may have.

    Returns:
        A numpy array (H, W) or (H, W, C), colour channels in BGR(A) order,
        dtype uint8, uint16 or float32.

    Raises:
        ImageTooLargeError: More than `max_pixels` pixels.
        PreprocessingError: The bytes are empty or not an image read here.
    """
    buffer = np.frombuffer(encoded, dtype=np.uint8)
    if buffer.size == 0:
        raise PreprocessingError("empty file: not an image")
    width, height = image_size(encoded)
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"{width}x{height} image ({width * height:,} pixels): "
            f"more than the limit of {max_pixels:,} pixels"
        )
    # IMREAD_UNCHANGED keeps alpha and 16 bits but ignores EXIF orientation,
    # which matters for phone photos; JPEG has no alpha, so it may use flags
    # that apply the orientation.
    if bytes(buffer[: len(_JPEG_SIGNATURE)]) == _JPEG_SIGNATURE:
        flags = cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH
    else:
        flags = cv2.IMREAD_UNCHANGED
    try:
        image = cv2.imdecode(buffer, flags)
    except cv2.error:
        image = None
    if image is None or image.size == 0:
        raise PreprocessingError("not an image OpenCV can read")
    return image


def read_file(path: str | Path, max_bytes: int = config.MAX_FILE_BYTES) -> bytes:
    """The bytes of a file, refused unread when it holds more than `max_bytes`.

    The size is taken from the open file before reading, and at most one
    byte more than the limit is ever read (a file that grows, or a device).

    Raises:
        ImageTooLargeError: More than `max_bytes` bytes.
        PreprocessingError: The file cannot be read.
    """
    path = Path(path)
    try:
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            encoded = file.read(max_bytes + 1) if size <= max_bytes else b""
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise PreprocessingError(f"cannot read {path}: {reason}") from None
    if size > max_bytes:
        raise ImageTooLargeError(
            f"{path}: file of {size:,} bytes: more than the limit of {max_bytes:,} bytes"
        )
    if len(encoded) > max_bytes:  # A device, or a file that grew while it was read.
        raise ImageTooLargeError(f"{path}: more than the limit of {max_bytes:,} bytes read")
    return encoded


def read_image(
    path: str | Path,
    max_file_bytes: int = config.MAX_FILE_BYTES,
    max_pixels: int = config.MAX_IMAGE_PIXELS,
) -> np.ndarray:
    """Reads an image file as it is stored (any format, depth and channels).

    The file is read in Python and decoded from memory, which also works
    for paths that `cv2.imread` cannot open (non-ASCII names on Windows).

    Args:
        path: The image file.
        max_file_bytes: The largest file read, in bytes (see `read_file`).
        max_pixels: The most pixels decoded (see `decode_image`).

    Returns:
        The image array, as `decode_image` returns it.

    Raises:
        ImageTooLargeError: The file or the image is over its limit.
        PreprocessingError: The file cannot be read or is not an image.
    """
    encoded = read_file(path, max_file_bytes)
    try:
        return decode_image(encoded, max_pixels)
    except PreprocessingError as error:
        raise type(error)(f"{path}: {error}") from None


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
        factor, paper, signed, levels, stretched = _find_ink(full, scale, FINE_WORKING_SIZE, record)
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
        cropped = _digit_detail(full, scale, factor, box, paper, signed, levels, specks)
        strokes = _cut_strokes(cropped)
        relative_width = _relative_width(strokes)
        full_size = max(width, height) * factor
        if relative_width < THIN_STROKE and full_size > DETAIL_SIZE:
            # A thin pen's line is fainter than its noise once averaged down
            # to DETAIL_SIZE: it is cut again where it is still whole.
            size = min(FINE_DETAIL_SIZE, full_size)
            cropped = _digit_detail(full, scale, factor, box, paper, signed, levels, specks, size)
            strokes = _cut_strokes(cropped)
            relative_width = _relative_width(strokes)
        paper_level, floor, _ = levels
        if factor == 1 and floor == paper_level and THIN_STROKE <= relative_width <= THICK_STROKE:
            # A drawing or a clean scan (noiseless paper, at full
            # resolution) whose strokes have MNIST's width is fitted from
            # its ink as it is, as the web page fits a drawing.
            strokes = _half_way_crop(ink)
        else:
            strokes = _with_mnist_stroke_width(strokes, relative_width)
    record("cropped", cropped)
    record("strokes", strokes)
    fitted = _fit_to_box(strokes)
    record("fitted", fitted)
    result = _centre_by_mass(fitted)
    record("mnist", result)
    return result


def _ignore(name, value):
    """Stands in for `steps[name] = value` when no steps are asked for."""


def _find_ink(full, scale, working_size, record):
    """Steps 1 to 4 on a working copy of at most `working_size` pixels.

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
    paper = _measure_paper(grey)
    signed = _signed_ink(grey, paper, paper.background)
    record("ink", np.clip(signed, 0, 255))
    levels = _ink_levels(signed)
    stretched = _stretch(signed, levels)
    if paper.background is not None:
        # The first map's disc is sized for the largest digit; a shadow's
        # edge narrower than it is taken for ink. The map is made again with
        # a disc a few of the ink's strokes wide, which keeps those edges.
        bright = 255.0 - grey if paper.dark_ink else grey
        background = _stroke_sized_background(bright, stretched)
        if background is not None:
            paper = paper._replace(background=background)
            signed = _signed_ink(grey, paper, background)
            record("ink", np.clip(signed, 0, 255))
            levels = _ink_levels(signed)
            stretched = _stretch(signed, levels)
    return factor, paper, signed, levels, stretched


def _stroke_sized_background(bright, ink):
    """The paper's map (`_estimate_background`) again, with a disc
    BACKGROUND_STROKES times as wide as the strokes of `ink` (the uint8 ink
    found with the first map); None when that disc is not much smaller than
    the image.

    It is opened on a thumbnail shrunk so that the disc measures about
    BACKGROUND_DISC_PIXELS across, and not blurred: an opening keeps a
    shadow's edge where it is, a blur would move it into the ink.
    """
    diameter = BACKGROUND_STROKES * max(_mean_distance_width(ink.astype(np.float32)), 1.0)
    factor = max(1, int(diameter // BACKGROUND_DISC_PIXELS))
    radius = max(1, round(diameter / factor / 2))
    if 2 * radius + 1 >= max(bright.shape) // factor / 2:
        return None
    return _estimate_background(bright, factor, radius, blur_sigma=0)


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


def _quantiles(values, fractions):
    """Values below which the given fractions of `values` lie (no interpolation).

    A plain sort: `np.percentile`'s overhead would dominate the time for a
    28x28 image, and `np.partition` is very slow on the many equal values
    of a black background.
    """
    ordered = np.sort(values, axis=None)
    last = ordered.size - 1
    return [float(ordered[min(last, max(0, round(fraction * last)))]) for fraction in fractions]


def _subsample(array, count=4096):
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
    return 1.4826 * deviation


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
    ring = max(1, round(BORDER_FRACTION * min(height, width)))
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
    if not (uneven and min(grey.shape) >= LIGHTING_MIN_SIZE):
        return _Paper(dark_ink, 255.0 - paper if dark_ink else paper, None)
    dark_ink = _ink_is_dark(grey)
    level = 255.0 - paper if dark_ink else paper
    return _Paper(dark_ink, level, _estimate_background(255.0 - grey if dark_ink else grey))


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


def _estimate_background(grey, factor=None, radius=None, blur_sigma=LIGHTING_BLUR_SIGMA):
    """The paper's brightness map under uneven light, ink removed.

    On a thumbnail (see `_lighting_thumbnail` for `factor` and `radius`), a
    morphological opening with a disc wider than any stroke removes the
    (bright) ink and keeps the slowly varying paper; a blur of `blur_sigma`
    smooths the disc's corners away; the map is scaled back up.
    """
    extended, disc, margin = _lighting_thumbnail(grey, factor, radius)
    smooth = cv2.morphologyEx(extended, cv2.MORPH_OPEN, disc, borderType=cv2.BORDER_REPLICATE)
    if blur_sigma:
        smooth = cv2.GaussianBlur(smooth, (0, 0), blur_sigma, borderType=cv2.BORDER_REPLICATE)
    smooth = np.ascontiguousarray(smooth[margin:-margin, margin:-margin])
    return cv2.resize(smooth, grey.shape[::-1], interpolation=cv2.INTER_LINEAR)


def _ink_is_dark(grey):
    """Whether the ink is darker than the paper, judged under uneven light.

    The border's median can be the shadow's or the light's, so each pixel of
    the lighting thumbnail is compared with its own neighbourhood instead:
    the median over the background's disc, which is paper as long as ink
    covers less than half of it. Light multiplies paper and ink alike, so the
    comparison is a ratio: dark ink absorbs most of the light where it is,
    light ink on a dark board reflects several times as much, while a
    shadow's edge only changes the light by a fraction.
    """
    extended, disc, margin = _lighting_thumbnail(grey)
    levels = cv2.convertScaleAbs(extended)
    paper = cv2.medianBlur(levels, disc.shape[0])
    inside = (slice(margin, -margin), slice(margin, -margin))
    ratio = np.log((levels[inside] + np.float32(1)) / (paper[inside] + np.float32(1)))
    return bool(-ratio.min() > ratio.max())


def _lighting_thumbnail(grey, factor=None, radius=None):
    """A thumbnail for the lighting, shrunk by `factor` (by default to
    LIGHTING_THUMBNAIL_SIZE); the disc of `radius` on it (by default
    LIGHTING_KERNEL_FRACTION of it, wider than any stroke); and the margin it
    is extended by.

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
    radius = radius or max(1, round(LIGHTING_KERNEL_FRACTION * max(rows, columns) / 2))
    diameter = 2 * radius + 1
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (diameter, diameter))
    margin = 2 * radius
    extended = np.pad(thumbnail, margin, mode="reflect", reflect_type="odd")
    return extended, disc, margin


def _ink_levels(signed_ink):
    """The signed ink strengths that become 0 (the paper) and 255 (the
    strongest ink); checks that there is ink.

    The paper's level plus its noise becomes 0 and the strongest ink 255.
    For an MNIST image both are already 0 and 255, so nothing changes.

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
    ink_pixels = signed_ink[signed_ink > ink_threshold]
    if ink_pixels.size < MIN_INK_PIXELS:
        raise PreprocessingError("blank image: no ink found")
    ink_fraction = ink_pixels.size / signed_ink.size
    if ink_fraction > MAX_INK_FRACTION:
        raise PreprocessingError(
            f"blank image: no ink found ({ink_fraction:.0%} of the image stands out)"
        )
    floor = paper_level + PAPER_NOISE_SIGMAS * paper_noise
    peak = min(float(ink_pixels.max()), 255.0)
    return paper_level, floor, 255.0 / (peak - floor)


def _stretch(signed_ink, levels):
    """uint8 ink from 0 (paper) to 255 (the strongest ink)."""
    _, floor, gain = levels
    stretched = (signed_ink - np.float32(floor)) * np.float32(gain)
    return np.rint(np.clip(stretched, 0, 255)).astype(np.uint8)


def _remove_specks(ink):
    """Zeroes pieces of ink that are small and far from the digit.

    Raises:
        PreprocessingError: Nothing is left (cannot happen after
            `_ink_levels`, but a blank result must never pass).
    """
    count, labels, stats, _ = cv2.connectedComponentsWithStats(
        (ink > 0).view(np.uint8), connectivity=8
    )
    if count <= 1:
        raise PreprocessingError("blank image: no ink found")
    if count == 2:
        return ink
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


def _digit_detail(grey, scale, factor, box, paper, signed_ink, levels, specks, size=None):
    """The digit's ink at `size` (DETAIL_SIZE by default), from the largest
    resolution it needs.

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
        float32 ink strength: about 0 on the paper (its noise either way),
        about 255 on the strongest ink (more where the working size averaged
        a thin line away).
    """
    left, top, width, height = box
    margin = max(1, round(DETAIL_MARGIN * max(width, height)))
    rows = slice(max(0, top - margin), min(specks.shape[0], top + height + margin))
    columns = slice(max(0, left - margin), min(specks.shape[1], left + width + margin))
    removed = cv2.dilate((specks[rows, columns] > 0).view(np.uint8), _NEIGHBOURS)
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
    removed = cv2.resize(removed, detail.shape[::-1], interpolation=cv2.INTER_NEAREST)
    # Not clipped at 0: the paper's noise is measured on it.
    return np.where(removed > 0, 0, detail).astype(np.float32)


def _half_way_crop(ink):
    """uint8 ink cropped to where it reaches half its strongest level, as
    the web page crops a drawing (web/mnist.js)."""
    half_way = (ink >= (int(ink.max()) + 1) // 2).view(np.uint8)
    left, top, width, height = cv2.boundingRect(half_way)
    return ink[top : top + height, left : left + width]


def _resized(image, ratio):
    """The image scaled by `ratio`: area averaging to shrink, linear to enlarge."""
    size = (max(1, round(image.shape[1] * ratio)), max(1, round(image.shape[0] * ratio)))
    interpolation = cv2.INTER_AREA if ratio < 1 else cv2.INTER_LINEAR
    return cv2.resize(image, size, interpolation=interpolation)


def _cut_strokes(detail):
    """The pen's strokes: where the ink reaches half its own height.

    Each stroke's edge is where it reaches half of the strongest ink around
    it (a square of LOCAL_PEAK_FRACTION of the digit's size), so a faint
    stroke keeps its width beside a strong one, and blur moves no edge.
    MNIST's digits were made from black-and-white NIST scans in the same way.

    Returns:
        uint8 0/255 strokes, cropped to them.
    """
    # The paper's noise, measured again at this size on the border ring
    # (paper: the digit's box had a margin): nothing within it is ink.
    border = _subsample(_border(detail))
    (paper_level,) = _quantiles(border, (0.5,))
    floor = paper_level + PAPER_NOISE_SIGMAS * _spread(border)
    inked = detail[detail > floor]
    if inked.size == 0:
        raise PreprocessingError("blank image: no ink found")
    (peak,) = _quantiles(_subsample(inked), (PEAK_QUANTILE,))
    # A square window: OpenCV takes the maximum over it row by row and then
    # column by column, many times faster than over a disc.
    window = 2 * round(LOCAL_PEAK_FRACTION * max(detail.shape) / 2) + 1
    local_peak = cv2.dilate(detail, np.ones((window, window), np.uint8))
    lowest = max(MIN_STROKE_FRACTION * peak, floor)
    threshold = np.maximum(local_peak * np.float32(0.5), np.float32(lowest))
    strokes = (detail >= threshold).view(np.uint8)
    # Pinholes (chalk's grain, JPEG's ringing) are filled where most of a
    # pixel's neighbours are ink; a hairline one pixel wide stays.
    strokes = np.maximum(strokes, cv2.medianBlur(strokes, 3))
    return _cropped(_without_small_holes(strokes))


def _without_small_holes(strokes):
    """0/1 strokes with their small holes filled: pieces of paper enclosed by
    ink and smaller than SMALL_HOLE of the image (chalk's grain; a digit's
    loops are larger)."""
    _, labels, stats, _ = cv2.connectedComponentsWithStats(1 - strokes, connectivity=4)
    height, width = strokes.shape
    left, top = stats[:, cv2.CC_STAT_LEFT], stats[:, cv2.CC_STAT_TOP]
    right = left + stats[:, cv2.CC_STAT_WIDTH]
    bottom = top + stats[:, cv2.CC_STAT_HEIGHT]
    enclosed = (left > 0) & (top > 0) & (right < width) & (bottom < height)
    small = enclosed & (stats[:, cv2.CC_STAT_AREA] < SMALL_HOLE * strokes.size)
    small[0] = False  # Label 0: the ink itself.
    if not small.any():
        return strokes
    return np.where(small[labels], np.uint8(1), strokes)


def _relative_width(strokes):
    """`stroke_width` over the strokes' longer side."""
    return stroke_width(strokes) / max(strokes.shape)


def _with_mnist_stroke_width(strokes, width):
    """Strokes widened or narrowed to MNIST's width when their `width`
    (`_relative_width`) is outside MNIST's range, THIN_STROKE..THICK_STROKE."""
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


def stroke_width(digit: np.ndarray) -> float:
    """The average width of a digit's strokes, in the image's pixels.

    The ink is what reaches half the image's brightest level (white on black,
    as `to_mnist` returns it); each ink pixel's distance to the nearest
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
    """4 x (mean distance of the ink to the background - 1/2): see stroke_width."""
    ink = (digit >= digit.max() / 2).view(np.uint8)
    distance = cv2.distanceTransform(
        cv2.copyMakeBorder(ink, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0),
        cv2.DIST_L2,
        cv2.DIST_MASK_PRECISE,
    )
    return 4 * (float(distance[1:-1, 1:-1][ink > 0].mean()) - 0.5)


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
