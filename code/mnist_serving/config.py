"""The project's facts, each stated once: image geometry, names, ports, paths."""

from pathlib import Path

# MNIST geometry: 28x28 grey images, the digit fitted in a 20x20 box and
# centred by its centre of mass.
IMAGE_SIZE = 28
IMAGE_SHAPE = (IMAGE_SIZE, IMAGE_SIZE, 1)
DIGIT_BOX_SIZE = 20
NUM_CLASSES = 10
# Pixels are 0..255 on disk and 0..1 in the model: input = pixel / PIXEL_MAX.
PIXEL_MAX = 255.0

# Names that clients of the exported model depend on.
MODEL_NAME = "my_digit_classifier"
INPUT_NAME = "image"
PNG_INPUT_NAME = "image_png"
PROBABILITIES_OUTPUT = "probabilities"
DIGIT_OUTPUT = "digit"
DEFAULT_SIGNATURE = "serving_default"
PNG_SIGNATURE = "predict_png"
PREDICT_METHOD = "tensorflow/serving/predict"
SERVE_TAG = "serve"

# TensorFlow Serving's ports: gRPC and REST, as in its Docker image.
GRPC_PORT = 8500
REST_PORT = 8501
# The local server listens on this machine only, unless asked otherwise.
REST_HOST = "127.0.0.1"
# Where the client looks for a server: REST takes a URL, gRPC a host:port.
DEFAULT_SERVER_URL = f"http://localhost:{REST_PORT}"
DEFAULT_GRPC_SERVER = f"localhost:{GRPC_PORT}"
# The client's protocols and the server each one calls by default.
DEFAULT_SERVERS = {"rest": DEFAULT_SERVER_URL, "grpc": DEFAULT_GRPC_SERVER}
PROTOCOLS = tuple(DEFAULT_SERVERS)
# The drawing page (web/) is served on this port by web_demo.py.
WEB_PAGE_PORT = 8000

# The client's bounds (flags of serving_request.py). An image file larger than
# MAX_FILE_BYTES is refused unread, an image of more than MAX_IMAGE_PIXELS
# undecoded (its header tells), an answer larger than MAX_ANSWER_BYTES before
# it is read whole; REQUEST_TIMEOUT_SECONDS is for a whole request, answer read.
# 64 million pixels takes a 48- or 50-megapixel phone photo, 64 MiB any photo
# of that size; a predict answer is about 200 bytes per image, so 16 MiB is a
# batch of 80,000 images.
MAX_FILE_BYTES = 64 * 2**20
MAX_IMAGE_PIXELS = 64_000_000
MAX_ANSWER_BYTES = 16 * 2**20
REQUEST_TIMEOUT_SECONDS = 30.0

# Where things live, whatever the working directory.
CODE_DIR = Path(__file__).resolve().parent.parent
PROJECT_DIR = CODE_DIR.parent
DEFAULT_DATA_PATH = PROJECT_DIR / "data" / "mnist.npz"
DEFAULT_MODEL_PATH = CODE_DIR / "cnnModel.h5"
DEFAULT_EXPORT_BASE = PROJECT_DIR / MODEL_NAME
FIGURES_DIR = PROJECT_DIR / "figures"
TEST_IMAGES_DIR = PROJECT_DIR / "test_images"
WEB_DIR = PROJECT_DIR / "web"


def metrics_path(model_path: Path) -> Path:
    """The metrics file that goes with a model file: cnnModel.h5 -> cnnModel.metrics.json.

    The trainer writes it; the exporter reads the model's temperature from it.
    """
    model_path = Path(model_path)
    return model_path.with_name(model_path.stem + ".metrics.json")
