"""The models to serve: `--model_name`/`--model_base_path`, or a `--model_config_file`.

A model config file is a text `ModelServerConfig` (tensorflow-serving-api's
own proto), read with the same strict text-format reader as the other config
files: unknown fields and bad values are errors, as in tensorflow_model_server.
"""

from dataclasses import dataclass, field
from pathlib import Path

from tensorflow_serving.config import model_server_config_pb2

from mnist_serving.serving.config_protos import parse_text_file
from mnist_serving.serving.errors import ConfigError

# Version policies of a model (ServableVersionPolicy's choices).
LATEST = "latest"
ALL = "all"
SPECIFIC = "specific"


@dataclass(frozen=True)
class ModelConfig:
    """One model to serve: its name, base path, version policy and labels."""

    name: str
    base_path: str
    policy: str = LATEST
    num_versions: int = 1
    specific_versions: tuple[int, ...] = ()
    labels: dict[str, int] = field(default_factory=dict)


def read_model_config_file(path: str | Path) -> list[ModelConfig]:
    """Parses a text `ModelServerConfig` (`--model_config_file`).

    Relative base paths are relative to the working directory, as in
    tensorflow_model_server.

    Raises:
        ConfigError: Unreadable file, bad syntax, unknown fields, duplicate
            or unnamed models, unsupported platform or policy values.
    """
    config = parse_text_file(path, model_server_config_pb2.ModelServerConfig, "--model_config_file")
    if config.WhichOneof("config") != "model_config_list":
        raise ConfigError(f"{path} has no model_config_list (custom_model_config is not supported)")
    models = models_from_config(config.model_config_list, path)
    if not models:
        raise ConfigError(f"{path} lists no model")
    return models


def models_from_config(
    config_list: model_server_config_pb2.ModelConfigList, source: str | Path
) -> list[ModelConfig]:
    """The models of a `ModelConfigList` (from a file, or a gRPC reload request).

    Raises:
        ConfigError: Duplicate or unnamed models, unsupported platform or
            policy values; the message starts with `source` where TF Serving
            has no message of its own.
    """
    models = []
    seen = set()
    for entry in config_list.config:
        if not entry.name:
            raise ConfigError(f"{source}: a model config has no name")
        if entry.name in seen:
            raise ConfigError(f"Illegal to list model {entry.name} multiple times in config list")
        seen.add(entry.name)
        if not entry.base_path:
            raise ConfigError(f"{source}: model {entry.name} has no base_path")
        if entry.model_platform not in ("", "tensorflow"):
            raise ConfigError(
                f"{source}: model {entry.name} has model_platform '{entry.model_platform}'; "
                "only 'tensorflow' is served"
            )
        models.append(_model_from_proto(entry, source))
    return models


def _model_from_proto(entry: model_server_config_pb2.ModelConfig, path: str | Path) -> ModelConfig:
    policy = entry.model_version_policy
    kind = policy.WhichOneof("policy_choice") or LATEST
    num_versions = 1
    specific = ()
    if kind == LATEST:
        num_versions = policy.latest.num_versions or 1
        if num_versions < 1:
            raise ConfigError(f"{path}: model {entry.name}: num_versions must be at least 1")
    elif kind == SPECIFIC:
        specific = tuple(sorted(set(policy.specific.versions)))
        if not specific:
            raise ConfigError(f"{path}: model {entry.name}: specific policy lists no version")
    return ModelConfig(
        name=entry.name,
        base_path=entry.base_path,
        policy=kind,
        num_versions=num_versions,
        specific_versions=specific,
        labels=dict(entry.version_labels),
    )
