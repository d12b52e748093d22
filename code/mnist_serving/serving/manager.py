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
import threading
import time
from collections.abc import Callable

from mnist_serving.serving.errors import (
    CODE_NUMBERS,
    ServingError,
    first_lines,
    from_tensorflow_error,
)
from mnist_serving.serving.loaded_version import LoadedVersion
from mnist_serving.serving.model_config import SPECIFIC, ModelConfig
from mnist_serving.serving.versions import (
    AVAILABLE,
    END,
    LOADING,
    UNLOADING,
    ModelState,
    VersionRecord,
    folder_fingerprint,
    servable_id,
)

LOGGER = logging.getLogger("model_server")


def _collect_frozen_garbage() -> None:
    """Collects garbage, then freezes what is left.

    TensorFlow leaves millions of long-lived Python objects; the cyclic GC
    would walk them all each time a request builds a big JSON document (10x
    slower parsing), so they are frozen: the collector skips them. A version
    being unloaded must be unfrozen first, or its cycles would never be freed.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


class ModelManager:
    """Finds, loads, serves and unloads the versions of every configured model."""

    def __init__(
        self,
        models: list[ModelConfig],
        poll_wait_seconds: float = 1.0,
        warmup_iterations: int = 1,
        allow_labels_for_unavailable_models: bool = False,
        on_change: Callable[[str, int, str], None] | None = None,
    ):
        """Sets up the manager; nothing is loaded until `start()`.

        Args:
            models: ModelConfig list.
            poll_wait_seconds: Seconds between looks at the base paths; 0 or
                less looks once, at start.
            warmup_iterations: Replays of each warm-up record (0 disables).
            allow_labels_for_unavailable_models: See `assign_labels`.
            on_change: Called with (model_name, version, state) after each
                change, e.g. to drop batching queues of unloaded versions.
        """
        self.models = {config.name: ModelState(config) for config in models}
        self.poll_wait_seconds = poll_wait_seconds
        self.warmup_iterations = warmup_iterations
        self.allow_labels_for_unavailable_models = allow_labels_for_unavailable_models
        self.labels: dict[str, dict[str, int]] = {}
        self.on_change = on_change
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._poll_lock = threading.Lock()
        self._poll_thread = None

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        """Polls once (loading what the policies ask for), then keeps polling."""
        self.poll_once()
        if self.poll_wait_seconds > 0:
            self._poll_thread = threading.Thread(
                target=self._poll_forever, name="file-system-poller", daemon=True
            )
            self._poll_thread.start()

    def stop(self) -> None:
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

    def poll_once(self) -> None:
        """One look at every base path: load, retry and unload versions."""
        # One poll at a time, whether from the poller or a config reload.
        with self._poll_lock:
            with self._lock:
                states = list(self.models.values())
            for state in states:
                if self._stop.is_set():
                    return
                self._poll_model(state)

    def update_models(self, models: list[ModelConfig]) -> None:
        """Replaces the set of served models, as a config file reload does in TF Serving.

        The labels are checked and set first (`assign_labels`); then models no
        longer listed are unloaded, new ones are added, and the policy and
        base path of the others are updated. The next poll (run here at once)
        loads and unloads versions accordingly.

        Raises:
            ServingError: A label TF Serving would refuse; nothing changes then.
        """
        self.assign_labels(models)
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

    def startup_failures(self) -> list[str]:
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

    def assign_labels(self, models: list[ModelConfig]) -> None:
        """Sets the version labels of `models`, with TF Serving's rule for unavailable versions.

        A label may only point at a version that is AVAILABLE now. With
        `allow_labels_for_unavailable_models`, a new label (or one that keeps
        its version) may point at any version, but an existing label still
        cannot move to a version that is not available. TF Serving assigns the
        labels of a config before it loads the config's models, so at start-up
        every label needs that flag.

        Raises:
            ServingError: FAILED_PRECONDITION with TF Serving's message; the
                labels are then left as they were.
        """
        with self._lock:
            labels = {}
            for config in models:
                state = self.models.get(config.name)
                current = self.labels.get(config.name, {})
                for label, version in config.labels.items():
                    record = state.versions.get(version) if state is not None else None
                    available = record is not None and record.state == AVAILABLE
                    moves = label in current and current[label] != version
                    if not available and (moves or not self.allow_labels_for_unavailable_models):
                        raise ServingError(
                            "FAILED_PRECONDITION",
                            f"Request to assign label to version {version} of model "
                            f"{config.name}, which is not currently available for inference",
                        )
                    labels.setdefault(config.name, {})[label] = version
            self.labels = labels

    # -- polling -----------------------------------------------------------

    def _poll_model(self, state):
        on_disk = state.scan()
        if on_disk is None:
            return  # A missing base path changes nothing that is loaded.
        config = state.config
        aspired = state.aspired(on_disk)
        if config.policy == SPECIFIC:
            for version in config.specific_versions:
                if version not in on_disk and version not in state.versions:
                    state.warn_once(
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
            servable.warm_up(self.warmup_iterations)
        except ServingError as error:
            self._fail(state, record, error.code, error.message)
            return
        except Exception as error:  # noqa: BLE001 - any loader failure is reported.
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

    def serves(self, name: str) -> bool:
        """True when `name` is one of the configured models (whatever its versions' states)."""
        with self._lock:
            return name in self.models

    def resolve(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> LoadedVersion:
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
                version = self.labels.get(name, {}).get(label)
                if version is None:
                    raise ServingError(
                        "INVALID_ARGUMENT", f"Unrecognized servable version label: {label}"
                    )
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

    def model_status(self, name: str, version: int | None = None):
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
