"""The two-branch CNN has the layers, shapes, connections and parameters of the original table."""

from mnist_serving import config, figures

# The original design's table: layer, type, output shape, parameters, inputs.
# The input is named `image` here (the name TensorFlow Serving clients send).
ORIGINAL_TABLE = [
    ("image", "InputLayer", (None, 28, 28, 1), 0, []),
    ("conv2d_1", "Conv2D", (None, 28, 28, 32), 320, ["image"]),
    ("max_pooling2d_1", "MaxPooling2D", (None, 14, 14, 32), 0, ["conv2d_1"]),
    ("conv2d_2", "Conv2D", (None, 14, 14, 64), 18496, ["max_pooling2d_1"]),
    ("conv2d_4", "Conv2D", (None, 14, 14, 64), 18496, ["max_pooling2d_1"]),
    ("max_pooling2d_2", "MaxPooling2D", (None, 7, 7, 64), 0, ["conv2d_2"]),
    ("max_pooling2d_3", "MaxPooling2D", (None, 7, 7, 64), 0, ["conv2d_4"]),
    ("conv2d_3", "Conv2D", (None, 7, 7, 256), 147712, ["max_pooling2d_2"]),
    ("conv2d_5", "Conv2D", (None, 7, 7, 256), 147712, ["max_pooling2d_3"]),
    ("concatenate_1", "Concatenate", (None, 7, 7, 512), 0, ["conv2d_3", "conv2d_5"]),
    ("flatten_1", "Flatten", (None, 25088), 0, ["concatenate_1"]),
    ("dense_1", "Dense", (None, 1000), 25089000, ["flatten_1"]),
    ("dense_2", "Dense", (None, 500), 500500, ["dense_1"]),
    ("dense_3", "Dense", (None, 10), 5010, ["dense_2"]),
]


def layer_rows(model):
    """(name, type, output shape, parameters, inputs) of each layer, in order."""
    return [
        (name, kind, shape, parameters, sorted(inputs))
        for name, kind, shape, parameters, inputs in figures._layer_graph(model)
    ]


def test_layers_shapes_parameters_and_connections_match_the_original_table(untrained_model):
    expected = [(n, k, s, p, sorted(i)) for n, k, s, p, i in ORIGINAL_TABLE]
    assert layer_rows(untrained_model) == expected


def test_the_model_has_25927246_trainable_parameters(untrained_model):
    trainable = sum(int(weight.numpy().size) for weight in untrained_model.trainable_weights)
    assert trainable == 25_927_246
    assert untrained_model.count_params() == 25_927_246


def test_the_input_is_named_image_and_the_output_gives_ten_probabilities(untrained_model, mnist):
    assert untrained_model.input.name == config.INPUT_NAME
    images = mnist[1][0][:4][..., None].astype("float32") / 255.0
    probabilities = untrained_model.predict(images, verbose=0)
    assert probabilities.shape == (4, config.NUM_CLASSES)
    assert abs(float(probabilities.sum(axis=1).min()) - 1.0) < 1e-5
