"""Preprocessing: uneven light, shadows, chalk on a board, noise and specks."""

import cv2
import numpy as np
import pytest
from drawn_digits import SIZE, assert_mnist_form, draw_digit, ink_match, pieces_of_paper

from mnist_serving import preprocessing
from mnist_serving.preprocessing import pipeline

# Light, shadows, chalk and noise.


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
