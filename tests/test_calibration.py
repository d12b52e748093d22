"""Calibration: the expected calibration error, and a temperature that keeps every prediction."""

import json

import numpy as np
import pytest
from conftest import run_script

from mnist_serving import calibration


def confident_row(confidence, digit):
    """Probabilities that give `digit` `confidence` and share the rest evenly."""
    row = np.full(10, (1 - confidence) / 9)
    row[digit] = confidence
    return row


def test_the_expected_calibration_error_of_a_worked_example():
    # Two predictions at 90%, one right: bin (13/15, 14/15], accuracy 0.5, gap 0.4.
    # Two predictions at 70%, both right: bin (10/15, 11/15], accuracy 1.0, gap 0.3.
    # ECE = 2/4 * 0.4 + 2/4 * 0.3 = 0.35.
    probabilities = np.stack(
        [confident_row(0.9, 0), confident_row(0.9, 0), confident_row(0.7, 1), confident_row(0.7, 1)]
    )
    labels = np.array([0, 3, 1, 1])
    assert calibration.expected_calibration_error(probabilities, labels) == pytest.approx(0.35)
    binned = calibration.reliability_bins(probabilities, labels)
    assert binned["count"].tolist() == [0] * 10 + [2, 0, 0, 2, 0]
    assert binned["accuracy"][[10, 13]] == pytest.approx([1.0, 0.5])
    assert binned["confidence"][[10, 13]] == pytest.approx([0.7, 0.9])


def test_a_model_right_as_often_as_it_says_has_no_calibration_error():
    # Ten predictions at 80%, eight of them right.
    probabilities = np.stack([confident_row(0.8, 2)] * 10)
    labels = np.array([2] * 8 + [5, 7])
    assert calibration.expected_calibration_error(probabilities, labels) == pytest.approx(0.0)


def test_bins_include_their_upper_edge():
    # 1.0 goes to the last bin and 1/3 = 5/15 to the fifth, as in Guo et al.
    probabilities = np.stack([confident_row(1.0, 0), confident_row(1 / 3, 0)])
    counts = calibration.reliability_bins(probabilities, np.array([0, 0]))["count"]
    assert counts[14] == 1 and counts[4] == 1


@pytest.fixture(scope="module")
def overconfident():
    """Labels drawn from softmax(z), probabilities reported as softmax(2 z): T is 2."""
    generator = np.random.default_rng(0)
    logits = generator.normal(scale=3.0, size=(20000, 10))
    truth = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = (truth.cumsum(axis=1) < generator.random((len(truth), 1))).sum(axis=1)
    reported = np.exp(2 * logits) / np.exp(2 * logits).sum(axis=1, keepdims=True)
    return reported.astype(np.float32), labels


def test_the_fitted_temperature_is_the_one_that_made_the_probabilities(overconfident):
    probabilities, labels = overconfident
    temperature = calibration.fit_temperature(probabilities, labels)
    assert temperature == pytest.approx(2.0, rel=0.05)
    calibrated = calibration.apply_temperature(probabilities, temperature)
    assert calibration.expected_calibration_error(calibrated, labels) < 0.01
    assert calibration.expected_calibration_error(probabilities, labels) > 0.1


@pytest.mark.parametrize("temperature", [0.05, 0.5, 1.0, 2.0, 20.0])
def test_a_temperature_keeps_every_prediction_and_so_the_accuracy(overconfident, temperature):
    probabilities, labels = overconfident
    calibrated = calibration.apply_temperature(probabilities, temperature)
    np.testing.assert_array_equal(calibrated.argmax(axis=1), probabilities.argmax(axis=1))
    assert (calibrated.argmax(axis=1) == labels).mean() == (
        probabilities.argmax(axis=1) == labels
    ).mean()
    np.testing.assert_allclose(calibrated.sum(axis=1), 1.0, rtol=1e-6)


def test_temperature_1_leaves_the_probabilities_as_they_are(overconfident):
    probabilities, _ = overconfident
    np.testing.assert_allclose(
        calibration.apply_temperature(probabilities, 1.0), probabilities, rtol=1e-5, atol=1e-6
    )


def test_a_probability_of_zero_stays_finite():
    probabilities = np.array([[1.0] + [0.0] * 9], dtype=np.float32)
    calibrated = calibration.apply_temperature(probabilities, 0.5)
    assert np.isfinite(calibrated).all() and calibrated[0, 0] == pytest.approx(1.0)
    assert np.isfinite(calibration.negative_log_likelihood(probabilities, np.array([3]), 0.5))


def test_the_trainer_fits_a_positive_temperature_that_keeps_the_accuracy(smoke_training):
    folder, result = smoke_training
    metrics = json.loads((folder / "cnnModel.metrics.json").read_text())
    fitted = metrics["calibration"]
    assert fitted["temperature"] > 0
    assert fitted["fitted_on_images"] == 100 and fitted["bins"] == 15
    test = fitted["test"]
    assert test["as_trained"]["misclassified"] == test["calibrated"]["misclassified"]
    assert test["as_trained"]["misclassified"] == metrics["test"]["misclassified"]
    assert test["as_trained"]["accuracy"] == test["calibrated"]["accuracy"]
    assert f"Temperature: T = {fitted['temperature']:.4f}" in result.stdout
    assert (
        f"Expected calibration error over testing set (15 bins): "
        f"{test['as_trained']['ece']:.2%} as trained, {test['calibrated']['ece']:.2%} calibrated"
    ) in result.stdout


def test_calibrate_model_fits_the_trainers_temperature_again(smoke_training):
    folder, _ = smoke_training
    metrics_file = folder / "cnnModel.metrics.json"
    before = metrics_file.read_bytes()
    result = run_script("calibrate_model.py", "--model", folder / "cnnModel.h5", "--dry-run")
    assert result.returncode == 0, result.stderr[-2000:]
    temperature = json.loads(before)["calibration"]["temperature"]
    assert "Validation split of the training run: seed 7, 100 images of the first 1000" in (
        result.stdout
    )
    assert f"Temperature: T = {temperature:.4f}" in result.stdout
    assert metrics_file.read_bytes() == before


def test_calibrate_model_records_the_temperature_where_the_exporter_reads_it(
    smoke_training, tmp_path
):
    folder, _ = smoke_training
    model_file = tmp_path / "old.h5"
    model_file.write_bytes((folder / "cnnModel.h5").read_bytes())
    # As a trainer older than calibration wrote it: no temperature.
    metrics = json.loads((folder / "cnnModel.metrics.json").read_text())
    temperature = metrics.pop("calibration")["temperature"]
    (tmp_path / "old.metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(calibration.CalibrationError, match="records no temperature"):
        calibration.read_temperature(tmp_path / "old.metrics.json")

    result = run_script(
        "calibrate_model.py", "--model", model_file, "--figures", tmp_path / "figures"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert calibration.read_temperature(tmp_path / "old.metrics.json") == pytest.approx(temperature)
    assert (tmp_path / "figures" / "calibration.png").read_bytes().startswith(b"\x89PNG")


def test_calibrate_model_without_metrics_asks_for_the_runs_split(smoke_training, tmp_path):
    folder, _ = smoke_training
    model_file = tmp_path / "lone.h5"
    model_file.write_bytes((folder / "cnnModel.h5").read_bytes())
    result = run_script("calibrate_model.py", "--model", model_file)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"calibrate_model.py: error: {tmp_path / 'lone.metrics.json'} does not give the run's "
        "seed and validation images: pass --seed and --validation-size as the model was trained"
    )
    assert not (tmp_path / "lone.metrics.json").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no metrics file"),
        ("{not json", "cannot read"),
        ('{"calibration": {"temperature": 0}}', "temperature must be a finite number above 0"),
        ('{"calibration": {"temperature": "hot"}}', "temperature must be a number"),
        ("[1.0]", "is not a JSON object"),
        ('{"seed": 1}', "records no temperature"),
        (" " * (calibration.MAX_METRICS_BYTES + 1), "is over 1000000 bytes"),
    ],
    ids=["missing", "not JSON", "zero", "not a number", "a list", "no calibration", "too large"],
)
def test_a_missing_or_bad_temperature_is_a_clear_error(tmp_path, content, message):
    metrics_file = tmp_path / "cnnModel.metrics.json"
    if content is not None:
        metrics_file.write_text(content)
    with pytest.raises(calibration.CalibrationError, match=message):
        calibration.read_temperature(metrics_file)
