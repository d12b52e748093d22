"""The REST transport in-process, through aiohttp's test client: routing, headers, bodies.

No model is loaded (the configured base path does not exist), so every
answer here comes from the transport itself and takes milliseconds. Answers
that need a model are in test_server_api.py, from a real server process.
"""

import asyncio
import gzip

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from server_fixtures import RestTestServer

from mnist_serving.serving.data_plane import DataPlane
from mnist_serving.serving.model_config import ModelConfig
from mnist_serving.serving.options import ServerOptions
from mnist_serving.serving.rest import MAX_HEADER_LINE_BYTES, MAX_HEADERS, MAX_URL_BYTES, RestApi

MAX_BODY = 4096
ABSENT = "/v1/models/absent"
METRICS = "/monitoring/prometheus/metrics"


@pytest.fixture
def make_client(aiohttp_client, tmp_path):
    planes = []

    async def make(model_name="absent", **options):
        model = ModelConfig(name=model_name, base_path=str(tmp_path / "not_exported"))
        options = {"rest_api_max_request_bytes": MAX_BODY, **options}
        plane = DataPlane(ServerOptions(models=(model,), **options))
        planes.append(plane)
        return await aiohttp_client(RestTestServer(RestApi(plane)))

    yield make
    for plane in planes:
        plane.close()


async def error_of(response):
    assert response.headers["Content-Type"] == "application/json"
    return (await response.json())["error"]


async def raw_exchange(client, request):
    """Sends raw bytes to the test server; returns (status, body) of its answer."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(request)
        await writer.drain()
        answer = await reader.read()
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", ABSENT),
        ("DELETE", ABSENT),
        ("GET", ABSENT + ":predict"),
        ("POST", ABSENT),
        ("POST", ABSENT + "/version/1:predict"),
        ("GET", ABSENT + "/versions/one"),
        ("POST", ABSENT + "/versions/1/labels/stable:predict"),
        ("POST", ABSENT + ":explain"),
    ],
)
async def test_unsupported_call_gets_400_malformed_request(make_client, method, path):
    client = await make_client()
    response = await client.request(method, path, data=b"{}")
    assert response.status == 400
    assert await error_of(response) == f"Malformed request: {method} {path}"


async def test_path_outside_v1_gets_a_plain_404(make_client):
    response = await (await make_client()).get("/v2/models/absent")
    assert response.status == 404
    assert response.headers["Content-Type"] == "text/html; charset=ISO-8859-1"


async def test_models_without_a_name_is_400_missing_model_name(make_client):
    response = await (await make_client()).get("/v1/models")
    assert response.status == 400
    assert await error_of(response) == "Missing model name in request."


async def test_version_too_large_for_int64_gets_400(make_client):
    client = await make_client()
    response = await client.post(ABSENT + "/versions/18446744073709551615:predict", data=b"{}")
    assert response.status == 400
    assert await error_of(response) == (
        "Failed to convert version: 18446744073709551615 to numeric."
    )


async def test_options_preflight_gets_200_without_cors_headers_when_cors_is_off(make_client):
    client = await make_client()
    response = await client.options(ABSENT + ":predict", headers={"Origin": "https://a.org"})
    assert (response.status, await response.read()) == (200, b"")
    assert "Access-Control-Allow-Origin" not in response.headers


async def test_options_without_an_origin_is_400(make_client):
    response = await (await make_client()).options(ABSENT + ":predict")
    assert response.status == 400
    assert await error_of(response) == "Origin header is missing in CORS preflight"


async def test_cors_support_adds_tf_servings_three_headers_to_every_answer(make_client):
    client = await make_client(rest_api_enable_cors_support=True)
    answers = [
        await client.options(ABSENT + ":predict", headers={"Origin": "http://a.org"}),
        await client.post(ABSENT + ":predict", json={"instances": [1.0]}),
        await client.get("/v1/models"),
    ]
    for response in answers:
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        assert response.headers["Access-Control-Allow-Methods"] == "POST, GET"
        assert response.headers["Access-Control-Allow-Headers"] == "Content-Type"


async def test_gzip_request_body_is_decompressed_before_parsing(make_client):
    client = await make_client()
    body = gzip.compress(b'{"instances": [1.0]}')
    response = await client.post(
        ABSENT + ":predict", data=body, headers={"Content-Encoding": "gzip"}
    )
    # Parsed, then looked up: the 404 of a model that has no version.
    assert response.status == 404
    assert await error_of(response) == "Servable not found for request: Latest(absent)"


async def test_body_over_the_size_limit_gets_413_json(make_client):
    response = await (await make_client()).post(ABSENT + ":predict", data=b" " * (MAX_BODY + 1))
    assert response.status == 413
    assert "larger than the limit of 4096 bytes" in await error_of(response)


async def test_gzip_bomb_over_the_size_limit_gets_413(make_client):
    bomb = gzip.compress(b" " * (MAX_BODY * 1000))
    assert len(bomb) < MAX_BODY
    client = await make_client()
    response = await client.post(
        ABSENT + ":predict", data=bomb, headers={"Content-Encoding": "gzip"}
    )
    assert response.status == 413


async def test_corrupt_gzip_body_gets_400(make_client):
    client = await make_client()
    response = await client.post(
        ABSENT + ":predict", data=b"not gzip", headers={"Content-Encoding": "gzip"}
    )
    assert response.status == 400
    assert "gzip" in await error_of(response)


async def test_metrics_page_is_off_without_a_monitoring_config(make_client):
    response = await (await make_client()).get(METRICS)
    assert response.status == 404


async def test_metrics_page_counts_every_request_by_model_and_status(make_client):
    client = await make_client(prometheus_path=METRICS)
    await client.post(ABSENT + ":predict", json={"instances": [1.0]})
    response = await client.get(METRICS)
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/plain"
    page = await response.text()
    assert ':tensorflow:serving:request_count{model_name="absent",status="NOT_FOUND"} 1.0' in page


# -- Limits of the transport ------------------------------------------------


async def test_json_values_up_to_the_limit_are_parsed_and_one_more_gets_400(make_client):
    client = await make_client(rest_api_max_json_values=4)
    # 4 values by the count: one comma, one '[', one '{', plus one.
    response = await client.post(ABSENT + ":predict", data=b'{"instances": [1.0, 2.0]}')
    assert response.status == 404  # Parsed, then looked up.
    response = await client.post(ABSENT + ":predict", data=b'{"instances": [1.0, 2.0, 3.0]}')
    assert response.status == 400
    assert await error_of(response) == (
        "The JSON body holds up to 5 values (counted from its commas and brackets): more than "
        "the limit of 4 (--rest_api_max_json_values)"
    )


@pytest.mark.parametrize(
    ("number", "shown"),
    [
        ("1" * 5000, "11111111111111111111... (5,000 characters)"),
        ("-" + "9" * 400, "-9999999999999999999... (401 characters)"),
        ("1e400", "1e400"),
    ],
    ids=["5,000 digits", "-400 digits", "1e400"],
)
async def test_number_beyond_a_double_gets_400_whatever_its_length(make_client, number, shown):
    client = await make_client(rest_api_max_request_bytes=2**20)
    for body in (f'{{"instances": [{number}]}}', f'{{"instances": [NaN, {number}]}}'):
        response = await client.post(ABSENT + ":predict", data=body.encode())
        assert response.status == 400
        assert await error_of(response) == (
            f"JSON Parse error: Number too big to be stored in double: {shown}"
        )


async def test_number_of_300_digits_is_a_double_as_in_tf_serving(make_client):
    client = await make_client()
    for body in (f'{{"instances": [{"9" * 300}]}}', f'{{"instances": [NaN, {"9" * 300}]}}'):
        response = await client.post(ABSENT + ":predict", data=body.encode())
        assert response.status == 404  # Parsed, then looked up.


async def test_url_up_to_the_limit_is_routed_and_longer_gets_414_json(make_client):
    client = await make_client()
    prefix = "/v1/models/"
    for length, status in [(MAX_URL_BYTES, 404), (MAX_URL_BYTES + 1, 414), (70_000, 414)]:
        url = prefix + "a" * (length - len(prefix))
        request = f"GET {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
        answer_status, body = await raw_exchange(client, request)
        assert answer_status == status
        if status == 414:
            assert orjson.loads(body) == {
                "error": f"The URL is longer than the limit of {MAX_URL_BYTES:,} bytes"
            }


async def test_header_line_over_the_limit_gets_431_json(make_client):
    client = await make_client()
    for length, status in [(MAX_HEADER_LINE_BYTES, 404), (MAX_HEADER_LINE_BYTES + 1, 431)]:
        request = (
            f"GET {ABSENT} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            f"X-Long: {'b' * length}\r\n\r\n"
        ).encode()
        answer_status, body = await raw_exchange(client, request)
        assert answer_status == status
    assert orjson.loads(body) == {
        "error": f"A header line is longer than the limit of {MAX_HEADER_LINE_BYTES:,} bytes"
    }


async def test_more_header_lines_than_the_limit_get_431_json(make_client):
    client = await make_client()
    for count, status in [(MAX_HEADERS, 404), (MAX_HEADERS + 1, 431)]:
        # Host and Connection, then the others.
        extra = "".join(f"X-{index}: 1\r\n" for index in range(count - 2))
        request = f"GET {ABSENT} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\r\n"
        answer_status, body = await raw_exchange(client, request.encode())
        assert answer_status == status
    assert orjson.loads(body) == {"error": f"The request has more than {MAX_HEADERS} header lines"}


async def test_request_aiohttp_cannot_parse_gets_400_json(make_client):
    client = await make_client()
    status, body = await raw_exchange(
        client, b"GET /v1/models/a\x1bb\x07 HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    assert status == 400
    assert orjson.loads(body)["error"].startswith("Bad HTTP request: ")


async def test_error_about_a_name_that_is_not_utf8_is_valid_utf8(make_client):
    client = await make_client()
    for response in (
        await client.get("/v1/models/%FF%FE"),
        await client.post("/v1/models/%FF%FE:predict", data=b'{"instances": [1.0]}'),
    ):
        assert response.status == 404
        assert "\ufffd\ufffd" in (await response.read()).decode("utf-8")


async def test_error_quoting_a_lone_surrogate_of_the_body_is_valid_utf8(make_client):
    client = await make_client()
    response = await client.post(ABSENT + ":predict", data=b'{"signature_name": 1, "s": "\\ud800"}')
    assert response.status == 400
    error = (await response.read()).decode("utf-8")
    assert "'signature_name' key must be a string value" in error
    assert "\ufffd" in error


async def test_metrics_page_still_answers_after_a_name_that_is_not_utf8(make_client):
    client = await make_client(prometheus_path=METRICS)
    await client.get("/v1/models/%FF%FE")
    response = await client.get(METRICS)
    assert response.status == 200
    counts = _request_counts(await response.text())
    # Not a model the server serves: counted under the one label for all such names.
    assert counts[("", "NOT_FOUND")] == 1


async def test_unknown_names_are_counted_under_one_label(make_client):
    client = await make_client(prometheus_path=METRICS)
    for name in ("one", "two", "three%0Aforged 1"):
        await client.get(f"/v1/models/{name}")
    counts = _request_counts(await (await client.get(METRICS)).text())
    assert counts == {("", "NOT_FOUND"): 3}


async def test_label_of_a_served_name_is_escaped_on_the_metrics_page(make_client):
    name = 'a\nb"c\\d'
    client = await make_client(model_name=name, prometheus_path=METRICS)
    response = await client.get("/v1/models/a%0Ab%22c%5Cd")
    assert response.status == 404  # Served, but no version loaded.
    page = await (await client.get(METRICS)).text()
    assert (
        ':tensorflow:serving:request_count{model_name="a\\nb\\"c\\\\d",status="NOT_FOUND"}' in page
    )
    assert _request_counts(page) == {(name, "NOT_FOUND"): 1}


def _request_counts(page):
    """{(model_name, status): count} of request_count, read back with Prometheus' own parser."""
    families = text_string_to_metric_families(page)
    return {
        (sample.labels["model_name"], sample.labels["status"]): sample.value
        for family in families
        if family.name == ":tensorflow:serving:request_count"
        for sample in family.samples
    }


async def test_bodies_held_at_once_are_bounded_and_one_byte_over_gets_503(make_client):
    client = await make_client(rest_api_max_request_bytes=1000, rest_api_max_bytes_in_flight=1000)
    budget = client.server.api.body_bytes
    # A body of 600 bytes announced and still arriving holds its 600 bytes.
    _, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(
        f"POST {ABSENT}:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 600\r\n\r\n{{".encode()
    )
    await writer.drain()
    try:
        await _wait_for(lambda: budget.held == 600)
        body = b'{"instances": [1.0]}'
        fitting = body + b" " * (400 - len(body))
        response = await client.post(ABSENT + ":predict", data=fitting)
        assert response.status == 404  # Received and parsed.
        response = await client.post(ABSENT + ":predict", data=fitting + b" ")
        assert response.status == 503
        assert await error_of(response) == (
            "The server holds 600 bytes of request bodies; this one would pass the limit of "
            "1,000 (--rest_api_max_bytes_in_flight); retry later"
        )
    finally:
        writer.close()
    await _wait_for(lambda: budget.held == 0)


async def _wait_for(condition, timeout=30):
    """Waits on the event loop until `condition()` holds."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)
