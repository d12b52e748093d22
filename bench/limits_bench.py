"""Measures serving_request.py on files over its limits: peak memory, time, what it reports.

Writes three folders of MNIST test digits as PNG files: the digits alone; the
digits and a decompression bomb (a 20000x20000 RGBA PNG of 2 MB, 1.6 GB of
pixels); the digits and a file of 1 GiB. Starts `code/model_server.py` and runs
`serving_request.py -i FOLDER --json` on each folder, with this checkout's
client and, with `--before`, with another checkout's (e.g. main's, for the
figures before a change). Each run's peak resident memory is the kernel's
high-water mark of the client process (`ru_maxrss`, from `os.wait4`).

Then, in this process, times how long the file reader takes to refuse the
bomb (reading the file, then its header; its pixels are never decoded),
against reading and decoding one of the digits in the same run.

Typical usage:
    git worktree add --detach /tmp/before12 main
    python bench/limits_bench.py --before /tmp/before12/code
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import orjson
from serving_bench import PROJECT_DIR, ensure_model, start_server

# The hostile files and the memory measurement of the tests.
sys.path.insert(0, str(PROJECT_DIR / "tests"))

from limits_fixtures import (
    run_measuring_memory,
    write_png_bomb,
    write_sparse_file,
)

from mnist_serving import cli, config, data, preprocessing

# One line of the results table.
ROW = "{:<10}{:<10}{:>11}{:>9}{:>6}{:>12}{:>8}  {}"


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=cli.HelpFormatter,
    )
    parser.add_argument("--digits", type=int, default=8, help="good files in each folder")
    parser.add_argument(
        "--before",
        type=Path,
        metavar="CODE_DIR",
        help="the code/ folder of another checkout whose client is measured too",
    )
    parser.add_argument(
        "--model-base",
        type=Path,
        default=config.DEFAULT_EXPORT_BASE,
        help="the model's base path; without a version there, an untrained CNN is served",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=900,
        help="seconds after which a client run is stopped (and reported as such)",
    )
    return parser.parse_args(argv)


def write_folders(scratch, digits):
    """{case: folder}: the digits alone, with a bomb, with a file of 1 GiB."""
    folders = {}
    for case in ("digits", "bomb", "huge file"):
        folder = Path(scratch) / case.replace(" ", "_")
        folder.mkdir()
        for index, image in enumerate(digits):
            cv2.imwrite(str(folder / f"digit_{index}.png"), image)
        folders[case] = folder
    write_png_bomb(folders["bomb"] / "z_bomb.png")
    write_sparse_file(folders["huge file"] / "z_huge.png", 2**30)
    return folders


def run_client(code_dir, folder, port, timeout):
    """(peak MiB, seconds, exit status, classified, failed, last error) of one client run."""
    command = [
        sys.executable,
        str(code_dir / "serving_request.py"),
        "-i", str(folder),
        "--server", f"http://127.0.0.1:{port}",
        "--json",
    ]  # fmt: skip
    start = time.perf_counter()
    try:
        result = run_measuring_memory(command, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, time.perf_counter() - start, "-", 0, 0, f"stopped after {timeout:g} s"
    seconds = time.perf_counter() - start
    records = []
    for line in result.stdout.splitlines():
        try:
            records.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            break
    classified = sum("class" in record for record in records)
    errors = [record["error"] for record in records if "error" in record]
    if errors:
        note = errors[-1].replace(f"{folder}/", "")
    elif result.returncode != 0:
        note = (result.stderr.strip().splitlines() or [""])[-1]
    else:
        note = ""
    return result.peak_bytes / 2**20, seconds, result.returncode, classified, len(errors), note


def best_of(repeats, function):
    """The shortest of `repeats` timings of `function()`, in seconds."""
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        timings.append(time.perf_counter() - start)
    return min(timings)


def refuse(read, source):
    """`read(source)`, which must refuse an image over its limits."""
    try:
        read(source)
    except preprocessing.ImageTooLargeError:
        return
    raise AssertionError(f"{read.__name__} did not refuse the bomb")


def main(argv=None):
    arguments = parse_arguments(argv)
    (_, _), (test_images, _) = data.load_mnist()
    clients = {"this": config.CODE_DIR}
    if arguments.before is not None:
        clients = {"before": arguments.before.resolve(), **clients}

    with tempfile.TemporaryDirectory() as scratch:
        folders = write_folders(scratch, test_images[: arguments.digits])
        base, untrained = ensure_model(arguments.model_base, scratch, test_images)
        with start_server(base, enable_batching=False, batching_file=None) as server:
            rows = []
            for case, folder in folders.items():
                for name, code_dir in clients.items():
                    rows.append(
                        (case, name, *run_client(code_dir, folder, server.port, arguments.timeout))
                    )

        bomb = folders["bomb"] / "z_bomb.png"
        digit = folders["bomb"] / "digit_0.png"
        bomb_bytes = bomb.read_bytes()
        refuse(preprocessing.read_image, bomb)  # Pillow loads its plugins on first use.
        refusing = best_of(20, lambda: refuse(preprocessing.read_image, bomb))
        checking = best_of(20, lambda: refuse(preprocessing.decode_image, bomb_bytes))
        decoding = best_of(20, lambda: preprocessing.read_image(digit))

    print(
        f"serving_request.py -i FOLDER --json, {arguments.digits} MNIST digits per folder, "
        f"{os.cpu_count()} CPUs" + (" (untrained model)" if untrained else "")
    )
    header = ("folder", "client", "peak MiB", "seconds", "exit", "classified", "failed", "")
    print(ROW.format(*header).rstrip())
    for case, name, peak, seconds, status, classified, failed, note in rows:
        peak_text = f"{peak:.0f}" if peak is not None else "-"
        row = (case, name, peak_text, f"{seconds:.1f}", status, classified, failed, note)
        print(ROW.format(*row).rstrip())
    print(
        f"refusing the bomb: {refusing * 1e3:.2f} ms to read its {len(bomb_bytes) / 1e6:.1f} MB "
        f"and check its header (the check alone: {checking * 1e3:.2f} ms); reading and "
        f"decoding one 28x28 digit: {decoding * 1e3:.2f} ms"
    )


if __name__ == "__main__":
    main()
