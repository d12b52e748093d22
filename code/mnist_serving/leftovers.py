"""What killed exports and saves leave behind, and its removal by the next one.

An export writes its version into a hidden staging folder beside the versions
(`.export-<version>-...`, about 100 MB) and renames it into place; an
overwrite first moves the old version aside (`.retired-<version>-...`). A save
writes a hidden temporary file beside the model (`.cnnModel.....h5`). A writer
killed before its rename (SIGKILL, a power cut, a container stopped) leaves
these behind, and nothing else would ever remove them.

So each writer names them after itself, `<prefix><host>-<pid>-<random>`, and
the next export or save into the same place removes the ones that are stale,
with a line on stderr for each:

- the writer ran on this host and its process no longer exists;
- or its writer cannot be checked (another host sharing the folder, or a name
  from before writers were named) and nothing in it changed for
  `STALE_AFTER_SECONDS`.

A leftover whose writer is a live process on this host is never removed, however
old. A version that a killed overwrite had moved aside, with nothing put in its
place, is put back rather than removed.
"""

import os
import re
import shutil
import socket
import sys
import time
from pathlib import Path

# Leftovers of writers that cannot be checked are removed after a day untouched:
# an export takes minutes and a save seconds.
STALE_AFTER_SECONDS = 24 * 3600

# What follows a leftover's prefix: the writer's host and process ID, then
# tempfile's random part; or, in names from before writers were named, the
# random part alone (8 of tempfile's characters).
_WRITER = re.compile(r"(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)-[a-z0-9_]+")
_UNNAMED_WRITER = re.compile(r"[a-z0-9_]{8}")
_EXPORT_STAGING = re.compile(r"\.export-(?P<version>\d+)-(?P<writer>.+)")
_RETIRED_VERSION = re.compile(r"\.retired-(?P<version>\d+)-(?P<writer>.+)")


def _host() -> str:
    """This host's name, reduced to the characters of a `_WRITER` host."""
    return re.sub(r"[^A-Za-z0-9]", "_", socket.gethostname())[:64] or "localhost"


def _writer() -> str:
    return f"{_host()}-{os.getpid()}-"


def export_staging_prefix(version: int) -> str:
    """The name of an export's staging folder, before tempfile's random part."""
    return f".export-{version}-{_writer()}"


def retired_version_prefix(version: int) -> str:
    """The name of the folder an overwrite moves the old version into, before the random part."""
    return f".retired-{version}-{_writer()}"


def temporary_file_prefix(path: Path) -> str:
    """The name of a save's temporary file for `path`, before the random part and suffix."""
    return f".{Path(path).stem}.{_writer()}"


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # Signal 0 checks that the process exists, and sends nothing.
    except ProcessLookupError:
        return False
    except PermissionError:  # Another user's process.
        return True
    except (OverflowError, ValueError):  # No process has such a number.
        return False
    return True


def _files(entry: Path):
    """`entry` and, for a folder, everything in it, without following links."""
    yield entry
    if entry.is_dir() and not entry.is_symlink():
        for folder, subfolders, names in os.walk(entry):
            for name in subfolders + names:
                yield Path(folder) / name


def _why_stale(entry: Path, writer: str) -> str | None:
    """Why a leftover may be removed, or None: its writer is alive, unknown or too recent."""
    named = _WRITER.fullmatch(writer)
    if named is None and _UNNAMED_WRITER.fullmatch(writer) is None:
        return None  # Not a name a writer gives: not ours to remove.
    # Signal 0 asks whether a process exists only on POSIX (on Windows it is Ctrl+C).
    if named is not None and named["host"] == _host() and os.name == "posix":
        pid = int(named["pid"])
        return None if _process_exists(pid) else f"its process, {pid}, is gone"
    try:
        newest = max(path.lstat().st_mtime for path in _files(entry))
    except OSError:  # Removed meanwhile by another writer.
        return None
    idle = time.time() - newest
    return f"untouched for {idle / 3600:.0f} hours" if idle > STALE_AFTER_SECONDS else None


def _report(line: str) -> None:
    print(line, file=sys.stderr)


def _remove(entry: Path, left_by: str, why: str) -> None:
    try:
        size = sum(path.lstat().st_size for path in _files(entry) if not path.is_dir())
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    except FileNotFoundError:  # Removed meanwhile by another writer.
        return
    except OSError as error:
        _report(f"Could not remove {entry}, left by {left_by}: {error.strerror or error}")
        return
    _report(
        f"Removed {entry} ({size / 2**20:.1f} MiB), left by {left_by} that did not finish ({why})"
    )


def _stale(folder: Path, pattern: re.Pattern):
    """(entry, match, why) for the stale leftovers in `folder` whose names match `pattern`."""
    for entry in sorted(folder.iterdir()):
        match = pattern.fullmatch(entry.name)
        why = _why_stale(entry, match["writer"]) if match else None
        if why is not None:
            yield entry, match, why


def clean_export_base(export_base: str | Path) -> None:
    """Removes the stale staging folders of exports under a model's base path.

    A version that an overwrite had moved aside is put back when its number
    is still free (the overwrite was killed between its two renames).
    """
    export_base = Path(export_base)
    if not export_base.is_dir():
        return
    for entry, match, why in _stale(export_base, _RETIRED_VERSION):
        old, version = entry / "old", export_base / match["version"]
        if old.is_dir() and not version.exists():
            try:
                old.rename(version)
            except OSError as error:
                _report(f"Could not restore {version} from {old}: {error.strerror or error}")
                continue
            _report(
                f"Restored version {match['version']} of {export_base}: an overwrite that did "
                f"not finish had moved it into {entry.name} ({why})"
            )
        _remove(entry, "an overwrite", why)
    for entry, _, why in _stale(export_base, _EXPORT_STAGING):
        _remove(entry, "an export", why)


def clean_temporary_files(path: str | Path) -> None:
    """Removes the stale temporary files of saves of `path`, beside it."""
    path = Path(path)
    if not path.parent.is_dir():
        return
    pattern = re.compile(rf"\.{re.escape(path.stem)}\.(?P<writer>.+){re.escape(path.suffix)}")
    for entry, _, why in _stale(path.parent, pattern):
        _remove(entry, "a save", why)
