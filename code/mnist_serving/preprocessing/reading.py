"""Image files read and decoded within limits: bytes, then pixels from the header."""

import io
import os
import warnings
from pathlib import Path

import cv2
import numpy as np
import PIL.Image

from mnist_serving import config
from mnist_serving.preprocessing.errors import ImageTooLargeError, PreprocessingError

_JPEG_SIGNATURE = b"\xff\xd8\xff"

# A file's size (config.MAX_FILE_BYTES) is checked before it is read whole,
# and its pixels (config.MAX_IMAGE_PIXELS) before it is decoded: a 20000x20000
# PNG of 2 MB decodes to 1.6 GB, and the steps below take about 20 bytes per
# pixel of an RGBA image. The pixels are read from the header by Pillow, in
# these formats (Pillow's names), which both Pillow and OpenCV read; Radiance
# HDR, PFM and PAM, which OpenCV reads but Pillow does not, are refused.
_HEADER_FORMATS = ("PNG", "JPEG", "TIFF", "WEBP", "BMP", "GIF", "AVIF", "JPEG2000", "PPM", "SUN")


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
