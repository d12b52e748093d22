"""Measures what warm-up buys: the first request after start-up and after a hot version swap.

For warm-up on and off (`--enable_model_warmup`), starts model_server.py on
a copy of one exported version, times the first request of each signature
(one MNIST test digit), then publishes the same export as the next version,
waits until it is AVAILABLE (the old one END) and times the first request
again. Each first request is compared with the median of the requests that
follow it, measured in the same run (the machine's speed varies, the ratio
much less).

The version is the project's newest export (`my_digit_classifier/`), which
export_model.py writes with its warm-up file; without one, an untrained copy
of the CNN is exported with the same warm-up requests.

Typical usage:
    nice -n 10 python bench/warmup_bench.py
"""

import argparse
import base64
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_DIR / "code"))
sys.path.insert(0, str(PROJECT_DIR / "bench"))

import requests  # noqa: E402 - after the path set-up that finds mnist_serving.
from serving_bench import ensure_model, start_server  # noqa: E402

from mnist_serving import config, data, savedmodel, warmup  # noqa: E402
from mnist_serving.client import encode_png  # noqa: E402


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--model-base-path",
        type=Path,
        default=config.DEFAULT_EXPORT_BASE,
        help="model whose newest version is served; exported untrained if it has none",
    )
    parser.add_argument(
        "--steady", type=int, default=20, help="requests after the first one, for the median"
    )
    return parser.parse_args(argv)


def request_bodies(image):
    """One-digit predict bodies for both signatures."""
    return {
        config.DEFAULT_SIGNATURE: {"instances": data.to_model_input(image).tolist()},
        config.PNG_SIGNATURE: {
            "signature_name": config.PNG_SIGNATURE,
            "instances": [{"b64": base64.b64encode(encode_png(image)).decode()}],
        },
    }


def timed(session, url, body):
    started = time.perf_counter()
    response = session.post(url, json=body, timeout=300)
    response.raise_for_status()
    return (time.perf_counter() - started) * 1000


def first_and_steady(session, url, bodies, steady):
    """{signature: (first ms, median of the next `steady` in ms)}."""
    figures = {}
    for signature, body in bodies.items():
        first = timed(session, url, body)
        figures[signature] = (
            first,
            statistics.median(timed(session, url, body) for _ in range(steady)),
        )
    return figures


def wait_for_states(session, port, expected, timeout=600):
    url = f"http://127.0.0.1:{port}/v1/models/{config.MODEL_NAME}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = session.get(url, timeout=60)
        if response.status_code == 200:
            states = {
                int(entry["version"]): entry["state"]
                for entry in response.json()["model_version_status"]
            }
            if states == expected:
                return
        time.sleep(0.1)
    raise SystemExit(f"the server did not reach {expected}")


def measure(source, scratch, enabled, bodies, steady):
    """Figures after start-up and after a hot swap, warm-up on or off."""
    base = Path(scratch) / ("on" if enabled else "off") / config.MODEL_NAME
    base.mkdir(parents=True)
    shutil.copytree(source, base / "1")
    flag = f"--enable_model_warmup={'true' if enabled else 'false'}"
    with (
        start_server(base, False, None, [flag, "--file_system_poll_wait_seconds=0.2"]) as server,
        requests.Session() as session,
    ):
        url = f"{server.url}/v1/models/{config.MODEL_NAME}:predict"
        after_start = first_and_steady(session, url, bodies, steady)
        # Published as the exporter does: complete, under a hidden name, then renamed.
        shutil.copytree(source, base / ".staging-2")
        (base / ".staging-2").rename(base / "2")
        wait_for_states(session, server.port, {2: "AVAILABLE", 1: "END"})
        after_swap = first_and_steady(session, url, bodies, steady)
    return after_start, after_swap


def main(argv=None):
    arguments = parse_arguments(argv)
    images = data.load_mnist()[1][0]
    bodies = request_bodies(images[0])
    with tempfile.TemporaryDirectory(prefix="warmup_bench-") as scratch:
        base_path, exported = ensure_model(arguments.model_base_path, scratch, images)
        source = base_path / str(savedmodel.version_numbers(base_path)[-1])
        if not (source / warmup.WARMUP_FILE).is_file():
            raise SystemExit(f"{source} has no warm-up file: export it with export_model.py")
        untrained = " (an untrained CNN: same size and speed)" if exported else ""
        print(f"Version: {source}{untrained}")
        rows = []
        for enabled in (True, False):
            after_start, after_swap = measure(source, scratch, enabled, bodies, arguments.steady)
            for moment, figures in (("start-up", after_start), ("hot swap", after_swap)):
                for signature, (first, steady) in figures.items():
                    rows.append((enabled, moment, signature, first, steady))
    print(
        f"\n{'warm-up':<8} {'after':<9} {'signature':<16} {'first ms':>9} "
        f"{'then p50 ms':>11} {'first/p50':>9}"
    )
    for enabled, moment, signature, first, steady in rows:
        print(
            f"{'on' if enabled else 'off':<8} {moment:<9} {signature:<16} {first:>9.1f} "
            f"{steady:>11.1f} {first / steady:>9.1f}"
        )


if __name__ == "__main__":
    main()
