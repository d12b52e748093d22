"""TF Serving's small config protos, built at runtime, and a strict text-format reader.

The tensorflow-serving-api package ships the request, response and model
config protos but not `BatchingParameters` (session_bundle_config.proto) nor
`MonitoringConfig` (monitoring_config.proto). Their public field names and
numbers are declared here and turned into real message classes, so the
files `--batching_parameters_file` and `--monitoring_config_file` point at
are parsed by protobuf's own text format parser: unknown fields and bad
values are errors, exactly as in tensorflow_model_server.
"""

from pathlib import Path

from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    message_factory,
    text_format,
    wrappers_pb2,
)
from google.protobuf import message as protobuf_message

from mnist_serving.serving.errors import ConfigError

_PACKAGE = "tensorflow.serving"
_FIELD = descriptor_pb2.FieldDescriptorProto

# (name, number, type, label, message type) of each field.
_BATCHING_FIELDS = [
    ("max_batch_size", 1, _FIELD.TYPE_MESSAGE, ".google.protobuf.Int64Value"),
    ("batch_timeout_micros", 2, _FIELD.TYPE_MESSAGE, ".google.protobuf.Int64Value"),
    ("max_enqueued_batches", 3, _FIELD.TYPE_MESSAGE, ".google.protobuf.Int64Value"),
    ("num_batch_threads", 4, _FIELD.TYPE_MESSAGE, ".google.protobuf.Int64Value"),
    ("thread_pool_name", 5, _FIELD.TYPE_MESSAGE, ".google.protobuf.StringValue"),
    ("allowed_batch_sizes", 6, _FIELD.TYPE_INT64, None),
    ("pad_variable_length_inputs", 7, _FIELD.TYPE_BOOL, None),
    ("enable_large_batch_splitting", 8, _FIELD.TYPE_MESSAGE, ".google.protobuf.BoolValue"),
    ("max_execution_batch_size", 9, _FIELD.TYPE_MESSAGE, ".google.protobuf.Int64Value"),
]
_PROMETHEUS_FIELDS = [
    ("enable", 1, _FIELD.TYPE_BOOL, None),
    ("path", 2, _FIELD.TYPE_STRING, None),
]
_MONITORING_FIELDS = [
    ("prometheus_config", 1, _FIELD.TYPE_MESSAGE, f".{_PACKAGE}.PrometheusConfig"),
]


def _add_message(file_proto, name, fields):
    message = file_proto.message_type.add(name=name)
    for field_name, number, field_type, type_name in fields:
        field = message.field.add(name=field_name, number=number, type=field_type)
        repeated = field_name == "allowed_batch_sizes"
        field.label = _FIELD.LABEL_REPEATED if repeated else _FIELD.LABEL_OPTIONAL
        if type_name:
            field.type_name = type_name


def _build_classes():
    pool = descriptor_pool.DescriptorPool()
    wrappers = descriptor_pb2.FileDescriptorProto()
    wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
    pool.Add(wrappers)
    file_proto = descriptor_pb2.FileDescriptorProto(
        name="mnist_serving/tf_serving_configs.proto",
        package=_PACKAGE,
        syntax="proto3",
        dependency=[wrappers.name],
    )
    _add_message(file_proto, "BatchingParameters", _BATCHING_FIELDS)
    _add_message(file_proto, "PrometheusConfig", _PROMETHEUS_FIELDS)
    _add_message(file_proto, "MonitoringConfig", _MONITORING_FIELDS)
    pool.Add(file_proto)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{name}"))
        for name in ("BatchingParameters", "MonitoringConfig")
    }


_CLASSES = _build_classes()
BatchingParametersProto = _CLASSES["BatchingParameters"]
MonitoringConfigProto = _CLASSES["MonitoringConfig"]


def parse_text_file(
    path: str | Path, message_class: type[protobuf_message.Message], flag: str
) -> protobuf_message.Message:
    """Reads `path` as a text protobuf of `message_class`.

    Args:
        path: The file.
        message_class: A protobuf message class, e.g. BatchingParametersProto.
        flag: The command-line flag that named the file, for messages.

    Raises:
        ConfigError: One line saying which file and what is wrong.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise ConfigError(f"{flag}: cannot read {path}: {reason}") from None
    message = message_class()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as error:
        name = message_class.DESCRIPTOR.name
        raise ConfigError(f"{flag}: {path} is not a valid {name}: {error}") from None
    return message
