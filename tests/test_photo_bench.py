"""bench/photo_bench.py: its drawings (photo_groups.py) are what they say, and it runs every
group."""

import subprocess
import sys

import cv2
import numpy as np
import photo_bench
import photo_groups
import pytest
from drawn_digits import ink_iou, pieces_of_paper

from mnist_serving import config, preprocessing

BENCH = config.PROJECT_DIR / "bench" / "photo_bench.py"


def run_bench(*arguments):
    return subprocess.run(
        [sys.executable, str(BENCH), *map(str, arguments)],
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.parametrize("pen", [1, 3, 8, 20])
def test_pen_draws_the_digit_with_a_line_of_its_width(mnist, pen):
    (_, _), (test_images, _) = mnist
    coverage = photo_groups.pen_coverage(test_images[0], 160, pen, angle=0.0)
    assert preprocessing.stroke_width(coverage * 255) == pytest.approx(pen, rel=0.2, abs=0.3)


def test_pen_follows_the_digits_ink_where_it_reaches_mnists_ink_level():
    # Two strokes with grey between them, below half the brightest level: a
    # gap in the digit's ink, as at a 4's top or inside a 9's loop.
    digit = np.zeros((config.IMAGE_SIZE, config.IMAGE_SIZE), np.uint8)
    digit[6:22, 10:12] = digit[6:22, 16:18] = 255
    digit[6:22, 12:16] = round(255 * preprocessing.INK_LEVEL) - 20
    coverage = photo_groups.pen_coverage(digit, 280, 6, angle=0.0)
    row = coverage[coverage.shape[0] // 2] > 0.5
    lines = np.count_nonzero(row[1:] & ~row[:-1])
    assert lines == 2 and not row[len(row) // 2]


def test_font_digit_is_drawn_at_the_height_asked():
    fonts = [font for _, font in photo_groups.read_font_list(photo_groups.FONT_LIST)]
    coverage = photo_groups.glyph_coverage(fonts[0], 5, height=120, angle=0.0)
    _, _, _, height = cv2.boundingRect((coverage >= 0.5).astype(np.uint8))
    assert height == pytest.approx(120, abs=2)


def test_every_group_draws_the_same_photos_for_the_same_seed(mnist):
    (_, _), (test_images, _) = mnist
    fonts = [font for _, font in photo_groups.read_font_list(photo_groups.FONT_LIST)]
    for name, group in photo_groups.GROUPS.items():
        source = (fonts[0], 4) if name == "fonts" else test_images[5]
        first = group.draw(source, photo_groups.group_rng(0, name))
        second = group.draw(source, photo_groups.group_rng(0, name))
        np.testing.assert_array_equal(first.photo, second.photo, err_msg=name)
        np.testing.assert_array_equal(first.drawn, second.drawn, err_msg=name)


def test_drawn_digit_is_the_ink_before_the_camera(mnist, monkeypatch):
    # A blurred, noisy, unevenly lit JPEG photo; its `drawn` twin is the ink
    # handed to the camera, on a blank page, in MNIST form.
    (_, _), (test_images, _) = mnist
    photographed_ink = []
    camera = photo_groups.photograph

    def photograph(coverage, spec, rng):
        photographed_ink.append(coverage)
        return camera(coverage, spec, rng)

    monkeypatch.setattr(photo_groups, "photograph", photograph)
    drawing = photo_groups.draw_blur(test_images[0], photo_groups.group_rng(0, "blur"))
    assert drawing.photo.shape[0] > 100
    assert drawing.drawn.shape == (config.IMAGE_SIZE, config.IMAGE_SIZE)
    [ink] = photographed_ink
    expected = preprocessing.to_mnist(np.rint(ink * 255).astype(np.uint8))
    np.testing.assert_array_equal(drawing.drawn, expected)


# Photos of the `light` group at seed 0 with `--images 1250`, pinned by the state of
# the group's generator (PCG64) just before each is drawn, and their MNIST
# test digits.
LIGHT_GROUP_INCREMENT = 335978279881735879182729546145833407773
LIGHT_PHOTO_577_STATE, LIGHT_PHOTO_577_DIGIT = 128679438283417657617059481815028727889, 8077
LIGHT_PHOTO_1065_STATE, LIGHT_PHOTO_1065_DIGIT = 205686089249179541157265726689500066824, 8565
# Photo 439 of the `light` group with --seed 1.
LIGHT_GROUP_SEED_1_INCREMENT = 159394900369369590400500622021071957755
LIGHT_PHOTO_439_STATE, LIGHT_PHOTO_439_DIGIT = 183595293870196472457964283476515580804, 7939


# Photo 1224 of the `pen` group with --seed 1.
PEN_GROUP_SEED_1_INCREMENT = 159655472839635311709869562931416576247
PEN_PHOTO_1224_STATE, PEN_PHOTO_1224_DIGIT = 137239989859195418595285945071568598941, 3724
# Photos 311 and 821 of the `chalk` group with --seed 1.
CHALK_GROUP_SEED_1_INCREMENT = 287730764306634755224645151348277318435
CHALK_PHOTO_311_STATE, CHALK_PHOTO_311_DIGIT = 178538724975970146970117499332829520201, 9061
CHALK_PHOTO_821_STATE, CHALK_PHOTO_821_DIGIT = 50604167548878303467273580794791461358, 9571


def pinned_photo(draw, test_images, state, digit, increment):
    """The `Drawing` that `draw` (a group's) made when its generator was in
    `state` and had `increment` (one per group and seed)."""
    rng = np.random.default_rng()
    rng.bit_generator.state = {
        "bit_generator": "PCG64",
        "state": {"state": state, "inc": increment},
        "has_uint32": 0,
        "uinteger": 0,
    }
    return draw(test_images[digit], rng)


def pinned_light_photo(test_images, state, digit, increment=LIGHT_GROUP_INCREMENT):
    """A `Drawing` of the `light` group (`pinned_photo`), by default at seed 0."""
    return pinned_photo(photo_groups.draw_light, test_images, state, digit, increment)


def test_a_bold_digit_under_a_shadow_keeps_the_first_lighting_map(mnist):
    # A bold 0 half in a soft shadow: with the finer lighting map, part of
    # the shadow stays, and the paper's noise measured on the border buries
    # the ink. The first map had found the digit; it must stand, rather than
    # a search for a hairline that finds only the 0's edges.
    (_, _), (test_images, test_labels) = mnist
    assert test_labels[LIGHT_PHOTO_577_DIGIT] == 0
    drawing = pinned_light_photo(test_images, LIGHT_PHOTO_577_STATE, LIGHT_PHOTO_577_DIGIT)
    result = preprocessing.to_mnist(drawing.photo)
    # The 0 keeps its hole (found at the finer size, its edges had none).
    ink = (result >= 128).astype(np.uint8)
    _, hierarchy = cv2.findContours(ink, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    holes = [entry for entry in hierarchy[0] if entry[3] >= 0]
    assert len(holes) == 1


def test_a_shadows_edge_left_by_the_first_lighting_map_is_not_taken_for_the_digit(
    mnist,
):
    # A 7 beside a shadow's edge: the first map of the paper leaves a faint
    # line of the edge along the border, which the second map removes. Were
    # it kept, the digit's box would take it in and the 7 would shrink to a
    # corner of the result.
    (_, _), (test_images, test_labels) = mnist
    assert test_labels[LIGHT_PHOTO_1065_DIGIT] == 7
    drawing = pinned_light_photo(test_images, LIGHT_PHOTO_1065_STATE, LIGHT_PHOTO_1065_DIGIT)
    result = preprocessing.to_mnist(drawing.photo)
    assert ink_iou(result, drawing.drawn) >= 0.9


def test_a_markers_digit_in_the_shade_beside_a_band_of_light_is_found_not_called_blank(
    mnist,
):
    # A marker's 6 filling most of a dim photo crossed by a band of light.
    # The lighting map's error along the band spreads the border's levels
    # so far that eight times that spread reached past the ink; the noise
    # within each piece of the border is a fraction of it.
    (_, _), (test_images, test_labels) = mnist
    assert test_labels[LIGHT_PHOTO_439_DIGIT] == 6
    drawing = pinned_light_photo(
        test_images, LIGHT_PHOTO_439_STATE, LIGHT_PHOTO_439_DIGIT, LIGHT_GROUP_SEED_1_INCREMENT
    )
    result = preprocessing.to_mnist(drawing.photo)
    assert ink_iou(result, drawing.drawn) >= 0.75


def test_a_hairline_on_a_large_unevenly_lit_page_is_found_dark_not_called_blank(mnist):
    # A hairline 0 on a 2.3-megapixel grey page, the light falling across
    # it. Nothing stands out at the working size, and under uneven light the
    # polarity was judged on a thumbnail, where the line has faded: the ink
    # was taken for light, and the finer search for a hairline looked for
    # light ink and called the photo blank.
    (_, _), (test_images, test_labels) = mnist
    assert test_labels[PEN_PHOTO_1224_DIGIT] == 0
    drawing = pinned_photo(
        photo_groups.draw_pen,
        test_images,
        PEN_PHOTO_1224_STATE,
        PEN_PHOTO_1224_DIGIT,
        PEN_GROUP_SEED_1_INCREMENT,
    )
    result = preprocessing.to_mnist(drawing.photo)
    assert ink_iou(result, drawing.drawn) >= 0.9


def chalk_strokes_seed_1(test_images, state, digit):
    """The strokes that the recipe cuts from a pinned `chalk` photo at seed 1."""
    drawing = pinned_photo(
        photo_groups.draw_chalk, test_images, state, digit, CHALK_GROUP_SEED_1_INCREMENT
    )
    steps = {}
    preprocessing.to_mnist(drawing.photo, steps)
    return steps["strokes"]


def test_grain_inside_a_thick_chalk_stroke_is_filled_not_left_as_a_loop(mnist):
    # A 1 in chalk nearly a fifth of its height wide: the grain left holes
    # in the cut too large to pass for pinholes, and narrowing the stroke
    # widened them into a loop at the top: the 1 was read as an 8. The
    # chalk, smoothed, covers every one of them.
    (_, _), (test_images, test_labels) = mnist
    assert test_labels[CHALK_PHOTO_311_DIGIT] == 1
    strokes = chalk_strokes_seed_1(test_images, CHALK_PHOTO_311_STATE, CHALK_PHOTO_311_DIGIT)
    assert pieces_of_paper(strokes) == 1  # The paper around the 1, no hole.


def test_a_chalk_nines_loop_stays_paper_where_its_grain_is_filled(mnist):
    # Where the chalk, smoothed, dips inside a hole, the hole is a loop, not
    # grain: the 9 keeps its loop (and was read as a 4 with the grain's
    # holes, which had joined the loop to the paper around).
    (_, _), (test_images, test_labels) = mnist
    assert test_labels[CHALK_PHOTO_821_DIGIT] == 9
    strokes = chalk_strokes_seed_1(test_images, CHALK_PHOTO_821_STATE, CHALK_PHOTO_821_DIGIT)
    assert pieces_of_paper(strokes) == 2  # The paper around, and the loop.


def test_a_photo_found_blank_counts_as_read_wrong_whatever_the_model_guesses(mnist):
    # A page with nothing on it and a real photo: the recipe finds the first
    # blank; the black input standing in for it is read wrong even where the
    # model's guess on it happens to be the label.
    (_, _), (test_images, _) = mnist
    page = np.full((300, 400, 3), 200, dtype=np.uint8)
    drawings = {
        "page": photo_groups.Drawing(page, np.zeros((config.IMAGE_SIZE,) * 2, np.uint8)),
        "digit": photo_groups.draw_jpeg(test_images[0], photo_groups.group_rng(0, "jpeg")),
    }
    group = photo_groups.Group("a blank page and a digit", lambda name, rng: drawings[name])
    inputs = photo_bench.group_inputs(group, ["page", "digit"], rng=None)
    assert inputs.blank.tolist() == [True, False]
    assert not inputs.ours[0].any()
    labels = np.array([1, 7])
    right = photo_bench.read_right(np.array([1, 7]), labels, inputs.blank)
    assert right.tolist() == [False, True]


def test_the_margin_of_a_difference_counts_only_digits_read_differently():
    alike = np.array([True, False, True, True])
    assert photo_bench.paired_margin(alike, alike) == 0.0
    # One digit gained and one lost in four pairs: differences (1, -1, 0, 0),
    # standard deviation sqrt(2/3), over sqrt(4), times 1.96, in points.
    photos = np.array([True, False, True, True])
    mnist = np.array([False, True, True, True])
    assert photo_bench.paired_margin(photos, mnist) == pytest.approx(80.02, abs=0.01)
    assert photo_bench.paired_margin(mnist, photos) == photo_bench.paired_margin(photos, mnist)


def test_bench_runs_every_group_and_reports_each(export_base):
    result = run_bench("--images", 3, "--timed-photos", 2, "--model-base", export_base)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {line.split()[0] for line in result.stdout.splitlines() if line.strip()}
    for name in ["mixed", "size", "pen", "blur", "motion", "jpeg", "light", "chalk", "fonts"]:
        assert name in rows
    assert "MNIST groups" in result.stdout
    header = next(line for line in result.stdout.splitlines() if line.startswith("group"))
    assert header.split()[:8] == [
        "group",
        "photos",
        "MNIST",
        "drawn",
        "photos",
        "diff",
        "margin",
        "camera",
    ]
    assert "per 1-megapixel JPEG photo" in result.stdout


def test_missing_fonts_are_reported_loudly(export_base, tmp_path):
    fonts = tmp_path / "fonts.txt"
    fonts.write_text("fonts-nowhere  /nonexistent/Handwriting.ttf\n")
    result = run_bench(
        "--images", 2, "--groups", "fonts", "--fonts", fonts, "--timed-photos", 0,
        "--model-base", export_base,
    )  # fmt: skip
    assert result.returncode == 1
    assert "WARNING: 1 of the 1 handwriting fonts" in result.stderr
    assert "make fonts" in result.stderr
    assert "NOT RUN" in result.stdout


def test_speed_bench_compares_the_recipe_with_another_checkout():
    # This checkout against itself: both rows are printed, and the ratio.
    result = subprocess.run(
        [
            sys.executable,
            str(config.PROJECT_DIR / "bench" / "preprocessing_speed.py"),
            "--before", str(config.PROJECT_DIR / "code"),
            "--photos", "2", "--turns", "1", "--rounds", "1",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line.split()[0] for line in result.stdout.splitlines()]
    assert "this" in rows and "before" in rows
    assert "times as long as before's" in result.stdout


def test_speed_bench_refuses_a_folder_without_the_package(tmp_path):
    result = subprocess.run(
        [sys.executable, str(config.PROJECT_DIR / "bench" / "preprocessing_speed.py"),
         "--before", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    assert result.returncode == 2
    assert "no mnist_serving package" in result.stderr
    assert "Traceback" not in result.stderr
