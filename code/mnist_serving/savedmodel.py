"""A model's base path as TensorFlow Serving reads it: version folders, signatures.

The exporter writes this layout and the server reads it, so both take their
rules from here: which folder names are versions, and where the signatures of
a version are.
"""

from pathlib import Path

from mnist_serving import config


class SavedModelError(Exception):
    """A SavedModel cannot be read.

    Attributes:
        code: TensorFlow's canonical status name for the failure (`NOT_FOUND`,
            `DATA_LOSS`), which the server passes on to its clients.
    """

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def version_number(folder_name: str) -> int | None:
    """The version a folder name stands for, or None when it is not a version.

    Only ASCII digits count, as for TensorFlow Serving: `00000123` is version
    123, while `+1`, ` 1`, `1_0`, `²` and the exporter's hidden `.export-3-...`
    staging folders are not versions (Python's `int()` would take some).
    """
    return int(folder_name) if folder_name.isascii() and folder_name.isdigit() else None


def version_numbers(base_path: str | Path) -> list[int]:
    """The versions under a model's base path, in increasing order ([] if none)."""
    base = Path(base_path)
    if not base.is_dir():
        return []
    numbers = (version_number(child.name) for child in base.iterdir() if child.is_dir())
    return sorted(number for number in numbers if number is not None)


def read_signature_defs(saved_model_dir: str | Path) -> dict:
    """The SignatureDefs of a SavedModel's `serve` MetaGraph, by key.

    Reads `saved_model.pb` directly: nothing is loaded into TensorFlow.

    Raises:
        SavedModelError: NOT_FOUND without saved_model.pb, DATA_LOSS when it does
            not parse, NOT_FOUND when no MetaGraph is tagged `serve`; the
            messages are TensorFlow Serving's.
    """
    from tensorflow.core.protobuf import saved_model_pb2

    pb_path = Path(saved_model_dir) / "saved_model.pb"
    try:
        data = pb_path.read_bytes()
    except OSError:
        raise SavedModelError(
            "NOT_FOUND",
            "Could not find SavedModel .pb or .pbtxt at supplied export directory path: "
            f"{saved_model_dir}",
        ) from None
    saved_model = saved_model_pb2.SavedModel()
    try:
        saved_model.ParseFromString(data)
    except Exception:  # noqa: BLE001 - protobuf raises DecodeError or RuntimeError.
        raise SavedModelError("DATA_LOSS", f"Could not parse {pb_path}") from None
    for meta_graph in saved_model.meta_graphs:
        if config.SERVE_TAG in meta_graph.meta_info_def.tags:
            return dict(meta_graph.signature_def)
    raise SavedModelError(
        "NOT_FOUND",
        "Could not find meta graph def matching supplied tags: "
        f"{{ {config.SERVE_TAG} }}. To inspect available tag-sets in the SavedModel, "
        "please use the SavedModel CLI: `saved_model_cli`",
    )
