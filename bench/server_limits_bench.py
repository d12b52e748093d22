"""Measures model_server.py under hostile requests: peak memory, answers, time.

Each case starts a fresh `code/model_server.py` (default flags, Prometheus
metrics on), waits until it is idle, resets its memory high-water mark
(`/proc/PID/clear_refs`), sends the requests, and reports the answers, the
time until the last one, the server's peak resident memory (VmHWM) and the
CPU-seconds it spent after the last answer (work nobody waits for):

- three concurrent 60 MB predict bodies of valid floats, and of integer
  zeros (the "three bodies" attack);
- three concurrent predict bodies of the most images a request may carry by
  default (2,048): the heaviest load the limits accept;
- 3,000 GETs of unknown model names of 20 KB each, then a request for
  `/v1/models/%FF%FE` and a scrape of the metrics page (its status); and the
  same with names of 8 KB, which aiohttp's default URL bound (8,190 bytes)
  lets through to a server that does not raise it;
- ten 20000x20000 PNGs in one `predict_png` request (the PNG bomb).

With `--before`, every case also runs against another checkout's server
(e.g. main's, for the figures before a change).

The model is the project's export (`my_digit_classifier/`); without one, an
untrained copy of the CNN is exported to a temporary folder (same size and
memory as the trained one) and the bench says so.

Typical usage:
    git worktree add --detach /tmp/before12b main
    python bench/server_limits_bench.py --before /tmp/before12b/code
"""

import argparse
import base64
import os
import string
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import requests
from serving_bench import PROJECT_DIR, ensure_model

# The hostile inputs and the memory readings of the tests.
sys.path.insert(0, str(PROJECT_DIR / "tests"))

from limits_fixtures import (
    image_json_texts,
    memory_bytes,
    predict_body,
    predict_body_of_size,
    reset_peak_memory,
    write_png_bomb,
    zeros_json_text,
)

from mnist_serving import cli, config, data
from mnist_serving.server_process import ModelServerProcess
from mnist_serving.serving.options import DEFAULT_MAX_IMAGES_PER_REQUEST

ROW = "{:<7}{:<34}{:<24}{:>9}{:>10}{:>10}{:>8}  {}"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
MONITORING = 'prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }\n'


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=cli.HelpFormatter
    )
    parser.add_argument(
        "--before",
        type=Path,
        metavar="CODE_DIR",
        help="the code/ folder of another checkout whose server is measured too",
    )
    parser.add_argument(
        "--model-base",
        type=Path,
        default=config.DEFAULT_EXPORT_BASE,
        help="the model's base path; without a version there, an untrained CNN is served",
    )
    parser.add_argument("--body-mb", type=float, default=60, help="size of each attack body")
    parser.add_argument("--names", type=int, default=3000, help="unknown model names asked for")
    parser.add_argument(
        "--name-bytes", type=int, nargs="+", default=[20_000, 8_000], help="length of each name"
    )
    parser.add_argument("--pngs", type=int, default=10, help="20000x20000 PNGs in the bomb")
    parser.add_argument(
        "--cases", nargs="+", default=None, help="run only the cases whose name starts so"
    )
    return parser.parse_args(argv)


class Server(ModelServerProcess):
    """A model_server.py process of some checkout, on a free port, its log drained."""

    def __init__(self, code_dir, base_path, scratch):
        monitoring = Path(scratch) / "monitoring.config"
        monitoring.write_text(MONITORING)
        super().__init__(
            [
                "--rest_api_port=0",
                "--port=0",
                f"--model_base_path={base_path}",
                f"--model_name={config.MODEL_NAME}",
                f"--monitoring_config_file={monitoring}",
            ],
            script=code_dir / "model_server.py",
        )
        if self.wait_until_ready() is None:
            self.stop()
            raise SystemExit(f"model_server.py of {code_dir} did not start:\n{self.log}")

    def cpu_seconds(self):
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime

    def wait_until_idle(self, limit=300):
        """Waits until a second passes with (almost) no CPU used; returns the CPU-seconds used."""
        first = previous = self.cpu_seconds()
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            time.sleep(1.0)
            now = self.cpu_seconds()
            if now - previous < 0.05:
                return now - first
            previous = now
        return self.cpu_seconds() - first

    def memory_mib(self, field):
        return memory_bytes(self.process.pid, field) / 2**20


def post_together(url, bodies):
    """POSTs the bodies at once; returns [(status, error or '')] and the seconds to the last."""
    barrier = threading.Barrier(len(bodies))
    answers = [None] * len(bodies)

    def post(index):
        barrier.wait()
        try:
            response = requests.post(url, data=bodies[index], timeout=900)
        except requests.RequestException as error:
            answers[index] = ("-", type(error).__name__)
            return
        try:
            error = response.json().get("error", "") if response.status_code != 200 else ""
        except ValueError:
            error = response.text[:80]
        answers[index] = (response.status_code, error)

    started = time.monotonic()
    threads = [threading.Thread(target=post, args=(index,)) for index in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers, time.monotonic() - started


def summary(answers):
    """'400 x3' style counts of the statuses."""
    counts = Counter(status for status, _ in answers)
    return ", ".join(f"{status} x{count}" for status, count in sorted(counts.items(), key=str))


def first_error(answers, width=70):
    errors = [error for _, error in answers if error]
    if not errors:
        return ""
    return errors[0] if len(errors[0]) <= width else errors[0][: width - 3] + "..."


def three_bodies(server, body):
    url = f"{server.url}/v1/models/{config.MODEL_NAME}:predict"
    answers, seconds = post_together(url, [body] * 3)
    return answers, seconds, first_error(answers)


def unknown_names(server, count, length):
    """3,000 GETs of unknown names, then %FF%FE and a scrape; the note gives the growth."""
    letters = np.frombuffer(string.ascii_letters.encode(), dtype=np.uint8)
    rng = np.random.default_rng(0)
    before = server.memory_mib("VmRSS")
    answers = []
    started = time.monotonic()
    with requests.Session() as session:
        for _ in range(count):
            name = rng.choice(letters, length).tobytes().decode()
            response = session.get(f"{server.url}/v1/models/{name}", timeout=60)
            answers.append((response.status_code, ""))
        odd = session.get(f"{server.url}/v1/models/%FF%FE", timeout=60)
        page = session.get(f"{server.url}/monitoring/prometheus/metrics", timeout=60)
    seconds = time.monotonic() - started
    growth = server.memory_mib("VmRSS") - before
    note = (
        f"resident +{growth:.0f} MiB after; /v1/models/%FF%FE {odd.status_code}, body "
        f"{'valid' if _is_utf8(odd.content) else 'invalid'} UTF-8; metrics page then "
        f"{page.status_code}, {len(page.content) / 1e6:.1f} MB"
    )
    return answers, seconds, note


def _is_utf8(raw):
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def png_bomb(server, bomb_path, count):
    encoded = base64.b64encode(bomb_path.read_bytes()).decode()
    body = (
        f'{{"signature_name": "{config.PNG_SIGNATURE}", "instances": ['
        + ",".join([f'{{"b64": "{encoded}"}}'] * count)
        + "]}"
    ).encode()
    url = f"{server.url}/v1/models/{config.MODEL_NAME}:predict"
    answers, seconds = post_together(url, [body])
    return answers, seconds, f"{len(body) / 1e6:.0f} MB body; " + first_error(answers, 50)


def main(argv=None):
    arguments = parse_arguments(argv)
    (_, _), (test_images, _) = data.load_mnist()
    servers = {"this": config.CODE_DIR}
    if arguments.before is not None:
        servers = {"before": arguments.before.resolve(), **servers}
    float_texts = image_json_texts(test_images[:16])
    floats, float_count = predict_body_of_size(float_texts, arguments.body_mb)
    zeros, zero_count = predict_body_of_size([zeros_json_text()], arguments.body_mb)
    largest = predict_body(float_texts, DEFAULT_MAX_IMAGES_PER_REQUEST)
    mb = arguments.body_mb
    with tempfile.TemporaryDirectory() as scratch:
        bomb = write_png_bomb(Path(scratch) / "bomb.png")
        cases = {
            f"3 x {mb:.0f} MB floats ({float_count:,} images)": lambda s: three_bodies(s, floats),
            f"3 x {mb:.0f} MB zeros ({zero_count:,} images)": lambda s: three_bodies(s, zeros),
            f"3 x {DEFAULT_MAX_IMAGES_PER_REQUEST:,} images ({len(largest) / 1e6:.0f} MB)": (
                lambda s: three_bodies(s, largest)
            ),
            **{
                f"{arguments.names:,} unknown {length // 1000} KB names": (
                    lambda s, length=length: unknown_names(s, arguments.names, length)
                )
                for length in arguments.name_bytes
            },
            f"PNG bomb: {arguments.pngs} x 20000x20000": (
                lambda s: png_bomb(s, bomb, arguments.pngs)
            ),
        }
        if arguments.cases:
            cases = {
                name: case
                for name, case in cases.items()
                if any(name.startswith(prefix) for prefix in arguments.cases)
            }
        base, untrained = ensure_model(arguments.model_base, scratch, test_images)
        print(
            f"model_server.py, default flags, {os.cpu_count()} CPUs"
            + (" (untrained model)" if untrained else "")
        )
        header = ("server", "case", "answers", "seconds", "idle MiB", "peak MiB", "CPU s", "")
        print(ROW.format(*header).rstrip(), flush=True)
        for case_name, case in cases.items():
            for server_name, code_dir in servers.items():
                server = Server(code_dir, base, scratch)
                try:
                    server.wait_until_idle()
                    idle = server.memory_mib("VmRSS")
                    reset_peak_memory(server.process.pid)
                    answers, seconds, note = case(server)
                    after = server.wait_until_idle()
                    peak = server.memory_mib("VmHWM")
                finally:
                    server.stop()
                row = (
                    server_name,
                    case_name,
                    summary(answers),
                    f"{seconds:.1f}",
                    f"{idle:.0f}",
                    f"{peak:.0f}",
                    f"{after:.1f}",
                    note,
                )
                print(ROW.format(*row).rstrip(), flush=True)


if __name__ == "__main__":
    main()
