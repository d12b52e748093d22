"""model_server.py's limits: what one request may cost, and how much work it takes on at once.

Each limit is shown at its boundary (at the limit: served; one more: the
documented error), with small flag values on small models. The attacks run
at full size where the server refuses them cheaply (three 60 MB bodies at
once, ten 20000x20000 PNGs in one request), with the server's memory read
from /proc; the heaviest load the limits accept is scaled down here to three
bodies of 256 images (bench/server_limits_bench.py runs it at 2,048).

Predictions that must stay in progress use the `gate` model, which computes
until the test opens its gate: whether a request was computed is seen from
its gate's `started` file, never from timing.
"""

import asyncio
import base64
import io
import socket
import threading

import numpy as np
import PIL.Image
import pytest
import requests
from limits_fixtures import (
    image_json_texts,
    memory_bytes,
    predict_body,
    predict_body_of_size,
    reset_peak_memory,
    write_png_bomb,
    zeros_json_text,
)
from prometheus_client.parser import text_string_to_metric_families
from server_fixtures import (
    Gate,
    RestTestServer,
    ServerProcess,
    copy_version,
    save_gate,
    save_half_plus,
    save_kitchen,
)

from mnist_serving import config
from mnist_serving.serving.data_plane import DataPlane
from mnist_serving.serving.model_config import ModelConfig
from mnist_serving.serving.options import ServerOptions
from mnist_serving.serving.rest import RestApi

METRICS = "/monitoring/prometheus/metrics"
# The target for the server's peak memory under attack, default flags.
MEMORY_TARGET = 2 * 2**30
# Decoding one 20000x20000 image, even to one grey channel, takes more than this.
ONE_BOMB_DECODED = 400_000_000


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("limits")
    paths = {
        "half_plus_two": save_half_plus(folder / "build_half", 2.0),
        "kitchen": save_kitchen(folder / "build_kitchen"),
        "gate": save_gate(folder / "build_gate"),
    }
    bases = {name: copy_version(path, folder / name, 1).parent for name, path in paths.items()}
    config_file = folder / "models.config"
    config_file.write_text(
        "model_config_list {\n"
        + "".join(
            f'  config {{ name: "{name}" base_path: "{base}" }}\n' for name, base in bases.items()
        )
        + "}\n"
    )
    monitoring = folder / "monitoring.config"
    monitoring.write_text(f'prometheus_config {{ enable: true, path: "{METRICS}" }}\n')
    return {**bases, "config": config_file, "monitoring": monitoring, "folder": folder}


def start(models, *flags):
    """model_server.py serving half_plus_two, kitchen and gate, with metrics, and `flags`."""
    return ServerProcess(
        f"--model_config_file={models['config']}",
        f"--monitoring_config_file={models['monitoring']}",
        *flags,
    )


@pytest.fixture(scope="module")
def limits_server(models):
    with start(
        models,
        "--max_images_per_request=4",
        "--max_images_in_flight=4",
        "--max_pixels_per_image=4096",
        "--max_pixels_per_request=8192",
    ) as server:
        yield server


def predict(server, model, body, timeout=120):
    response = requests.post(f"{server.url}/v1/models/{model}:predict", json=body, timeout=timeout)
    return response.status_code, response.json()


def held_prediction(server, gate, images=1):
    """Starts a `gate` prediction of `images` images in a thread; returns (thread, answer)."""
    answer = {}

    def post():
        body = {"instances": gate.request["instances"] * images}
        answer["status"], answer["body"] = predict(server, "gate", body)

    thread = threading.Thread(target=post)
    thread.start()
    return thread, answer


# -- Images per request -------------------------------------------------------


def test_images_per_request_up_to_the_limit_are_served_and_one_more_gets_400(limits_server):
    assert predict(limits_server, "half_plus_two", {"instances": [1.0] * 4}) == (
        200,
        {"predictions": [2.5] * 4},
    )
    error = (
        "The request has 5 images (the first dimension of its inputs): more than the limit "
        "of 4 per request (--max_images_per_request)"
    )
    for body in ({"instances": [1.0] * 5}, {"inputs": [1.0] * 5}):
        assert predict(limits_server, "half_plus_two", body) == (400, {"error": error})


# -- Pixels of encoded images -------------------------------------------------


def encoded_image(image_format, width, height, frames=1):
    """The bytes of a grey image file; frames of different shades for an animation."""
    images = [PIL.Image.new("L", (width, height), 40 * index) for index in range(frames)]
    buffer = io.BytesIO()
    images[0].save(buffer, image_format, save_all=frames > 1, append_images=images[1:])
    return buffer.getvalue()


def predict_strings(server, items):
    """Predicts with kitchen's `strings` signature on `items` (bytes) as b64."""
    body = {
        "signature_name": "strings",
        "instances": [{"b64": base64.b64encode(item).decode()} for item in items],
    }
    return predict(server, "kitchen", body)


@pytest.mark.parametrize(
    ("image_format", "name", "frames"),
    [
        ("PNG", "PNG", 1),
        ("JPEG", "JPEG", 1),
        ("BMP", "BMP", 1),
        ("WEBP", "WebP", 1),
        ("GIF", "GIF", 2),
    ],
)
def test_image_of_the_pixel_limit_is_served_and_one_column_more_gets_400(
    limits_server, image_format, name, frames
):
    # 4,096 pixels in all: 64x64, or 64x32 in each of two frames.
    height = 64 // frames
    status, _ = predict_strings(limits_server, [encoded_image(image_format, 64, height, frames)])
    assert status == 200
    wider = encoded_image(image_format, 65, height, frames)
    shape = f"65x{height} {name} image" + (f" of {frames} frames" if frames > 1 else "")
    assert predict_strings(limits_server, [wider]) == (
        400,
        {
            "error": f"Input 'text' element 0 is a {shape}: {65 * height * frames:,} pixels, "
            "more than the limit of 4,096 per image (--max_pixels_per_image)"
        },
    )


def test_images_of_the_pixel_limit_per_request_are_served_and_one_pixel_more_gets_400(
    limits_server,
):
    two = [encoded_image("PNG", 64, 64)] * 2
    assert predict_strings(limits_server, two)[0] == 200
    assert predict_strings(limits_server, [*two, encoded_image("PNG", 1, 1)]) == (
        400,
        {
            "error": "The request's images have at least 8,193 pixels: more than the limit of "
            "8,192 per request (--max_pixels_per_request)"
        },
    )


def test_strings_that_are_not_images_are_left_to_the_model(limits_server):
    status, body = predict_strings(limits_server, [b"BMW is a car", b"x" * 10_000])
    assert status == 200
    assert [prediction["length"] for prediction in body["predictions"]] == [12, 10_000]


def test_png_whose_header_cannot_be_read_gets_400(limits_server):
    assert predict_strings(limits_server, [b"\x89PNG\r\n\x1a\nnot a header"]) == (
        400,
        {"error": "Input 'text' element 0 starts as a PNG file but its header cannot be read"},
    )


# -- Images in flight, deadlines, clients that leave --------------------------


def test_request_that_fits_among_the_images_in_flight_runs_and_one_that_does_not_waits(
    models, tmp_path
):
    with start(
        models,
        "--max_images_in_flight=3",
        "--max_images_per_request=3",
        "--rest_api_timeout_in_ms=3000",
    ) as server:
        held, waiting = Gate(tmp_path / "held"), Gate(tmp_path / "waiting")
        thread, _ = held_prediction(server, held, images=2)
        try:
            held.wait_until_started()
            # 2 images in flight: 1 more fits, 2 more do not, and wait their turn until
            # their deadline.
            assert predict(server, "half_plus_two", {"instances": [1.0]}) == (
                200,
                {"predictions": [2.5]},
            )
            status, _ = predict(server, "gate", {"instances": waiting.request["instances"] * 2})
            assert status == 504
        finally:
            held.open()
            thread.join()
        # Room again once the held prediction has ended; the one that timed out never ran.
        assert predict(server, "half_plus_two", {"instances": [1.0] * 3})[0] == 200
        assert not (waiting.folder / "started").exists()


BATCHING_ONE_THREAD = "num_batch_threads { value: 1 }\nmax_batch_size { value: 4 }\n"


@pytest.mark.parametrize(
    "where",
    ["waiting for a worker", "waiting for room in flight", "waiting in a batching queue"],
)
def test_request_whose_deadline_passed_is_not_computed(models, tmp_path, where):
    flags = {
        "waiting for a worker": ["--rest_api_num_threads=1"],
        "waiting for room in flight": ["--max_images_in_flight=1", "--max_images_per_request=1"],
        "waiting in a batching queue": [
            "--enable_batching",
            f"--batching_parameters_file={tmp_path / 'batching.config'}",
        ],
    }[where]
    (tmp_path / "batching.config").write_text(BATCHING_ONE_THREAD)
    with start(models, "--rest_api_timeout_in_ms=2000", *flags) as server:
        held, late = Gate(tmp_path / "held"), Gate(tmp_path / "late")
        thread, _ = held_prediction(server, held)
        try:
            held.wait_until_started()
            assert predict(server, "gate", late.request) == (
                504,
                {"error": "Timed out waiting for notification"},
            )
        finally:
            held.open()
            thread.join()
        # Had the late request run, it would hold its worker (or batch thread, or room)
        # until its gate opened, which it never does: the next request would time out.
        assert predict(server, "half_plus_two", {"instances": [1.0]}) == (
            200,
            {"predictions": [2.5]},
        )
        assert not (late.folder / "started").exists()


@pytest.fixture
async def in_process(aiohttp_client, models):
    """make(**options): the REST API in this process, on a real DataPlane with the models."""
    planes = []

    async def make(**options):
        served = tuple(
            ModelConfig(name=name, base_path=str(models[name]))
            for name in ("half_plus_two", "gate")
        )
        plane = DataPlane(ServerOptions(models=served, prometheus_path=METRICS, **options))
        planes.append(plane)
        await asyncio.get_running_loop().run_in_executor(None, plane.manager.start)
        return plane, await aiohttp_client(RestTestServer(RestApi(plane)))

    yield make
    for plane in planes:
        plane.close()


async def wait_for(condition, timeout=60):
    """Waits on the event loop until `condition()` holds."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


@pytest.mark.parametrize("where", ["waiting for a worker", "waiting for room in flight"])
async def test_work_of_a_client_that_left_is_dropped(in_process, tmp_path, where):
    if where == "waiting for a worker":
        plane, client = await in_process(rest_api_num_threads=1)

        def in_place():
            return plane.workers.pending == 2
    else:
        plane, client = await in_process(max_images_in_flight=1, max_images_per_request=1)

        def in_place():
            return plane.in_flight.waiting == 1

    held, left = Gate(tmp_path / "held"), Gate(tmp_path / "left")
    held_answer = asyncio.ensure_future(client.post("/v1/models/gate:predict", json=held.request))
    await wait_for(lambda: (held.folder / "started").exists())
    # A client sends its request, which waits behind the held one, then hangs up.
    body = f'{{"instances": ["{left.folder}"]}}'.encode()
    _, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(
        b"POST /v1/models/gate:predict HTTP/1.1\r\nHost: x\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    await wait_for(in_place)
    writer.close()
    await wait_for(lambda: not in_place())
    held.open()
    assert (await held_answer).status == 200
    response = await client.post("/v1/models/half_plus_two:predict", json={"instances": [1.0]})
    assert await response.json() == {"predictions": [2.5]}
    assert not (left.folder / "started").exists()
    page = await (await client.get(METRICS)).text()
    assert ':tensorflow:serving:request_count{model_name="gate",status="CANCELLED"} 1.0' in page


# -- Attacks, with the server's memory ------------------------------------------


@pytest.fixture(scope="module")
def cnn_server(export_base):
    """The project's CNN (untrained, real size) served with default flags."""
    with ServerProcess(
        f"--model_base_path={export_base}", f"--model_name={config.MODEL_NAME}"
    ) as server:
        yield server


def post_together(url, bodies):
    """POSTs `bodies` at once from as many threads; returns [(status, JSON answer)]."""
    barrier = threading.Barrier(len(bodies))
    answers = [None] * len(bodies)

    def post(index):
        barrier.wait()
        response = requests.post(url, data=bodies[index], timeout=600)
        answers[index] = (response.status_code, response.json())

    threads = [threading.Thread(target=post, args=(index,)) for index in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def attack(server, bodies):
    """(answers, peak resident bytes of the server while it answered them)."""
    reset_peak_memory(server.process.pid)
    answers = post_together(f"{server.url}/v1/models/{config.MODEL_NAME}:predict", bodies)
    return answers, memory_bytes(server.process.pid)


@pytest.mark.parametrize("kind", ["floats", "integer zeros"])
def test_three_60_mb_bodies_at_once_are_refused_and_the_server_stays_under_2_gb(
    cnn_server, mnist, kind
):
    texts = image_json_texts(mnist[1][0][:16]) if kind == "floats" else [zeros_json_text()]
    body, images = predict_body_of_size(texts, 60)
    answers, peak = attack(cnn_server, [body] * 3)
    print(f"three 60 MB bodies of {kind} ({images:,} images each): peak {peak / 2**20:.0f} MiB")
    for status, answer in answers:
        assert status == 400
        assert answer["error"].endswith("(--rest_api_max_json_values)")
    assert peak < MEMORY_TARGET


def test_three_bodies_the_limits_accept_are_computed_and_the_server_stays_under_2_gb(
    cnn_server, mnist
):
    # Scaled down from 2,048 images each, the default limit, to keep the suite short.
    body = predict_body(image_json_texts(mnist[1][0][:16]), 256)
    answers, peak = attack(cnn_server, [body] * 3)
    print(f"three bodies of 256 images: peak {peak / 2**20:.0f} MiB")
    for status, answer in answers:
        assert status == 200
        assert len(answer["predictions"]) == 256
    assert peak < MEMORY_TARGET


def test_png_bomb_is_refused_from_its_header_before_the_model_decodes_it(cnn_server, tmp_path):
    encoded = base64.b64encode(write_png_bomb(tmp_path / "bomb.png").read_bytes()).decode()
    body = (
        f'{{"signature_name": "{config.PNG_SIGNATURE}", "instances": ['
        + ",".join([f'{{"b64": "{encoded}"}}'] * 10)
        + "]}"
    ).encode()
    before = memory_bytes(cnn_server.process.pid, "VmRSS")
    [(status, answer)], peak = attack(cnn_server, [body])
    assert (status, answer) == (
        400,
        {
            "error": f"Input '{config.PNG_INPUT_NAME}' element 0 is a 20000x20000 PNG image: "
            "400,000,000 pixels, more than the limit of 16,777,216 per image "
            "(--max_pixels_per_image)"
        },
    )
    # Less than one of the ten images would take to decode.
    assert peak - before < ONE_BOMB_DECODED


# -- Names and metrics ----------------------------------------------------------


def request_counts(server):
    """{(model_name, status): count} of request_count, read with Prometheus' own parser."""
    page = server.get(METRICS).text
    return {
        (sample.labels["model_name"], sample.labels["status"]): sample.value
        for family in text_string_to_metric_families(page)
        if family.name == ":tensorflow:serving:request_count"
        for sample in family.samples
    }


def test_flood_of_unknown_names_keeps_nothing(limits_server):
    rng = np.random.default_rng(0)
    letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", dtype=np.uint8)
    counted = request_counts(limits_server).get(("", "NOT_FOUND"), 0)
    before = memory_bytes(limits_server.process.pid, "VmRSS")
    with requests.Session() as session:
        for _ in range(3000):
            name = rng.choice(letters, 20_000).tobytes().decode()
            response = session.get(f"{limits_server.url}/v1/models/{name}", timeout=60)
            assert response.status_code == 404
    growth = memory_bytes(limits_server.process.pid, "VmRSS") - before
    print(f"3,000 unknown names of 20 KB: resident memory {growth / 2**20:+.1f} MiB")
    assert growth < 30 * 2**20  # The names themselves are 60 MB.
    counts = request_counts(limits_server)
    assert counts[("", "NOT_FOUND")] == counted + 3000
    assert all(len(name) < 20 for name, _ in counts)


def test_log_lines_escape_control_characters_of_names_and_urls(models, tmp_path):
    config_file = tmp_path / "models.config"
    # Text proto escapes: ESC, BEL and a newline in the model's name.
    name = "red\\033[31m\\007\\nforged"
    base = models["half_plus_two"]
    config_file.write_text(
        f'model_config_list {{ config {{ name: "{name}" base_path: "{base}" }} }}\n'
    )
    with ServerProcess(f"--model_config_file={config_file}", "--verbose") as server:
        raw = b"GET /v1/models/a\x1bb\x07 HTTP/1.1\r\nHost: x\r\n\r\n"
        with socket.create_connection(("127.0.0.1", server.port)) as connection:
            connection.sendall(raw)
            assert connection.recv(100).startswith(b"HTTP/1.0 400")
        server.wait_for_log(r"HTTP 400 for a request from 127\.0\.0\.1")
    log = server.log
    assert "(Re-)adding model: red\\x1b[31m\\x07\\x0aforged" in log
    assert "\x1b" not in log
    assert "\x07" not in log
    assert not any(line.startswith("forged") for line in server.lines)
