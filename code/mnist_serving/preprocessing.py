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
   (area averaging) to a working size.
2. `denoised`: salt-and-pepper noise (median filter) and sensor noise
   (gaussian blur), each only when it is measured to be there.
3. `ink`: polarity (ink darker or lighter than the paper) and background
   level, or a background map when the lighting is uneven; ink is made the
   bright part, the paper 0.
4. `normalised`: the paper's residual noise is cut off and the ink stretched
   to 0..255 (uint8); specks far from the digit are removed; pen strokes far
   thinner or thicker than MNIST's, for the digit's size, are brought closer.
5. `cropped`: the bounding box of the ink.
6. `fitted`: the longer side scaled to 20, the aspect ratio kept.
7. `mnist`: the 28x28 result, centred by its centre of mass.

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
# opening with a disc a third of the thumbnail's size, wider than any stroke.
UNEVEN_LIGHTING = 0.1
LIGHTING_MIN_SIZE = 2 * config.IMAGE_SIZE
LIGHTING_THUMBNAIL_SIZE = 64
LIGHTING_KERNEL_FRACTION = 1 / 3

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

# Stroke width relative to the digit's longer side, as measured on the ink
# mask (twice the area over the outline length). MNIST digits, enlarged to a
# photo's resolution, measure 0.11 (median), 0.08 (10th percentile), 0.13
# (75th) and 0.17 (95th). A ballpoint line on a large digit measures a
# fifth of the median and would fade to a faint hairline at 20x20; a marker
# can measure twice the median and close the digit's loops. Strokes outside
# 0.08..0.17 are brought to the median, or to the 75th percentile when
# narrowing (gently: a min filter can cut a thin join). Digits that are not
# LARGE_DIGIT are left as they are: they are near MNIST's scale already,
# where one pixel is a large change.
THIN_STROKE = 0.08
THIN_STROKE_TARGET = 0.11
THICK_STROKE = 0.17
THICK_STROKE_TARGET = 0.13

# A digit more than twice MNIST's box at working size is "large": it will be
# shrunk by more than 2 and area-averaged, as NIST's scans were.
LARGE_DIGIT = 2 * config.DIGIT_BOX_SIZE

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


def preprocess_file(path: str | Path) -> np.ndarray:
    """Reads an image file and returns its digit in MNIST form.

    Args:
        path: The image file (any format OpenCV reads).

    Returns:
        uint8 array (28, 28): white digit on black, as in MNIST.

    Raises:
        PreprocessingError: The file is unreadable, not an image, or blank.
    """
    image = read_image(path)
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
            `cropped`, `fitted`, `mnist`), for figures and debugging.

    Returns:
        uint8 array (28, 28): the digit white on black, its longer side 20
        pixels, its centre of mass on pixel (14, 14); its brightest pixel 255.

    Raises:
        PreprocessingError: The array is not an image, or no ink stands out
            from the background (a blank or pure-noise image).
    """
    record = steps.__setitem__ if steps is not None else _ignore
    grey = _to_grey(image)
    record("grey", grey)
    grey = _suppress_noise(grey)
    record("denoised", grey)
    ink = _separate_ink(grey)
    record("ink", np.clip(ink, 0, 255))
    ink = _normalise_contrast(ink)
    ink = _remove_specks(ink)
    ink = _normalise_stroke_width(ink)
    record("normalised", ink)
    cropped = _crop_to_ink(ink)
    record("cropped", cropped)
    fitted = _fit_to_box(cropped)
    record("fitted", fitted)
    result = _centre_by_mass(fitted)
    record("mnist", result)
    return result


def _ignore(name, value):
    """Stands in for `steps[name] = value` when no steps are asked for."""


def _to_grey(image):
    """One grey channel, float32 0..255, alpha composited onto the paper,
    no larger than WORKING_SIZE."""
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
        # Grey and shrunk at the stored depth (fast), then made float.
        if colour_channels == 3:
            colour = cv2.cvtColor(np.ascontiguousarray(colour), cv2.COLOR_BGR2GRAY)
        if colour.dtype in (np.uint8, np.uint16):
            colour = _shrink_to_working_size(np.ascontiguousarray(colour))
        return _shrink_to_working_size(_as_float32(colour) * np.float32(scale))
    grey = _as_float32(colour) * np.float32(scale)
    if colour_channels == 3:
        grey = cv2.cvtColor(grey, cv2.COLOR_BGR2GRAY)
    opacity = np.clip(_as_float32(alpha) / np.float32(_full_scale(alpha)), 0, 1)
    return _shrink_to_working_size(_composite_on_paper(grey, opacity))


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


def _shrink_to_working_size(grey):
    """Shrinks images larger than WORKING_SIZE by a whole factor (area mean).

    The last rows and columns that do not fill a whole block are dropped:
    fewer than the factor, a sliver of the border.
    """
    height, width = grey.shape
    factor = math.ceil(max(height, width) / WORKING_SIZE)
    if factor == 1:
        return grey
    height, width = max(1, height // factor), max(1, width // factor)
    whole_blocks = grey[: height * factor, : width * factor]
    return cv2.resize(whole_blocks, (width, height), interpolation=cv2.INTER_AREA)


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


def _separate_ink(grey):
    """Signed ink strength: positive on ink, about 0 on the paper.

    The paper's colour is the median of the border ring. The darkest and
    lightest pixels are compared with it: whichever is farther is the ink,
    so dark ink on light paper is inverted and MNIST's white-on-black is not.
    Under uneven light, dark ink is measured as the fraction of the local
    paper's light it absorbs (light multiplies paper and ink alike), in grey
    levels of the typical paper.
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
    if dark_ink:
        grey = 255.0 - grey
        paper = 255.0 - paper
    if not (uneven and min(grey.shape) >= LIGHTING_MIN_SIZE):
        return grey - np.float32(paper)
    background = _estimate_background(grey)
    if not dark_ink:
        return grey - background
    paper_light = np.maximum(255.0 - background, 1.0)
    return (grey - background) * (np.float32(255.0 - paper) / paper_light)


def _estimate_background(grey):
    """The paper's brightness map under uneven light, ink removed.

    On a thumbnail, a morphological opening with a disc wider than any
    stroke removes the (bright) ink and keeps the slowly varying paper; a
    blur smooths the disc's corners away; the map is scaled back up. The
    thumbnail is first extended by point reflection at its edges, which
    continues a brightness gradient: with a plain mirror or repeated edge,
    the opening would underestimate the paper along the brighter edges.
    """
    height, width = grey.shape
    # Whole blocks, as in _shrink_to_working_size; the map is stretched back
    # over the dropped sliver, which a smooth map does not notice.
    factor = math.ceil(max(height, width) / LIGHTING_THUMBNAIL_SIZE)
    rows, columns = max(1, height // factor), max(1, width // factor)
    whole_blocks = grey[: rows * factor, : columns * factor]
    thumbnail = cv2.resize(whole_blocks, (columns, rows), interpolation=cv2.INTER_AREA)
    radius = max(1, round(LIGHTING_KERNEL_FRACTION * max(rows, columns) / 2))
    diameter = 2 * radius + 1
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (diameter, diameter))
    margin = 2 * radius
    extended = np.pad(thumbnail, margin, mode="reflect", reflect_type="odd")
    opened = cv2.morphologyEx(extended, cv2.MORPH_OPEN, disc, borderType=cv2.BORDER_REPLICATE)
    smooth = cv2.GaussianBlur(opened, (0, 0), radius / 2, borderType=cv2.BORDER_REPLICATE)
    smooth = np.ascontiguousarray(smooth[margin:-margin, margin:-margin])
    return cv2.resize(smooth, (width, height), interpolation=cv2.INTER_LINEAR)


def _normalise_contrast(signed_ink):
    """uint8 ink from 0 (paper) to 255 (the strongest ink); checks there is ink.

    The paper's level plus its noise becomes 0 and the strongest ink 255.
    For an MNIST image both are already 0 and 255, so nothing changes.

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
    stretched = (signed_ink - np.float32(floor)) * np.float32(255.0 / (peak - floor))
    return np.rint(np.clip(stretched, 0, 255)).astype(np.uint8)


def _remove_specks(ink):
    """Zeroes pieces of ink that are small and far from the digit.

    Raises:
        PreprocessingError: Nothing is left (cannot happen after
            `_normalise_contrast`, but a blank result must never pass).
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


def _normalise_stroke_width(ink):
    """Brings pen strokes far thinner or thicker than MNIST's closer to it.

    The width is measured relative to the digit's size, as twice the ink
    area over the outline length (a stroke of width w and length L has area
    wL and outline 2L). A max filter with a disc of diameter d widens each
    stroke by about d - 1, a min filter narrows it as much; narrowing is
    given up if it would break a stroke apart.
    """
    _, _, width, height = cv2.boundingRect(ink)
    longer = max(width, height)
    if longer <= LARGE_DIGIT:
        return ink
    stroke, pieces = _stroke_width(ink)
    if stroke == 0:
        return ink
    if stroke < THIN_STROKE * longer:
        return cv2.dilate(ink, _disc(THIN_STROKE_TARGET * longer - stroke))
    if stroke > THICK_STROKE * longer:
        thinner = cv2.erode(ink, _disc(stroke - THICK_STROKE_TARGET * longer))
        if _stroke_width(thinner)[1] == pieces:
            return thinner
    return ink


def _stroke_width(ink):
    """Stroke width in pixels (2 x area / outline) and the number of pieces."""
    mask = (ink >= 128).view(np.uint8)
    pieces, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    # The outline includes the edges of the holes (the loops of 0, 6, 8, 9).
    edges, _ = cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    outline = sum(cv2.arcLength(edge, closed=True) for edge in edges)
    if outline == 0:
        return 0.0, 0
    return 2 * np.count_nonzero(mask) / outline, len(pieces)


def _disc(widening):
    """Disc-shaped kernel that widens (or narrows) a stroke by `widening`."""
    diameter = 2 * round(widening / 2) + 1
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (diameter, diameter))


def _crop_to_ink(ink):
    """The bounding box of the ink.

    A digit near MNIST's size is cropped to its non-zero pixels, as MNIST's
    anti-aliased edges are part of the digit. A large digit is cropped where
    its edge is half-way up (the edge of NIST's black-and-white digits): its
    faint blurred rim would average away when it is shrunk, leaving the
    digit smaller than the box.
    """
    left, top, width, height = cv2.boundingRect(ink)
    if width == 0 or height == 0:
        raise PreprocessingError("blank image: no ink found")
    if max(width, height) > LARGE_DIGIT:
        left, top, width, height = cv2.boundingRect((ink >= 128).view(np.uint8))
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
