"""Measures serving_request.py on a folder of 10,000 MNIST test digits saved as PNG.

Writes the MNIST test set as PNG files (once, into bench/work/), starts
`code/model_server.py` on free ports, and times, on the same files in the
same run:

- `serving_request.py -i FOLDER --json`, the command users run, with each
  signature (`predict_png`: PNG files; `serving_default`: float32 pixels)
  and each protocol (REST: JSON, PNGs as b64; gRPC: TensorProtos), the
  protocols of a signature in alternating rounds (REST, gRPC, REST, gRPC);
- in-process prediction: the same files read and preprocessed by the same
  module, and the same SavedModel signature called in this process in
  batches of the same size, no HTTP;
- the original design: one request per image, its pixels as a JSON list of
  floats (`requests.post(url, json={"instances": ...})`), one after another.

It prints images/s, accuracy against the MNIST labels, and the ratio of each
to in-process prediction, whether gRPC gave every file the class REST gave
it, and the load average at the start and the end. The model is the
project's export; without one, an untrained CNN is exported to a temporary
folder and accuracy means nothing.

Typical usage:
    python bench/client_bench.py
    python bench/client_bench.py --images 2000 --original-images 500
    python bench/client_bench.py --model-base /tmp/export/my_digit_classifier
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import orjson
import requests
from serving_bench import PROJECT_DIR, ensure_model, memory_mib, start_server

from mnist_serving import cli, config, data, preprocessing, savedmodel

# One line of the results table.
ROW = "{:<54}{:>8}{:>9}{:>10}{:>10}{:>15}"
# Timed runs per protocol and signature, alternating REST and gRPC.
ROUNDS = 2


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=cli.HelpFormatter,
    )
    parser.add_argument("--images", type=int, default=10000, help="MNIST test digits to classify")
    parser.add_argument(
        "--original-images",
        type=int,
        default=1000,
        help="digits sent the original way, one request each (it is slow)",
    )
    parser.add_argument("--batch-size", type=int, default=64, help="images per request")
    parser.add_argument(
        "--model-base",
        type=Path,
        default=config.DEFAULT_EXPORT_BASE,
        help="the model's base path; its highest version is served",
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=PROJECT_DIR / "bench" / "work",
        help="where the PNG files are written (kept between runs)",
    )
    return parser.parse_args(argv)


def write_pngs(folder, images):
    """The digits as `digit_00000.png`...; reused when already there."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"digit_{index:05d}.png" for index in range(len(images))]
    for path, image in zip(paths, images, strict=True):
        if not path.exists():
            cv2.imwrite(str(path), image)
    return paths


def run_cli(folder, server, protocol, signature, batch_size):
    """serving_request.py on the folder; returns (seconds, {file: class})."""
    address = (
        f"127.0.0.1:{server.grpc_port}" if protocol == "grpc" else f"http://127.0.0.1:{server.port}"
    )
    command = [
        sys.executable,
        str(config.CODE_DIR / "serving_request.py"),
        "-i", str(folder),
        "--protocol", protocol,
        "--server", address,
        "--signature", signature,
        "--batch-size", str(batch_size),
        "--json",
    ]  # fmt: skip
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"serving_request.py failed:\n{result.stderr}")
    records = [orjson.loads(line) for line in result.stdout.splitlines()]
    return seconds, {record["file"]: record["class"] for record in records}


def run_cli_rounds(folder, server, signature, batch_size):
    """Each protocol on the folder: a warm-up run, then ROUNDS timed runs taking turns.

    Returns {protocol: (mean seconds, {file: class})}.
    """
    for protocol in config.PROTOCOLS:
        run_cli(folder, server, protocol, signature, batch_size)
    timed = {protocol: [] for protocol in config.PROTOCOLS}
    classes = {}
    for _ in range(ROUNDS):
        for protocol in config.PROTOCOLS:
            seconds, classes[protocol] = run_cli(folder, server, protocol, signature, batch_size)
            timed[protocol].append(seconds)
    return {protocol: (np.mean(timed[protocol]), classes[protocol]) for protocol in timed}


def run_in_process(version_dir, paths, batch_size):
    """Read, preprocess and predict in this process; returns (seconds, classes)."""
    import tensorflow as tf

    signature = tf.saved_model.load(str(version_dir)).signatures[config.DEFAULT_SIGNATURE]
    warmup = data.to_model_input(np.zeros((batch_size, 28, 28), np.uint8))
    signature(**{config.INPUT_NAME: tf.constant(warmup)})
    classes = []
    start = time.perf_counter()
    for first in range(0, len(paths), batch_size):
        pixels = np.stack(
            [preprocessing.preprocess_file(p) for p in paths[first : first + batch_size]]
        )
        outputs = signature(**{config.INPUT_NAME: tf.constant(data.to_model_input(pixels))})
        classes.extend(outputs[config.PROBABILITIES_OUTPUT].numpy().argmax(axis=1).tolist())
    return time.perf_counter() - start, classes


def run_original(paths, port):
    """One request per image with a JSON list of floats, as the original client did."""
    url = f"http://127.0.0.1:{port}/v1/models/{config.MODEL_NAME}:predict"
    classes = []
    start = time.perf_counter()
    for path in paths:
        image = preprocessing.preprocess_file(path)
        payload = {"instances": data.to_model_input(image[np.newaxis]).tolist()}
        response = requests.post(url, json=payload, timeout=60)
        response.raise_for_status()
        probabilities = response.json()["predictions"][0][config.PROBABILITIES_OUTPUT]
        classes.append(int(np.argmax(probabilities)))
    return time.perf_counter() - start, classes


def main(argv=None):
    arguments = parse_arguments(argv)
    (_, _), (test_images, test_labels) = data.load_mnist()
    test_images, test_labels = test_images[: arguments.images], test_labels[: arguments.images]
    folder = arguments.work_dir / "mnist_test_png"
    paths = write_pngs(folder, test_images)
    # A folder of more digits from an earlier run would be classified too.
    extra = sorted(set(folder.glob("*.png")) - set(paths))
    for path in extra:
        path.unlink()

    load_at_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as scratch:
        base, untrained = ensure_model(arguments.model_base, scratch, test_images)
        version = savedmodel.version_numbers(base)[-1]
        if untrained:
            print(f"No export in {arguments.model_base}: serving an UNTRAINED CNN")
            print("(its accuracy is chance; export a trained model to measure accuracy)")
        with start_server(base, enable_batching=False, batching_file=None) as server:
            rows = []
            same_classes = []
            for signature in (config.PNG_SIGNATURE, config.DEFAULT_SIGNATURE):
                runs = run_cli_rounds(folder, server, signature, arguments.batch_size)
                for protocol, (seconds, by_file) in runs.items():
                    classes = [by_file[path.name] for path in paths]
                    name = f"serving_request.py --protocol {protocol}, {signature}"
                    rows.append((name, len(paths), seconds, classes))
                same_classes.append(runs["rest"][1] == runs["grpc"][1])
            server_memory = memory_mib(server.pid, "VmRSS")
            seconds, classes = run_in_process(base / str(version), paths, arguments.batch_size)
            in_process = ("in-process, same files and batches", len(paths), seconds, classes)
            original_paths = paths[: arguments.original_images]
            seconds, classes = run_original(original_paths, server.port)
            rows.append(
                (
                    "original: 1 image per request, JSON floats",
                    len(original_paths),
                    seconds,
                    classes,
                )
            )

    print(
        f"{len(paths)} MNIST test digits as PNG files, {arguments.batch_size} per request, "
        f"model version {version} of {base}, {os.cpu_count()} CPUs"
    )
    print(ROW.format("run", "images", "seconds", "images/s", "accuracy", "vs in-process"))
    reference = in_process[1] / in_process[2]
    for name, count, seconds, classes in [in_process, *rows]:
        rate = count / seconds
        accuracy = np.mean(np.asarray(classes) == test_labels[:count])
        print(
            ROW.format(
                name,
                count,
                f"{seconds:.2f}",
                f"{rate:.1f}",
                f"{accuracy:.2%}",
                f"{rate / reference:.0%}",
            )
        )
    print(f"server resident memory after the runs: {server_memory:.0f} MiB")
    agreement = "yes" if all(same_classes) else "NO"
    print(f"gRPC gave every file the class REST gave it: {agreement}")
    print(
        f"load average (1 min) at the start of the run: {load_at_start:.2f}, at its end: "
        f"{os.getloadavg()[0]:.2f}, on {os.cpu_count()} CPUs"
    )


if __name__ == "__main__":
    main()
