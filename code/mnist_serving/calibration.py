"""Probabilities that mean what they say: calibration error and temperature scaling.

Label smoothing teaches the model to say about 94% for a digit it is sure of.
Temperature scaling (Guo et al., 2017, "On Calibration of Modern Neural
Networks") divides the logits by one number T fitted on held-out images:
`softmax(logits / T)`. T > 0 keeps the order of the classes, so the predicted
digit, and the accuracy, do not change; only the probabilities do.

The model ends in a softmax, so its logits are `log(probabilities)` up to a
constant per image, which the softmax cancels: the temperature is applied to
the probabilities the model gives, outside the model, and the architecture
stays the original one. The exporter applies the same formula in TensorFlow.

NumPy only: the trainer, the exporter's command line and the figures use it
without loading TensorFlow.
"""

import json
import math
from pathlib import Path

import numpy as np

# Equal-width confidence bins of the expected calibration error, as in Guo et al.
ECE_BINS = 15
# The temperature is searched in this range: far wider than any model needs.
TEMPERATURE_BOUNDS = (0.05, 20.0)
# Probabilities are floored here before their logarithm: float32's smallest
# normal number, so a probability that rounded to 0 stays finite.
PROBABILITY_FLOOR = float(np.finfo(np.float32).tiny)
# The trainer's metrics JSON is a few kilobytes; anything far larger is not one.
MAX_METRICS_BYTES = 1_000_000


class CalibrationError(Exception):
    """No usable temperature: missing or unreadable metrics, or a bad value."""


def reliability_bins(
    probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS
) -> dict[str, np.ndarray]:
    """Sorts predictions into equal-width confidence bins ((0, 1/bins], ...).

    The confidence of a prediction is its highest probability; it is right
    when that class is the label.

    Returns:
        A dict of arrays, one value per bin: `count` (predictions),
        `confidence` (their mean confidence) and `accuracy` (the fraction
        right); both are 0 in an empty bin.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    confidence = probabilities.max(axis=1)
    right = probabilities.argmax(axis=1) == np.asarray(labels)
    # Bin m holds confidences in ((m - 1) / bins, m / bins].
    index = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    count = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(index, weights=confidence, minlength=bins) / count
        accuracy = np.bincount(index, weights=right, minlength=bins) / count
    return {
        "count": count,
        "confidence": np.nan_to_num(mean_confidence),
        "accuracy": np.nan_to_num(accuracy),
    }


def expected_calibration_error(
    probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS
) -> float:
    """The expected calibration error: sum over bins of (share of predictions)
    times |accuracy - mean confidence|, with `bins` equal-width bins.

    0 when the model is right 90% of the times it says 90%, at every level.
    """
    binned = reliability_bins(probabilities, labels, bins)
    gaps = np.abs(binned["accuracy"] - binned["confidence"])
    return float((binned["count"] * gaps).sum() / binned["count"].sum())


def _scaled_logits(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    logits = np.log(np.maximum(np.asarray(probabilities, dtype=np.float64), PROBABILITY_FLOOR))
    scaled = logits / temperature
    return scaled - scaled.max(axis=1, keepdims=True)


def apply_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """`softmax(log(probabilities) / temperature)`, as float32 like the model's output."""
    exponentials = np.exp(_scaled_logits(probabilities, temperature))
    return (exponentials / exponentials.sum(axis=1, keepdims=True)).astype(np.float32)


def negative_log_likelihood(
    probabilities: np.ndarray, labels: np.ndarray, temperature: float = 1.0
) -> float:
    """Mean -log(probability of the label) after the temperature."""
    scaled = _scaled_logits(probabilities, temperature)
    log_probabilities = scaled - np.log(np.exp(scaled).sum(axis=1, keepdims=True))
    return float(-log_probabilities[np.arange(len(labels)), labels].mean())


def fit_temperature(
    probabilities: np.ndarray,
    labels: np.ndarray,
    bounds: tuple[float, float] = TEMPERATURE_BOUNDS,
    tolerance: float = 1e-5,
) -> float:
    """The temperature that minimises the negative log-likelihood of `labels`.

    A golden-section search on log(T) within `bounds`. The likelihood is
    convex in 1/T, so it has a single minimum along log(T) and the search
    finds it (or the nearer bound).
    """
    labels = np.asarray(labels)

    def loss(log_temperature):
        return negative_log_likelihood(probabilities, labels, math.exp(log_temperature))

    low, high = math.log(bounds[0]), math.log(bounds[1])
    ratio = (math.sqrt(5) - 1) / 2
    left, right = high - ratio * (high - low), low + ratio * (high - low)
    left_loss, right_loss = loss(left), loss(right)
    while high - low > tolerance:
        if left_loss <= right_loss:
            high, right, right_loss = right, left, left_loss
            left = high - ratio * (high - low)
            left_loss = loss(left)
        else:
            low, left, left_loss = left, right, right_loss
            right = low + ratio * (high - low)
            right_loss = loss(right)
    return math.exp((low + high) / 2)


def _summary(probabilities, labels, bins):
    wrong = probabilities.argmax(axis=1) != labels
    return {
        "accuracy": float(1.0 - wrong.mean()),
        "misclassified": int(wrong.sum()),
        "ece": expected_calibration_error(probabilities, labels, bins),
        "negative_log_likelihood": negative_log_likelihood(probabilities, labels),
        "mean_confidence": float(probabilities.max(axis=1).mean()),
    }


def calibrate(
    validation_probabilities: np.ndarray,
    validation_labels: np.ndarray,
    test_probabilities: np.ndarray,
    test_labels: np.ndarray,
    bins: int = ECE_BINS,
) -> dict:
    """Fits the temperature on the validation images and measures it on the test set.

    Without validation images the temperature is 1: the probabilities are left
    as the model gives them, and the metrics say so.

    Returns:
        The `calibration` section of the metrics JSON: `temperature`,
        `fitted_on_images`, `bins`, and for the test set `as_trained` and
        `calibrated`, each with accuracy, misclassified images, ECE, negative
        log-likelihood and mean confidence.
    """
    temperature = 1.0
    if len(validation_labels):
        temperature = fit_temperature(validation_probabilities, validation_labels)
    test_labels = np.asarray(test_labels)
    return {
        "temperature": temperature,
        "fitted_on_images": len(validation_labels),
        "bins": bins,
        "test": {
            "as_trained": _summary(test_probabilities, test_labels, bins),
            "calibrated": _summary(
                apply_temperature(test_probabilities, temperature), test_labels, bins
            ),
        },
    }


def describe(calibration: dict) -> str:
    """The lines the trainer and calibrate_model.py print about a calibration."""
    test = calibration["test"]
    if calibration["fitted_on_images"]:
        fitted = f"fitted on {calibration['fitted_on_images']} validation images"
    else:
        fitted = "no validation images to fit it on: probabilities left as trained"
    return "\n".join(
        [
            f"Temperature: T = {calibration['temperature']:.4f} ({fitted})",
            f"Expected calibration error over testing set ({calibration['bins']} bins): "
            f"{test['as_trained']['ece']:.2%} as trained, {test['calibrated']['ece']:.2%} "
            "calibrated",
            f"Mean confidence over testing set: {test['as_trained']['mean_confidence']:.2%} "
            f"as trained, {test['calibrated']['mean_confidence']:.2%} calibrated "
            f"(accuracy {test['as_trained']['accuracy']:.2%} and "
            f"{test['calibrated']['accuracy']:.2%})",
        ]
    )


def check_temperature(temperature: float) -> float:
    """`temperature` as a float if it is a finite number > 0; else CalibrationError."""
    try:
        if isinstance(temperature, bool):
            raise TypeError
        value = float(temperature)
    except (TypeError, ValueError):
        raise CalibrationError(f"temperature must be a number, got {temperature!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise CalibrationError(f"temperature must be a finite number above 0, got {temperature}")
    return value


def read_metrics(metrics_file: str | Path) -> dict:
    """A model's metrics JSON (`config.metrics_path`), as a dict.

    Raises:
        CalibrationError: The file is missing, larger than MAX_METRICS_BYTES,
            or not a JSON object.
    """
    metrics_file = Path(metrics_file)
    try:
        with metrics_file.open("rb") as handle:
            text = handle.read(MAX_METRICS_BYTES + 1)
    except FileNotFoundError:
        raise CalibrationError(f"no metrics file {metrics_file}") from None
    except OSError as error:
        raise CalibrationError(f"cannot read {metrics_file}: {error.strerror}") from None
    if len(text) > MAX_METRICS_BYTES:
        raise CalibrationError(f"{metrics_file} is over {MAX_METRICS_BYTES} bytes")
    try:
        metrics = json.loads(text)
    except ValueError as error:
        raise CalibrationError(f"cannot read {metrics_file}: {error}") from None
    if not isinstance(metrics, dict):
        raise CalibrationError(f"{metrics_file} is not a JSON object")
    return metrics


def read_temperature(metrics_file: str | Path) -> float:
    """The fitted temperature recorded in a model's metrics JSON.

    Raises:
        CalibrationError: The file is missing, unreadable, or holds no
            calibration (written by a trainer older than calibration).
    """
    calibration = read_metrics(metrics_file).get("calibration")
    if not isinstance(calibration, dict) or "temperature" not in calibration:
        raise CalibrationError(f"{metrics_file} records no temperature")
    try:
        return check_temperature(calibration["temperature"])
    except CalibrationError as error:
        raise CalibrationError(f"{metrics_file}: {error}") from None
