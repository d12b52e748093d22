"""What the server knows of each model's versions, and what it finds on disk.

A model's versions are the integer-named folders under its base path
(`savedmodel.version_number`); hidden and non-numeric folders, such as the
exporter's `.export-N-...` staging folders, are not versions. `ModelState`
keeps each version's record (state, status, loaded servable) and reports disk
problems with TF Serving's messages, once each.
"""

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from mnist_serving import savedmodel
from mnist_serving.serving.loaded_version import LoadedVersion
from mnist_serving.serving.model_config import ALL, SPECIFIC, ModelConfig

LOGGER = logging.getLogger("model_server")

# ModelVersionStatus.State names.
START = "START"
LOADING = "LOADING"
AVAILABLE = "AVAILABLE"
UNLOADING = "UNLOADING"
END = "END"


@dataclass
class VersionRecord:
    """What the server knows of one version: state, status, servable."""

    version: int
    path: str
    state: str = START
    error_code: str = "OK"
    error_message: str = ""
    servable: LoadedVersion | None = None
    fingerprint: tuple = ()


def folder_fingerprint(path: str) -> tuple:
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


def servable_id(name: str, version: int) -> str:
    """TF Serving's way of naming a servable version in logs."""
    return f"{{name: {name} version: {version}}}"


class ModelState:
    """The versions of one model, guarded by the manager's lock."""

    def __init__(self, config: ModelConfig):
        self.config = config
        self.versions: dict[int, VersionRecord] = {}
        self.last_disk_problem: str | None = None
        self.warned: set[str] = set()

    def available(self) -> list[VersionRecord]:
        """Available versions, newest first."""
        return sorted(
            (record for record in self.versions.values() if record.state == AVAILABLE),
            key=lambda record: record.version,
            reverse=True,
        )

    def warn_once(self, message: str) -> None:
        """Logs a warning about the model the first time only (polls repeat every second)."""
        if message not in self.warned:
            self.warned.add(message)
            LOGGER.warning("%s", message)

    def scan(self) -> dict[int, str] | None:
        """Numeric version folders under the base path: {version: path}, or None."""
        config = self.config
        base = Path(config.base_path)
        try:
            children = list(os.scandir(base))
        except OSError as error:
            problem = (
                "File system storage path source encountered a file-system access error: "
                f"Could not find base path {config.base_path} for servable {config.name} "
                f"with error {error.strerror or error}"
            )
            if self.last_disk_problem != problem:
                LOGGER.error(problem)
                self.last_disk_problem = problem
            return None
        versions = {}
        for child in children:
            number = savedmodel.version_number(child.name)
            if number is not None and child.is_dir():
                if number in versions:
                    self.warn_once(
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
            if self.last_disk_problem != problem:
                LOGGER.warning(problem)
                self.last_disk_problem = problem
        else:
            self.last_disk_problem = None
        return versions

    def aspired(self, on_disk: dict[int, str]) -> set[int]:
        """The versions on disk that the model's version policy asks to serve."""
        config = self.config
        if config.policy == ALL:
            return set(on_disk)
        if config.policy == SPECIFIC:
            return {v for v in config.specific_versions if v in on_disk}
        return set(sorted(on_disk, reverse=True)[: config.num_versions])
