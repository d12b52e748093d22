"""The drawing page (web/) in a real browser: Debian's headless Chromium, driven by Selenium.

The page is served on one port and model_server.py answers on another, as
with `make web`: every request the page makes crosses origins, so the
browser checks CORS as it would for anyone. Digits are drawn with pointer
moves; the tests wait for what the page shows, never for a fixed time.

Without Chromium and its driver the browser tests are skipped (apt-get install
chromium chromium-driver, as .ci/run does); CHROMIUM and CHROMEDRIVER name
other binaries.
"""

import base64
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import urllib.parse

import numpy as np
import pytest
import requests
from conftest import default_ctrl_c, run_script
from server_fixtures import ServerProcess

from mnist_serving import calibration, config, export, preprocessing, web

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = (
    os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver") or "/usr/bin/chromedriver"
)
# Headless, and nothing that reaches for the network on its own (on a closed
# network those connections fail, slowly and noisily).
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Wide and tall enough for the whole page (figures/web_page.png).
    "--window-size=900,780",
    "--force-device-scale-factor=1",
]
ANSWER_SECONDS = 120
# A model trained as `make train` trains it scores 99.59%; a short run does not
# recognise drawn digits reliably.
FULL_MODEL_ACCURACY = 0.99

# Strokes as a person draws them, in fractions of the pad (x right, y down).
ONE = [[(0.52, 0.15), (0.5, 0.85)]]
SEVEN = [[(0.25, 0.2), (0.75, 0.2), (0.45, 0.85)]]


def missing_browser():
    """Why the browser tests cannot run here, or None."""
    for name, path in (("Chromium", CHROMIUM), ("ChromeDriver", CHROMEDRIVER)):
        if not os.access(path, os.X_OK):
            return (
                f"{name} not found at {path}: apt-get install chromium chromium-driver "
                "(.ci/run does), or set CHROMIUM and CHROMEDRIVER"
            )
    return None


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Chromium through its own driver: Selenium Manager downloads nothing."""
    reason = missing_browser()
    if reason:
        pytest.skip(reason)
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium')}")
    driver = webdriver.Chrome(
        options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER)
    )
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def page_server():
    server = web.PageServer(port=0)
    yield server
    server.close()


@pytest.fixture(scope="module")
def smoke_export(smoke_training, tmp_path_factory, mnist):
    """The smoke-trained model of this run, exported as version 3."""
    folder, _ = smoke_training
    base = tmp_path_factory.mktemp("web") / config.MODEL_NAME
    keras_model = export.load_keras_model(folder / "cnnModel.h5")
    export.export_model(keras_model, base, version=3, check_images=mnist[1][0][:8])
    return base


def serve(base):
    """model_server.py as `make web` starts it."""
    return ServerProcess(
        f"--model_base_path={base}",
        f"--model_name={config.MODEL_NAME}",
        "--rest_api_enable_cors_support=true",
    )


@pytest.fixture(scope="module")
def smoke_server(smoke_export):
    with serve(smoke_export) as server:
        yield server


class Page:
    """The page open in the browser, through its stable hooks."""

    def __init__(self, driver, url):
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver = driver
        driver.get(url)
        self.wait = WebDriverWait(driver, ANSWER_SECONDS)
        # Ready, or an error: the page has finished asking the server.
        self.wait.until(lambda _: "…" not in self.status)

    @classmethod
    def open(cls, driver, page_server, **query):
        url = web.local_url("127.0.0.1", page_server.port) + "/"
        return cls(driver, url + "?" + urllib.parse.urlencode(query, safe=":/"))

    def find(self, selector):
        return self.driver.find_element("css selector", selector)

    @property
    def status(self):
        return self.find("#status").text

    @property
    def status_is_error(self):
        return "error" in self.find("#status").get_attribute("class").split()

    @property
    def digit(self):
        return self.find("#digit").text

    def draw(self, strokes, pointer="mouse"):
        """Draws each stroke with a `mouse`, `touch` or `pen`: down, through its points, up."""
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.actions.pointer_input import PointerInput

        pad = self.find("#pad")
        width, height = pad.size["width"], pad.size["height"]

        def offset(point):  # From the pad's centre, in CSS pixels.
            return round((point[0] - 0.5) * width), round((point[1] - 0.5) * height)

        device = PointerInput(pointer, pointer)
        actions = ActionChains(self.driver, duration=0, devices=[device])
        for stroke in strokes:
            actions.move_to_element_with_offset(pad, *offset(stroke[0])).click_and_hold()
            for start, end in itertools.pairwise(stroke):
                # A point every few pixels, as a real mouse reports them.
                for step in np.linspace(0, 1, 25)[1:]:
                    point = np.add(start, np.multiply(step, np.subtract(end, start)))
                    actions.move_to_element_with_offset(pad, *offset(point))
            actions.release()
        actions.perform()

    def wait_for_answer(self):
        """Waits until #digit shows a digit, or fails with the page's error."""
        self.wait.until(lambda _: self.digit or self.status_is_error)
        assert not self.status_is_error, self.status
        return self.digit

    def wait_for_error(self):
        self.wait.until(lambda _: self.status_is_error)
        return self.status

    def probabilities(self):
        """(digit, text, probability) of each child of #probabilities, in page order."""
        return self.driver.execute_script(
            "return [...document.querySelectorAll('#probabilities > *')].map("
            "(bar) => [bar.dataset.digit, bar.textContent, bar.dataset.probability]);"
        )

    def sent_image(self):
        """The 28x28 image shown as sent, decoded from its PNG: uint8 (28, 28)."""
        source = self.find("#sent").get_attribute("src")
        assert source.startswith("data:image/png;base64,")
        return decode_grey_png(base64.b64decode(source.split(",", 1)[1]))

    def pad_ink(self):
        """The pad's ink: the opacity of its pixels (it is drawn on a transparent canvas)."""
        source = self.driver.execute_script("return document.getElementById('pad').toDataURL();")
        rgba = preprocessing.decode_image(base64.b64decode(source.split(",", 1)[1]))
        return rgba[:, :, 3]


def decode_grey_png(png):
    """A PNG whose colour channels are equal and which is opaque, as one grey channel."""
    image = preprocessing.decode_image(png)
    if image.ndim == 3:
        assert (image[:, :, :3] == image[:, :, :1]).all(), "not grey"
        if image.shape[2] == 4:
            assert (image[:, :, 3] == 255).all(), "not opaque"
        image = image[:, :, 0]
    return image


def test_the_page_s_constants_are_config_py_s():
    # web/config.js: `export const NAME = <JSON value>;` per fact.
    text = (config.WEB_DIR / "config.js").read_text()
    constants = dict(re.findall(r"^export const (\w+) = (.+);$", text, re.MULTILINE))
    assert constants, "no constants found in web/config.js"
    for name, value in constants.items():
        assert json.loads(value) == getattr(config, name), name


def test_a_stroke_shows_the_digit_ten_probabilities_and_the_version(
    browser, page_server, smoke_server
):
    page = Page.open(browser, page_server, server=smoke_server.url)
    assert page.status == f"Version 3 of {config.MODEL_NAME} is ready: draw a digit."
    page.draw(ONE)
    digit = page.wait_for_answer()
    bars = page.probabilities()
    assert [bar[0] for bar in bars] == [str(digit) for digit in range(config.NUM_CLASSES)]
    shown = np.array([float(text) for _, text, _ in bars])
    exact = np.array([float(probability) for _, _, probability in bars])
    assert np.allclose(shown, exact, atol=0.0005)
    assert exact.sum() == pytest.approx(1.0, abs=1e-5)
    assert digit == str(exact.argmax())
    assert page.find("#version").text == f"{config.MODEL_NAME}, version 3"
    assert page.status.startswith(f"Version 3 of {config.MODEL_NAME} answered in ")
    assert page.find("#sent").is_displayed()


@pytest.mark.parametrize("pointer", ["touch", "pen"])
def test_a_finger_and_a_pen_draw_as_a_mouse_does(browser, page_server, smoke_server, pointer):
    page = Page.open(browser, page_server, server=smoke_server.url)
    page.draw(ONE, pointer)
    page.wait_for_answer()
    drawn_by_pointer = page.sent_image()
    page.find("#clear").click()
    page.draw(ONE)
    page.wait_for_answer()
    np.testing.assert_array_equal(drawn_by_pointer, page.sent_image())


def test_the_image_sent_is_the_client_s_recipe_applied_to_the_drawing(
    browser, page_server, smoke_server
):
    page = Page.open(browser, page_server, server=smoke_server.url)
    page.draw(SEVEN)
    page.wait_for_answer()
    # The same drawing through the Python client's preprocessing, as a scan of
    # it would go: dark ink on white paper. Drawn this large, the pen's strokes
    # have MNIST's width, which the client's recipe then leaves as it is.
    expected = preprocessing.to_mnist(255 - page.pad_ink())
    np.testing.assert_array_equal(page.sent_image(), expected)


def test_the_digit_shown_is_the_model_s_answer_for_the_image_sent(
    browser, page_server, smoke_server
):
    page = Page.open(browser, page_server, server=smoke_server.url)
    page.draw(SEVEN)
    page.wait_for_answer()
    shown = [float(probability) for _, _, probability in page.probabilities()]
    # The float signature, asked directly with the pixels of the PNG the page sent.
    pixels = page.sent_image().astype(np.float32) / config.PIXEL_MAX
    answer = smoke_server.post(
        f"/v1/models/{config.MODEL_NAME}/versions/3:predict",
        json={
            "signature_name": config.DEFAULT_SIGNATURE,
            "instances": [{config.INPUT_NAME: pixels[:, :, None].tolist()}],
        },
    )
    expected = answer.json()["predictions"][0][config.PROBABILITIES_OUTPUT]
    np.testing.assert_allclose(shown, expected, atol=1e-6)


def test_clear_and_escape_empty_the_pad_and_the_answer(browser, page_server, smoke_server):
    from selenium.webdriver.common.keys import Keys

    page = Page.open(browser, page_server, server=smoke_server.url)

    def assert_cleared():
        page.wait.until(lambda _: page.digit == "")
        assert page.find("#version").text == ""
        assert [text for _, text, _ in page.probabilities()] == [""] * config.NUM_CLASSES
        assert not page.find("#sent").is_displayed()
        assert not page.pad_ink().any()
        assert page.status == "Draw a digit."

    page.draw(ONE)
    page.wait_for_answer()
    page.find("#clear").click()
    assert_cleared()
    page.draw(ONE)
    page.wait_for_answer()
    page.find("body").send_keys(Keys.ESCAPE)
    assert_cleared()


def test_a_stopped_server_shows_an_error_in_the_status_line(browser, page_server, smoke_export):
    with serve(smoke_export) as server:
        page = Page.open(browser, page_server, server=server.url)
        page.draw(ONE)
        page.wait_for_answer()
        assert server.stop() == 0
    page.find("#clear").click()
    page.draw(ONE)
    error = page.wait_for_error()
    assert error.startswith(f"Cannot reach the model server at {server.url}: it is not running")
    assert page.digit == ""


def test_a_model_the_server_does_not_have_is_not_available(browser, page_server, smoke_server):
    page = Page.open(browser, page_server, server=smoke_server.url, model="fashion")
    expected = "Model not available: Servable not found for request: Latest(fashion)"
    assert page.status_is_error
    assert page.status == expected
    page.find("#clear").click()
    assert not page.status_is_error
    page.draw(ONE)
    assert page.wait_for_error() == expected
    assert page.digit == ""


def test_a_version_the_server_does_not_have_is_not_available(browser, page_server, smoke_server):
    page = Page.open(browser, page_server, server=smoke_server.url, version=7)
    assert page.status == (
        f"Model not available: Servable not found for request: Specific({config.MODEL_NAME}, 7)"
    )


def test_an_answer_that_is_not_json_is_reported(browser, page_server):
    # The page's own file server (same origin: no CORS needed) answers HTML.
    page_url = web.local_url("127.0.0.1", page_server.port)
    page = Page.open(browser, page_server, server=page_url)
    assert page.status_is_error
    assert page.status.startswith(
        f"The answer of {page_url}/v1/models/{config.MODEL_NAME}/metadata is not JSON (HTTP 404"
    )


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ({"server": "ftp://localhost:8501"}, "?server= must be an address such as"),
        ({"server": "localhost"}, "?server= must be an address such as"),
        ({"model": "a/b"}, '?model= must be a model name without "/" or ":"'),
        ({"version": "latest"}, "?version= must be a version number such as 1"),
    ],
)
def test_bad_query_parameters_are_reported(browser, page_server, query, error):
    page = Page.open(browser, page_server, **query)
    assert page.status_is_error
    assert page.status.startswith(error)


def full_model_or_skip():
    """code/cnnModel.h5 when it is a full training run's; else the test is skipped."""
    path = config.DEFAULT_MODEL_PATH
    if not path.is_file():
        pytest.skip(
            f"no trained model at {path} ('make train' writes one); the smoke model "
            "of the test run is too weak to read drawn digits"
        )
    metrics_path = path.with_name(path.stem + ".metrics.json")
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    accuracy = metrics.get("test", {}).get("accuracy", 0.0)
    if accuracy < FULL_MODEL_ACCURACY:
        pytest.skip(
            f"{path} scored {accuracy:.2%} on MNIST's test set ({metrics_path.name}), "
            f"under the {FULL_MODEL_ACCURACY:.0%} of a full training run"
        )
    return path


def test_drawn_one_and_seven_are_read_by_the_full_model(browser, page_server, tmp_path, request):
    keras_path = full_model_or_skip()
    base = tmp_path / config.MODEL_NAME
    # Calibrated with the recorded temperature, as export_model.py exports it.
    temperature = calibration.read_temperature(
        keras_path.with_name(keras_path.stem + ".metrics.json")
    )
    export.export_model(
        export.load_keras_model(keras_path), base, version=1, temperature=temperature
    )
    with serve(base) as server:
        page = Page.open(browser, page_server, server=server.url)
        page.draw(ONE)
        assert page.wait_for_answer() == "1"
        page.find("#clear").click()
        page.wait.until(lambda _: page.digit == "")
        page.draw(SEVEN)
        assert page.wait_for_answer() == "7"
        figure = request.config.getoption("--web-figure")
        if figure:
            browser.save_screenshot(str(figure))


def test_web_demo_serves_the_page_and_ctrl_c_stops_both_servers(browser, smoke_export):
    demo = subprocess.Popen(
        [
            sys.executable,
            str(config.CODE_DIR / "web_demo.py"),
            "--page_port=0",
            "--rest_api_port=0",
            f"--model_base_path={smoke_export}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        preexec_fn=default_ctrl_c,
    )
    try:
        # The address comes once the model server answers.
        match = None
        for line in demo.stdout:
            match = re.search(r"Draw a digit at (\S+)", line)
            if match:
                break
        assert match, "web_demo.py printed no address"
        url = match.group(1)
        server_url = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["server"][0]
        page = Page(browser, url)
        page.draw(ONE)
        page.wait_for_answer()
        demo.send_signal(signal.SIGINT)
        assert demo.wait(60) == 0
    finally:
        if demo.poll() is None:
            demo.kill()
    for address in (url, server_url):
        with pytest.raises(requests.ConnectionError):
            requests.get(address, timeout=10)


def test_web_demo_without_an_export_says_what_to_do(tmp_path):
    result = run_script("web_demo.py", f"--model_base_path={tmp_path}")
    assert result.returncode == 1
    assert result.stderr == (
        f"web_demo.py: error: no exported model in {tmp_path}: "
        "run 'make train export' (or 'make demo') first\n"
    )


def test_web_demo_on_a_port_in_use_says_so(tmp_path):
    (tmp_path / "1").mkdir()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_script("web_demo.py", f"--page_port={port}", f"--model_base_path={tmp_path}")
    assert result.returncode == 1
    assert result.stderr == (
        f"web_demo.py: error: cannot serve the page on 127.0.0.1:{port}: "
        "Address already in use (choose another --page_port)\n"
    )
