"""The client's bounds: file size, pixels, whole-request time, answer size, file names.

Each limit is met at its boundary (at it: served; one over: the documented
error), with the real model_server.py where a server is needed, and with
tiny real socket servers for servers that misbehave.
"""

import contextlib
import json
import os
import socket
import sys
import threading

import cv2
import numpy as np
import pytest
from conftest import run_script
from limits_fixtures import run_measuring_memory, write_png_bomb, write_sparse_file
from server_fixtures import ServerProcess

from mnist_serving import config, preprocessing
from mnist_serving.preprocessing import ImageTooLargeError

CLIENT = str(config.CODE_DIR / "serving_request.py")
# A client run takes about 80 MiB at its peak; decoding the bomb took 7.7 GB and
# reading the huge file whole 1.1 GB (bench/limits_bench.py).
CLIENT_MEMORY_BOUND = 512 * 2**20


@pytest.fixture(scope="module")
def server(export_base):
    """model_server.py serving the shared export of the CNN."""
    with ServerProcess(
        f"--model_base_path={export_base}", f"--model_name={config.MODEL_NAME}"
    ) as running:
        yield running


@pytest.fixture(scope="module")
def digits(mnist):
    """Six MNIST test digits, 28x28."""
    return mnist[1][0][:6]


def classify(url, *arguments):
    return run_script("serving_request.py", "--server", url, *arguments, timeout=300)


def records_by_file(stdout):
    return {record["file"]: record for record in map(json.loads, stdout.splitlines())}


# The limits of the file reader, where they are enforced.


def test_a_file_at_the_size_limit_is_read_and_one_byte_more_is_refused_unread(tmp_path, digits):
    path = tmp_path / "digit.png"
    cv2.imwrite(str(path), digits[0])
    size = path.stat().st_size
    assert len(preprocessing.read_file(path, max_bytes=size)) == size
    with pytest.raises(ImageTooLargeError) as error:
        preprocessing.read_file(path, max_bytes=size - 1)
    assert str(error.value) == (
        f"{path}: file of {size:,} bytes: more than the limit of {size - 1:,} bytes"
    )


def test_a_device_without_end_is_read_no_further_than_the_limit():
    with pytest.raises(ImageTooLargeError) as error:
        preprocessing.read_file("/dev/zero", max_bytes=1000)
    assert str(error.value) == "/dev/zero: more than the limit of 1,000 bytes read"


def test_an_image_at_the_pixel_limit_is_decoded_and_one_pixel_more_is_refused(digits):
    encoded = cv2.imencode(".png", digits[0])[1].tobytes()
    assert preprocessing.decode_image(encoded, max_pixels=28 * 28).shape == (28, 28)
    with pytest.raises(ImageTooLargeError) as error:
        preprocessing.decode_image(encoded, max_pixels=28 * 28 - 1)
    assert str(error.value) == "28x28 image (784 pixels): more than the limit of 783 pixels"


@pytest.mark.parametrize("extension", [".jpg", ".tiff", ".webp", ".bmp"])
def test_the_pixel_limit_reads_the_header_of_each_format(extension):
    encoded = cv2.imencode(extension, np.zeros((30, 40, 3), np.uint8))[1].tobytes()
    assert preprocessing.image_size(encoded) == (40, 30)
    with pytest.raises(ImageTooLargeError, match=r"^40x30 image \(1,200 pixels\)"):
        preprocessing.decode_image(encoded, max_pixels=1199)


def test_a_decompression_bomb_is_refused_from_its_header(tmp_path):
    bomb = write_png_bomb(tmp_path / "bomb.png")
    assert bomb.stat().st_size < 3 * 2**20  # 1.6 GB of pixels in 2 MB.
    with pytest.raises(ImageTooLargeError) as error:
        preprocessing.read_image(bomb)
    assert str(error.value) == (
        f"{bomb}: image of more than 178,956,970 pixels (Pillow's bound for a decompression bomb)"
    )


def test_a_format_whose_size_is_not_read_first_is_refused():
    encoded = cv2.imencode(".hdr", np.ones((8, 8, 3), np.float32))[1].tobytes()
    with pytest.raises(preprocessing.PreprocessingError, match="with its size checked first"):
        preprocessing.decode_image(encoded)


# The client on files over its limits.


def test_a_folder_with_a_bomb_and_a_huge_file_classifies_its_good_files_in_bounded_memory(
    server, tmp_path, digits
):
    for index in range(4):
        cv2.imwrite(str(tmp_path / f"digit_{index}.png"), digits[index])
    write_png_bomb(tmp_path / "digit_4_bomb.png")
    write_sparse_file(tmp_path / "digit_5_huge.png", 2**30)
    result = run_measuring_memory(
        [sys.executable, CLIENT, "--server", server.url, "-i", str(tmp_path), "--json"]
    )
    assert result.returncode == 1, result.stderr
    records = records_by_file(result.stdout)
    assert [name for name, record in records.items() if "class" in record] == [
        f"digit_{index}.png" for index in range(4)
    ]
    assert records["digit_4_bomb.png"]["error"].endswith(
        "image of more than 178,956,970 pixels (Pillow's bound for a decompression bomb)"
    )
    assert records["digit_5_huge.png"]["error"].endswith(
        "file of 1,073,741,824 bytes: more than the limit of 67,108,864 bytes"
    )
    assert "6 images: 4 classified, 2 failed" in result.stderr
    assert result.peak_bytes < CLIENT_MEMORY_BOUND


def test_files_at_the_limits_are_classified_and_files_one_over_fail(server, tmp_path, digits):
    # libpng stops at the IEND chunk: bytes after it change nothing but the size,
    # here made larger than the other files'.
    png = cv2.imencode(".png", digits[0])[1].tobytes() + bytes(1000)
    (tmp_path / "a_at_size_limit.png").write_bytes(png)
    (tmp_path / "b_one_byte_over.png").write_bytes(png + b"\0")
    size = len(png)
    cv2.imwrite(str(tmp_path / "c_at_pixel_limit.png"), digits[1])
    cv2.imwrite(str(tmp_path / "d_one_row_over.png"), np.vstack([digits[2], digits[2][:1]]))
    result = classify(
        server.url, "-i", tmp_path, "--json", "--max-file-size", size, "--max-pixels", 28 * 28
    )
    records = records_by_file(result.stdout)
    assert "class" in records["a_at_size_limit.png"]
    assert records["b_one_byte_over.png"]["error"].endswith(
        f"file of {size + 1:,} bytes: more than the limit of {size:,} bytes"
    )
    assert "class" in records["c_at_pixel_limit.png"]
    assert records["d_one_row_over.png"]["error"].endswith(
        "28x29 image (812 pixels): more than the limit of 784 pixels"
    )
    assert result.returncode == 1


def test_the_limits_are_flags_with_their_defaults_in_the_help():
    result = run_script("serving_request.py", "--help")
    text = " ".join(result.stdout.split())
    assert "--max-file-size SIZE" in text and "(default: 64M)" in text
    assert "--max-pixels N" in text and "(default: 64M)" in text
    assert "--max-answer-size SIZE" in text and "(default: 16M)" in text
    assert "--timeout TIMEOUT seconds for each whole request" in text


@pytest.mark.parametrize("value", ["0", "-1", "lots", "64X"])
def test_a_bad_limit_is_a_usage_error(value):
    result = run_script("serving_request.py", "-i", ".", "--max-file-size", value)
    assert result.returncode == 2
    assert f"expected a size in bytes such as 500k or 64M, got '{value}'" in result.stderr


# File names that are not UTF-8.


@pytest.fixture
def odd_names(tmp_path, digits):
    """A digit and a text file whose names are not UTF-8, a digit named with a newline."""
    folder = os.fsencode(tmp_path)
    cv2.imwrite(str(tmp_path / "digit_1.png"), digits[1])
    with open(os.path.join(folder, b"digit_2_\xff\xfe.png"), "wb") as file:
        file.write(cv2.imencode(".png", digits[2])[1].tobytes())
    with open(os.path.join(folder, b"notes_\xe9.png"), "wb") as file:
        file.write(b"not an image")
    cv2.imwrite(str(tmp_path / "digit_3\nx.png"), digits[3])
    return tmp_path


def test_names_that_are_not_utf8_are_printed_with_replacement_characters(server, odd_names):
    result = classify(server.url, "-i", odd_names)
    assert result.returncode == 1, result.stderr  # The text file fails.
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines[:4]] == [
        "digit_1.png",
        "digit_2_\ufffd\ufffd.png",
        "digit_3\\x0ax.png",  # One line per file: the newline is escaped.
        "notes_\ufffd.png",
    ]
    assert "failed:" in lines[3] and "failed:" not in lines[1]
    assert lines[4] == "4 images: 3 classified, 1 failed"
    assert lines[-1].startswith("failed: notes_\ufffd.png (")
    assert "Traceback" not in result.stderr


def test_names_that_are_not_utf8_are_valid_json_with_replacement_characters(server, odd_names):
    result = classify(server.url, "-i", odd_names, "--json")
    assert result.returncode == 1, result.stderr
    records = records_by_file(result.stdout)
    assert set(records) == {
        "digit_1.png",
        "digit_2_\ufffd\ufffd.png",
        "digit_3\nx.png",
        "notes_\ufffd.png",
    }
    assert "class" in records["digit_2_\ufffd\ufffd.png"]
    assert "error" in records["notes_\ufffd.png"]
    assert "Traceback" not in result.stderr


# Servers that answer too slowly or too much: real sockets on 127.0.0.1.


class MisbehavingServer:
    """An HTTP server on 127.0.0.1 that answers each request with `respond(self, connection)`."""

    def __init__(self, respond):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.stopped = threading.Event()
        self.bytes_sent = 0
        self._respond = respond
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:  # Stopped.
                return
            with connection:
                request = b""
                while b"\r\n\r\n" not in request:  # The client's GETs have no body.
                    piece = connection.recv(65536)
                    if not piece:
                        break
                    request += piece
                # An OSError is the client hanging up, as it should.
                with contextlib.suppress(OSError):
                    self._respond(self, connection)

    def send(self, connection, data):
        connection.sendall(data)
        self.bytes_sent += len(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.stopped.set()
        self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self._thread.join(timeout=10)


def trickle_one_byte_a_second(server, connection):
    """A complete, valid answer, sent one byte a second: about 20 minutes in all."""
    body = b'{"metadata": {}}' + b" " * 1200
    answer = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    answer += b"Content-Length: %d\r\n\r\n" % len(body) + body
    for index in range(len(answer)):
        server.send(connection, answer[index : index + 1])
        if server.stopped.wait(1.0):
            return


def test_a_server_that_trickles_one_byte_a_second_is_cut_off_at_the_timeout(tmp_path, digits):
    cv2.imwrite(str(tmp_path / "digit.png"), digits[0])
    with MisbehavingServer(trickle_one_byte_a_second) as trickling:
        result = classify(trickling.url, "--timeout", "3", "-i", tmp_path / "digit.png")
        sent = trickling.bytes_sent
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"serving_request.py: error: no complete answer from {trickling.url} within 3 s (--timeout)"
    )
    # Bytes kept coming, each well within 3 s of the last: no single read timed out.
    assert sent >= 2


def stream_a_gibibyte(declare_length):
    """An answer of 1 GiB of JSON whitespace, sent as fast as the client reads it."""
    piece = b" " * 2**16

    def respond(server, connection):
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        if declare_length:
            server.send(connection, head + b"Content-Length: %d\r\n\r\n" % 2**30)
            for _ in range(2**30 // len(piece)):
                server.send(connection, piece)
        else:
            server.send(connection, head + b"Transfer-Encoding: chunked\r\n\r\n")
            for _ in range(2**30 // len(piece)):
                server.send(connection, b"%x\r\n" % len(piece) + piece + b"\r\n")
            server.send(connection, b"0\r\n\r\n")

    return respond


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_an_answer_over_the_size_limit_is_refused_without_reading_it_all(
    tmp_path, digits, declared
):
    cv2.imwrite(str(tmp_path / "digit.png"), digits[0])
    with MisbehavingServer(stream_a_gibibyte(declared)) as flooding:
        result = run_measuring_memory(
            [sys.executable, CLIENT, "--server", flooding.url, "-i", str(tmp_path / "digit.png")]
        )
        sent = flooding.bytes_sent
    metadata_url = f"{flooding.url}/v1/models/{config.MODEL_NAME}/metadata"
    size = "of 1,073,741,824 bytes " if declared else ""
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"serving_request.py: error: the answer {size}from {metadata_url} is larger than "
        "the limit of 16,777,216 bytes (--max-answer-size)"
    )
    assert sent < 2**30 // 2  # The client hung up long before the end.
    assert result.peak_bytes < CLIENT_MEMORY_BOUND


def test_an_answer_at_the_size_limit_is_read_and_one_byte_less_refuses_it(server, tmp_path, digits):
    cv2.imwrite(str(tmp_path / "digit.png"), digits[0])
    metadata_url = f"{server.url}/v1/models/{config.MODEL_NAME}/metadata"
    size = len(server.get(f"/v1/models/{config.MODEL_NAME}/metadata").content)
    at_limit = classify(server.url, "-i", tmp_path / "digit.png", "--max-answer-size", size)
    assert at_limit.returncode == 0, at_limit.stderr
    under = classify(server.url, "-i", tmp_path / "digit.png", "--max-answer-size", size - 1)
    assert under.returncode == 1
    assert under.stderr.strip() == (
        f"serving_request.py: error: the answer of {size:,} bytes from {metadata_url} is "
        f"larger than the limit of {size - 1:,} bytes (--max-answer-size)"
    )
