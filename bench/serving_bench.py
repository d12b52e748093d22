"""Measures model_server.py against in-process prediction of the same images.

Starts `code/model_server.py` on a free 127.0.0.1 port, then for each
signature (`serving_default`: float32 images as JSON lists; `predict_png`:
PNG files as b64) and each batch size sends requests from concurrent
clients, each request carrying that many MNIST test images. Prints
requests/s, images/s, p50 and p99 latency, and the ratio of the server's
images/s to the images/s of calling the same SavedModel signature in this
process on the same batches, measured in the same run. Also prints the
server's resident memory (VmRSS) with the model loaded.

The model is the project's export (`my_digit_classifier/`); without one, an
untrained copy of the CNN is exported to a temporary folder (same size and
speed as the trained one) and the bench says so.

Typical usage:
    nice -n 10 python bench/serving_bench.py --clients 1 8 --batch-size 1 64
"""

import argparse
import base64
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_DIR / "code"))

import orjson  # noqa: E402 - after the path set-up that finds mnist_serving.
import requests  # noqa: E402

from mnist_serving import config, data, export, savedmodel  # noqa: E402
from mnist_serving.client import encode_png  # noqa: E402

READY_LINE = re.compile(r"Exporting HTTP/REST API at:([^:]+):(\d+)")


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--clients",
        type=int,
        nargs="+",
        default=[1, 8],
        help="concurrent clients (one scenario per value)",
    )
    parser.add_argument(
        "--requests", type=int, default=200, help="requests per scenario (all clients together)"
    )
    parser.add_argument(
        "--batch-size", type=int, nargs="+", default=[1, 64], help="images per request"
    )
    parser.add_argument(
        "--signature",
        nargs="+",
        default=[config.DEFAULT_SIGNATURE, config.PNG_SIGNATURE],
        choices=[config.DEFAULT_SIGNATURE, config.PNG_SIGNATURE],
        help="signatures to measure",
    )
    parser.add_argument(
        "--model-base-path",
        type=Path,
        default=config.DEFAULT_EXPORT_BASE,
        help="model to serve; exported untrained to a temporary folder if it has no version",
    )
    parser.add_argument(
        "--enable-batching", action="store_true", help="start the server with --enable_batching"
    )
    parser.add_argument(
        "--batching-parameters-file",
        type=Path,
        default=None,
        help="BatchingParameters for --enable-batching (server defaults otherwise)",
    )
    parser.add_argument("--warmup", type=int, default=5, help="unmeasured requests per scenario")
    return parser.parse_args(argv)


def ensure_model(base_path, scratch, images):
    """A base path with at least one version; exports an untrained CNN if needed.

    The untrained export has warm-up requests of `images`, as export_model.py writes.
    """
    if savedmodel.version_numbers(base_path):
        return base_path, False
    import keras

    from mnist_serving import model

    keras.utils.set_random_seed(0)
    target = Path(scratch) / config.MODEL_NAME
    export.export_model(model.build_model(), target, version=1, warmup_images=images[:8])
    return target, True


def start_server(base_path, enable_batching, batching_file, extra_flags=()):
    """Starts model_server.py on a free port; returns (process, port) once it serves."""
    command = [
        sys.executable,
        str(PROJECT_DIR / "code" / "model_server.py"),
        "--rest_api_port=0",
        f"--model_base_path={base_path}",
        f"--model_name={config.MODEL_NAME}",
        *extra_flags,
    ]
    if enable_batching:
        command.append("--enable_batching")
        if batching_file:
            command.append(f"--batching_parameters_file={batching_file}")
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    port = None
    for line in process.stderr:
        match = READY_LINE.search(line)
        if match:
            port = int(match.group(2))
            break
    if port is None:
        process.wait()
        raise SystemExit("model_server.py did not start")
    # Keep draining its log so that the pipe never fills.
    threading.Thread(target=lambda: [None for _ in process.stderr], daemon=True).start()
    return process, port


def memory_mib(pid, field):
    """VmRSS or VmHWM of a process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def make_batches(images, signature, batch_size, count):
    """`count` (request body, in-process input) pairs of `batch_size` images each."""
    batches = []
    for index in range(count):
        start = (index * batch_size) % (len(images) - batch_size)
        chosen = images[start : start + batch_size]
        if signature == config.DEFAULT_SIGNATURE:
            floats = data.to_model_input(chosen)
            body = orjson.dumps({"signature_name": signature, "instances": floats.tolist()})
            batches.append((body, floats))
        else:
            pngs = [encode_png(image) for image in chosen]
            instances = [{"b64": base64.b64encode(png).decode()} for png in pngs]
            body = orjson.dumps({"signature_name": signature, "instances": instances})
            batches.append((body, pngs))
    return batches


def measure_server(port, batches, clients, warmup):
    """Sends every batch once from `clients` threads; returns (seconds, latencies)."""
    url = f"http://127.0.0.1:{port}/v1/models/{config.MODEL_NAME}:predict"
    with requests.Session() as session:
        for body, _ in batches[:warmup]:
            session.post(url, data=body, timeout=300).raise_for_status()
    latencies = []
    failures = []
    next_index = [0]
    lock = threading.Lock()

    def client():
        with requests.Session() as session:
            while True:
                with lock:
                    index = next_index[0]
                    next_index[0] += 1
                if index >= len(batches):
                    return
                body, inputs = batches[index]
                started = time.perf_counter()
                response = session.post(url, data=body, timeout=300)
                elapsed = time.perf_counter() - started
                if response.status_code != 200:
                    failures.append(response.text[:200])
                    continue
                predictions = orjson.loads(response.content)["predictions"]
                if len(predictions) != len(inputs):
                    failures.append("wrong number of predictions")
                with lock:
                    latencies.append(elapsed)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    if failures:
        raise SystemExit(f"{len(failures)} requests failed, e.g. {failures[0]}")
    return seconds, latencies


def measure_in_process(function, signature, batches, warmup):
    """Calls the signature on the same batches, one after another; returns seconds."""
    import tensorflow as tf

    input_name = (
        config.INPUT_NAME if signature == config.DEFAULT_SIGNATURE else (config.PNG_INPUT_NAME)
    )

    def call(inputs):
        tensor = (
            tf.constant(inputs)
            if signature == config.DEFAULT_SIGNATURE
            else (tf.constant(inputs, dtype=tf.string))
        )
        outputs = function(**{input_name: tensor})
        return outputs[config.PROBABILITIES_OUTPUT].numpy()

    for _, inputs in batches[:warmup]:
        call(inputs)
    started = time.perf_counter()
    for _, inputs in batches:
        call(inputs)
    return time.perf_counter() - started


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def main(argv=None):
    arguments = parse_arguments(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    images = data.load_mnist()[1][0]
    with tempfile.TemporaryDirectory(prefix="serving_bench-") as scratch:
        base_path, exported = ensure_model(arguments.model_base_path, scratch, images)
        version = savedmodel.version_numbers(base_path)[-1]
        if exported:
            print(
                f"No export under {arguments.model_base_path}: serving an untrained copy of "
                f"the CNN exported to {base_path} (same size and speed as the trained one)."
            )
        print(f"Model: {base_path}/{version}")
        process, port = start_server(
            base_path, arguments.enable_batching, arguments.batching_parameters_file
        )
        try:
            rss = memory_mib(process.pid, "VmRSS")
            rows = run_scenarios(arguments, images, base_path / str(version), port)
            peak = memory_mib(process.pid, "VmHWM")
        finally:
            process.terminate()
            process.wait(timeout=60)
    print_table(arguments, rows)
    print(
        f"\nServer resident memory with one model loaded: {rss:.0f} MiB VmRSS at start, "
        f"{peak:.0f} MiB peak (VmHWM) after the run."
    )
    print(
        f"Load average during the run (1 min): {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs."
    )


def run_scenarios(arguments, images, version_path, port):
    """Measures every (signature, batch size, clients) scenario; returns table rows.

    The in-process figure of each (signature, batch size) is measured just
    before and just after its server scenarios and averaged, so that a
    machine whose load drifts (other jobs) skews both sides alike.
    """
    import tensorflow as tf

    loaded = tf.saved_model.load(str(version_path))
    rows = []
    for signature in arguments.signature:
        function = loaded.signatures[signature]
        for batch_size in arguments.batch_size:
            batches = make_batches(images, signature, batch_size, arguments.requests)
            count = len(batches)
            in_process_seconds = [
                measure_in_process(function, signature, batches, arguments.warmup)
            ]
            measured = []
            for clients in arguments.clients:
                measured.append(
                    (clients, *measure_server(port, batches, clients, arguments.warmup))
                )
            in_process_seconds.append(
                measure_in_process(function, signature, batches, arguments.warmup)
            )
            in_process_images = count * batch_size / statistics.mean(in_process_seconds)
            for clients, seconds, latencies in measured:
                server_images = count * batch_size / seconds
                rows.append(
                    {
                        "signature": signature,
                        "clients": clients,
                        "batch": batch_size,
                        "requests": count,
                        "requests_per_second": count / seconds,
                        "images_per_second": server_images,
                        "p50_ms": statistics.median(latencies) * 1000,
                        "p99_ms": percentile(latencies, 0.99) * 1000,
                        "in_process_images_per_second": in_process_images,
                        "ratio": server_images / in_process_images,
                    }
                )
                print_row(rows[-1], flush=True)
    return rows


HEADER = (
    f"{'signature':<16} {'clients':>7} {'batch':>5} {'requests':>8} {'req/s':>8} "
    f"{'images/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'in-process img/s':>16} {'ratio':>6}"
)


def format_row(row):
    return (
        f"{row['signature']:<16} {row['clients']:>7} {row['batch']:>5} {row['requests']:>8} "
        f"{row['requests_per_second']:>8.1f} {row['images_per_second']:>9.1f} "
        f"{row['p50_ms']:>8.1f} {row['p99_ms']:>8.1f} "
        f"{row['in_process_images_per_second']:>16.1f} {row['ratio']:>6.2f}"
    )


def print_row(row, flush=False):
    print("  measured: " + format_row(row), flush=flush)


def print_table(arguments, rows):
    batching = "on" if arguments.enable_batching else "off"
    print(f"\nmodel_server.py vs in-process prediction (server batching {batching})")
    print(HEADER)
    for row in rows:
        print(format_row(row))


if __name__ == "__main__":
    main()
