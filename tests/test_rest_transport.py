"""The REST transport in-process, through aiohttp's test client: routing, headers, bodies.

No model is loaded (the configured base path does not exist), so every
answer here comes from the transport itself and takes milliseconds. Answers
that need a model are in test_server_api.py, from a real server process.
"""

import gzip

import pytest

from mnist_serving.serving.data_plane import DataPlane
from mnist_serving.serving.model_config import ModelConfig
from mnist_serving.serving.options import ServerOptions
from mnist_serving.serving.rest import RestApi

MAX_BODY = 4096
ABSENT = "/v1/models/absent"
METRICS = "/monitoring/prometheus/metrics"


@pytest.fixture
def make_client(aiohttp_client, tmp_path):
    planes = []

    async def make(**options):
        model = ModelConfig(name="absent", base_path=str(tmp_path / "not_exported"))
        plane = DataPlane(
            ServerOptions(models=(model,), rest_api_max_request_bytes=MAX_BODY, **options)
        )
        planes.append(plane)
        return await aiohttp_client(RestApi(plane).application())

    yield make
    for plane in planes:
        plane.close()


async def error_of(response):
    assert response.headers["Content-Type"] == "application/json"
    return (await response.json())["error"]


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
