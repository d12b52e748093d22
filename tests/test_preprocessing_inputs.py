"""Preprocessing: every kind of image array and file it reads, and the one-line errors
for what it cannot."""

import struct

import cv2
import numpy as np
import pytest
from drawn_digits import BOX, assert_mnist_form, assert_one_line_error, draw_digit, ink_match

from mnist_serving import preprocessing
from mnist_serving.preprocessing import PreprocessingError

# Kinds of image: alpha, depth, colour, blank, not an image.


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
