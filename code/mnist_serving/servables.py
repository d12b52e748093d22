"""Model versions on disk, loaded and unloaded as TensorFlow Serving does.

Each model has a base path whose integer-named subfolders are its versions
(`my_digit_classifier/1/`, `.../2/`). A poller looks at every base path each
`file_system_poll_wait_seconds`, picks the versions the model's policy asks
for (`latest` N by default, `all`, or `specific`), loads new ones and unloads
the ones no longer wanted, preserving availability:

- a new version is loaded and AVAILABLE before an old one is unloaded, and
  the last available version is never unloaded because a newer one failed or
  its folder vanished, so no request fails during a swap;
- a version that fails to load is reported as END with its error while the
  others keep serving; it is tried again when its folder's contents change
  (files added, removed, resized or rewritten), e.g. once a slow copy ends;
- hidden and non-numeric folders (the exporter's `.export-N-...` staging
  folders) are ignored.
"""

import gc
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from mnist_serving import config, savedmodel
from mnist_serving.status import CODE_NUMBERS, ServingError, first_lines

LOGGER = logging.getLogger("model_server")

SERVE_TAG = config.SERVE_TAG
DEFAULT_SIGNATURE = config.DEFAULT_SIGNATURE
WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
# Inputs declared with at least this rank must be sent with that rank.
MIN_CHECKED_RANK = 3
# TF Serving reads at most this many warm-up records.
MAX_WARMUP_RECORDS = 1000

# ModelVersionStatus.State names.
START = "START"
LOADING = "LOADING"
AVAILABLE = "AVAILABLE"
UNLOADING = "UNLOADING"
END = "END"


class ConfigError(Exception):
    """A model configuration that cannot be served (bad file, bad values)."""


@dataclass
class ModelConfig:
    """One model to serve: its name, base path, version policy and labels."""

    name: str
    base_path: str
    policy: str = "latest"  # latest, all or specific.
    num_versions: int = 1
    specific_versions: tuple = ()
    labels: dict = field(default_factory=dict)


def read_model_config_file(path):
    """Parses a text `ModelServerConfig` (`--model_config_file`).

    Relative base paths are relative to the working directory, as in
    tensorflow_model_server.

    Returns:
        A list of ModelConfig.

    Raises:
        ConfigError: Unreadable file, bad syntax, unknown fields, duplicate
            or unnamed models, unsupported platform or policy values.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise ConfigError(f"cannot read model config file {path}: {reason}") from None
    config = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as error:
        raise ConfigError(f"{path} is not a valid ModelServerConfig: {error}") from None
    if config.WhichOneof("config") != "model_config_list":
        raise ConfigError(f"{path} has no model_config_list (custom_model_config is not supported)")
    models = []
    seen = set()
    for entry in config.model_config_list.config:
        if not entry.name:
            raise ConfigError(f"{path}: a model config has no name")
        if entry.name in seen:
            raise ConfigError(f"Illegal to list model {entry.name} multiple times in config list")
        seen.add(entry.name)
        if not entry.base_path:
            raise ConfigError(f"{path}: model {entry.name} has no base_path")
        if entry.model_platform not in ("", "tensorflow"):
            raise ConfigError(
                f"{path}: model {entry.name} has model_platform '{entry.model_platform}'; "
                "only 'tensorflow' is served"
            )
        models.append(_model_from_proto(entry, entry.base_path, path))
    if not models:
        raise ConfigError(f"{path} lists no model")
    return models


def _model_from_proto(entry, base_path, path):
    policy = entry.model_version_policy
    kind = policy.WhichOneof("policy_choice") or "latest"
    num_versions = 1
    specific = ()
    if kind == "latest":
        num_versions = policy.latest.num_versions or 1
        if num_versions < 1:
            raise ConfigError(f"{path}: model {entry.name}: num_versions must be at least 1")
    elif kind == "specific":
        specific = tuple(sorted(set(policy.specific.versions)))
        if not specific:
            raise ConfigError(f"{path}: model {entry.name}: specific policy lists no version")
    return ModelConfig(
        name=entry.name,
        base_path=base_path,
        policy=kind,
        num_versions=num_versions,
        specific_versions=specific,
        labels=dict(entry.version_labels),
    )


class LoadedVersion:
    """One loaded SavedModel version: its signatures, ready to run.

    Instances never change once built, so request threads use them without
    locks; an unloaded version stays valid for requests already holding it.
    """

    def __init__(self, model_name, version, path):
        import tensorflow as tf

        self.model_name = model_name
        self.version = version
        self.path = str(path)
        try:
            self.signature_defs = savedmodel.read_signature_defs(path)
        except savedmodel.SavedModelError as error:
            raise ServingError(error.code, str(error)) from None
        self._loaded = tf.saved_model.load(self.path, tags=[SERVE_TAG])
        self.functions = {}
        for key in self.signature_defs:
            if key in self._loaded.signatures:
                self.functions[key] = self._loaded.signatures[key]
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

    def signature(self, name):
        """The SignatureDef `name` ('' means serving_default), or TF Serving's 400."""
        key = name or DEFAULT_SIGNATURE
        if key not in self.signature_defs:
            raise ServingError(
                "INVALID_ARGUMENT", f'Serving signature name: "{key}" not found in signature def'
            )
        return key, self.signature_defs[key]

    def run(self, signature_key, tensors):
        """Runs one signature on numpy inputs; returns alias -> numpy output.

        Raises:
            ServingError: The signature cannot run, or TensorFlow failed (its
                status code and the first lines of its message).
        """
        import tensorflow as tf

        from mnist_serving.status import from_tensorflow_error

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

    def _check_ranks(self, signature_key, tensors):
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

    def warm_up(self, iterations):
        """Replays `assets.extra/tf_serving_warmup_requests`, as TF Serving does.

        Returns:
            The number of records replayed (0 without a warm-up file).

        Raises:
            ServingError: A record is not a PredictionLog or fails to run.
        """
        warmup_path = Path(self.path) / WARMUP_FILE
        if iterations <= 0 or not warmup_path.is_file():
            return 0
        import tensorflow as tf
        from tensorflow_serving.apis import prediction_log_pb2

        records = 0
        for serialized in tf.compat.v1.io.tf_record_iterator(str(warmup_path)):
            if records >= MAX_WARMUP_RECORDS:
                break
            log = prediction_log_pb2.PredictionLog()
            log.ParseFromString(serialized)
            if log.WhichOneof("log_type") != "predict_log":
                raise ServingError(
                    "UNIMPLEMENTED",
                    "model_server.py replays only predict_log warm-up records",
                )
            request = log.predict_log.request
            key, _ = self.signature(request.model_spec.signature_name)
            inputs = {alias: tf.make_ndarray(proto) for alias, proto in request.inputs.items()}
            for _ in range(iterations):
                self.run(key, inputs)
            records += 1
        return records


@dataclass
class VersionRecord:
    """What the server knows of one version: state, status, servable."""

    version: int
    path: str
    state: str = START
    error_code: str = "OK"
    error_message: str = ""
    servable: LoadedVersion = None
    fingerprint: tuple = ()


def folder_fingerprint(path):
    """Names, sizes and modification times of every file under `path`."""
    entries = []
    for root, _, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            try:
                stat = os.stat(full)
            except OSError:
                continue
            entries.append((os.path.relpath(full, path), stat.st_size, stat.st_mtime_ns))
    return tuple(sorted(entries))


def _collect_frozen_garbage():
    """Collects garbage, then freezes what is left.

    TensorFlow leaves millions of long-lived Python objects; the cyclic GC
    would walk them all each time a request builds a big JSON document (10x
    slower parsing), so they are frozen: the collector skips them. A version
    being unloaded must be unfrozen first, or its cycles would never be freed.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def _warn_once(state, message):
    """Logs a warning about a model the first time only (polls repeat every second)."""
    if message not in state.warned:
        state.warned.add(message)
        LOGGER.warning("%s", message)


def servable_id(name, version):
    """TF Serving's way of naming a servable version in logs."""
    return f"{{name: {name} version: {version}}}"


class ModelState:
    """The versions of one model, guarded by the manager's lock."""

    def __init__(self, config):
        self.config = config
        self.versions = {}  # version number -> VersionRecord
        self.last_disk_problem = None
        self.warned = set()

    def available(self):
        """Available versions, newest first."""
        return sorted(
            (record for record in self.versions.values() if record.state == AVAILABLE),
            key=lambda record: record.version,
            reverse=True,
        )


class ServableManager:
    """Finds, loads, serves and unloads the versions of every configured model."""

    def __init__(self, models, poll_wait_seconds=1.0, warmup_iterations=1, on_change=None):
        """Sets up the manager; nothing is loaded until `start()`.

        Args:
            models: ModelConfig list.
            poll_wait_seconds: Seconds between looks at the base paths; 0 or
                less looks once, at start.
            warmup_iterations: Replays of each warm-up record (0 disables).
            on_change: Called with (model_name, version, state) after each
                change, e.g. to drop batching queues of unloaded versions.
        """
        self.models = {config.name: ModelState(config) for config in models}
        self.poll_wait_seconds = poll_wait_seconds
        self.warmup_iterations = warmup_iterations
        self.on_change = on_change
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._poll_lock = threading.Lock()
        self._poll_thread = None

    # -- lifecycle ---------------------------------------------------------

    def start(self):
        """Polls once (loading what the policies ask for), then keeps polling."""
        self.poll_once()
        if self.poll_wait_seconds > 0:
            self._poll_thread = threading.Thread(
                target=self._poll_forever, name="file-system-poller", daemon=True
            )
            self._poll_thread.start()

    def stop(self):
        """Stops polling; loaded versions stay usable until the process ends."""
        self._stop.set()
        if self._poll_thread is not None:
            self._poll_thread.join(timeout=30)

    def _poll_forever(self):
        while not self._stop.wait(self.poll_wait_seconds):
            try:
                self.poll_once()
            except Exception:
                LOGGER.exception("File system poll failed")

    def poll_once(self):
        """One look at every base path: load, retry and unload versions."""
        # One poll at a time, whether from the poller or a config reload.
        with self._poll_lock:
            with self._lock:
                states = list(self.models.values())
            for state in states:
                if self._stop.is_set():
                    return
                self._poll_model(state)

    def update_models(self, models):
        """Replaces the set of served models, as a config file reload does in TF Serving.

        Models no longer listed are unloaded; new ones are added; the policy,
        labels and base path of the others are updated. The next poll (run
        here at once) loads and unloads versions accordingly.
        """
        with self._lock:
            wanted = {config.name: config for config in models}
            for name in [name for name in self.models if name not in wanted]:
                state = self.models.pop(name)
                LOGGER.info("Removing model %s: no longer in the model config", name)
                for record in state.versions.values():
                    if record.state == AVAILABLE:
                        record.servable = None
                        self._set_state(state, record, END)
            for name, config in wanted.items():
                state = self.models.get(name)
                if state is None:
                    LOGGER.info("Adding model %s from the model config", name)
                    self.models[name] = ModelState(config)
                elif state.config != config:
                    LOGGER.info("Updating model %s from the model config", name)
                    if state.config.base_path != config.base_path:
                        self.models[name] = ModelState(config)
                    else:
                        state.config = config
        _collect_frozen_garbage()
        self.poll_once()
        for problem in self.label_problems():
            LOGGER.warning("%s", problem)

    def startup_failures(self):
        """Models whose newest wanted version failed and that serve nothing.

        Returns:
            A list of `"{name: m version: v} due to error: CODE: message"`,
            empty when every model with versions has one AVAILABLE.
        """
        failures = []
        with self._lock:
            for state in self.models.values():
                if state.available():
                    continue
                failed = sorted(
                    (r for r in state.versions.values() if r.error_code != "OK"),
                    key=lambda record: record.version,
                    reverse=True,
                )
                if failed:
                    record = failed[0]
                    failures.append(
                        f"{servable_id(state.config.name, record.version)} due to error: "
                        f"{record.error_code}: {record.error_message}"
                    )
        return failures

    def label_problems(self):
        """Labels that point at a version that is not AVAILABLE, as TF Serving words it."""
        problems = []
        with self._lock:
            for state in self.models.values():
                for version in sorted(set(state.config.labels.values())):
                    record = state.versions.get(version)
                    if record is None or record.state != AVAILABLE:
                        problems.append(
                            f"Request to assign label to version {version} of model "
                            f"{state.config.name}, which is not currently available for inference"
                        )
        return problems

    # -- polling -----------------------------------------------------------

    def _scan(self, state):
        """Numeric version folders under the base path: {version: path}, or None."""
        config = state.config
        base = Path(config.base_path)
        try:
            children = list(os.scandir(base))
        except OSError as error:
            problem = (
                "File system storage path source encountered a file-system access error: "
                f"Could not find base path {config.base_path} for servable {config.name} "
                f"with error {error.strerror or error}"
            )
            if state.last_disk_problem != problem:
                LOGGER.error(problem)
                state.last_disk_problem = problem
            return None
        versions = {}
        for child in children:
            number = savedmodel.version_number(child.name)
            if number is not None and child.is_dir():
                if number in versions:
                    _warn_once(
                        state,
                        f"Two version folders map to version {number} of {config.name}; "
                        f"using {max(child.path, versions[number])}",
                    )
                    versions[number] = max(child.path, versions[number])
                else:
                    versions[number] = child.path
        if not versions:
            problem = (
                f"No versions of servable {config.name} found under base path "
                f"{config.base_path}. Did you forget to name your leaf directory as a number "
                "(eg. '/1/')?"
            )
            if state.last_disk_problem != problem:
                LOGGER.warning(problem)
                state.last_disk_problem = problem
        else:
            state.last_disk_problem = None
        return versions

    def _aspired(self, config, on_disk):
        if config.policy == "all":
            return set(on_disk)
        if config.policy == "specific":
            return {v for v in config.specific_versions if v in on_disk}
        return set(sorted(on_disk, reverse=True)[: config.num_versions])

    def _poll_model(self, state):
        on_disk = self._scan(state)
        if on_disk is None:
            return  # A missing base path changes nothing that is loaded.
        config = state.config
        aspired = self._aspired(config, on_disk)
        if config.policy == "specific":
            for version in config.specific_versions:
                if version not in on_disk and version not in state.versions:
                    _warn_once(
                        state,
                        f"Version {version} of servable {config.name} is not on disk under "
                        f"{config.base_path}",
                    )
        # Newest first, so the version requests go to is ready soonest.
        for version in sorted(aspired, reverse=True):
            if self._stop.is_set():
                return
            with self._lock:
                record = state.versions.get(version)
            if record is not None and record.state == AVAILABLE:
                continue
            if record is not None and record.error_code != "OK":
                fingerprint = folder_fingerprint(on_disk[version])
                if fingerprint == record.fingerprint:
                    continue  # Failed before and unchanged since: do not retry.
                LOGGER.info(
                    "Contents of %s changed; retrying servable %s",
                    on_disk[version],
                    servable_id(config.name, version),
                )
            self._load(state, version, on_disk[version])
        self._unload_unwanted(state, aspired)

    def _set_state(self, state, record, new_state):
        record.state = new_state
        if self.on_change is not None:
            self.on_change(state.config.name, record.version, new_state)

    def _load(self, state, version, path):
        name = state.config.name
        record = VersionRecord(version=version, path=path)
        with self._lock:
            state.versions[version] = record
        record.fingerprint = folder_fingerprint(path)
        LOGGER.info("Approving load for servable version %s", servable_id(name, version))
        self._set_state(state, record, LOADING)
        LOGGER.info("Loading servable version %s", servable_id(name, version))
        started = time.monotonic()
        try:
            servable = LoadedVersion(name, version, path)
            replayed = servable.warm_up(self.warmup_iterations)
            if replayed:
                LOGGER.info(
                    "Finished reading warmup data for model at %s. Number of warmup records "
                    "read: %d.",
                    path,
                    replayed,
                )
        except ServingError as error:
            self._fail(state, record, error.code, error.message)
            return
        except Exception as error:  # noqa: BLE001 - any loader failure is reported.
            from mnist_serving.status import from_tensorflow_error

            failure = from_tensorflow_error(error)
            code = "UNKNOWN" if failure.code == "INTERNAL" else failure.code
            message = first_lines(str(error)) or type(error).__name__
            self._fail(state, record, code, message)
            return
        _collect_frozen_garbage()
        with self._lock:
            record.servable = servable
            self._set_state(state, record, AVAILABLE)
        LOGGER.info(
            "Successfully loaded servable version %s (%.2f s)",
            servable_id(name, version),
            time.monotonic() - started,
        )

    def _fail(self, state, record, code, message):
        with self._lock:
            record.error_code = code
            record.error_message = message
            self._set_state(state, record, END)
        LOGGER.error(
            "Loading servable: %s failed: %s: %s",
            servable_id(state.config.name, record.version),
            code,
            message,
        )

    def _unload_unwanted(self, state, aspired):
        with self._lock:
            available = state.available()
            # Availability preserving: keep the newest available version
            # unless an aspired version is available to take over.
            if not any(record.version in aspired for record in available):
                keep = {available[0].version} if available else set()
            else:
                keep = set()
            leaving = [
                record
                for record in available
                if record.version not in aspired and record.version not in keep
            ]
            for record in leaving:
                self._set_state(state, record, UNLOADING)
        for record in leaving:
            name = servable_id(state.config.name, record.version)
            LOGGER.info("Quiescing servable version %s", name)
            LOGGER.info("Unloading servable version %s", name)
            with self._lock:
                # Requests already holding the servable finish with it; the
                # memory goes when the last of them lets go.
                record.servable = None
                self._set_state(state, record, END)
            _collect_frozen_garbage()
            LOGGER.info("Done unloading servable version %s", name)

    # -- lookups -----------------------------------------------------------

    def resolve(self, name, version=None, label=None):
        """The servable a request addresses, as TF Serving resolves it.

        Args:
            name: Model name.
            version: A version number, or None.
            label: A version label, or None.

        Returns:
            LoadedVersion.

        Raises:
            ServingError: 404 `Servable not found for request: Latest(m)` or
                `Specific(m, v)`; 400 `Unrecognized servable version label: l`.
        """
        with self._lock:
            state = self.models.get(name)
            if label is not None:
                if state is None or label not in state.config.labels:
                    raise ServingError(
                        "INVALID_ARGUMENT", f"Unrecognized servable version label: {label}"
                    )
                version = state.config.labels[label]
            if version is None:
                available = state.available() if state is not None else []
                if available:
                    return available[0].servable
                raise ServingError("NOT_FOUND", f"Servable not found for request: Latest({name})")
            record = state.versions.get(version) if state is not None else None
            if record is not None and record.state == AVAILABLE:
                return record.servable
            raise ServingError(
                "NOT_FOUND", f"Servable not found for request: Specific({name}, {version})"
            )

    def model_status(self, name, version=None):
        """`GetModelStatusResponse` for a model, or one version of it.

        Raises:
            ServingError: 404 for an unknown model or version.
        """
        from tensorflow_serving.apis import get_model_status_pb2

        with self._lock:
            state = self.models.get(name)
            records = sorted(
                state.versions.values() if state is not None else [],
                key=lambda record: record.version,
                reverse=True,
            )
            if not records:
                raise ServingError("NOT_FOUND", f"Could not find any versions of model {name}")
            if version is not None:
                records = [record for record in records if record.version == version]
                if not records:
                    raise ServingError(
                        "NOT_FOUND", f"Could not find version {version} of model {name}"
                    )
            response = get_model_status_pb2.GetModelStatusResponse()
            for record in records:
                entry = response.model_version_status.add()
                entry.version = record.version
                entry.state = get_model_status_pb2.ModelVersionStatus.State.Value(record.state)
                entry.status.SetInParent()
                entry.status.error_code = CODE_NUMBERS.get(record.error_code, 2)
                entry.status.error_message = record.error_message
            return response
