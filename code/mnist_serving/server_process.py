"""model_server.py as a child process: started, watched until it serves, stopped.

`web_demo.py`, the tests and the benchmarks all start the local server this one
way. The server's ports are read from its own start-up log (TF Serving's lines
"Running gRPC ModelServer at ..." and "Exporting HTTP/REST API at: ..."), so
that `--rest_api_port=0` and `--port=0` (free ports) work. The log is drained
by a thread so that the pipe never fills, and its latest lines are kept.
"""

import collections
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from mnist_serving import config

MODEL_SERVER_SCRIPT = config.CODE_DIR / "model_server.py"
# The lines model_server.py (like tensorflow_model_server) logs once each port
# answers; gRPC's comes first.
REST_READY_LINE = re.compile(r"Exporting HTTP/REST API at:([^:]+):(\d+)")
GRPC_READY_LINE = re.compile(r"Running gRPC ModelServer at ([^ ]+):(\d+) ")
# Seconds the server gets to finish its requests and exit once asked to stop.
STOP_SECONDS = 30
# The log lines kept in memory: a server that runs for days keeps only these.
MAX_LOG_LINES = 20_000


class ModelServerProcess:
    """`python model_server.py ARGUMENTS` as a child process, its log watched.

    Args:
        arguments: model_server.py's flags.
        script: The model_server.py to run (another checkout's, for a benchmark).
        echo: A stream every log line is copied to as it comes (none by default).
        new_session: Run the server in a session of its own, so that Ctrl+C in a
            terminal reaches only its parent, which then stops it once.
    """

    def __init__(
        self,
        arguments: Sequence[str],
        *,
        script: Path = MODEL_SERVER_SCRIPT,
        echo: TextIO | None = None,
        new_session: bool = False,
    ):
        self.arguments = [str(argument) for argument in arguments]
        self.process = subprocess.Popen(
            [sys.executable, str(script), *self.arguments],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
            start_new_session=new_session,
        )
        self.lines: collections.deque[str] = collections.deque(maxlen=MAX_LOG_LINES)
        self.port: int | None = None  # REST.
        self.grpc_port: int | None = None
        self._echo = echo
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()

    def _read_log(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            if self._echo is not None:
                self._echo.write(line)
                self._echo.flush()
            if match := GRPC_READY_LINE.search(line):
                self.grpc_port = int(match.group(2))
            if (match := REST_READY_LINE.search(line)) and self.port is None:
                self.port = int(match.group(2))
                self._ready.set()
        self._ready.set()  # It stopped before it served.

    def wait_until_ready(self, timeout: float | None = None) -> int | None:
        """Waits until the server answers; its REST port, or None if it stopped or timed out."""
        self._ready.wait(timeout)
        return self.port

    @property
    def pid(self) -> int:
        """The server's process id."""
        return self.process.pid

    @property
    def log(self) -> str:
        """The lines the server printed so far (the latest MAX_LOG_LINES)."""
        return "\n".join(list(self.lines))

    @property
    def url(self) -> str:
        """The REST API: http://127.0.0.1:<port>."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def grpc_target(self) -> str:
        """The gRPC API: 127.0.0.1:<port>."""
        return f"127.0.0.1:{self.grpc_port}"

    def stop(self, signal_number: int = signal.SIGTERM, timeout: float = STOP_SECONDS) -> int:
        """Sends a signal (SIGTERM: finish and exit), kills after `timeout`; the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal_number)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()
        finally:
            self._reader.join(timeout=5)

    def __enter__(self) -> "ModelServerProcess":
        return self

    def __exit__(self, *_) -> None:
        self.stop()
