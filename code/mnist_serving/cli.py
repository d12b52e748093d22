"""Small pieces shared by the command-line scripts."""

import argparse


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
