"""Request bodies parsed as TensorFlow Serving's rapidjson settings parse them.

TF Serving accepts `NaN`, `Inf`, `Infinity` (and their negatives), ignores
bytes after a complete document, and reports errors as `JSON Parse error:
<rapidjson's reason> at offset: <n>`. Bodies are parsed with orjson, which
is fast; only when it declines one does the iterative parser below run,
which has rapidjson's grammar and messages and no limit on nesting depth.
"""

import math
import re

import orjson

from mnist_serving.status import ServingError


def _invalid_argument(message):
    return ServingError("INVALID_ARGUMENT", message)


def parse_json(body):
    """Parses a request body the way TF Serving's rapidjson settings do.

    NaN, Inf, Infinity and their negatives are accepted; bytes after a
    complete document are ignored; errors name rapidjson's reason and offset.

    Args:
        body: The request body (bytes).

    Returns:
        The parsed document (any JSON value; callers check it is an object).

    Raises:
        ServingError: INVALID_ARGUMENT with `JSON Parse error: ...`.
    """
    if not body:
        raise _invalid_argument("JSON Parse error: The document is empty")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        # orjson refuses NaN tokens, trailing bytes and documents nested
        # deeper than 1024 levels, which rapidjson accepts: parse again slowly.
        return _RapidJsonParser(body).parse()


_WHITESPACE = re.compile(rb"[ \t\n\r]*")
_NUMBER = re.compile(rb"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_PLAIN_STRING = re.compile(rb'[^"\\\x00-\x1f]*')
_HEX4 = re.compile(rb"[0-9a-fA-F]{4}")
_ESCAPES = {
    ord('"'): '"',
    ord("\\"): "\\",
    ord("/"): "/",
    ord("b"): "\b",
    ord("f"): "\f",
    ord("n"): "\n",
    ord("r"): "\r",
    ord("t"): "\t",
}


class _RapidJsonParser:
    """An iterative JSON parser with rapidjson's grammar and error messages.

    Used only when orjson declines a body, so it favours faithfulness over
    speed; it never recurses, so no nesting depth can exhaust the stack.
    """

    def __init__(self, body):
        self.data = bytes(body)
        self.position = 0

    def fail(self, reason, offset=None):
        offset = self.position if offset is None else offset
        raise _invalid_argument(f"JSON Parse error: {reason} at offset: {offset}")

    def skip_whitespace(self):
        self.position = _WHITESPACE.match(self.data, self.position).end()

    def peek(self):
        return self.data[self.position : self.position + 1]

    def parse(self):
        self.skip_whitespace()
        if self.position >= len(self.data):
            self.fail("The document is empty.")
        # Each open container is [container, pending_key]; values are
        # attached to the innermost one as they complete.
        stack = []
        while True:
            value = self.parse_scalar_or_open(stack)
            while True:
                if value is not _OPENED:
                    if not stack:
                        return value  # rapidjson stops at the end of the root.
                    container = stack[-1]
                    if isinstance(container[0], list):
                        container[0].append(value)
                    else:
                        container[0][container[1]] = value
                elif not stack[-1][2]:
                    # A container just opened: check for its immediate end.
                    stack[-1][2] = True
                    self.skip_whitespace()
                    closer = b"]" if isinstance(stack[-1][0], list) else b"}"
                    if self.peek() == closer:
                        self.position += 1
                        value = stack.pop()[0]
                        continue
                    if isinstance(stack[-1][0], dict):
                        stack[-1][1] = self.parse_member_name()
                    break
                container = stack[-1]
                self.skip_whitespace()
                next_byte = self.peek()
                if isinstance(container[0], list):
                    if next_byte == b",":
                        self.position += 1
                        break
                    if next_byte == b"]":
                        self.position += 1
                        value = stack.pop()[0]
                        continue
                    self.fail("Missing a comma or ']' after an array element.")
                if next_byte == b",":
                    self.position += 1
                    self.skip_whitespace()
                    container[1] = self.parse_member_name()
                    break
                if next_byte == b"}":
                    self.position += 1
                    value = stack.pop()[0]
                    continue
                self.fail("Missing a comma or '}' after an object member.")

    def parse_member_name(self):
        if self.peek() != b'"':
            self.fail("Missing a name for object member.")
        name = self.parse_string()
        self.skip_whitespace()
        if self.peek() != b":":
            self.fail("Missing a colon after a name of object member.")
        self.position += 1
        return name

    def parse_scalar_or_open(self, stack):
        self.skip_whitespace()
        next_byte = self.peek()
        if next_byte == b"[":
            self.position += 1
            stack.append([[], None, False])
            return _OPENED
        if next_byte == b"{":
            self.position += 1
            stack.append([{}, None, False])
            return _OPENED
        if next_byte == b'"':
            return self.parse_string()
        for literal, value in ((b"true", True), (b"false", False), (b"null", None)):
            if next_byte == literal[:1]:
                if self.data.startswith(literal, self.position):
                    self.position += len(literal)
                    return value
                self.fail("Invalid value.")
        return self.parse_number()

    def parse_number(self):
        start = self.position
        negative = self.peek() == b"-"
        rest = start + 1 if negative else start
        sign = -1.0 if negative else 1.0
        if self.data.startswith(b"NaN", rest):
            self.position = rest + 3
            return math.nan
        if self.data.startswith(b"Inf", rest):
            length = 8 if self.data.startswith(b"Infinity", rest) else 3
            self.position = rest + length
            return sign * math.inf
        match = _NUMBER.match(self.data, start)
        if match is None:
            self.fail("Invalid value.", rest if negative else start)
        end = match.end()
        following = self.data[end : end + 1]
        if following == b"." and match.group(1) is None and match.group(2) is None:
            self.fail("Miss fraction part in number.", end + 1)
        if following in (b"e", b"E") and match.group(2) is None:
            exponent_start = end + 1
            if self.data[exponent_start : exponent_start + 1] in (b"+", b"-"):
                exponent_start += 1
            self.fail("Miss exponent in number.", exponent_start)
        self.position = end
        text = match.group(0)
        if match.group(1) is None and match.group(2) is None:
            number = int(text)
            if -(2**63) <= number < 2**64:
                return number
        value = float(text)
        if math.isinf(value):
            self.fail("Number too big to be stored in double.", start)
        return value

    def parse_string(self):
        self.position += 1  # The opening quote.
        pieces = []
        while True:
            match = _PLAIN_STRING.match(self.data, self.position)
            pieces.append(match.group(0).decode("utf-8", "surrogateescape"))
            self.position = match.end()
            next_byte = self.peek()
            if next_byte == b'"':
                self.position += 1
                return "".join(pieces)
            if next_byte == b"":
                self.fail("Missing a closing quotation mark in string.")
            if next_byte != b"\\":
                # A control character inside a string.
                if next_byte == b"\x00":
                    self.fail("Missing a closing quotation mark in string.")
                self.fail("Invalid encoding in string.")
            escape_offset = self.position
            code = self.data[self.position + 1 : self.position + 2]
            if code == b"u":
                pieces.append(self.parse_unicode_escape())
                continue
            if not code or code[0] not in _ESCAPES:
                self.fail("Invalid escape character in string.", escape_offset)
            pieces.append(_ESCAPES[code[0]])
            self.position += 2

    def parse_unicode_escape(self):
        self.position += 2
        first = self.read_hex4()
        if 0xD800 <= first <= 0xDBFF:
            if self.data[self.position : self.position + 2] != b"\\u":
                self.fail("The surrogate pair in string is invalid.")
            self.position += 2
            second = self.read_hex4()
            if not 0xDC00 <= second <= 0xDFFF:
                self.fail("The surrogate pair in string is invalid.")
            return chr(0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00))
        if 0xDC00 <= first <= 0xDFFF:
            self.fail("The surrogate pair in string is invalid.")
        return chr(first)

    def read_hex4(self):
        match = _HEX4.match(self.data, self.position)
        if match is None:
            self.fail("Incorrect hex digit after \\u escape in string.")
        self.position = match.end()
        return int(match.group(0), 16)


_OPENED = object()
