"""Small pieces shared by the command-line scripts."""

import argparse
import re
import urllib.parse

from mnist_serving import config


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, unless there is none or the help already says it."""

    def _get_help_string(self, action):
        help_text = action.help or ""
        if action.default is None or action.default is False or "default" in help_text:
            return help_text
        return super()._get_help_string(action)


def parse_bool(text: str) -> bool:
    """True/False in the spellings people type: true, False, yes, 0, on...

    Raises:
        argparse.ArgumentTypeError: Anything else.
    """
    value = str(text).strip().lower()
    if value in ("true", "t", "yes", "y", "1", "on"):
        return True
    if value in ("false", "f", "no", "n", "0", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got '{text}'")


def add_bool_flag(
    parser: argparse.ArgumentParser, *names: str, default: bool = False, help: str | None = None
) -> None:
    """Adds a flag that is true alone (`-p`) and also takes a value (`-p False`, `--x=true`)."""
    parser.add_argument(*names, type=parse_bool, nargs="?", const=True, default=default, help=help)


# Suffixes of sizes and counts on the command line: k, M, G (either case),
# the first, second and third power of the base.
_SCALE_SUFFIXES = ("", "k", "M", "G")


def _scaled_number(text, base, what):
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([kmg]?)\s*", str(text), re.IGNORECASE)
    if match:
        power = [suffix.lower() for suffix in _SCALE_SUFFIXES].index(match[2].lower())
        value = int(float(match[1]) * base**power)
    else:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected {what} such as 500k or 64M, got '{text}'")
    return value


def byte_size(text: str) -> int:
    """A size in bytes: `4096`, `500k` (KiB), `64M` (MiB), `1.5G` (GiB).

    Raises:
        argparse.ArgumentTypeError: Not a positive size.
    """
    return _scaled_number(text, 1024, "a size in bytes")


def pixel_count(text: str) -> int:
    """A number of pixels: `40000`, `500k` (thousands), `64M` (millions, megapixels).

    Raises:
        argparse.ArgumentTypeError: Not a positive number.
    """
    return _scaled_number(text, 1000, "a number of pixels")


def scaled_text(value: int, base: int) -> str:
    """`value` with the largest suffix that divides it: 67108864, 1024 -> '64M'."""
    for power in range(len(_SCALE_SUFFIXES) - 1, 0, -1):
        if value % base**power == 0:
            return f"{value // base**power}{_SCALE_SUFFIXES[power]}"
    return str(value)


def server_url(text: str) -> str:
    """An http(s)://host[:port] address of a model server, checked before anything is sent.

    Raises:
        argparse.ArgumentTypeError: Anything else.
    """
    parts = urllib.parse.urlsplit(text)
    try:
        port_is_valid = parts.port is None or parts.port > 0
    except ValueError:
        port_is_valid = False
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_is_valid:
        raise argparse.ArgumentTypeError(
            f"expected an address such as {config.DEFAULT_SERVER_URL}, got '{text}'"
        )
    return text


# host:port, the host a name, an IPv4 address or a bracketed IPv6 address.
_GRPC_ADDRESS = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):(\d{1,5})")


def grpc_address(text: str) -> str:
    """A host:port address of a model server's gRPC API, checked before anything is sent.

    Raises:
        argparse.ArgumentTypeError: Anything else.
    """
    match = _GRPC_ADDRESS.fullmatch(text)
    if match is None or not 0 < int(match.group(2)) <= 65535:
        raise argparse.ArgumentTypeError(
            f"expected an address such as {config.DEFAULT_GRPC_SERVER}, got '{text}'"
        )
    return text


# The check of --server for each of the client's protocols.
SERVER_ADDRESS_CHECKS = {"rest": server_url, "grpc": grpc_address}
