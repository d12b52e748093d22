"""Measures model_server.py over REST and gRPC against in-process prediction of the same images.

Starts `code/model_server.py` on free 127.0.0.1 ports, then for each
signature (`serving_default`: float32 images; `predict_png`: PNG files) and
each batch size sends requests from concurrent clients, each request
carrying that many MNIST test images, over each protocol: REST (JSON lists,
or PNGs as b64) and gRPC (TensorProtos from tensorflow-serving-api's stubs,
float32 images packed as `tf.make_tensor_proto` packs them). Prints
requests/s, images/s, p50 and p99 latency, and the ratio of the server's
images/s to the images/s of calling the same SavedModel signature in this
process on the same batches, measured in the same run. The protocols of one
scenario are measured in alternating rounds (REST, gRPC, REST, gRPC, ...), so
that a machine whose load drifts skews both alike; the load average is
printed at the start and the end. Also prints the server's resident memory
(VmRSS) with the model loaded.

The model is the project's export (`my_digit_classifier/`); without one, an
untrained copy of the CNN is exported to a temporary folder (same size and
speed as the trained one) and the bench says so.

Typical usage:
    nice -n 10 python bench/serving_bench.py --clients 1 8 --batch-size 1 64
    python bench/serving_bench.py --model-base-path /tmp/export/my_digit_classifier
"""

import argparse
import base64
import collections
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_DIR / "code"))

import numpy as np  # noqa: E402 - after the path set-up that finds mnist_serving.
import orjson  # noqa: E402
import requests  # noqa: E402

from mnist_serving import config, data, export, savedmodel, tensor_proto  # noqa: E402
from mnist_serving.client import encode_png  # noqa: E402
from mnist_serving.server_process import ModelServerProcess  # noqa: E402

# Rounds per protocol and scenario, alternating REST and gRPC.
ROUNDS = 2


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
    parser.add_argument(
        "--protocol",
        nargs="+",
        default=list(config.PROTOCOLS),
        choices=config.PROTOCOLS,
        help="protocols to measure, in alternating rounds",
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
    """Starts model_server.py on free ports; returns its ModelServerProcess once it serves."""
    flags = [
        "--rest_api_port=0",
        "--port=0",
        f"--model_base_path={base_path}",
        f"--model_name={config.MODEL_NAME}",
        *extra_flags,
    ]
    if enable_batching:
        flags.append("--enable_batching")
        if batching_file:
            flags.append(f"--batching_parameters_file={batching_file}")
    server = ModelServerProcess(flags)
    if server.wait_until_ready() is None:
        server.stop()
        raise SystemExit("model_server.py did not start:\n" + server.log)
    return server


def memory_mib(pid, field):
    """VmRSS or VmHWM of a process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def make_batches(images, signature, batch_size, count):
    """`count` batches of `batch_size` images: {protocol: request, "inputs": in-process input}."""
    from tensorflow_serving.apis import predict_pb2

    batches = []
    for index in range(count):
        start = (index * batch_size) % (len(images) - batch_size)
        chosen = images[start : start + batch_size]
        if signature == config.DEFAULT_SIGNATURE:
            inputs = data.to_model_input(chosen)
            instances = inputs.tolist()
        else:
            inputs = [encode_png(image) for image in chosen]
            instances = [{"b64": base64.b64encode(png).decode()} for png in inputs]
        body = orjson.dumps({"signature_name": signature, "instances": instances})
        request = predict_pb2.PredictRequest()
        request.model_spec.name = config.MODEL_NAME
        request.model_spec.signature_name = signature
        input_name = (
            config.INPUT_NAME if signature == config.DEFAULT_SIGNATURE else config.PNG_INPUT_NAME
        )
        values = inputs if signature == config.DEFAULT_SIGNATURE else np.array(inputs, object)
        tensor_proto.fill_tensor_proto(request.inputs[input_name], values, as_content=True)
        batches.append({"rest": body, "grpc": request, "inputs": inputs})
    return batches


def rest_sender(server):
    """A function of one client that sends a REST body; returns the images answered."""
    url = f"http://127.0.0.1:{server.port}/v1/models/{config.MODEL_NAME}:predict"
    session = requests.Session()

    def send(body):
        response = session.post(url, data=body, timeout=300)
        if response.status_code != 200:
            raise RuntimeError(response.text[:200])
        return len(orjson.loads(response.content)["predictions"])

    return send, session.close


def grpc_sender(server):
    """A function of one client that sends a PredictRequest; returns the images answered."""
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

    def send(request):
        response = stub.Predict(request, timeout=300)
        return response.outputs[config.PROBABILITIES_OUTPUT].tensor_shape.dim[0].size

    return send, channel.close


SENDERS = {"rest": rest_sender, "grpc": grpc_sender}


def measure_server(server, protocol, batches, clients):
    """Sends every batch once from `clients` threads; returns (seconds, latencies)."""
    latencies = []
    failures = []
    next_index = [0]
    lock = threading.Lock()
    senders = [SENDERS[protocol](server) for _ in range(clients)]

    def client(send):
        while True:
            with lock:
                index = next_index[0]
                next_index[0] += 1
            if index >= len(batches):
                return
            batch = batches[index]
            started = time.perf_counter()
            try:
                answered = send(batch[protocol])
            except Exception as error:  # noqa: BLE001 - counted; the run stops below.
                failures.append(f"{type(error).__name__}: {str(error)[:200]}")
                continue
            elapsed = time.perf_counter() - started
            if answered != len(batch["inputs"]):
                failures.append("wrong number of predictions")
            with lock:
                latencies.append(elapsed)

    threads = [threading.Thread(target=client, args=(send,)) for send, _ in senders]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    for _, close in senders:
        close()
    if failures:
        raise SystemExit(f"{len(failures)} {protocol} requests failed, e.g. {failures[0]}")
    return seconds, latencies


def warm_up(server, protocol, batches, count):
    send, close = SENDERS[protocol](server)
    for batch in batches[:count]:
        send(batch[protocol])
    close()


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

    for batch in batches[:warmup]:
        call(batch["inputs"])
    started = time.perf_counter()
    for batch in batches:
        call(batch["inputs"])
    return time.perf_counter() - started


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def main(argv=None):
    arguments = parse_arguments(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    images = data.load_mnist()[1][0]
    load_at_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="serving_bench-") as scratch:
        base_path, exported = ensure_model(arguments.model_base_path, scratch, images)
        version = savedmodel.version_numbers(base_path)[-1]
        if exported:
            print(
                f"No export under {arguments.model_base_path}: serving an untrained copy of "
                f"the CNN exported to {base_path} (same size and speed as the trained one)."
            )
        print(f"Model: {base_path}/{version}")
        with start_server(
            base_path, arguments.enable_batching, arguments.batching_parameters_file
        ) as server:
            rss = memory_mib(server.pid, "VmRSS")
            rows = run_scenarios(arguments, images, base_path / str(version), server)
            peak = memory_mib(server.pid, "VmHWM")
    print_table(arguments, rows)
    print_comparison(rows)
    print(
        f"\nServer resident memory with one model loaded: {rss:.0f} MiB VmRSS at start, "
        f"{peak:.0f} MiB peak (VmHWM) after the run."
    )
    print(
        f"Load average (1 min) at the start of the run: {load_at_start:.2f}, at its end: "
        f"{os.getloadavg()[0]:.2f}, on {os.cpu_count()} CPUs."
    )


def run_scenarios(arguments, images, version_path, server):
    """Measures every (signature, batch size, clients, protocol) scenario; returns table rows.

    The in-process figure of each (signature, batch size) is measured just
    before and just after its server scenarios and averaged, and the
    protocols of a scenario take turns in rounds, so that a machine whose
    load drifts (other jobs) skews every figure alike.
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
            for protocol in arguments.protocol:
                warm_up(server, protocol, batches, arguments.warmup)
            measured = []
            for clients in arguments.clients:
                totals = {protocol: [0.0, []] for protocol in arguments.protocol}
                for round_ in range(ROUNDS):
                    part = batches[round_::ROUNDS]
                    for protocol in arguments.protocol:
                        seconds, latencies = measure_server(server, protocol, part, clients)
                        totals[protocol][0] += seconds
                        totals[protocol][1] += latencies
                for protocol, (seconds, latencies) in totals.items():
                    measured.append((protocol, clients, seconds, latencies))
            in_process_seconds.append(
                measure_in_process(function, signature, batches, arguments.warmup)
            )
            in_process_images = count * batch_size / statistics.mean(in_process_seconds)
            for protocol, clients, seconds, latencies in measured:
                server_images = count * batch_size / seconds
                rows.append(
                    {
                        "protocol": protocol,
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
    f"{'protocol':<8} {'signature':<16} {'clients':>7} {'batch':>5} {'requests':>8} "
    f"{'req/s':>8} {'images/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'in-process img/s':>16} "
    f"{'ratio':>6}"
)


def format_row(row):
    return (
        f"{row['protocol']:<8} {row['signature']:<16} {row['clients']:>7} {row['batch']:>5} "
        f"{row['requests']:>8} {row['requests_per_second']:>8.1f} "
        f"{row['images_per_second']:>9.1f} {row['p50_ms']:>8.1f} {row['p99_ms']:>8.1f} "
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


def print_comparison(rows):
    """gRPC against REST, scenario by scenario: throughput and p50 latency ratios."""
    by_scenario = collections.defaultdict(dict)
    for row in rows:
        scenario = (row["signature"], row["clients"], row["batch"])
        by_scenario[scenario][row["protocol"]] = row
    pairs = [(scenario, found) for scenario, found in by_scenario.items() if len(found) == 2]
    if not pairs:
        return
    print("\ngRPC vs REST, same scenarios, measured in alternating rounds")
    print(f"{'signature':<16} {'clients':>7} {'batch':>5} {'images/s':>9} {'p50':>6}")
    for (signature, clients, batch), found in pairs:
        throughput = found["grpc"]["images_per_second"] / found["rest"]["images_per_second"]
        latency = found["grpc"]["p50_ms"] / found["rest"]["p50_ms"]
        print(f"{signature:<16} {clients:>7} {batch:>5} {throughput:>8.2f}x {latency:>5.2f}x")


if __name__ == "__main__":
    main()
