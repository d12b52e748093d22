"""Hostile inputs for the client's and the server's limits, and the memory of a process.

Shared by the tests and `bench/limits_bench.py`, `bench/server_limits_bench.py`.
"""

import dataclasses
import os
import signal
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path


def _png_chunk(kind, payload):
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload))
    )


def write_png_bomb(path, width=20000, height=20000):
    """A valid RGBA PNG of width x height transparent pixels, about 2 MB for 20000x20000.

    Each row is compressed once and ended by a full flush, which makes its
    compressed bytes independent of the rows before it: the same bytes repeat
    for every row, so the file takes a second to write, not the minutes of
    compressing 1.6 GB.
    """
    row = bytes(1 + 4 * width)  # Filter byte 0, then RGBA zeros.
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)  # Raw deflate.
    compressed_row = compressor.compress(row) + compressor.flush(zlib.Z_FULL_FLUSH)
    end = compressor.flush()
    checksum = 1
    for _ in range(height):
        checksum = zlib.adler32(row, checksum)
    stream = b"\x78\xda" + compressed_row * height + end + struct.pack(">I", checksum)
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)  # 8-bit RGBA.
    Path(path).write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", stream)
        + _png_chunk(b"IEND", b"")
    )
    return Path(path)


def write_sparse_file(path, size):
    """A file of `size` zero bytes that takes no room on disk (until it is read)."""
    with open(path, "wb") as file:
        file.truncate(size)
    return Path(path)


@dataclasses.dataclass
class Measured:
    """What a finished process printed, its exit status and its peak resident memory."""

    returncode: int
    stdout: str
    stderr: str
    peak_bytes: int


def run_measuring_memory(command, timeout=300):
    """Runs `command` to the end; its peak memory comes from the kernel's accounting.

    The `ru_maxrss` that `os.wait4` returns for a child is its high-water mark
    of resident memory, however briefly reached; but a child forked from this
    process starts with this process's mark (a test process with TensorFlow
    loaded: 1 GB), which `exec` keeps. So a small launcher (this file, run as
    a script) starts `command` and reports its mark: that child is forked from
    a 10 MB process. The whole is killed after `timeout` seconds.
    """
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "peak_bytes"
        launcher = subprocess.Popen(
            [sys.executable, __file__, str(report), *map(str, command)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            stdout, stderr = launcher.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.communicate()
            raise
        return Measured(
            launcher.returncode, stdout.decode(), stderr.decode(), int(report.read_text())
        )


def _run_and_report_peak(report, command):
    child = subprocess.Popen(command)
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    Path(report).write_text(str(usage.ru_maxrss * 1024))  # KiB on Linux.
    return child.returncode


def memory_bytes(pid, field="VmHWM"):
    """A process's peak (VmHWM) or current (VmRSS) resident memory, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024  # kB
    raise ValueError(f"no {field} in /proc/{pid}/status")


def reset_peak_memory(pid):
    """Sets a process's VmHWM back to its current resident memory (Linux 4.0 and later)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def image_json_texts(images):
    """The JSON text of each uint8 image as [28][28][1] lists of 4-decimal floats in 0..1."""
    texts = []
    for image in images:
        rows = ("[" + ",".join(f"[{value:.4f}]" for value in row) + "]" for row in image / 255.0)
        texts.append("[" + ",".join(rows) + "]")
    return texts


def zeros_json_text(size=28):
    """The JSON text of one image of integer zeros as [size][size][1] lists."""
    row = "[" + ",".join(["[0]"] * size) + "]"
    return "[" + ",".join([row] * size) + "]"


def predict_body(texts, count):
    """A predict body of `count` instances, cycling through the JSON `texts`."""
    instances = ",".join(texts[index % len(texts)] for index in range(count))
    return ('{"instances": [' + instances + "]}").encode()


def predict_body_of_size(texts, megabytes):
    """(body, instances): a predict body of about `megabytes` MB of the JSON `texts`."""
    per_instance = sum(len(text) + 1 for text in texts) / len(texts)
    count = int(megabytes * 1e6 / per_instance)
    return predict_body(texts, count), count


if __name__ == "__main__":
    sys.exit(_run_and_report_peak(sys.argv[1], sys.argv[2:]))
