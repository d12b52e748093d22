"""Preprocessing: drawn digits in the situations of real photos (placement, size, pens,
blur) come out in MNIST form."""

import cv2
import numpy as np
import pytest
from drawn_digits import BOX, SIZE, assert_mnist_form, draw_digit, ink_match

from mnist_serving import preprocessing
from mnist_serving.preprocessing import paper

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


@pytest.mark.parametrize("dark_ink", [True, False])
def test_a_hairlines_polarity_is_judged_against_the_paper_beside_it(dark_ink):
    # A line a pixel wide, dark or light, on a noisy mid-grey page: the
    # search for a hairline finds the line's side, and the paper's level on
    # the side where the ink is bright.
    page = np.full((600, 800), 128, dtype=np.float32)
    cv2.line(page, (200, 100), (500, 500), 88 if dark_ink else 168, thickness=1)
    noise = np.random.default_rng(5).normal(0, 4, page.shape)
    grey = np.clip(page + noise, 0, 255).astype(np.float32)
    found = paper._hairline_paper(grey)
    assert found.dark_ink == dark_ink
    assert found.level == pytest.approx(255.0 - 128.0 if dark_ink else 128.0, abs=1)


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
