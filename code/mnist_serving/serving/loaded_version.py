"""One loaded SavedModel version: its signatures, ready to run, warmed up as TF Serving does."""

import logging
import time
from pathlib import Path

import numpy as np

from mnist_serving import config, savedmodel, warmup
from mnist_serving.serving.errors import ServingError, from_tensorflow_error

LOGGER = logging.getLogger("model_server")

# Inputs declared with at least this rank must be sent with that rank.
MIN_CHECKED_RANK = 3
# The signature keys and aliases TF Serving's Classify and Regress APIs require
# (tensorflow/cc/saved_model/signature_constants.h).
CLASSIFY_INPUTS = "inputs"
CLASSIFY_OUTPUTS = ("classes", "scores")
REGRESS_INPUTS = "inputs"
REGRESS_OUTPUTS = "outputs"


class LoadedVersion:
    """One loaded SavedModel version: its signatures, ready to run.

    Instances never change once built, so request threads use them without
    locks; an unloaded version stays valid for requests already holding it.
    """

    def __init__(self, model_name: str, version: int, path: str | Path):
        """Loads the SavedModel at `path`.

        Raises:
            ServingError: No readable SavedModel (TF Serving's code and message).
            Exception: Whatever TensorFlow raises while loading.
        """
        import tensorflow as tf

        self.model_name = model_name
        self.version = version
        self.path = str(path)
        try:
            self.signature_defs = savedmodel.read_signature_defs(path)
        except savedmodel.SavedModelError as error:
            raise ServingError(error.code, str(error)) from None
        self._loaded = tf.saved_model.load(self.path, tags=[config.SERVE_TAG])
        self.functions = {
            key: self._loaded.signatures[key]
            for key in self.signature_defs
            if key in self._loaded.signatures
        }
        self.input_dtypes = {
            key: {alias: info.dtype for alias, info in signature.inputs.items()}
            for key, signature in self.signature_defs.items()
        }
        self.input_shapes = {
            key: {
                alias: None
                if info.tensor_shape.unknown_rank
                else [dim.size for dim in info.tensor_shape.dim]
                for alias, info in signature.inputs.items()
            }
            for key, signature in self.signature_defs.items()
        }

    def signature(self, name: str):
        """`(key, SignatureDef)` of signature `name` ('' is serving_default), else a 400."""
        key = name or config.DEFAULT_SIGNATURE
        if key not in self.signature_defs:
            raise ServingError(
                "INVALID_ARGUMENT", f'Serving signature name: "{key}" not found in signature def'
            )
        return key, self.signature_defs[key]

    def check_classify_or_regress(self, api: str, name: str) -> None:
        """Refuses `classify`/`regress` on a signature that cannot serve it, as TF Serving does.

        TF Serving checks the signature's inputs and outputs (not its method
        name, unless told to) before running anything; each failure is a 400
        with its own message.

        Raises:
            ServingError: INVALID_ARGUMENT with TF Serving's message.
        """
        key = name or config.DEFAULT_SIGNATURE
        signature = self.signature_defs.get(key)
        if signature is None:
            raise ServingError("INVALID_ARGUMENT", f"No signature was found with the name: {key}")
        problem = classify_or_regress_problem(api, signature)
        if problem is not None:
            raise ServingError("INVALID_ARGUMENT", problem)

    def run(self, signature_key: str, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Runs one signature on numpy inputs; returns alias -> numpy output.

        Raises:
            ServingError: The signature cannot run, or TensorFlow failed (its
                status code and the first lines of its message).
        """
        import tensorflow as tf

        function = self.functions.get(signature_key)
        if function is None:
            raise ServingError(
                "FAILED_PRECONDITION", f'Serving signature key "{signature_key}" not found.'
            )
        dtypes = self.input_dtypes[signature_key]
        self._check_ranks(signature_key, tensors)
        try:
            arguments = {
                alias: tf.convert_to_tensor(value, dtype=tf.dtypes.as_dtype(dtypes[alias]))
                for alias, value in tensors.items()
            }
            results = function(**arguments)
            return {alias: tensor.numpy() for alias, tensor in results.items()}
        except (tf.errors.OpError, TypeError, ValueError) as error:
            raise from_tensorflow_error(error) from None

    def _check_ranks(self, signature_key: str, tensors: dict[str, np.ndarray]) -> None:
        """Refuses image-like inputs whose rank differs from the signature's.

        TF Serving leaves shapes to the TensorFlow runtime, but oneDNN's
        convolution and pooling kernels abort the whole process on an input
        of the wrong rank instead of returning an error. Inputs declared with
        rank 3 or more are therefore checked; lower ranks (where elementwise
        models such as half_plus_two accept any rank, as in TF Serving's own
        examples) and all sizes are still left to the runtime.
        """
        for alias, value in tensors.items():
            declared = self.input_shapes[signature_key].get(alias)
            if declared is None or len(declared) < MIN_CHECKED_RANK:
                continue
            if len(declared) != len(value.shape):
                shape = ",".join(str(size) for size in value.shape)
                expected = ",".join(str(size) for size in declared)
                raise ServingError(
                    "INVALID_ARGUMENT",
                    f"Input '{alias}' of signature '{signature_key}' must have rank "
                    f"{len(declared)} (shape [{expected}]), but got shape [{shape}]",
                )

    def warm_up(self, iterations: int) -> int:
        """Replays the version's warm-up file (`assets.extra/tf_serving_warmup_requests`).

        Each record runs `iterations` times, as TF Serving's
        `--num_request_iterations_for_warmup` asks. The version becomes
        AVAILABLE only after this returns.

        Returns:
            The number of records replayed (0 without a warm-up file).

        Raises:
            ServingError: A record cannot be read or run; the load fails then.
        """
        warmup_path = Path(self.path) / warmup.WARMUP_FILE
        if iterations <= 0:
            return 0
        if not warmup_path.is_file():
            LOGGER.info("No warmup data file found at %s", warmup_path)
            return 0
        # The records are PredictRequests, read as the gRPC API reads them.
        from mnist_serving.serving import proto_codec

        started = time.monotonic()
        records = 0
        try:
            for log in warmup.read_warmup_file(self.path):
                kind = log.WhichOneof("log_type")
                if kind is None:
                    records += 1
                    continue
                if kind != "predict_log":
                    raise ServingError(
                        "UNIMPLEMENTED", f"Unsupported log_type for warmup: {kind} (predict only)"
                    )
                request = log.predict_log.request
                key, signature = proto_codec.predict_signature(
                    self.signature_defs, request.model_spec
                )
                inputs = proto_codec.predict_inputs(request, signature)
                for _ in range(iterations):
                    self.run(key, inputs)
                records += 1
        except warmup.WarmupError as error:
            raise ServingError(error.code, str(error)) from None
        LOGGER.info(
            "Finished reading warmup data for model at %s. Number of warmup records read: %d. "
            "Elapsed time (microseconds): %d.",
            warmup_path,
            records,
            (time.monotonic() - started) * 1e6,
        )
        return records


def classify_or_regress_problem(api: str, signature) -> str | None:
    """TF Serving's reason why a SignatureDef cannot serve `classify` or `regress`, or None.

    The checks of its `PreProcessClassification` and `PreProcessRegression`:
    one input named `inputs`, and the outputs those APIs read.
    """
    from google.protobuf import text_format

    described = text_format.MessageToString(signature)
    if len(signature.inputs) != 1:
        return "Expected one input Tensor."
    if api == "classify":
        if len(signature.outputs) not in (1, 2):
            return f"Expected one or two output Tensors, found {len(signature.outputs)}"
        if CLASSIFY_INPUTS not in signature.inputs:
            return f"No classification inputs found in SignatureDef: {described}"
        if not any(output in signature.outputs for output in CLASSIFY_OUTPUTS):
            return (
                "Expected classification signature outputs to contain at least one of "
                f'"classes" or "scores". Signature was: {described}'
            )
        return None
    if len(signature.outputs) != 1:
        return "Expected one output Tensor."
    if REGRESS_INPUTS not in signature.inputs:
        return f"No regression inputs found in SignatureDef: {described}"
    if REGRESS_OUTPUTS not in signature.outputs:
        return f"No regression outputs found in SignatureDef: {described}"
    return None
