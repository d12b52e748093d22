"""Figures of the manual, drawn with matplotlib (no screen needed)."""

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")

import cv2
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Rectangle

from mnist_serving import calibration, config, preprocessing

if TYPE_CHECKING:
    import keras

# Same look in every figure: small, readable, committed to git.
DPI = 100


def _save(figure, path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    plt.close(figure)
    return path


def plot_digit_grid(
    path: str | Path,
    images: np.ndarray,
    titles: list[str],
    columns: int = 8,
    title: str | None = None,
    title_colors: list[str] | None = None,
) -> None:
    """Draws grey digits in a grid, each with a short title; returns the path."""
    rows = max(1, int(np.ceil(len(images) / columns)))
    figure, axes = plt.subplots(rows, columns, figsize=(1.2 * columns, 1.4 * rows))
    axes = np.atleast_1d(axes).ravel()
    for index, axis in enumerate(axes):
        axis.axis("off")
        if index < len(images):
            axis.imshow(images[index], cmap="gray", vmin=0, vmax=255)
            color = title_colors[index] if title_colors else "black"
            axis.set_title(titles[index], fontsize=9, color=color)
    if title:
        figure.suptitle(title)
    return _save(figure, path)


def plot_dataset_examples(
    path: str | Path, images: np.ndarray, labels: np.ndarray, count: int = 24
) -> None:
    """The first training digits with their labels (`datasetExample.png`)."""
    return plot_digit_grid(
        path,
        images[:count],
        [f"label {label}" for label in labels[:count]],
        title="MNIST training digits",
    )


def plot_training_curves(path: str | Path, history: dict) -> None:
    """Loss and accuracy per epoch, training against validation."""
    epochs = np.arange(1, len(history["loss"]) + 1)
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(10, 3.6))
    for axis, metric, label in (
        (loss_axis, "loss", "Loss (label-smoothed cross-entropy)"),
        (accuracy_axis, "accuracy", "Accuracy"),
    ):
        axis.plot(epochs, history[metric], "o-", label="training (distorted digits)")
        if history.get(f"val_{metric}"):
            axis.plot(epochs, history[f"val_{metric}"], "s-", label="validation")
        axis.set_xlabel("epoch")
        axis.set_title(label)
        axis.set_xticks(epochs)
        axis.grid(alpha=0.3)
        axis.legend()
    return _save(figure, path)


def plot_confusion_matrix(
    path: str | Path,
    matrix: np.ndarray,
    title: str = "Test set: true digit against predicted digit",
) -> None:
    """A 10x10 confusion matrix with counts; the diagonal is greyed out."""
    figure, axis = plt.subplots(figsize=(6.4, 5.6))
    errors = matrix.astype(float).copy()
    np.fill_diagonal(errors, np.nan)
    image = axis.imshow(errors, cmap="Reds")
    figure.colorbar(image, ax=axis, label="misclassified images")
    for true_class in range(matrix.shape[0]):
        for predicted_class in range(matrix.shape[1]):
            count = matrix[true_class, predicted_class]
            if true_class == predicted_class or count:
                axis.text(
                    predicted_class,
                    true_class,
                    str(count),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="grey"
                    if true_class == predicted_class
                    else ("white" if count > 0.6 * np.nanmax(errors) else "black"),
                )
    axis.set_xticks(range(matrix.shape[1]))
    axis.set_yticks(range(matrix.shape[0]))
    axis.set_xlabel("predicted digit")
    axis.set_ylabel("true digit")
    axis.set_title(title)
    return _save(figure, path)


def plot_misclassified(
    path: str | Path,
    images: np.ndarray,
    labels: np.ndarray,
    predicted: np.ndarray,
    confidences: np.ndarray,
    count: int = 32,
) -> None:
    """Misclassified test digits: true label, prediction and its probability."""
    wrong = np.flatnonzero(labels != predicted)[:count]
    return plot_digit_grid(
        path,
        images[wrong],
        [f"{labels[index]} as {predicted[index]} ({confidences[index]:.0%})" for index in wrong],
        title=f"Misclassified test digits ({np.count_nonzero(labels != predicted)} in all): "
        "true as predicted",
    )


def plot_calibration(path, labels, as_trained, temperature):
    """Reliability diagrams of the test set, as trained and calibrated (`calibration.png`).

    For each confidence bin: the accuracy of its predictions (bars) against
    their mean confidence (the gap, hatched red); a calibrated model's bars
    reach the diagonal. Below, how many predictions fall in each bin (log scale).
    """
    bins = calibration.ECE_BINS
    calibrated = calibration.apply_temperature(as_trained, temperature)
    edges = np.linspace(0, 1, bins + 1)
    figure, axes = plt.subplots(
        2, 2, figsize=(10, 6.4), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    for column, (title, probabilities) in enumerate(
        (("As trained", as_trained), (f"Calibrated, T = {temperature:.3f}", calibrated))
    ):
        binned = calibration.reliability_bins(probabilities, labels, bins)
        used = binned["count"] > 0
        error = calibration.expected_calibration_error(probabilities, labels, bins)
        reliability_axis, count_axis = axes[0, column], axes[1, column]
        reliability_axis.bar(
            edges[:-1][used],
            binned["accuracy"][used],
            width=1 / bins,
            align="edge",
            color="#3d6fb6",
            edgecolor="white",
            label="accuracy",
        )
        reliability_axis.bar(
            edges[:-1][used],
            binned["confidence"][used] - binned["accuracy"][used],
            bottom=binned["accuracy"][used],
            width=1 / bins,
            align="edge",
            fill=False,
            hatch="///",
            edgecolor="tab:red",
            label="gap to mean confidence",
        )
        reliability_axis.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
        reliability_axis.set_xlim(0, 1)
        reliability_axis.set_ylim(0, 1)
        reliability_axis.set_ylabel("accuracy")
        reliability_axis.set_title(f"{title}: ECE {error:.2%} ({bins} bins)")
        count_axis.bar(edges[:-1], binned["count"], width=1 / bins, align="edge", color="grey")
        count_axis.set_yscale("log")
        count_axis.set_ylim(0.8, len(labels) * 2)
        count_axis.set_xlabel("confidence (highest probability)")
        count_axis.set_ylabel("predictions")
    # One legend for both panels, above them, where no bar can hide it.
    figure.legend(
        *axes[0, 0].get_legend_handles_labels(),
        loc="upper center",
        ncol=3,
        fontsize=9,
        bbox_to_anchor=(0.5, 0.95),
    )
    figure.suptitle(
        f"Test set ({len(labels)} images): is the model right as often as it says?", y=1.0
    )
    figure.subplots_adjust(top=0.84)
    return _save(figure, path)


def _layer_graph(model):
    """(name, class name, output shape, parameters, inbound names) per layer."""
    inbound = {}
    for layer_config in model.get_config()["layers"]:
        names = []

        def collect(value, names=names):
            if isinstance(value, dict):
                if "keras_history" in value.get("config", {}):
                    names.append(value["config"]["keras_history"][0])
                for item in value.values():
                    collect(item)
            elif isinstance(value, (list, tuple)):
                for item in value:
                    collect(item)

        collect(layer_config["inbound_nodes"])
        inbound[layer_config["name"]] = names
    return [
        (
            layer.name,
            type(layer).__name__,
            tuple(layer.output.shape),
            layer.count_params(),
            inbound.get(layer.name, []),
        )
        for layer in model.layers
    ]


def plot_model(path: str | Path, model: "keras.Model") -> None:
    """The model's layers as a graph, one box per layer (`model.png`).

    Boxes are placed by depth, top to bottom, so parallel branches stand side
    by side; each box gives the layer, its output shape and its parameters.
    """
    layers = _layer_graph(model)
    depth = {}
    for name, _, _, _, parents in layers:  # Layers come in topological order.
        depth[name] = 1 + max((depth[parent] for parent in parents), default=-1)
    rows = {}
    for name, *_ in layers:
        rows.setdefault(depth[name], []).append(name)
    position = {}
    for row, names in rows.items():
        for index, name in enumerate(names):
            position[name] = ((index + 0.5) / len(names), -row)

    figure, axis = plt.subplots(figsize=(8, 0.95 * len(rows) + 0.6))
    axis.set_xlim(-0.05, 1.05)
    axis.set_ylim(-len(rows) + 0.4, 0.6)
    axis.axis("off")
    for name, kind, shape, parameters, parents in layers:
        x, y = position[name]
        for parent in parents:
            parent_x, parent_y = position[parent]
            axis.annotate(
                "",
                xy=(x, y + 0.27),
                xytext=(parent_x, parent_y - 0.27),
                arrowprops={"arrowstyle": "->", "color": "#555555"},
            )
        shape_text = "(" + ", ".join("None" if size is None else str(size) for size in shape) + ")"
        axis.text(
            x,
            y,
            f"{name} ({kind})\n{shape_text}   {parameters:,} params",
            ha="center",
            va="center",
            fontsize=8.5,
            bbox={"boxstyle": "round,pad=0.4", "facecolor": "#e8f0fb", "edgecolor": "#3d6fb6"},
        )
    axis.set_title(f"{model.name}: {model.count_params():,} parameters")
    return _save(figure, path)


def plot_preprocessing_steps(image: np.ndarray, path: str | Path, title: str | None = None) -> None:
    """Draws the preprocessing of one image, step by step, into a PNG file.

    Panels: the original with the digit's region marked, that region at the
    photo's full resolution, the cleaned ink at working size with its
    bounding box, the digit read again at the size its strokes are measured
    at, its strokes at their half-way edge with MNIST's width, the 20x20
    fit, and the 28x28 result with its centre of mass.

    Args:
        image: A decoded image, as `read_image` returns it.
        path: The PNG file to write (its folder is created).
        title: Optional title above the panels.

    Returns:
        The path written.

    Raises:
        preprocessing.PreprocessingError: As `to_mnist`.
    """
    steps = {}
    result = preprocessing.to_mnist(image, steps)
    original = _displayable(image)
    height, width = original.shape[:2]
    left, top, box_width, box_height = cv2.boundingRect(steps["normalised"])
    # The working copy is the original shrunk by a whole factor.
    factor = width // steps["normalised"].shape[1]
    margin = max(box_width, box_height) // 4
    region = (
        max(0, (left - margin) * factor),
        max(0, (top - margin) * factor),
        (box_width + 2 * margin) * factor,
        (box_height + 2 * margin) * factor,
    )
    region_left, region_top, region_width, region_height = region
    zoom = original[
        region_top : region_top + region_height, region_left : region_left + region_width
    ]
    panels = [
        (original, f"1 original {width}x{height}"),
        (zoom, f"2 its digit, {zoom.shape[1]}x{zoom.shape[0]}"),
        (steps["normalised"], "3 found at working size"),
        (steps["cropped"], "4 digit read again"),
        (steps["strokes"], "5 strokes, MNIST width"),
        (steps["fitted"], f"6 fitted {config.DIGIT_BOX_SIZE}x{config.DIGIT_BOX_SIZE}"),
        (result, f"7 centred {config.IMAGE_SIZE}x{config.IMAGE_SIZE}"),
    ]
    figure, axes = plt.subplots(1, len(panels), figsize=(1.9 * len(panels), 2.4))
    for axis, (picture, caption) in zip(axes, panels, strict=True):
        if picture.ndim == 3:
            axis.imshow(picture, interpolation="antialiased")
        else:
            axis.imshow(picture, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        axis.set_title(caption, fontsize=9)
        axis.set_xticks([])
        axis.set_yticks([])
    axes[0].add_patch(
        Rectangle(
            (region_left - 0.5, region_top - 0.5),
            region_width,
            region_height,
            fill=False,
            color="tab:red",
        )
    )
    axes[2].add_patch(
        Rectangle((left - 0.5, top - 0.5), box_width, box_height, fill=False, color="tab:red")
    )
    # The 20x20 box around the centre, and the centre of mass.
    margin = (config.IMAGE_SIZE - config.DIGIT_BOX_SIZE) / 2
    axes[-1].add_patch(
        Rectangle(
            (margin - 0.5, margin - 0.5),
            config.DIGIT_BOX_SIZE,
            config.DIGIT_BOX_SIZE,
            fill=False,
            color="tab:blue",
            linestyle="--",
        )
    )
    moments = cv2.moments(result)
    axes[-1].plot(
        moments["m10"] / moments["m00"], moments["m01"] / moments["m00"], "+", color="tab:red"
    )
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # No software version in the file, so the same input gives the same bytes.
    figure.savefig(path, dpi=DPI, metadata={"Software": None})
    plt.close(figure)
    return path


def _displayable(image):
    """uint8 grey or RGB(A) version of a decoded image, for matplotlib."""
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    scale = preprocessing.level_scale(array[:, :, :3] if array.ndim == 3 else array)
    display = np.clip(array.astype(np.float32) * scale, 0, 255).astype(np.uint8)
    if display.ndim == 2:
        return np.stack([display] * 3, axis=2)
    if display.shape[2] == 2:
        return cv2.cvtColor(display[:, :, 0], cv2.COLOR_GRAY2RGB)
    if display.shape[2] == 4:
        return cv2.cvtColor(display, cv2.COLOR_BGRA2RGBA)
    return cv2.cvtColor(display, cv2.COLOR_BGR2RGB)
