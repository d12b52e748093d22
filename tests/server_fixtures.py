"""Helpers of the model_server.py tests: small real SavedModels and a real server process.

The models are tiny `tf.Module`s saved with `tf.saved_model.save`, each made
to show one behaviour: an elementwise model like TF Serving's own
half_plus_two, a model with several signatures, inputs, outputs and dtypes,
and a model that computes for as long as it is asked to (for timeouts).
"""

import re
import shutil
import time
from pathlib import Path

import requests
from aiohttp import web
from aiohttp.test_utils import BaseTestServer

from mnist_serving.server_process import ModelServerProcess

STARTUP_SECONDS = 120


def save_half_plus(path, offset):
    """`y = 0.5 * x + offset` on float32 `x` declared [-1, 1], as TF Serving's test models."""
    import tensorflow as tf

    class HalfPlus(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
        def predict(self, x):
            return {"y": 0.5 * x + offset}

    module = HalfPlus()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.predict})
    return Path(path)


def save_kitchen(path):
    """A model with several signatures, inputs, outputs and dtypes.

    - `serving_default`: `a` float32 [-1, 2] and `b` int32 [-1] ->
      `total` float32 [-1] (row sums of a plus b) and `b_twice` int32 [-1].
    - `strings`: `text` string [-1] -> `length` int32 [-1] and `echo_bytes`
      string [-1] (the input, written back as b64 since its alias ends in _bytes).
    - `scalar`: `rate` float32 [] -> `doubled` float32 [] (no batch dimension).
    - `flags`: `flag` bool [-1] -> `negated` bool [-1].
    """
    import tensorflow as tf

    class Kitchen(tf.Module):
        @tf.function(
            input_signature=[
                tf.TensorSpec([None, 2], tf.float32, name="a"),
                tf.TensorSpec([None], tf.int32, name="b"),
            ]
        )
        def default(self, a, b):
            return {
                "total": tf.reduce_sum(a, axis=1) + tf.cast(b, tf.float32),
                "b_twice": b * 2,
            }

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
        def strings(self, text):
            return {"length": tf.strings.length(text), "echo_bytes": text}

        @tf.function(input_signature=[tf.TensorSpec([], tf.float32, name="rate")])
        def scalar(self, rate):
            # Always a scalar, whatever the input's shape.
            return {"doubled": tf.reduce_sum(tf.reshape(rate, [-1])) * 2.0}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.bool, name="flag")])
        def flags(self, flag):
            return {"negated": tf.logical_not(flag)}

    module = Kitchen()
    tf.saved_model.save(
        module,
        str(path),
        signatures={
            "serving_default": module.default,
            "strings": module.strings,
            "scalar": module.scalar,
            "flags": module.flags,
        },
    )
    return Path(path)


def save_example_shaped(path):
    """Signatures shaped as TF Serving's Classify and Regress APIs want them.

    - `serving_default` and `classify`: `inputs` string [-1] -> `scores` float32 [-1, 2].
    - `regress`: `inputs` string [-1] -> `outputs` float32 [-1].

    Their input takes serialized tf.Examples, which model_server.py does not
    run: it checks such a signature as TF Serving does, then answers UNIMPLEMENTED.
    """
    import tensorflow as tf

    class Shaped(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def classify(self, inputs):
            return {"scores": tf.zeros([tf.size(inputs), 2])}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def regress(self, inputs):
            return {"outputs": tf.zeros([tf.size(inputs)])}

    module = Shaped()
    signatures = {
        "serving_default": module.classify,
        "classify": module.classify,
        "regress": module.regress,
    }
    tf.saved_model.save(module, str(path), signatures=signatures)
    return Path(path)


def save_busy(path):
    """`rounds` int32 [-1] -> `value` float32 [-1]: computes for as many rounds as asked.

    Each round is a small matrix product, so a large number keeps the
    model busy for seconds: what a timeout test needs, without sleeping.
    """
    import tensorflow as tf

    class Busy(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.int32, name="rounds")])
        def predict(self, rounds):
            total = tf.reduce_max(rounds)
            matrix = tf.eye(64) * 0.5

            def body(index, value):
                return index + 1, tf.linalg.normalize(tf.matmul(value, matrix) + 1.0)[0]

            _, value = tf.while_loop(
                lambda index, _: index < total, body, (tf.constant(0), tf.eye(64))
            )
            return {"value": tf.fill(tf.shape(rounds), tf.reduce_sum(value))}

    module = Busy()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.predict})
    return Path(path)


def save_gate(path):
    """`gate` string [-1] -> `waited` int32 [-1]: a model that runs until the test lets it end.

    The request names a folder: the model writes `<folder>/started` when it
    begins, then computes until `<folder>/open` exists. A test can thus hold
    a prediction in progress for exactly as long as it needs, on any machine,
    and see that it has started.
    """
    import tensorflow as tf

    class Gate(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="gate")])
        def predict(self, gate):
            folder = gate[0]
            started = tf.io.write_file(folder + "/started", "")
            with tf.control_dependencies([started]):
                (rounds,) = tf.while_loop(
                    lambda rounds: tf.equal(tf.size(tf.io.matching_files(folder + "/open")), 0),
                    lambda rounds: (rounds + 1,),
                    (tf.constant(0),),
                )
            return {"waited": tf.fill(tf.shape(gate), tf.minimum(rounds, 1))}

    module = Gate()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.predict})
    return Path(path)


class Gate:
    """A folder that holds `save_gate` predictions until `open()`."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    @property
    def request(self):
        """The JSON body of a prediction held by this gate."""
        return {"instances": [str(self.folder)]}

    def wait_until_started(self, timeout=60):
        wait_until(lambda: (self.folder / "started").exists(), timeout=timeout, interval=0.02)

    def open(self):
        (self.folder / "open").touch()


def copy_version(source, base, version):
    """Publishes a SavedModel as `base/<version>` the way the exporter does: atomically."""
    base = Path(base)
    base.mkdir(parents=True, exist_ok=True)
    staging = base / f".staging-{version}"
    shutil.copytree(source, staging)
    staging.rename(base / str(version))
    return base / str(version)


class ServerProcess(ModelServerProcess):
    """`python code/model_server.py ...` on free 127.0.0.1 ports (REST and gRPC).

    Unless `wait=False`, it returns once the server answers, and fails with the
    server's log if it does not.
    """

    def __init__(self, *arguments, wait=True):
        super().__init__(["--rest_api_port=0", "--port=0", *map(str, arguments)])
        if wait:
            self.wait_until_ready()

    def wait_until_ready(self, timeout=STARTUP_SECONDS):
        """Waits for the `Exporting HTTP/REST API at:...` line; fails with the log."""
        port = super().wait_until_ready(timeout)
        if port is None:
            self.stop()
            raise AssertionError("server did not start:\n" + self.log)
        return port

    def get(self, path, **keywords):
        return requests.get(self.url + path, timeout=60, **keywords)

    def post(self, path, **keywords):
        return requests.post(self.url + path, timeout=60, **keywords)

    def wait_for_log(self, pattern, timeout=60):
        """Waits until a log line matches `pattern`; returns the line."""
        compiled = re.compile(pattern)
        return wait_until(
            lambda: next((line for line in list(self.lines) if compiled.search(line)), None),
            timeout,
            interval=0.05,
            failure=lambda: f"no log line matched {pattern!r}:\n{self.log}",
        )


def wait_until(condition, timeout=60, interval=0.1, failure=lambda: "condition not met in time"):
    """Polls `condition()` until it is truthy; returns its value or fails with `failure()`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(failure())


def version_states(server, model):
    """{version: state} from the status endpoint, or {} while the model is unknown."""
    response = server.get(f"/v1/models/{model}")
    if response.status_code != 200:
        return {}
    return {
        int(entry["version"]): entry["state"] for entry in response.json()["model_version_status"]
    }


def write_warmup_requests(version_path, inputs_list, signature_name="serving_default"):
    """Writes a version's warm-up file: one predict request per dict of alias -> array."""
    from mnist_serving import warmup

    logs = [warmup.predict_log(inputs, signature_name) for inputs in inputs_list]
    return warmup.write_warmup_file(version_path, logs)


class RestTestServer(BaseTestServer):
    """aiohttp's test server (for `aiohttp_client`) around the REST API's own server."""

    def __init__(self, api, **keywords):
        self.api = api
        super().__init__(**keywords)

    async def _make_runner(self, **keywords):
        return web.ServerRunner(self.api.server(), **keywords)
