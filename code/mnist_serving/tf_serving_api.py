"""TensorFlow Serving's generated gRPC modules (tensorflow-serving-api), without TensorFlow.

tensorflow-serving-api ships the generated code of TF Serving's protos and
gRPC stubs (`predict_pb2`, `prediction_service_pb2_grpc`, ...). They import
TensorFlow's own protos (`TensorProto`, `SignatureDef`, ...) from the
`tensorflow` package, whose `__init__` loads the whole TensorFlow runtime
(about 650 MB and seconds of start-up) although those modules are plain
generated code. A client needs only the messages, so `load()` imports them
with a bare stand-in for the `tensorflow` package (its folder, without its
`__init__`), then takes the stand-in and the `tensorflow.*` modules it
brought in out of `sys.modules` again: a later `import tensorflow` is the
real one, protobuf accepts the same descriptors a second time and gives back
the same message classes. When TensorFlow is already imported (the server,
the tests), the ordinary imports are used.
"""

import importlib
import importlib.util
import sys
import threading
import types

_MODULES = (
    "tensorflow_serving.apis.predict_pb2",
    "tensorflow_serving.apis.get_model_metadata_pb2",
    "tensorflow_serving.apis.get_model_status_pb2",
    "tensorflow_serving.apis.model_management_pb2",
    "tensorflow_serving.apis.prediction_service_pb2_grpc",
    "tensorflow_serving.apis.model_service_pb2_grpc",
)
_lock = threading.Lock()
_loaded: types.SimpleNamespace | None = None


def load() -> types.SimpleNamespace:
    """The generated modules, as attributes named after them (`predict_pb2`, ...).

    Loaded once per process, with the TensorFlow protos they use
    (`TensorProto`, `SignatureDef`) as the fields of their messages.
    """
    global _loaded
    with _lock:
        if _loaded is None:
            if "tensorflow" in sys.modules:
                modules = [importlib.import_module(name) for name in _MODULES]
            else:
                modules = _import_without_tensorflow_runtime()
            _loaded = types.SimpleNamespace(
                **{module.__name__.rsplit(".", 1)[1]: module for module in modules}
            )
        return _loaded


def _import_without_tensorflow_runtime() -> list[types.ModuleType]:
    spec = importlib.util.find_spec("tensorflow")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("tensorflow-serving-api needs the tensorflow package installed")
    stand_in = types.ModuleType("tensorflow")
    stand_in.__path__ = list(spec.submodule_search_locations)
    before = set(sys.modules)
    sys.modules["tensorflow"] = stand_in
    try:
        return [importlib.import_module(name) for name in _MODULES]
    finally:
        for name in list(sys.modules):
            if (name == "tensorflow" or name.startswith("tensorflow.")) and name not in before:
                del sys.modules[name]
