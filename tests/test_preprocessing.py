"""Preprocessing: real OpenCV drawings, real MNIST digits and real files to MNIST form."""

import struct

import cv2
import make_test_images
import numpy as np
import pytest
from conftest import ink_iou

from mnist_serving import config, data, figures, preprocessing
from mnist_serving.preprocessing import PreprocessingError, pipeline

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


@pytest.fixture(scope="module")
def mnist_round_trip(mnist):
    """MNIST test digits and what preprocessing makes of them."""
    (_, _), (test_images, _) = mnist
    return test_images, np.stack([preprocessing.to_mnist(image) for image in test_images])


@pytest.fixture(scope="module")
def mnist_stroke_widths(mnist):
    """The stroke width of every MNIST test digit, in pixels of 28x28."""
    (_, _), (test_images, _) = mnist
    return np.array([preprocessing.stroke_width(image) for image in test_images])


# Stroke width.


@pytest.mark.parametrize("width", [1, 2, 3, 5, 8, 13])
def test_stroke_width_of_a_bar_is_its_width(width):
    image = np.zeros((60, 240), dtype=np.uint8)
    image[20 : 20 + width, 5:235] = 255
    # Odd widths measure up to a fifth of a pixel more (their middle row).
    assert preprocessing.stroke_width(image) == pytest.approx(width, abs=0.2)


@pytest.mark.parametrize("width", [1, 2, 3, 4])
def test_stroke_width_of_a_small_image_is_measured_between_pixels(width):
    image = np.zeros((SIZE, SIZE), dtype=np.uint8)
    image[10 : 10 + width, 2:26] = 255
    # The bar's ends round it a little: within a tenth of a pixel per pixel.
    assert preprocessing.stroke_width(image) == pytest.approx(width, rel=0.1)


def test_stroke_width_of_a_ring_is_its_width():
    image = np.zeros((400, 400), dtype=np.uint8)
    cv2.circle(image, (200, 200), 150, 255, thickness=9)
    ring_width = np.count_nonzero(image) / (2 * np.pi * 150)
    assert preprocessing.stroke_width(image) == pytest.approx(ring_width, rel=0.05)


def test_stroke_width_scales_with_the_image():
    digit = draw_digit(4, size=(100, 100), scale=2.5, thickness=5, ink=255, paper=0)
    twice = cv2.resize(digit, None, fx=2, fy=2, interpolation=cv2.INTER_LINEAR)
    assert preprocessing.stroke_width(twice) == pytest.approx(
        2 * preprocessing.stroke_width(digit), rel=0.1
    )


def test_stroke_width_of_a_blank_image_is_zero():
    assert preprocessing.stroke_width(np.zeros((SIZE, SIZE), dtype=np.uint8)) == 0.0


def test_mnist_stroke_width_is_about_two_and_a_half_pixels(mnist_stroke_widths):
    assert np.median(mnist_stroke_widths) == pytest.approx(2.5, abs=0.1)


# MNIST form in, MNIST form out.


def test_mnist_digits_come_back_within_one_grey_level(mnist_round_trip):
    originals, results = mnist_round_trip
    largest_change = np.abs(results.astype(int) - originals).max(axis=(1, 2))
    # The rest (0.3%) have a speck in a corner that MNIST kept and that is
    # removed here, so the digit is fitted anew.
    assert np.mean(largest_change <= 1) >= 0.995
    assert np.abs(results.astype(int) - originals).mean() < 0.05


def test_mnist_digits_with_full_contrast_come_back_identical(mnist_round_trip):
    originals, results = mnist_round_trip
    # Digits whose brightest pixel is below 255 (10%) are stretched to 255.
    full_contrast = originals.max(axis=(1, 2)) == 255
    identical = (results == originals).all(axis=(1, 2))
    assert np.mean(identical[full_contrast]) >= 0.995


def test_mnist_digits_keep_their_ink(mnist_round_trip):
    originals, results = mnist_round_trip
    ious = [ink_iou(original, result) for original, result in zip(originals, results, strict=True)]
    assert np.mean(ious) >= 0.99


def test_mnist_centre_of_mass_convention_is_pixel_14(mnist):
    (_, _), (test_images, _) = mnist
    centres = np.array([centre_of_mass(image) for image in test_images])
    # MNIST moved digits by whole pixels so that the centre of mass rounds
    # to pixel 14, the same target as preprocessing.CENTRE.
    assert preprocessing.CENTRE == SIZE / 2
    assert np.all(np.abs(centres - preprocessing.CENTRE) <= 0.5 + 1e-9)


def test_inverted_mnist_digit_gives_the_same_result(mnist):
    (_, _), (test_images, _) = mnist
    for image in test_images[:50]:
        expected = preprocessing.to_mnist(image)
        np.testing.assert_array_equal(preprocessing.to_mnist(255 - image), expected)


# Drawings with OpenCV: the situations of real photos.


def test_dark_ink_on_light_paper_is_inverted():
    dark_on_light = draw_digit(3)
    result = preprocessing.to_mnist(dark_on_light)
    assert_mnist_form(result)
    np.testing.assert_array_equal(result, preprocessing.to_mnist(255 - dark_on_light))


def test_off_centre_digit_is_centred_by_mass():
    image = draw_digit(5, size=(300, 400), scale=3, thickness=8, centre=(320, 70))
    assert_mnist_form(preprocessing.to_mnist(image))


def test_large_photo_is_fitted_to_the_box():
    image = draw_digit(4, size=(900, 1200), scale=18, thickness=40, paper=235, ink=20)
    assert_mnist_form(preprocessing.to_mnist(image))


def test_small_image_is_enlarged_to_the_box():
    image = draw_digit(0, size=(15, 15), scale=0.45, thickness=1)
    assert_mnist_form(preprocessing.to_mnist(image))


def test_slightly_rotated_digit_is_in_mnist_form():
    upright = draw_digit(2)
    rotation = cv2.getRotationMatrix2D((100, 100), 12, 1.0)
    rotated = cv2.warpAffine(upright, rotation, (200, 200), borderValue=255)
    assert_mnist_form(preprocessing.to_mnist(rotated))


def test_tightly_cropped_digit_touching_the_border_is_in_mnist_form():
    # Ink covers half of the image and a third of its border.
    image = draw_digit(8, size=(100, 60), scale=4.2, thickness=10)
    assert_mnist_form(preprocessing.to_mnist(image))


def test_aspect_ratio_is_kept():
    image = np.full((300, 300), 255, dtype=np.uint8)
    cv2.rectangle(image, (130, 50), (169, 249), 0, thickness=-1)  # 40 wide, 200 tall.
    result = preprocessing.to_mnist(image)
    _, _, width, height = cv2.boundingRect(result)
    assert height == BOX
    assert width == pytest.approx(BOX * 40 / 200, abs=1)


def test_thick_marker_zero_keeps_its_hole():
    image = np.full((300, 300), 255, dtype=np.uint8)
    cv2.ellipse(image, (150, 150), (80, 120), 0, 0, 360, 0, thickness=60)
    result = preprocessing.to_mnist(image)
    assert_mnist_form(result)
    assert result[SIZE // 2, SIZE // 2] == 0


@pytest.mark.parametrize("thickness, blur", [(126, 8), (130, 6), (134, 8)])
def test_a_loop_all_but_closed_by_a_marker_is_opened_again(thickness, blur):
    # A "0" 360 pixels tall written with a marker so wide that, blurred, its
    # loop is a slit of paper that the pen covers from 44% to 78%.
    pen = np.zeros((600, 500), np.float32)
    cv2.ellipse(pen, (250, 300), (70, 110), 0, 0, 360, 1.0, thickness, lineType=cv2.LINE_AA)
    pen = cv2.GaussianBlur(pen, (0, 0), blur)
    assert 0.4 < pen[300, 250] < 0.8
    noise = np.random.default_rng(0).normal(0, 2, pen.shape)
    photo = np.clip(235 - 200 * pen + noise, 0, 255).astype(np.uint8)
    result = preprocessing.to_mnist(photo)
    assert_mnist_form(result)
    # Two pieces of paper: around the 0 and inside it.
    paper = cv2.copyMakeBorder((result < 128).view(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, 1)
    assert cv2.connectedComponents(paper, connectivity=4)[0] - 1 == 2


def test_thick_marker_strokes_are_narrowed_to_mnist_range(mnist_stroke_widths):
    image = np.full((300, 300), 255, dtype=np.uint8)
    cv2.ellipse(image, (150, 150), (80, 120), 0, 0, 360, 0, thickness=60)
    drawn = preprocessing.stroke_width(255 - image) / 240  # Relative to the digit's height.
    result = preprocessing.to_mnist(image)
    low, high = np.percentile(mnist_stroke_widths, [10, 90])
    assert drawn * BOX > high
    assert low <= preprocessing.stroke_width(result) <= high


def test_thin_pen_strokes_get_mnist_weight(mnist):
    (_, _), (test_images, _) = mnist
    # A ballpoint "0": 5-pixel line on a 400-pixel digit.
    image = np.full((600, 600), 250, dtype=np.uint8)
    cv2.ellipse(image, (300, 300), (130, 200), 0, 0, 360, 30, thickness=5, lineType=cv2.LINE_AA)
    result = preprocessing.to_mnist(image)
    assert_mnist_form(result)
    # Its ink (in fully white pixels) lies within MNIST's usual range.
    masses = test_images.reshape(len(test_images), -1).sum(axis=1) / 255
    low, high = np.percentile(masses, [5, 95])
    assert low <= result.sum() / 255 <= high


@pytest.mark.parametrize("thickness", [1, 2, 4, 8, 16, 24])
def test_any_pen_comes_out_with_mnist_stroke_width(mnist_stroke_widths, thickness):
    # A "0" 150 pixels tall, from a hairline to a marker a sixth of its height.
    image = draw_digit(0, size=(300, 300), scale=5, thickness=thickness)
    result = preprocessing.to_mnist(image)
    assert_mnist_form(result)
    low, high = np.percentile(mnist_stroke_widths, [10, 90])
    assert low <= preprocessing.stroke_width(result) <= high


def test_small_thin_digit_in_a_large_photo_matches_the_same_digit_drawn_large():
    # 5% of a 12-megapixel photo, written with a 2-pixel pen: at working size
    # it is 20 pixels tall with strokes a third of a pixel wide.
    small = draw_digit(3, size=(3000, 4000), scale=5.6, thickness=2, paper=230, ink=40)
    large = draw_digit(3, size=(400, 400), scale=11, thickness=30, paper=230, ink=40)
    small_result, large_result = preprocessing.to_mnist(small), preprocessing.to_mnist(large)
    assert_mnist_form(small_result)
    assert ink_match(small_result, large_result) >= 0.85
    assert preprocessing.stroke_width(small_result) == pytest.approx(
        preprocessing.stroke_width(large_result), rel=0.2
    )


def test_faint_hairline_in_a_large_photo_is_found_not_called_blank(mnist_stroke_widths):
    # A 1-pixel grey line, 30 grey levels darker than the paper: averaged
    # into the 512-pixel working copy it is lost in the paper's noise.
    image = draw_digit(2, size=(1500, 2000), scale=8, thickness=1, paper=220, ink=190)
    noise = np.random.default_rng(0).normal(0, 3, image.shape)
    photo = np.clip(image + noise, 0, 255).astype(np.uint8)
    result = preprocessing.to_mnist(photo)
    assert_mnist_form(result)
    low, high = np.percentile(mnist_stroke_widths, [10, 90])
    assert low <= preprocessing.stroke_width(result) <= high


@pytest.mark.parametrize("seed", range(8))
def test_paper_noise_around_a_faint_hairline_stays_out_of_the_digit(seed):
    # A slanted "1" a pixel wide, 40 grey levels below the paper: it is cut
    # into strokes where the paper's noise is almost as strong, and no grain
    # of that noise may come out as a dot beside it.
    page = np.full((750, 1000), 200, dtype=np.float32)
    cv2.line(page, (470, 640), (700, 105), 160, thickness=1, lineType=cv2.LINE_AA)
    noise = np.random.default_rng(seed).normal(0, 4, page.shape)
    photo = cv2.GaussianBlur(page, (0, 0), 0.7) + noise
    result = preprocessing.to_mnist(np.clip(photo, 0, 255).astype(np.uint8))
    assert_mnist_form(result)
    pieces = cv2.connectedComponents((result > 0).astype(np.uint8))[0] - 1
    assert pieces == 1


def test_faint_hairline_on_blotchy_paper_under_uneven_light_is_found():
    # A pen line a pixel wide, a third as dark as the paper's blotches are
    # wide: averaged at the working size it sinks into them, and at full size
    # only its contrast with the paper right beside it tells it apart.
    generator = np.random.default_rng(3)
    page = np.full((1400, 1900), 200, dtype=np.float32)
    points = np.array(
        [[700, 300], [450, 850], [480, 1000], [1100, 800], [1250, 600], [1300, 400]], np.int32
    )
    cv2.polylines(page, [points], False, 130, thickness=1, lineType=cv2.LINE_AA)
    rows, columns = np.mgrid[0:1400, 0:1900].astype(np.float32)
    light = 0.55 + 0.45 * (columns * np.cos(0.17) + rows * np.sin(0.17)) / 2100
    blotches = cv2.GaussianBlur(generator.normal(0, 1, page.shape).astype(np.float32), (0, 0), 3)
    photo = page * light * (1 + 0.02 * blotches / blotches.std())
    photo = cv2.GaussianBlur(photo, (0, 0), 0.8) + generator.normal(0, 5, photo.shape)
    drawn = np.zeros((1400, 1900), dtype=np.uint8)
    cv2.polylines(drawn, [points], False, 255, thickness=25, lineType=cv2.LINE_AA)
    result = preprocessing.to_mnist(np.clip(photo, 0, 255).astype(np.uint8))
    assert_mnist_form(result, box_slack=3)
    assert ink_match(result, preprocessing.to_mnist(drawn)) >= 0.8


def test_blurred_digit_keeps_its_loops():
    sharp = draw_digit(8, size=(400, 400), scale=9, thickness=20)
    blurred = cv2.GaussianBlur(sharp, (0, 0), 6)  # 3% of the digit's height.
    result = preprocessing.to_mnist(blurred)
    assert_mnist_form(result)
    # Both loops stay open: two holes inside the outer outline.
    _, hierarchy = cv2.findContours(
        (result >= 128).astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE
    )
    holes = [entry for entry in hierarchy[0] if entry[3] >= 0]
    assert len(holes) == 2
    assert ink_match(result, preprocessing.to_mnist(sharp)) >= 0.9


def test_narrowing_a_marker_never_loses_a_thin_stroke():
    # A marker's ring with a ballpoint tail: narrowing the ring to MNIST's
    # width would wipe the tail out, so the tail must still be there.
    image = np.full((400, 400), 240, dtype=np.uint8)
    cv2.circle(image, (200, 150), 90, 20, thickness=70)
    cv2.line(image, (280, 190), (280, 380), 20, thickness=6)
    result = preprocessing.to_mnist(image)
    assert_mnist_form(result, box_slack=4)
    # The tail is the ink in the lowest quarter of the digit.
    _, top, _, height = cv2.boundingRect(result)
    assert np.count_nonzero(result[top + 3 * height // 4 : top + height] >= 128) >= 4


def test_shadow_over_most_of_the_border_does_not_turn_the_ink_light():
    even = draw_digit(
        9, size=(480, 640), scale=7, thickness=16, paper=220, ink=40, centre=(400, 300)
    )
    rows, columns = np.mgrid[0:480, 0:640]
    # Light falling to 30% towards the left, and a soft shadow at 40% over
    # the top left: the border's median is the shadow's paper.
    shadow = cv2.GaussianBlur(np.where(columns + rows < 450, 0.4, 1.0), (0, 0), 60)
    shaded = (even * (0.3 + 0.7 * columns / 639) * shadow).astype(np.uint8)
    result = preprocessing.to_mnist(shaded)
    assert_mnist_form(result)
    assert ink_match(result, preprocessing.to_mnist(even)) >= 0.9


def test_lit_edge_of_a_shaded_page_is_not_taken_for_ink():
    # Most of the page in a shadow at 30% of the light: its lit edge covers
    # less than a quarter of the border, and is as far from the shadow's
    # paper as the ink is.
    even = draw_digit(
        4, size=(480, 640), scale=7, thickness=16, paper=210, ink=40, centre=(280, 240)
    )
    rows, columns = np.mgrid[0:480, 0:640]
    light = cv2.GaussianBlur(np.where(columns - rows > 420, 1.0, 0.3), (0, 0), 15)
    result = preprocessing.to_mnist((even * light).astype(np.uint8))
    assert_mnist_form(result)
    assert ink_match(result, preprocessing.to_mnist(even)) >= 0.9


def test_second_lighting_map_is_made_only_where_the_first_may_have_left_a_shadow():
    # One piece of ink inside the image: nothing of a shadow's edge is left,
    # and the second map is skipped. A second piece, or ink on the image's
    # edge, may be a shadow's remains.
    lone = np.zeros((120, 160), dtype=np.uint8)
    cv2.circle(lone, (80, 60), 30, 255, thickness=8)
    assert pipeline._lone_inner_piece(lone)
    crumb = lone.copy()
    crumb[100, 20] = 40
    assert not pipeline._lone_inner_piece(crumb)
    edge = lone.copy()
    edge[:, -1] = 30
    assert not pipeline._lone_inner_piece(edge)


def test_bold_zero_under_uneven_light_keeps_its_dark_ink():
    # A marker's 0 whose ring is wider than its hole, under a flash's hot
    # spot: around the hole there is more ink than paper, and the paper
    # inside must not be taken for light ink.
    even = np.full((480, 360), 200, dtype=np.uint8)
    cv2.ellipse(even, (150, 300), (70, 80), 0, 0, 360, 40, thickness=70)
    rows, columns = np.mgrid[0:480, 0:360]
    light = 0.35 + 0.65 * np.exp(-((columns - 150) ** 2 + (rows - 300) ** 2) / (2 * 120.0**2))
    result = preprocessing.to_mnist((even * light).astype(np.uint8))
    assert_mnist_form(result)
    assert result[SIZE // 2, SIZE // 2] == 0  # The hole stays paper.
    assert ink_match(result, preprocessing.to_mnist(even)) >= 0.9


def chalk_on_a_board(digit, thickness):
    """A digit in chalk on a board, and the same without the chalk's grain:
    clumps of a few pixels that the chalk missed, over 30% of the strokes."""
    generator = np.random.default_rng(4)
    board = draw_digit(digit, size=(300, 300), scale=7, thickness=thickness, paper=50, ink=230)
    clumps = cv2.GaussianBlur(generator.random(board.shape).astype(np.float32), (0, 0), 1.5)
    missed = clumps < np.quantile(clumps, 0.3)
    grainy = cv2.GaussianBlur(
        np.where(missed & (board > 140), 60, board).astype(np.float32), (0, 0), 1.0
    )
    return grainy.astype(np.uint8), board


def pieces_of_paper(strokes):
    """The pieces of paper that uint8 0/255 strokes leave, the one around
    them included."""
    paper = cv2.copyMakeBorder(255 - strokes, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=255)
    return cv2.connectedComponents(paper, connectivity=4)[0] - 1


def test_chalk_grain_leaves_no_holes_in_the_strokes():
    grainy, board = chalk_on_a_board(1, thickness=40)
    steps = {}
    result = preprocessing.to_mnist(grainy, steps)
    assert_mnist_form(result)
    # The paper around the 1 is the only piece of paper its strokes leave.
    assert pieces_of_paper(steps["strokes"]) == 1
    assert ink_match(result, preprocessing.to_mnist(board)) >= 0.9


def test_grain_of_chalk_in_strokes_to_be_narrowed_is_not_taken_for_paper():
    # A 4 in chalk as thick as a marker's, to be narrowed.
    grainy, board = chalk_on_a_board(4, thickness=60)
    _, _, width, height = cv2.boundingRect((board > 140).view(np.uint8))
    assert preprocessing.stroke_width(board) / max(width, height) > preprocessing.THICK_STROKE
    steps = {}
    result = preprocessing.to_mnist(grainy, steps)
    assert_mnist_form(result)
    # The paper around the 4 is the only piece of paper its strokes leave.
    assert pieces_of_paper(steps["strokes"]) == 1


def test_faint_stroke_beside_a_strong_one_keeps_its_width():
    image = np.full((300, 300), 240, dtype=np.uint8)
    cv2.line(image, (110, 40), (110, 260), 20, thickness=16)  # Strong.
    cv2.line(image, (190, 40), (190, 260), 150, thickness=16)  # Faint: a third as dark.
    result = preprocessing.to_mnist(image)
    columns = (result >= 128).sum(axis=0)
    strong, faint = columns[: SIZE // 2], columns[SIZE // 2 :]
    assert np.count_nonzero(faint) == pytest.approx(np.count_nonzero(strong), abs=1)


def test_noisy_photo_gives_a_clean_digit():
    clean = draw_digit(6)
    generator = np.random.default_rng(0)
    noisy = clean + generator.normal(0, 30, clean.shape)
    speckle = generator.random(clean.shape)
    noisy[speckle < 0.03] = 0
    noisy[speckle > 0.97] = 255
    noisy = np.clip(noisy, 0, 255).astype(np.uint8)
    result = preprocessing.to_mnist(noisy)
    assert_mnist_form(result)
    assert ink_match(result, preprocessing.to_mnist(clean)) >= 0.9


def test_noisy_mnist_digit_stays_in_mnist_form(mnist):
    (_, _), (test_images, _) = mnist
    generator = np.random.default_rng(1)
    noisy = np.clip(test_images[3] + generator.normal(0, 25, (SIZE, SIZE)), 0, 255)
    result = preprocessing.to_mnist(noisy.astype(np.uint8))
    assert_mnist_form(result, box_slack=3)
    assert ink_match(result, test_images[3]) >= 0.8


def test_uneven_lighting_is_flattened():
    even = draw_digit(4, size=(300, 300), scale=7, thickness=14)
    columns, rows = np.meshgrid(np.linspace(0.35, 1.0, 300), np.linspace(0.7, 1.0, 300))
    shaded = (even * columns * rows).astype(np.uint8)
    result = preprocessing.to_mnist(shaded)
    assert_mnist_form(result)
    assert ink_match(result, preprocessing.to_mnist(even)) >= 0.9


@pytest.mark.parametrize("margin", [1, 30, 80])
def test_lighting_margin_continues_the_brightness_gradient(margin):
    # The lighting map's thumbnail is extended by a point reflection at each
    # edge: a ramp goes on as a ramp, in the corners too, and where the
    # margin is wider than the image (80 > 60 rows).
    def brightness(rows, columns):  # Linear along each axis, not overall.
        return (np.multiply.outer(rows, columns) + np.add.outer(rows, 2 * columns)).astype(
            np.float32
        )

    extended = preprocessing.paper._point_reflected(
        brightness(np.arange(60), np.arange(90)), margin
    )
    rows, columns = np.arange(-margin, 60 + margin), np.arange(-margin, 90 + margin)
    np.testing.assert_array_equal(extended, brightness(rows, columns))


def test_speck_far_from_the_digit_is_ignored():
    clean = draw_digit(8, size=(300, 300), scale=5, thickness=12)
    specked = clean.copy()
    cv2.circle(specked, (20, 280), 3, 0, thickness=-1)
    np.testing.assert_array_equal(preprocessing.to_mnist(specked), preprocessing.to_mnist(clean))


def test_transparent_drawing_is_read_from_its_alpha_channel():
    drawing = np.zeros((200, 200, 4), dtype=np.uint8)
    drawing[:, :, 3] = 255 - draw_digit(0)  # Black ink, transparent paper.
    result = preprocessing.to_mnist(drawing)
    assert_mnist_form(result)
    np.testing.assert_array_equal(result, preprocessing.to_mnist(draw_digit(0)))


def test_grey_and_alpha_image_is_read():
    drawing = np.zeros((100, 100, 2), dtype=np.uint8)
    drawing[:, :, 1] = 255 - draw_digit(4, size=(100, 100), scale=2.5, thickness=6)
    assert_mnist_form(preprocessing.to_mnist(drawing))


def test_white_ink_on_transparent_paper_is_read():
    drawing = np.full((200, 200, 4), 255, dtype=np.uint8)
    drawing[:, :, 3] = 255 - draw_digit(7)  # White ink, transparent paper.
    np.testing.assert_array_equal(
        preprocessing.to_mnist(drawing), preprocessing.to_mnist(draw_digit(7))
    )


def test_16_bit_image_gives_the_8_bit_result():
    image = draw_digit(4)
    wide = image.astype(np.uint16) * 257
    np.testing.assert_array_equal(preprocessing.to_mnist(wide), preprocessing.to_mnist(image))


def test_12_bit_data_in_16_bit_image_is_scaled_not_truncated():
    image = draw_digit(9)
    twelve_bit = (image.astype(np.uint32) * 4095 // 255).astype(np.uint16)
    steps = {}
    result = preprocessing.to_mnist(twelve_bit, steps)
    # 4095 is white: the grey step spans 0..255, not 0..16.
    assert steps["grey"].max() == pytest.approx(255)
    assert_mnist_form(result)
    assert ink_match(result, preprocessing.to_mnist(image)) >= 0.95


def test_float_image_in_0_to_1_gives_the_8_bit_result():
    image = draw_digit(5)
    np.testing.assert_array_equal(
        preprocessing.to_mnist(image.astype(np.float32) / 255), preprocessing.to_mnist(image)
    )


def test_blue_ink_colour_jpeg_is_in_mnist_form():
    photo = np.full((240, 200, 3), (225, 235, 240), dtype=np.uint8)
    cv2.putText(photo, "5", (40, 190), cv2.FONT_HERSHEY_SIMPLEX, 6, (160, 60, 20), 12, cv2.LINE_AA)
    encoded = cv2.imencode(".jpg", photo, [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes()
    image = preprocessing.decode_image(encoded)
    assert image.shape == (240, 200, 3)
    assert_mnist_form(preprocessing.to_mnist(image))


@pytest.mark.parametrize(
    "image",
    [
        np.full((50, 50), 255, dtype=np.uint8),
        np.zeros((50, 50), dtype=np.uint8),
        np.full((50, 50), 128, dtype=np.uint8),
        np.clip(np.random.default_rng(0).normal(128, 30, (100, 100)), 0, 255).astype(np.uint8),
        np.random.default_rng(1).integers(0, 256, (100, 100), dtype=np.uint8),
        np.where(np.random.default_rng(2).random((100, 100)) < 0.05, 0, 255).astype(np.uint8),
        np.zeros((30, 30, 4), dtype=np.uint8),
        np.full((40, 40), 40000, dtype=np.uint16),
    ],
    ids=[
        "white",
        "black",
        "grey",
        "gaussian-noise",
        "uniform-noise",
        "salt-and-pepper",
        "transparent",
        "16-bit",
    ],
)
def test_blank_image_is_reported_not_guessed(image):
    with pytest.raises(PreprocessingError) as error:
        preprocessing.to_mnist(image)
    assert_one_line_error(error, "blank image")


def test_faint_jpeg_of_blank_paper_is_blank():
    generator = np.random.default_rng(2)
    paper = np.clip(generator.normal(240, 3, (120, 160)), 0, 255).astype(np.uint8)
    encoded = cv2.imencode(".jpg", paper)[1].tobytes()
    with pytest.raises(PreprocessingError) as error:
        preprocessing.to_mnist(preprocessing.decode_image(encoded))
    assert_one_line_error(error, "blank image")


@pytest.mark.parametrize(
    "array",
    [np.zeros(10, dtype=np.uint8), np.zeros((10, 10, 5), dtype=np.uint8), np.zeros((0, 10))],
    ids=["one-dimensional", "five-channels", "empty"],
)
def test_array_that_is_not_an_image_is_refused(array):
    with pytest.raises(PreprocessingError) as error:
        preprocessing.to_mnist(array)
    assert_one_line_error(error, "not an image")


def test_steps_are_recorded_in_order():
    steps = {}
    result = preprocessing.to_mnist(draw_digit(3), steps)
    assert list(steps) == [
        "grey", "denoised", "ink", "normalised", "cropped", "strokes", "fitted", "mnist",
    ]  # fmt: skip
    np.testing.assert_array_equal(steps["mnist"], result)
    assert max(steps["fitted"].shape) == BOX


# Files.


@pytest.mark.parametrize("extension", [".png", ".jpg", ".bmp", ".tiff"])
def test_file_formats_read_back_alike(tmp_path, extension):
    image = cv2.cvtColor(draw_digit(2), cv2.COLOR_GRAY2BGR)
    path = tmp_path / f"digit{extension}"
    assert cv2.imwrite(str(path), image)
    from_file = preprocessing.preprocess_file(path)
    assert_mnist_form(from_file)
    assert ink_match(from_file, preprocessing.to_mnist(image)) >= 0.9


def test_16_bit_png_file_keeps_its_depth(tmp_path):
    path = tmp_path / "scan.png"
    assert cv2.imwrite(str(path), draw_digit(6).astype(np.uint16) * 257)
    image = preprocessing.read_image(path)
    assert image.dtype == np.uint16
    np.testing.assert_array_equal(
        preprocessing.to_mnist(image), preprocessing.to_mnist(draw_digit(6))
    )


def test_rgba_png_file_keeps_its_alpha(tmp_path):
    drawing = np.zeros((120, 120, 4), dtype=np.uint8)
    drawing[:, :, 3] = 255 - draw_digit(1, size=(120, 120), scale=3, thickness=8)
    path = tmp_path / "drawing.png"
    assert cv2.imwrite(str(path), drawing)
    assert preprocessing.read_image(path).shape == (120, 120, 4)
    assert_mnist_form(preprocessing.preprocess_file(path))


def test_non_ascii_path_is_read(tmp_path):
    path = tmp_path / "chiffre_écrit_数字.png"
    path.write_bytes(cv2.imencode(".png", draw_digit(3))[1].tobytes())
    assert_mnist_form(preprocessing.preprocess_file(path))


def test_jpeg_is_turned_as_its_exif_orientation_says():
    wide = cv2.imencode(".jpg", np.zeros((40, 80, 3), dtype=np.uint8))[1].tobytes()
    # An EXIF block (big-endian TIFF) with one entry: Orientation (0x0112) = 6,
    # "turn 90 degrees clockwise to display".
    entry = struct.pack(">HHIHH", 0x0112, 3, 1, 6, 0)
    tiff = b"MM\x00\x2a" + struct.pack(">I", 8) + struct.pack(">H", 1) + entry + b"\x00" * 4
    exif = b"Exif\x00\x00" + tiff
    segment = b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif
    turned = wide[:2] + segment + wide[2:]
    assert preprocessing.decode_image(wide).shape == (40, 80, 3)
    assert preprocessing.decode_image(turned).shape == (80, 40, 3)


def test_missing_file_is_reported(tmp_path):
    path = tmp_path / "missing.png"
    with pytest.raises(PreprocessingError) as error:
        preprocessing.preprocess_file(path)
    assert_one_line_error(error, f"cannot read {path}")


def test_text_file_named_png_is_not_an_image(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("This is not a picture.\n")
    with pytest.raises(PreprocessingError) as error:
        preprocessing.preprocess_file(path)
    assert_one_line_error(error, f"{path}: not an image OpenCV can read")


def test_empty_file_is_not_an_image(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(PreprocessingError) as error:
        preprocessing.preprocess_file(path)
    assert_one_line_error(error, f"{path}: empty file")


def test_folder_is_not_an_image(tmp_path):
    with pytest.raises(PreprocessingError) as error:
        preprocessing.read_image(tmp_path)
    assert_one_line_error(error, f"cannot read {tmp_path}")


def test_blank_file_error_names_the_file(tmp_path):
    path = tmp_path / "white.png"
    assert cv2.imwrite(str(path), np.full((30, 30), 255, dtype=np.uint8))
    with pytest.raises(PreprocessingError) as error:
        preprocessing.preprocess_file(path)
    assert_one_line_error(error, f"{path}: blank image")


# Model input.


def test_model_input_is_the_training_scaling():
    result = preprocessing.to_mnist(draw_digit(7))
    model_input = data.to_model_input(result)
    assert model_input.shape == (1, SIZE, SIZE, 1)
    assert model_input.dtype == np.float32
    assert model_input.max() == 1.0


# The example images and the figure.


def example_images():
    return sorted(
        path
        for path in config.TEST_IMAGES_DIR.iterdir()
        if path.suffix.lower() in {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
    )


def test_every_example_image_has_a_known_mnist_source():
    names = {path.name for path in example_images()}
    assert names == set(make_test_images.source_indexes())


@pytest.mark.parametrize("path", example_images(), ids=lambda path: path.name)
def test_example_image_becomes_its_mnist_digit(mnist, path):
    (_, _), (test_images, test_labels) = mnist
    index = make_test_images.source_indexes()[path.name]
    assert int(path.stem[-1]) == test_labels[index]
    result = preprocessing.preprocess_file(path)
    assert_mnist_form(result, box_slack=4)
    # Photos are rotated and redrawn: their ink matches the source digit's
    # better than any other example's source.
    sources = set(make_test_images.source_indexes().values())
    matches = {source: ink_match(result, test_images[source]) for source in sources}
    assert max(matches, key=matches.get) == index


@pytest.mark.parametrize("name, index", list(make_test_images.MNIST_EXAMPLES.items()))
def test_mnist_example_is_the_mnist_test_digit(mnist, name, index):
    (_, _), (test_images, _) = mnist
    image = preprocessing.read_image(config.TEST_IMAGES_DIR / name)
    np.testing.assert_array_equal(image, test_images[index])
    np.testing.assert_array_equal(preprocessing.to_mnist(image), test_images[index])


def test_plot_steps_draws_the_same_bytes_each_time(tmp_path):
    first = figures.plot_preprocessing_steps(draw_digit(5), tmp_path / "first.png")
    second = figures.plot_preprocessing_steps(draw_digit(5), tmp_path / "second.png")
    assert first.read_bytes() == second.read_bytes()


def test_plot_steps_writes_a_figure(tmp_path):
    path = figures.plot_preprocessing_steps(draw_digit(3), tmp_path / "figures" / "steps.png", "3")
    figure = cv2.imread(str(path))
    assert figure is not None
    assert figure.shape[1] > figure.shape[0] > 100
