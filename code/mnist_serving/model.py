"""The two-branch CNN of the original design."""

import keras
from keras import layers

from mnist_serving import config


def build_model() -> keras.Model:
    """Builds the two-branch CNN of the original design, uncompiled.

    One 3x3 convolution and pooling feed two identical branches (3x3
    convolution, pooling, 3x3 convolution to 256 channels) whose outputs are
    concatenated and classified by three dense layers: 25,927,246 parameters.
    Layer names follow the original table; the input is named `image`, the
    key under which TensorFlow Serving will expect it.

    Returns:
        A Functional `keras.Model` from float32 images (N, 28, 28, 1) in 0..1,
        white on black, to the probabilities of the ten digits (N, 10).
    """
    image = keras.Input(shape=config.IMAGE_SHAPE, name=config.INPUT_NAME)
    stem = layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2d_1")(image)
    stem = layers.MaxPooling2D(name="max_pooling2d_1")(stem)

    def branch(first, second, third, second_pool):
        features = layers.Conv2D(64, 3, padding="same", activation="relu", name=f"conv2d_{first}")(
            stem
        )
        features = layers.MaxPooling2D(name=f"max_pooling2d_{second_pool}")(features)
        return layers.Conv2D(256, 3, padding="same", activation="relu", name=f"conv2d_{third}")(
            features
        )

    left = branch(2, 2, 3, 2)
    right = branch(4, 4, 5, 3)
    merged = layers.Concatenate(name="concatenate_1")([left, right])
    features = layers.Flatten(name="flatten_1")(merged)
    features = layers.Dense(1000, activation="relu", name="dense_1")(features)
    features = layers.Dense(500, activation="relu", name="dense_2")(features)
    probabilities = layers.Dense(config.NUM_CLASSES, activation="softmax", name="dense_3")(features)
    return keras.Model(image, probabilities, name="two_branch_cnn")
