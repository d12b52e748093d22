"""Any picture of one handwritten digit, turned into an MNIST image.

MNIST digits are white on black, fitted into a 20x20 box with their aspect
ratio kept, anti-aliased, and placed in a 28x28 image so that their centre of
mass is at the centre. A model trained on them reads a phone photo of a digit
on paper only after the same recipe: dark ink becomes white on black, the
paper's shading and noise go, the digit is cropped, fitted and centred. This
package is that recipe, the one that the client, the server, the tests and
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
   each reaches half its own height (pieces that touch no ink found at the
   working size are the paper's noise, and dropped), and widened or narrowed
   to MNIST's stroke width (`stroke_width`) when measured to be outside
   MNIST's range.
   A drawing or clean scan (noiseless paper, at full resolution) whose
   strokes are within that range keeps its ink as it is instead, cropped
   where it is half-way up (as web/mnist.js crops a drawing).
7. `fitted`: the longer side scaled to 20, the aspect ratio kept, by area
   averaging, as MNIST's digits were from NIST's black and white scans.
8. `mnist`: the 28x28 result, centred by its centre of mass.

The modules, by job: `reading` (files and encoded images, within limits),
`grey` (step 1), `ink` (steps 2 to 4), `paper` (the paper's level, the ink's
polarity and the lighting map of step 3), `measures` (robust grey-level
statistics they share), `strokes` (steps 5 and 6), `width` (stroke width
measured), `fitting` (steps 7 and 8, and the centre convention), `pipeline`
(`to_mnist` and `preprocess_file`), `errors`. This package re-exports their
public names.
"""

from mnist_serving.preprocessing.errors import ImageTooLargeError, PreprocessingError
from mnist_serving.preprocessing.fitting import CENTRE
from mnist_serving.preprocessing.grey import level_scale
from mnist_serving.preprocessing.ink import (
    IMPULSE_FRACTION,
    IMPULSE_MARGIN,
    INK_NOISE_SIGMAS,
    MAIN_PIECE_FRACTION,
    MAX_INK_FRACTION,
    MIN_INK_CONTRAST,
    MIN_INK_PIXELS,
    NEAR_DIGIT_FRACTION,
    NOISE_BLUR_SIGMA,
    NOISE_LEVEL,
    PAPER_NOISE_SIGMAS,
    PAPER_QUANTILE,
)
from mnist_serving.preprocessing.measures import BORDER_FRACTION, TAIL_FRACTION
from mnist_serving.preprocessing.paper import (
    BACKGROUND_DISC_PIXELS,
    BACKGROUND_STROKES,
    HAIRLINE_WINDOW,
    LIGHTING_BLUR_SIGMA,
    LIGHTING_KERNEL_FRACTION,
    LIGHTING_MIN_SIZE,
    LIGHTING_THUMBNAIL_SIZE,
    POLARITY_TAIL,
    UNEVEN_LIGHTING,
)
from mnist_serving.preprocessing.pipeline import (
    FINE_WORKING_SIZE,
    WORKING_SIZE,
    preprocess_file,
    to_mnist,
)
from mnist_serving.preprocessing.reading import decode_image, image_size, read_file, read_image
from mnist_serving.preprocessing.strokes import (
    DETAIL_MARGIN,
    DETAIL_SIZE,
    FINE_DETAIL_SIZE,
    LOCAL_PEAK_FRACTION,
    LOST_IN_NARROWING,
    MIN_STROKE_FRACTION,
    NARROWING_SHARES,
    PEAK_QUANTILE,
    PEAK_SMOOTHING,
    SMALL_HOLE,
    STROKE_TOLERANCE,
    THICK_STROKE,
    THICK_STROKE_TARGET,
    THIN_STROKE,
    THIN_STROKE_TARGET,
)
from mnist_serving.preprocessing.width import (
    INK_LEVEL,
    STROKE_ENLARGEMENT,
    STROKE_LARGEST_ENLARGED,
    STROKE_SMALL_IMAGE,
    ink_mask,
    stroke_width,
)

__all__ = [
    "BACKGROUND_DISC_PIXELS",
    "BACKGROUND_STROKES",
    "BORDER_FRACTION",
    "CENTRE",
    "DETAIL_MARGIN",
    "DETAIL_SIZE",
    "FINE_DETAIL_SIZE",
    "FINE_WORKING_SIZE",
    "HAIRLINE_WINDOW",
    "IMPULSE_FRACTION",
    "IMPULSE_MARGIN",
    "INK_LEVEL",
    "INK_NOISE_SIGMAS",
    "LIGHTING_BLUR_SIGMA",
    "LIGHTING_KERNEL_FRACTION",
    "LIGHTING_MIN_SIZE",
    "LIGHTING_THUMBNAIL_SIZE",
    "LOCAL_PEAK_FRACTION",
    "LOST_IN_NARROWING",
    "MAIN_PIECE_FRACTION",
    "MAX_INK_FRACTION",
    "MIN_INK_CONTRAST",
    "MIN_INK_PIXELS",
    "MIN_STROKE_FRACTION",
    "NARROWING_SHARES",
    "NEAR_DIGIT_FRACTION",
    "NOISE_BLUR_SIGMA",
    "NOISE_LEVEL",
    "PAPER_NOISE_SIGMAS",
    "PAPER_QUANTILE",
    "PEAK_QUANTILE",
    "PEAK_SMOOTHING",
    "POLARITY_TAIL",
    "SMALL_HOLE",
    "STROKE_ENLARGEMENT",
    "STROKE_LARGEST_ENLARGED",
    "STROKE_SMALL_IMAGE",
    "STROKE_TOLERANCE",
    "TAIL_FRACTION",
    "THICK_STROKE",
    "THICK_STROKE_TARGET",
    "THIN_STROKE",
    "THIN_STROKE_TARGET",
    "UNEVEN_LIGHTING",
    "WORKING_SIZE",
    "ImageTooLargeError",
    "PreprocessingError",
    "decode_image",
    "image_size",
    "ink_mask",
    "level_scale",
    "preprocess_file",
    "read_file",
    "read_image",
    "stroke_width",
    "to_mnist",
]
