"""Figures of the manual, drawn with matplotlib (no screen needed)."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np

# Same look in every figure: small, readable, committed to git.
DPI = 100


def _save(figure, path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    plt.close(figure)
    return path


def plot_digit_grid(path, images, titles, columns=8, title=None, title_colors=None):
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


def plot_dataset_examples(path, images, labels, count=24):
    """The first training digits with their labels (`datasetExample.png`)."""
    return plot_digit_grid(
        path,
        images[:count],
        [f"label {label}" for label in labels[:count]],
        title="MNIST training digits",
    )


def plot_training_curves(path, history):
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


def plot_confusion_matrix(path, matrix, title="Test set: true digit against predicted digit"):
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


def plot_misclassified(path, images, labels, predicted, confidences, count=32):
    """Misclassified test digits: true label, prediction and its probability."""
    wrong = np.flatnonzero(labels != predicted)[:count]
    return plot_digit_grid(
        path,
        images[wrong],
        [f"{labels[index]} as {predicted[index]} ({confidences[index]:.0%})" for index in wrong],
        title=f"Misclassified test digits ({np.count_nonzero(labels != predicted)} in all): "
        "true as predicted",
    )


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


def plot_model(path, model):
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
