"""model_trainer.py trains, evaluates, saves the model and its metrics, and draws the figures."""

import json
import os
import signal
import subprocess
import sys

import h5py
import pytest
from conftest import SMOKE_TRAINING, TRAINER_FIGURES, default_ctrl_c, run_script

from mnist_serving import config, training


def test_prints_the_dataset_dimensions_as_the_original_does(smoke_training):
    _, result = smoke_training
    assert "Dimensions of Training set images:  (60000, 28, 28)" in result.stdout
    assert "Dimensions of Testing set images:  (10000, 28, 28)" in result.stdout


def test_prints_the_model_summary_with_25927246_trainable_parameters(smoke_training):
    _, result = smoke_training
    assert "Trainable params: 25,927,246" in result.stdout
    assert "concatenate_1 (Concatenate)" in result.stdout


def test_prints_the_whole_runs_estimated_time_once_from_the_first_steps(smoke_training):
    _, result = smoke_training
    # 900 images in batches of 128: 8 steps; steps 3-5 are timed.
    [line] = [line for line in result.stdout.splitlines() if "Estimated training time" in line]
    assert line.startswith("Estimated training time: ")
    assert " for 8 steps at " in line and "(measured on steps 3-5;" in line
    assert result.stdout.index(line) < result.stdout.index("Accuracy over training set")


@pytest.mark.parametrize(
    ("seconds", "said"), [(40.4, "40 s"), (89, "89 s"), (720, "12 min"), (5700, "1 h 35 min")]
)
def test_durations_are_said_in_seconds_minutes_or_hours(seconds, said):
    assert training.format_duration(seconds) == said


def test_writes_a_model_that_loads_and_classifies(smoke_training, mnist):
    import keras

    folder, _ = smoke_training
    model = keras.models.load_model(folder / "cnnModel.h5", compile=False)
    assert model.count_params() == 25_927_246
    probabilities = model.predict(mnist[1][0][:10][..., None] / 255.0, verbose=0)
    assert probabilities.shape == (10, 10)


def test_the_model_file_has_no_optimizer_state(smoke_training):
    folder, _ = smoke_training
    with h5py.File(folder / "cnnModel.h5") as model_file:
        assert "optimizer_weights" not in model_file


def test_metrics_give_accuracy_and_misclassifications_per_class(smoke_training):
    folder, result = smoke_training
    metrics = json.loads((folder / "cnnModel.metrics.json").read_text())
    assert metrics["training_images"] == 900 and metrics["validation_images"] == 100
    assert metrics["epochs"] == 1 and metrics["seed"] == 7 and metrics["limit"] == 1000
    assert metrics["tensorflow_version"].startswith("2.")
    assert metrics["seconds"] > 0 and metrics["images_per_second"] > 0
    for split, images in (("train", 1000), ("test", 10000)):
        evaluation = metrics[split]
        assert evaluation["images"] == images
        per_class = evaluation["per_class"].values()
        assert sum(c["images"] for c in per_class) == images
        assert sum(c["misclassified"] for c in per_class) == evaluation["misclassified"]
        assert evaluation["accuracy"] == pytest.approx(1 - evaluation["misclassified"] / images)
    # Even 900 images and one epoch teach the model far more than chance.
    assert metrics["test"]["accuracy"] > 0.5
    assert f"Accuracy over testing set is: {metrics['test']['accuracy']:.2%}" in result.stdout


def test_draws_the_figures_of_the_manual(smoke_training):
    folder, _ = smoke_training
    for name in TRAINER_FIGURES:
        data = (folder / "figures" / name).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 5000, name


def test_the_same_seed_gives_the_same_metrics(smoke_training, tmp_path):
    folder, _ = smoke_training
    result = run_script(
        "model_trainer.py",
        *SMOKE_TRAINING,
        "--no-figures",
        "--output",
        tmp_path / "again.h5",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    first = json.loads((folder / "cnnModel.metrics.json").read_text())
    second = json.loads((tmp_path / "again.metrics.json").read_text())
    for timing in ("seconds", "images_per_second"):
        first.pop(timing), second.pop(timing)
    assert first == second


def test_an_interrupted_run_leaves_the_previous_model_intact(tmp_path):
    output = tmp_path / "cnnModel.h5"
    output.write_bytes(b"previous model")
    process = subprocess.Popen(
        [
            sys.executable,
            str(config.CODE_DIR / "model_trainer.py"),
            "--epochs",
            "3",
            "--limit",
            "20000",
            "--no-figures",
            "--output",
            str(output),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
        preexec_fn=default_ctrl_c,
    )
    # Interrupt once the first epoch has begun, as a user pressing Ctrl-C would.
    for line in process.stdout:
        if line.startswith("Epoch 1/"):
            process.send_signal(signal.SIGINT)
            break
    _, stderr = process.communicate(timeout=120)
    assert process.returncode != 0
    assert stderr.strip().splitlines()[-1] == (
        f"model_trainer.py: interrupted; {output} was left as it was"
    )
    assert output.read_bytes() == b"previous model"
    assert [path.name for path in tmp_path.iterdir()] == ["cnnModel.h5"]


# A Ctrl-C that comes while files are written, in a process of its own.
INTERRUPTED_WHILE_WRITING = """
import signal, sys
from pathlib import Path
from mnist_serving import interrupts
folder = Path(sys.argv[1])
with interrupts.{block}("interrupted after saving both"):
    signal.raise_signal(signal.SIGINT)
    (folder / "model").write_text("new model")
    (folder / "metrics").write_text("new metrics")
(folder / "figures").write_text("drawn")
"""


def run_interrupted_while_writing(folder, block, preexec_fn):
    return subprocess.run(
        [sys.executable, "-c", INTERRUPTED_WHILE_WRITING.format(block=block), str(folder)],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, PYTHONPATH=str(config.CODE_DIR)),
        preexec_fn=preexec_fn,
    )


def test_ctrl_c_while_the_model_and_its_metrics_are_written_stops_the_run_after_both(tmp_path):
    result = run_interrupted_while_writing(tmp_path, "held_then_end", default_ctrl_c)
    assert result.returncode != 0
    assert result.stderr.splitlines()[-1] == "interrupted after saving both"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["metrics", "model"]


def test_a_run_started_with_ctrl_c_ignored_goes_on_when_it_comes(tmp_path):
    result = run_interrupted_while_writing(
        tmp_path, "end_at_once", lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)
    )
    assert result.returncode == 0, result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["figures", "metrics", "model"]


def test_a_write_that_fails_halfway_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "cnnModel.h5"
    target.write_bytes(b"previous model")

    def write_then_fail(path):
        with open(path, "wb") as half_written:
            half_written.write(b"half a model")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        training.atomic_write(target, write_then_fail)
    assert target.read_bytes() == b"previous model"
    assert [path.name for path in tmp_path.iterdir()] == ["cnnModel.h5"]


def test_a_damaged_data_file_is_one_clear_line(tmp_path):
    broken = tmp_path / "mnist.npz"
    broken.write_text("not MNIST")
    result = run_script("model_trainer.py", "--data", broken, "--output", tmp_path / "m.h5")
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"model_trainer.py: error: {broken} is not a readable .npz file")
    assert not (tmp_path / "m.h5").exists()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--epochs", "0"], "--epochs must be a positive integer, got 0"),
        (["--limit", "-5"], "--limit must be a positive integer, got -5"),
        (["--output", "model.keras"], "--output must end in .h5"),
    ],
)
def test_bad_arguments_are_usage_errors(arguments, message):
    result = run_script("model_trainer.py", *arguments)
    assert result.returncode == 2
    assert message in result.stderr
