"""Several training workers on this machine, to try multi-worker training without a cluster.

Each worker is a process of its own with the TF_CONFIG that a cluster would
give it (Kubeflow's TFJob operator sets the same variable): the addresses of all
workers, on free 127.0.0.1 ports, and its own index. Worker 0 is the chief.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading

HOST = "127.0.0.1"
# How long the other workers may take to end once the chief has, or once they
# were asked to stop, before they are killed.
GRACE_SECONDS = 15
# Exit status after Ctrl-C, as shells give it.
INTERRUPTED = 128 + signal.SIGINT


def free_ports(count: int, host: str = HOST) -> list[int]:
    """Ports that are free on `host` now (the operating system picks them)."""
    sockets = []
    try:
        for _ in range(count):
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.bind((host, 0))
            sockets.append(listener)
        return [listener.getsockname()[1] for listener in sockets]
    finally:
        for listener in sockets:
            listener.close()


def tf_config(addresses: list[str], index: int) -> str:
    """The TF_CONFIG of worker `index` in a cluster of workers at `addresses`."""
    return json.dumps(
        {"cluster": {"worker": list(addresses)}, "task": {"type": "worker", "index": index}}
    )


class LocalCluster:
    """Runs `command` as N workers of one cluster and prefixes their output lines.

    Use it as a context manager: leaving the block stops the workers that are
    still running.
    """

    def __init__(self, command: list[str], workers: int, output=None):
        self.command = list(command)
        self.workers = workers
        self.output = output or sys.stdout
        self.processes: list[subprocess.Popen] = []
        self._readers: list[threading.Thread] = []
        self._lock = threading.Lock()

    def start(self) -> "LocalCluster":
        """Starts all workers (stopping those already started if one cannot be)."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        addresses = [f"{HOST}:{port}" for port in free_ports(self.workers)]
        for index in range(self.workers):
            environment = dict(
                os.environ, TF_CONFIG=tf_config(addresses, index), PYTHONUNBUFFERED="1"
            )
            process = subprocess.Popen(
                self.command,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
                env=environment,
            )
            self.processes.append(process)
            reader = threading.Thread(
                target=self._forward, args=(index, process.stdout), daemon=True
            )
            reader.start()
            self._readers.append(reader)

    def _forward(self, index, stream):
        prefix = f"[worker {index}] "
        for line in stream:
            with self._lock:
                self.output.write(prefix + line)
                self.output.flush()

    def wait(self) -> int:
        """Waits for the chief, then for the others; returns the chief's exit status.

        When the chief fails, the others are stopped at once; when it succeeds,
        they are given `GRACE_SECONDS` to end with it.
        """
        status = exit_status(self.processes[0].wait())
        self.stop(signal_number=signal.SIGINT if status else None)
        return status

    def stop(self, signal_number=signal.SIGINT) -> None:
        """Sends `signal_number` (if any) to the running workers; kills those left after the grace.

        SIGINT, as Ctrl-C: a worker says that it was interrupted and leaves
        the model as it was.
        """
        running = [process for process in self.processes if process.poll() is None]
        if signal_number is not None:
            for process in running:
                process.send_signal(signal_number)
        for process in running:
            try:
                process.wait(GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for reader in self._readers:
            reader.join(timeout=5)

    def __enter__(self) -> "LocalCluster":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


def run(command: list[str], workers: int) -> int:
    """Runs `command` as a cluster of `workers` local workers; returns the chief's exit status.

    Ctrl-C or SIGTERM stops all workers (status `INTERRUPTED`).
    """

    def interrupt(signal_number, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        with LocalCluster(command, workers) as cluster:
            return cluster.wait()
    except KeyboardInterrupt:
        return INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous)


def exit_status(returncode: int) -> int:
    """A process's exit status as a shell reports it: 128 + N when killed by signal N."""
    return 128 - returncode if returncode < 0 else returncode
