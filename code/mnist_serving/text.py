"""Text from outside (file names, URLs, request bodies) made safe to print, log and send.

Python keeps bytes that are not UTF-8 (in a file name, or in a URL's
percent-escapes) as lone surrogates, which no UTF-8 output, JSON or log line
can hold; and control characters in such text could forge or break lines of
a terminal or a log.
"""

import logging
import re

# C0 and C1 control characters and DEL, written as \xNN.
CONTROL_ESCAPES = {code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0))}
# Lone surrogates that stand for no byte (surrogateescape uses U+DC80..U+DCFF),
# such as a JSON string's "\ud800".
_OTHER_SURROGATES = re.compile("[\ud800-\udc7f\udd00-\udfff]")


def printable(text: str) -> str:
    """`text` with every byte that was not UTF-8 (a lone surrogate) replaced by U+FFFD."""
    raw = _OTHER_SURROGATES.sub("\ufffd", text).encode("utf-8", "surrogateescape")
    return raw.decode("utf-8", "replace")


def one_line(text: str) -> str:
    """`printable(text)` with its control characters escaped (`\\x1b`): one line, always."""
    return printable(text).translate(CONTROL_ESCAPES)


class OneLineFormatter(logging.Formatter):
    """A log formatter that keeps each record's message on one line (`one_line`).

    Text from requests (a URL, a model name) can reach a log message; escaped,
    it can neither forge a line nor send a terminal escape. Tracebacks, added
    after the message, keep their lines.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name.
        return one_line(super().formatMessage(record))
