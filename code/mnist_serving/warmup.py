"""TensorFlow Serving's warm-up requests: `assets.extra/tf_serving_warmup_requests`.

A version folder may carry sample requests that the server replays while the
version loads, before it is AVAILABLE, so that the first client does not pay
for TensorFlow's first-call costs (tracing, kernel set-up, memory pools). The
file is a TFRecord of `PredictionLog` protos (tensorflow-serving-api); TF
Serving reads at most 1000 records and fails the load on a record it cannot
parse or run. The exporter writes the file and both servers (TF Serving in
Docker and model_server.py) read it, so the rules live here.
"""

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mnist_serving import config

if TYPE_CHECKING:
    from tensorflow_serving.apis.prediction_log_pb2 import PredictionLog

WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
# TF Serving's WarmupConsts::kMaxNumRecords.
MAX_RECORDS = 1000
# Requests of the export's warm-up file: this many digits per request, per signature.
BATCH_SIZES = (1, 8)


class WarmupError(Exception):
    """A warm-up file that cannot be replayed; TF Serving fails the load then.

    Attributes:
        code: TensorFlow's canonical status name (`INVALID_ARGUMENT`, `DATA_LOSS`).
    """

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def predict_log(inputs: dict[str, np.ndarray], signature_name: str) -> "PredictionLog":
    """A `PredictionLog` holding one PredictRequest of `inputs` (alias -> array)."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = config.MODEL_NAME
    request.model_spec.signature_name = signature_name
    for alias, value in inputs.items():
        request.inputs[alias].CopyFrom(tf.make_tensor_proto(value))
    return prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=request)
    )


def write_warmup_file(version_dir: str | Path, logs: "list[PredictionLog]") -> Path:
    """Writes `logs` (PredictionLog protos) as a version's warm-up file; returns its path."""
    import tensorflow as tf

    path = Path(version_dir) / WARMUP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for log in logs:
            writer.write(log.SerializeToString())
    return path


def digit_warmup_logs(images: np.ndarray) -> "list[PredictionLog]":
    """Warm-up requests for the digit classifier: both signatures, batches of 1 and 8.

    Args:
        images: uint8 MNIST digits (N x 28 x 28), at least max(BATCH_SIZES) of them.
    """
    import tensorflow as tf

    from mnist_serving import data

    logs = []
    for batch_size in BATCH_SIZES:
        batch = np.asarray(images[:batch_size])
        logs.append(
            predict_log({config.INPUT_NAME: data.to_model_input(batch)}, config.DEFAULT_SIGNATURE)
        )
        pngs = np.array([tf.io.encode_png(image[..., np.newaxis]).numpy() for image in batch])
        logs.append(predict_log({config.PNG_INPUT_NAME: pngs}, config.PNG_SIGNATURE))
    return logs


def read_warmup_file(version_dir: str | Path) -> "Iterator[PredictionLog]":
    """The PredictionLog records of a version's warm-up file, as TF Serving reads them.

    Yields nothing when the version has no warm-up file.

    Raises:
        WarmupError: INVALID_ARGUMENT for a record that is not a PredictionLog or
            for more than 1000 records, DATA_LOSS for a file that is not a
            TFRecord; the messages are TF Serving's.
    """
    import tensorflow as tf
    from google.protobuf.message import DecodeError
    from tensorflow_serving.apis import prediction_log_pb2

    path = Path(version_dir) / WARMUP_FILE
    if not path.is_file():
        return
    records = tf.data.TFRecordDataset(str(path)).as_numpy_iterator()
    count = 0
    while True:
        try:
            record = next(records)
        except StopIteration:
            return
        except tf.errors.DataLossError as error:
            raise WarmupError(
                "DATA_LOSS",
                f"{error.message}. Please verify your warmup data is in TFRecord format.",
            ) from None
        count += 1
        if count > MAX_RECORDS:
            raise WarmupError(
                "INVALID_ARGUMENT",
                f"Number of warmup records exceeds the maximum ({MAX_RECORDS}) at {path}",
            )
        log = prediction_log_pb2.PredictionLog()
        try:
            log.ParseFromString(record)
        except DecodeError:
            raise WarmupError(
                "INVALID_ARGUMENT", f"Failed to parse warmup record: {record[:64]!r} from {path}"
            ) from None
        yield log
