"""Small pieces shared by the command-line scripts."""

import argparse
import urllib.parse

from mnist_serving import config


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, unless there is none or the help already says it."""

    def _get_help_string(self, action):
        help_text = action.help or ""
        if action.default is None or action.default is False or "default" in help_text:
            return help_text
        return super()._get_help_string(action)


def parse_bool(text):
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


def add_bool_flag(parser, *names, default=False, help=None):
    """Adds a flag that is true alone (`-p`) and also takes a value (`-p False`, `--x=true`)."""
    parser.add_argument(*names, type=parse_bool, nargs="?", const=True, default=default, help=help)


def server_url(text):
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
