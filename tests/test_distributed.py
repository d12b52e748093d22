"""Multi-worker training: TF_CONFIG, sharded data, two real workers on 127.0.0.1, failures.

The workers are real model_trainer.py processes under
MultiWorkerMirroredStrategy, started by train_workers.py or by hand with the
TF_CONFIG a cluster would give them.
"""

import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest
from conftest import TRAINER_FIGURES, default_ctrl_c, run_script, script_command
from server_fixtures import ServerProcess

from mnist_serving import config, distributed, local_cluster, training

# Small enough for CI on 2 cores: 600 images, 540 to fit (270 per worker), 60 to validate.
TWO_WORKER_TRAINING = ("--epochs", 1, "--limit", 600, "--seed", 7)


def tf_config(jobs, task_type, index):
    return json.dumps({"cluster": jobs, "task": {"type": task_type, "index": index}})


def test_without_tf_config_there_is_one_worker():
    cluster = distributed.cluster_from_environment({})
    assert (cluster.workers, cluster.is_chief, cluster.is_distributed) == (1, True, False)


def test_a_cluster_of_one_worker_trains_as_a_single_worker():
    environment = {"TF_CONFIG": tf_config({"worker": ["a:1"]}, "worker", 0)}
    assert not distributed.cluster_from_environment(environment).is_distributed


def test_the_chief_task_is_worker_0_and_leads_the_coordination_service():
    jobs = {"chief": ["c:1"], "worker": ["w:1", "w:2"]}
    chief = distributed.cluster_from_environment({"TF_CONFIG": tf_config(jobs, "chief", 0)})
    worker = distributed.cluster_from_environment({"TF_CONFIG": tf_config(jobs, "worker", 1)})
    assert (chief.workers, chief.worker_index, chief.is_chief) == (3, 0, True)
    assert (worker.worker_index, worker.is_chief) == (2, False)
    assert chief.leader == worker.leader == "/job:chief/replica:0/task:0"


def test_without_a_chief_task_worker_0_is_the_chief():
    jobs = {"worker": ["w:1", "w:2"]}
    first = distributed.cluster_from_environment({"TF_CONFIG": tf_config(jobs, "worker", 0)})
    assert first.is_chief and first.leader == "/job:worker/replica:0/task:0"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "TF_CONFIG is not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        (tf_config({"worker": ["a:1"], "ps": ["b:1"]}, "worker", 0), "names ps tasks"),
        (tf_config({"worker": ["a:1", "b:1"]}, "chief", 0), "task type 'chief' is not one"),
        (tf_config({"worker": ["a:1", "b:1"]}, "worker", 2), "task index 2 is not in 0..1"),
        (tf_config({"worker": "a:1"}, "worker", 0), "must be a list of host:port"),
        (tf_config({"chief": ["a:1", "b:1"]}, "chief", 0), "more than one chief"),
    ],
)
def test_a_tf_config_this_trainer_cannot_run_in_is_a_cluster_error(text, message):
    with pytest.raises(distributed.ClusterError, match=message):
        distributed.cluster_from_environment({"TF_CONFIG": text})


def test_the_trainer_says_what_is_wrong_with_tf_config_in_one_line(tmp_path):
    environment = dict(os.environ, TF_CONFIG='{"cluster": {"worker": ["a:1", "b:1"]}')
    result = subprocess.run(
        script_command("model_trainer.py", "--output", tmp_path / "m.h5"),
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
    )
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("model_trainer.py: error: TF_CONFIG is not valid JSON")


def test_steps_per_epoch_count_global_steps_of_equal_shares():
    assert distributed.steps_per_epoch(900, 128, 1) == 8
    assert distributed.steps_per_epoch(900, 128, 2) == 4  # 450 images per worker
    assert distributed.steps_per_epoch(901, 128, 2) == 4  # the odd image waits for next epoch


def shard_epochs(shards, shard_index, epochs=2, images=21):
    """Labels (the images' numbers) that one worker sees in each epoch."""
    numbers = np.arange(images, dtype=np.float32)
    digits = np.zeros((images, 28, 28, 1), np.float32)
    dataset = training.make_training_dataset(digits, numbers, 4, 7, shards, shard_index)
    return [
        np.concatenate([labels.numpy() for _, labels in dataset]).astype(int).tolist()
        for _ in range(epochs)
    ]


def test_each_worker_gets_an_equal_disjoint_share_of_every_epoch():
    first, second = shard_epochs(2, 0), shard_epochs(2, 1)
    for epoch in range(2):
        assert len(first[epoch]) == len(second[epoch]) == 10
        assert not set(first[epoch]) & set(second[epoch])
    # Reshuffled every epoch, alike on both workers.
    assert first[0] != first[1]


def test_one_shard_is_the_whole_training_set():
    [epoch] = shard_epochs(1, 0, epochs=1)
    assert sorted(epoch) == list(range(21))


def test_workers_distort_their_images_with_their_own_seeds():
    digit = np.zeros((8, 28, 28, 1), np.float32)
    digit[:, 8:20, 12:16] = 1.0
    labels = np.zeros(8, np.float32)
    batches = [
        next(iter(training.make_training_dataset(digit, labels, 8, 7, 2, index)))[0].numpy()
        for index in (0, 1)
    ]
    assert not np.allclose(batches[0], batches[1])


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory):
    """One run of train_workers.py --workers 2 on a small subset, for one epoch."""
    folder = tmp_path_factory.mktemp("two_workers")
    temporary = folder / "tmp"
    temporary.mkdir()
    output = folder / "out"
    result = subprocess.run(
        script_command(
            "train_workers.py",
            "--workers",
            2,
            *TWO_WORKER_TRAINING,
            "--output",
            output / "cnnModel.h5",
            "--figures",
            output / "figures",
        ),
        capture_output=True,
        text=True,
        timeout=900,
        # The other worker's temporary model goes here, to be seen removed.
        env=dict(os.environ, TMPDIR=str(temporary)),
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return output, temporary, result


def test_two_workers_train_and_both_end_well(two_workers):
    _, _, result = two_workers
    assert "[worker 0] Worker 0 of 2 (chief): 270 images per epoch, global batch 256" in (
        result.stdout
    )
    assert "[worker 1] Worker 1 done; the chief wrote the model" in result.stdout


def test_every_line_of_the_workers_is_prefixed_with_its_worker(two_workers):
    _, _, result = two_workers
    lines = result.stdout.splitlines()
    assert lines
    assert all(line.startswith(("[worker 0] ", "[worker 1] ")) for line in lines)


def test_the_chief_alone_writes_the_model_metrics_and_figures(two_workers):
    output, temporary, _ = two_workers
    assert sorted(path.name for path in output.iterdir()) == [
        "cnnModel.h5",
        "cnnModel.metrics.json",
        "figures",
    ]
    assert sorted(path.name for path in (output / "figures").iterdir()) == sorted(TRAINER_FIGURES)
    # The other worker's copy went to a temporary folder, since removed.
    assert not [path for path in temporary.iterdir() if "mnist_serving" in path.name]


def test_the_metrics_say_two_workers_and_have_the_single_worker_history(two_workers):
    output, _, result = two_workers
    metrics = json.loads((output / "cnnModel.metrics.json").read_text())
    assert metrics["workers"] == 2 and metrics["batch_size"] == 128
    assert metrics["training_images"] == 540 and metrics["validation_images"] == 60
    assert sorted(metrics["history"]) == ["accuracy", "loss", "val_accuracy", "val_loss"]
    assert metrics["test"]["images"] == 10000
    assert f"[worker 0] Accuracy over testing set is: {metrics['test']['accuracy']:.2%}" in (
        result.stdout
    )


def test_the_model_of_two_workers_exports_and_serves(two_workers, tmp_path, mnist):
    output, _, _ = two_workers
    base = tmp_path / config.MODEL_NAME
    exported = run_script(
        "export_model.py", "--model", output / "cnnModel.h5", "--export-base", base
    )
    assert exported.returncode == 0, exported.stderr[-2000:]
    images = mnist[1][0][:4]
    with ServerProcess(f"--model_name={config.MODEL_NAME}", f"--model_base_path={base}") as server:
        response = server.post(
            f"/v1/models/{config.MODEL_NAME}:predict",
            json={"instances": (images / 255.0)[..., None].tolist()},
        )
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert len(predictions) == 4
    for prediction in predictions:
        assert sum(prediction["probabilities"]) == pytest.approx(1.0, abs=1e-5)


class Worker:
    """model_trainer.py as one worker of a local cluster, its output read line by line."""

    def __init__(self, addresses, index, *arguments):
        self.process = subprocess.Popen(
            script_command("model_trainer.py", *arguments),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=dict(
                os.environ,
                TF_CONFIG=local_cluster.tf_config(addresses, index),
                PYTHONUNBUFFERED="1",
            ),
        )
        self.lines = []

    def read_until(self, text):
        """Reads the output until a line containing `text`; fails if the worker ends first."""
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            if text in line:
                return line
        raise AssertionError(f"no line with {text!r}:\n" + "\n".join(self.lines[-50:]))

    def finish(self, timeout):
        """Waits for the end; returns the exit status and the output's last line."""
        rest, _ = self.process.communicate(timeout=timeout)
        self.lines += rest.splitlines()
        return self.process.returncode, self.lines[-1]

    def stop(self):
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate()


def addresses(count):
    return [f"{local_cluster.HOST}:{port}" for port in local_cluster.free_ports(count)]


def test_a_worker_killed_during_training_stops_the_other_within_the_timeout(tmp_path):
    output = tmp_path / "cnnModel.h5"
    output.write_bytes(b"previous model")
    cluster = addresses(2)
    arguments = ("--epochs", 1000, "--limit", 400, "--no-figures", "--worker-timeout", 30)
    chief = Worker(cluster, 0, *arguments, "--output", output)
    other = Worker(cluster, 1, *arguments, "--output", tmp_path / "other.h5")
    try:
        # The first epoch's line: the workers are training together.
        chief.read_until(" - loss: ")
        other.process.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        status, last_line = chief.finish(timeout=120)
        seconds = time.monotonic() - killed
    finally:
        chief.stop()
        other.stop()
    assert status == 1
    assert last_line == (
        "model_trainer.py: error: /job:worker/task:1 stopped or cannot be reached; "
        f"the training stopped; {output} was left as it was"
    )
    assert seconds < 30 + 15  # --worker-timeout, and the time to print and end
    assert output.read_bytes() == b"previous model"
    assert [path.name for path in tmp_path.iterdir()] == ["cnnModel.h5"]


def test_a_worker_that_never_comes_up_stops_the_chief_after_the_startup_timeout(tmp_path):
    output = tmp_path / "cnnModel.h5"
    output.write_bytes(b"previous model")
    chief = Worker(addresses(2), 0, "--startup-timeout", 10, "--output", output)
    try:
        chief.read_until("Dimensions of Testing set images")
        started = time.monotonic()
        status, last_line = chief.finish(timeout=120)
        seconds = time.monotonic() - started
    finally:
        chief.stop()
    assert status == 1
    assert last_line == (
        "model_trainer.py: error: not all 2 workers came up within 10 s (--startup-timeout); "
        f"{output} was left as it was"
    )
    assert seconds < 10 + 30  # --startup-timeout, and TensorFlow's start
    assert output.read_bytes() == b"previous model"


def test_ctrl_c_stops_every_worker_and_writes_nothing(tmp_path):
    output = tmp_path / "cnnModel.h5"
    launcher = subprocess.Popen(
        script_command(
            "train_workers.py", "--workers", 2, "--limit", 400, "--no-figures", "--output", output
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
        preexec_fn=default_ctrl_c,
    )
    try:
        # Both workers have joined the cluster and built the model.
        for line in launcher.stdout:
            if line.startswith("[worker 0] Worker 0 of 2 (chief)"):
                break
        launcher.send_signal(signal.SIGINT)
        _, stderr = launcher.communicate(timeout=120)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.communicate()
    assert launcher.returncode == local_cluster.INTERRUPTED
    assert stderr.strip().splitlines()[-1] == (
        "train_workers.py: interrupted; the workers were stopped"
    )
    assert not output.exists()
