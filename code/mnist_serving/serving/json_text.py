"""JSON text as TF Serving writes it: string escapes, float digits, quoted values.

TF Serving writes a float with 6 significant digits when they read back as
the same value, else with 9 (float32) or 17 (float64), and quotes offending
request values in its error messages in rapidjson's pretty layout, cut to 256
bytes. Error messages and responses both use these.
"""

import math

import numpy as np

from mnist_serving.text import printable

# Values quoted in error messages are cut to this many bytes, as TF Serving does.
MAX_DEBUG_STRING_BYTES = 256
# rapidjson's PrettyWriter indents by four spaces.
INDENT = "    "

_STRING_ESCAPES = {index: f"\\u{index:04X}" for index in range(0x20)}
_STRING_ESCAPES.update(
    {ord("\b"): "\\b", ord("\f"): "\\f", ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"}
)
_STRING_ESCAPES.update({ord('"'): '\\"', ord("\\"): "\\\\"})


def json_string(text: str) -> str:
    """`text` as a JSON string literal, escaped as rapidjson's writer does."""
    return '"' + text.translate(_STRING_ESCAPES) + '"'


def format_decimal(value: float, double: bool = False) -> str:
    """One float as TF Serving writes it (`WriteDecimal`).

    Six significant digits when they read back as the same float32 (or
    float64 when `double`), otherwise 9 (or 17); `.0` appended to integral
    values; NaN and infinities as bare `NaN`, `Infinity`, `-Infinity`.
    """
    return format_floats(np.array([value], dtype=np.float64 if double else np.float32))[0]


def format_floats(values: np.ndarray) -> list[str]:
    """Formats a flat float32 or float64 array; returns a list of strings."""
    if values.size == 0:
        return []
    is_double = values.dtype == np.float64
    wide = values.astype(np.float64)
    finite = np.isfinite(values)
    with np.errstate(invalid="ignore", over="ignore"):
        texts = np.char.mod("%.6g", wide)
        read_back = texts.astype(np.float64)
        if not is_double:
            read_back = read_back.astype(np.float32)
        imprecise = (read_back != values) & finite
        if imprecise.any():
            texts = texts.astype(object)
            texts[imprecise] = np.char.mod("%.17g" if is_double else "%.9g", wide[imprecise])
    result = texts.tolist()
    for index, text in enumerate(result):
        if "." not in text and "e" not in text:
            if finite[index]:
                result[index] = text + ".0"
            elif text == "nan" or text == "-nan":
                result[index] = "NaN"
            else:
                result[index] = "-Infinity" if text.startswith("-") else "Infinity"
    return result


def debug_string(value: object) -> str:
    """A JSON value as TF Serving quotes it in errors: pretty, cut to 256 bytes."""
    if isinstance(value, float):
        # A lone decimal is written like an output value.
        text = format_decimal(value, double=float(np.float32(value)) != value)
    else:
        text = _pretty(value, MAX_DEBUG_STRING_BYTES + 1)
    encoded = printable(text).encode("utf-8")
    if len(encoded) > MAX_DEBUG_STRING_BYTES:
        encoded = encoded[:MAX_DEBUG_STRING_BYTES]
    return encoded.decode("utf-8", "ignore")  # A character cut in two is dropped.


def _pretty(value, budget):
    """rapidjson PrettyWriter text of `value`, stopping once `budget` chars exist.

    Iterative, so a deeply nested document cannot exhaust the stack.
    """
    pieces = []
    length = 0
    # Work items: ("value", value, level) or ("text", string).
    work = [("value", value, 0)]
    while work and length < budget:
        item = work.pop()
        if item[0] == "text":
            pieces.append(item[1])
            length += len(item[1])
            continue
        _, current, level = item
        if isinstance(current, list | dict) and current:
            inner = INDENT * (level + 1)
            is_list = isinstance(current, list)
            entries = current if is_list else list(current.items())
            closing = "\n" + INDENT * level + ("]" if is_list else "}")
            work.append(("text", closing))
            for index in range(len(entries) - 1, -1, -1):
                entry = entries[index]
                if is_list:
                    work.append(("value", entry, level + 1))
                    prefix = inner
                else:
                    work.append(("value", entry[1], level + 1))
                    prefix = inner + json_string(str(entry[0])) + ": "
                work.append(("text", ("," if index else "") + "\n" + prefix))
            work.append(("text", "[" if is_list else "{"))
            continue
        pieces.append(_scalar_text(current))
        length += len(pieces[-1])
    return "".join(pieces)


def _scalar_text(value):
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return json_string(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return repr(value)
    if isinstance(value, list):
        return "[]"
    if isinstance(value, dict):
        return "{}"
    return str(value)


def json_type_name(value: object) -> str:
    """rapidjson's name of a value's type, as TF Serving's messages use it."""
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"
