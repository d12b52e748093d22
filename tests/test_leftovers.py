"""The next export or save removes what killed ones left, and never a live writer's files.

The leftovers are made by the real writers: export_model.py stopped with
SIGKILL halfway through, and `training.atomic_write` in a process that kills
itself halfway through its write.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from server_fixtures import wait_until

from mnist_serving import config, export, leftovers, savedmodel, training

PYTHON_WITH_CODE = {**os.environ, "PYTHONPATH": str(config.CODE_DIR)}


def hidden(folder):
    return sorted(path.name for path in Path(folder).iterdir() if path.name.startswith("."))


def start_save(target, then):
    """A process that saves `target` with `training.atomic_write` once told to on its stdin.

    Mid-write it runs `then`. It prints "ready" once TensorFlow is imported.
    """
    code = f"""
import os, signal, sys
from pathlib import Path
from mnist_serving import training

def write(temporary):
    Path(temporary).write_bytes(b"model of process %d" % os.getpid())
    {then}

print("ready", flush=True)
sys.stdin.readline()
training.atomic_write({str(target)!r}, write)
"""
    return subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=PYTHON_WITH_CODE,
    )


def tell(process, line):
    process.stdin.write(line + "\n")
    process.stdin.flush()


def test_the_next_save_removes_a_killed_saves_file_and_keeps_a_live_ones(tmp_path, capsys):
    target = tmp_path / "cnnModel.h5"
    live = start_save(target, 'print("writing", flush=True); sys.stdin.readline()')
    killed = start_save(target, "os.kill(os.getpid(), signal.SIGKILL)")
    try:
        assert live.stdout.readline() == killed.stdout.readline() == "ready\n"
        tell(live, "save")
        assert live.stdout.readline() == "writing\n"  # Its temporary file is written.
        [live_file] = hidden(tmp_path)
        tell(killed, "save")
        assert killed.wait(timeout=120) == -signal.SIGKILL
        [dead_file] = set(hidden(tmp_path)) - {live_file}

        training.atomic_write(target, lambda path: Path(path).write_bytes(b"new model"))

        assert hidden(tmp_path) == [live_file]
        assert target.read_bytes() == b"new model"
        assert capsys.readouterr().err == (
            f"Removed {tmp_path / dead_file} (0.0 MiB), left by a save that did not finish "
            f"(its process, {killed.pid}, is gone)\n"
        )
    finally:
        killed.kill()
        killed.communicate()
        live.communicate("go on\n", timeout=120)
    assert live.returncode == 0  # The live save finished as if nothing had happened.
    assert target.read_bytes() == b"model of process %d" % live.pid
    assert hidden(tmp_path) == []


def start_export(model_file, base, version):
    return subprocess.Popen(
        [
            sys.executable,
            str(config.CODE_DIR / "export_model.py"),
            f"--model={model_file}",
            f"--export-base={base}",
            f"--version={version}",
            "--temperature=1",  # The untrained model has no metrics file.
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def staging_folder_of(base, version):
    """The staging folder of an export of `version` once it exists, or None."""
    folders = [name for name in hidden(base) if name.startswith(f".export-{version}-")]
    return folders[0] if folders else None


def test_the_next_export_removes_a_killed_exports_folder_and_keeps_a_live_ones(
    tmp_path, untrained_model, capsys
):
    model_file = tmp_path / "cnnModel.h5"
    training.save_model(untrained_model, model_file)
    base = tmp_path / "models"
    base.mkdir()
    paused = start_export(model_file, base, 5)
    killed = None
    try:
        live_folder = wait_until(lambda: staging_folder_of(base, 5), timeout=300)
        paused.send_signal(signal.SIGSTOP)  # Alive, halfway through its export.
        # Started only now: started with the first, it could finish its
        # export on a busy machine before its staging folder was seen.
        killed = start_export(model_file, base, 6)
        dead_folder = wait_until(lambda: staging_folder_of(base, 6), timeout=300)
        killed.kill()
        killed.wait()

        export.export_model(untrained_model, base, version=7)

        assert hidden(base) == [live_folder]
        assert savedmodel.version_numbers(base) == [7]
        [line] = capsys.readouterr().err.splitlines()
        assert line.startswith(f"Removed {base / dead_folder} (")
        assert line.endswith(
            f"MiB), left by an export that did not finish (its process, {killed.pid}, is gone)"
        )
    finally:
        paused.send_signal(signal.SIGCONT)
        if killed is not None:
            killed.kill()
            killed.wait()
    assert paused.wait(timeout=300) == 0  # The paused export finished, its folder intact.
    assert savedmodel.version_numbers(base) == [5, 7]
    assert hidden(base) == []


def prefix_of_a_process_that_is_gone(function, *arguments):
    """What `leftovers.<function>(*arguments)` gives in another process, which has ended."""
    code = f"from mnist_serving import leftovers; print(leftovers.{function}(*{arguments!r}))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=PYTHON_WITH_CODE
    )
    return result.stdout.strip()


def test_a_version_that_a_killed_overwrite_moved_aside_is_put_back(tmp_path, capsys):
    base = tmp_path / "models"
    retired = base / (prefix_of_a_process_that_is_gone("retired_version_prefix", 2) + "abcd1234")
    (retired / "old").mkdir(parents=True)
    (retired / "old" / "saved_model.pb").write_text("version 2")

    leftovers.clean_export_base(base)

    assert (base / "2" / "saved_model.pb").read_text() == "version 2"
    assert hidden(base) == []
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith(f"Restored version 2 of {base}: an overwrite that did not finish")
    assert lines[1].startswith(f"Removed {retired} (0.0 MiB), left by an overwrite")


def make_leftover(folder, name, hours_ago):
    path = folder / name
    path.mkdir(parents=True)
    (path / "saved_model.pb").write_bytes(b"x" * 2**20)
    moment = time.time() - hours_ago * 3600
    for entry in (path / "saved_model.pb", path):
        os.utime(entry, (moment, moment))
    return path


@pytest.mark.parametrize(
    ("name", "hours_ago", "removed"),
    [
        (".export-3-another_host-123-abcd1234", 25, True),  # Another host: by age.
        (".export-3-another_host-123-abcd1234", 23, False),
        (".export-3-abcd1234", 25, True),  # Named before writers were named.
        (".export-3-abcd1234", 23, False),
        (".export-3-my_own_folder", 1000, False),  # Not a name a writer gives.
    ],
)
def test_a_leftover_whose_writer_cannot_be_checked_goes_after_a_day_untouched(
    tmp_path, capsys, name, hours_ago, removed
):
    leftover = make_leftover(tmp_path, name, hours_ago)
    leftovers.clean_export_base(tmp_path)
    assert leftover.exists() is not removed
    expected = (
        f"Removed {leftover} (1.0 MiB), left by an export that did not finish "
        f"(untouched for {hours_ago} hours)\n"
    )
    assert capsys.readouterr().err == (expected if removed else "")


def test_a_leftover_of_a_live_process_stays_however_old(tmp_path, capsys):
    leftover = make_leftover(tmp_path, leftovers.export_staging_prefix(3) + "abcd1234", 1000)
    leftovers.clean_export_base(tmp_path)
    assert leftover.exists()
    assert capsys.readouterr().err == ""
