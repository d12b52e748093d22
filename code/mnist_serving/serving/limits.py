"""What one request may cost, and how much work the server takes on at once.

Checked by the data plane on the tensors a transport hands it, so that REST
and gRPC requests meet the same limits in the same place:

- `check_request`: images per request (the inputs' first dimension), and the
  pixels of encoded images in string inputs (PNG, JPEG, GIF, BMP and WebP,
  the formats TensorFlow's decode ops read), per image and per request. The
  pixels come from each image's header (Pillow parses it without decoding a
  pixel), so a 5 MB PNG of 20000x20000 pixels is refused before the model
  would decode 400 MB from it.
- `ImagesInFlight`: the images being computed at once, across requests. A
  request waits its turn (first come, first served) until its images fit,
  until its deadline, or until its client has gone.
- `Job`: one request's deadline, and whether its client still waits for it.
  Work whose deadline has passed or whose client has gone is not computed.
"""

import collections
import contextlib
import contextvars
import io
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
from PIL import BmpImagePlugin, GifImagePlugin, JpegImagePlugin, PngImagePlugin, WebPImagePlugin

from mnist_serving.serving.errors import ServingError

# TF Serving's message for a request past its deadline, wherever it was.
DEADLINE_MESSAGE = "Timed out waiting for notification"


class Job:
    """One request's work in the data plane: its deadline, and whether it is still wanted."""

    def __init__(self, timeout: float | None = None):
        """A job that must end within `timeout` seconds from now (None: no deadline)."""
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self._abandoned = False
        self._wakers: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    def remaining(self) -> float | None:
        """Seconds left before the deadline (0 once passed); None without a deadline."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.monotonic())

    def is_over(self) -> bool:
        """True once the deadline has passed or nobody waits for the answer any more."""
        return self._abandoned or self.remaining() == 0.0

    def check(self) -> None:
        """Raises when the work should not go on.

        Raises:
            ServingError: CANCELLED when nobody waits for the answer any more,
                DEADLINE_EXCEEDED once the deadline has passed.
        """
        if self._abandoned:
            raise ServingError("CANCELLED", "The request was abandoned before it was computed")
        if self.remaining() == 0.0:
            raise ServingError("DEADLINE_EXCEEDED", DEADLINE_MESSAGE)

    def abandon(self) -> None:
        """Nobody waits for the answer any more (client gone, or deadline answered)."""
        with self._lock:
            self._abandoned = True
            wakers, self._wakers = self._wakers, []
        for wake in wakers:
            wake()

    @contextlib.contextmanager
    def waking(self, wake: Callable[[], None]) -> Iterator[None]:
        """Calls `wake()` if the job is abandoned while the block runs (to end a wait)."""
        with self._lock:
            self._wakers.append(wake)
        try:
            yield
        finally:
            with self._lock, contextlib.suppress(ValueError):
                self._wakers.remove(wake)


# The job of the request a worker thread is running (set by the worker pool).
CURRENT_JOB: contextvars.ContextVar[Job] = contextvars.ContextVar("current_job")


def current_job() -> Job:
    """The job of the request being run, or one without a deadline (warm-up, tests)."""
    job = CURRENT_JOB.get(None)
    return job if job is not None else Job()


class ImagesInFlight:
    """A bound on the images being computed at once, across requests, taken in turn."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.in_use = 0
        self._turns: collections.deque[object] = collections.deque()
        self._condition = threading.Condition()

    @property
    def waiting(self) -> int:
        """Requests waiting for their turn."""
        return len(self._turns)

    def _wake_all(self) -> None:
        with self._condition:
            self._condition.notify_all()

    @contextlib.contextmanager
    def hold(self, images: int, job: Job) -> Iterator[None]:
        """Holds room for `images` while the block runs, waiting for it in turn.

        Raises:
            ServingError: The job's error (`Job.check`) if its deadline passes
                or it is abandoned while it waits.
        """
        turn = object()
        with self._condition, job.waking(self._wake_all):
            self._turns.append(turn)
            try:
                while self._turns[0] is not turn or self.in_use + images > self.capacity:
                    job.check()
                    self._condition.wait(job.remaining())
                self.in_use += images
            finally:
                self._turns.remove(turn)
                self._condition.notify_all()
        try:
            yield
        finally:
            with self._condition:
                self.in_use -= images
                self._condition.notify_all()


# How TensorFlow's decode ops recognise an image (the first bytes), and Pillow's
# reader of that format's header. A string that starts with "BM" may well be
# text, so a BMP header that cannot be read is not taken for an image.
def _is_webp(data: bytes) -> bool:
    return data[:4] == b"RIFF" and data[8:12] == b"WEBP"


_IMAGE_READERS = (
    ("PNG", lambda data: data.startswith(b"\x89PNG\r\n\x1a\n"), PngImagePlugin.PngImageFile),
    ("JPEG", lambda data: data.startswith(b"\xff\xd8\xff"), JpegImagePlugin.JpegImageFile),
    ("GIF", lambda data: data.startswith((b"GIF87a", b"GIF89a")), GifImagePlugin.GifImageFile),
    ("WebP", _is_webp, WebPImagePlugin.WebPImageFile),
    ("BMP", lambda data: data.startswith(b"BM"), BmpImagePlugin.BmpImageFile),
)
_AMBIGUOUS_SIGNATURES = ("BMP",)


def encoded_image_size(data: bytes) -> tuple[str, int, int, int] | None:
    """(format, width, height, frames) of an encoded image, from its header alone.

    Returns:
        None when `data` is not an image TensorFlow would decode.

    Raises:
        ServingError: INVALID_ARGUMENT when `data` starts as a PNG, JPEG, GIF
            or WebP file but its header cannot be read.
    """
    for name, matches, reader in _IMAGE_READERS:
        if not matches(data):
            continue
        # The reader's constructor parses the header only; unlike
        # PIL.Image.open it does not refuse large images itself.
        try:
            with reader(io.BytesIO(data)) as header:
                width, height = header.size
                return name, width, height, getattr(header, "n_frames", 1)
        except Exception:  # noqa: BLE001 - Pillow's parsers raise many kinds on bad bytes.
            if name in _AMBIGUOUS_SIGNATURES:
                return None
            raise ServingError(
                "INVALID_ARGUMENT", f"starts as a {name} file but its header cannot be read"
            ) from None
    return None


def request_images(tensors: dict[str, np.ndarray]) -> int:
    """The images of a request: the largest first dimension of its inputs (1 for scalars)."""
    return max((value.shape[0] if value.ndim else 1 for value in tensors.values()), default=0)


def check_request(
    tensors: dict[str, np.ndarray],
    max_images: int,
    max_pixels_per_image: int,
    max_pixels_per_request: int,
) -> int:
    """Checks a request's size before anything is computed; returns its images.

    Raises:
        ServingError: INVALID_ARGUMENT naming the limit and its flag.
    """
    images = request_images(tensors)
    if images > max_images:
        raise ServingError(
            "INVALID_ARGUMENT",
            f"The request has {images:,} images (the first dimension of its inputs): more "
            f"than the limit of {max_images:,} per request (--max_images_per_request)",
        )
    total = 0
    for alias, value in sorted(tensors.items()):
        if value.dtype != object:
            continue
        for index, element in enumerate(value.reshape(-1)):
            if not isinstance(element, bytes):
                continue
            try:
                size = encoded_image_size(element)
            except ServingError as error:
                raise ServingError(
                    "INVALID_ARGUMENT", f"Input '{alias}' element {index} {error.message}"
                ) from None
            if size is None:
                continue
            name, width, height, frames = size
            pixels = width * height * frames
            if pixels > max_pixels_per_image:
                image = f"{width}x{height} {name} image" + (
                    f" of {frames} frames" if frames > 1 else ""
                )
                raise ServingError(
                    "INVALID_ARGUMENT",
                    f"Input '{alias}' element {index} is a {image}: {pixels:,} pixels, more "
                    f"than the limit of {max_pixels_per_image:,} per image "
                    "(--max_pixels_per_image)",
                )
            total += pixels
            if total > max_pixels_per_request:
                raise ServingError(
                    "INVALID_ARGUMENT",
                    f"The request's images have at least {total:,} pixels: more than the limit "
                    f"of {max_pixels_per_request:,} per request (--max_pixels_per_request)",
                )
    return images
