"""Server-side batching: concurrent requests merged into one model run.

With `--enable_batching`, each (model, version, signature) gets a queue.
Batch threads take from the queues whatever is waiting (up to
`max_batch_size` rows, whole requests only), run the signature once on the
concatenated inputs and hand every request its slice of the outputs. A batch
starts when it is full, or when its oldest request has waited
`batch_timeout_micros` and a batch thread is free; with the default timeout
of 0 a batch simply gathers what arrived while the threads were busy, which
is what makes batching pay on a small machine.

Parameters come from `--batching_parameters_file`, a text
`BatchingParameters` as TF Serving reads it; requests bigger than
`max_batch_size` are refused, and with `enable_large_batch_splitting` those
bigger than `max_execution_batch_size` run in pieces;
batches may be padded up to `allowed_batch_sizes` with copies of their first
row, and inputs of different lengths padded with their first element when
`pad_variable_length_inputs` is true.
"""

import collections
import logging
import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnist_serving.serving.config_protos import BatchingParametersProto, parse_text_file
from mnist_serving.serving.errors import ConfigError, ServingError
from mnist_serving.serving.limits import DEADLINE_MESSAGE, Job
from mnist_serving.serving.loaded_version import LoadedVersion
from mnist_serving.serving.metrics import Metrics

LOGGER = logging.getLogger("model_server")


@dataclass
class BatchingParameters:
    """Batching settings, with TF Serving's defaults."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = os.cpu_count() or 1
    thread_pool_name: str = "model_server_batch_threads"
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False
    enable_large_batch_splitting: bool = False
    max_execution_batch_size: int = 0  # 0: same as max_batch_size.


def read_batching_parameters(path: str | Path) -> BatchingParameters:
    """Parses and checks a `--batching_parameters_file`.

    Raises:
        ConfigError: Unreadable file, invalid text proto, or values TF Serving refuses.
    """
    proto = parse_text_file(path, BatchingParametersProto, "--batching_parameters_file")
    parameters = BatchingParameters()
    for name in (
        "max_batch_size",
        "batch_timeout_micros",
        "max_enqueued_batches",
        "num_batch_threads",
        "thread_pool_name",
        "enable_large_batch_splitting",
        "max_execution_batch_size",
    ):
        if proto.HasField(name):
            setattr(parameters, name, getattr(proto, name).value)
    parameters.allowed_batch_sizes = tuple(proto.allowed_batch_sizes)
    parameters.pad_variable_length_inputs = proto.pad_variable_length_inputs
    check_batching_parameters(parameters)
    return parameters


def check_batching_parameters(parameters: BatchingParameters) -> None:
    """Raises ConfigError for values TF Serving would refuse."""
    if parameters.max_batch_size < 1:
        raise ConfigError("max_batch_size must be positive")
    if parameters.batch_timeout_micros < 0:
        raise ConfigError("batch_timeout_micros must be non-negative")
    if parameters.max_enqueued_batches < 1:
        raise ConfigError("max_enqueued_batches must be positive")
    if parameters.num_batch_threads < 1:
        raise ConfigError("num_batch_threads must be positive")
    if parameters.max_execution_batch_size < 0:
        raise ConfigError("max_execution_batch_size must be non-negative")
    sizes = parameters.allowed_batch_sizes
    if sizes:
        if any(size < 1 for size in sizes) or list(sizes) != sorted(set(sizes)):
            raise ConfigError(
                "allowed_batch_sizes entries must be positive and in increasing order"
            )
        expected = execution_batch_size(parameters)
        if sizes[-1] != expected:
            name = (
                "max_batch_size"
                if expected == parameters.max_batch_size
                else "max_execution_batch_size"
            )
            raise ConfigError(
                f"Last entry in allowed_batch_sizes must match {name}; last "
                f"entry was {sizes[-1]}; expected {expected}"
            )


def execution_batch_size(parameters: BatchingParameters) -> int:
    """The most rows one model run takes.

    `max_batch_size` (also the largest request accepted), unless large batch
    splitting is on and `max_execution_batch_size` is set: requests are then
    cut into pieces of at most that many rows.
    """
    if parameters.enable_large_batch_splitting and parameters.max_execution_batch_size > 0:
        return min(parameters.max_execution_batch_size, parameters.max_batch_size)
    return parameters.max_batch_size


class _Task:
    """One request (or one piece of a split request) waiting for its batch."""

    __slots__ = ("done", "enqueued", "error", "job", "outputs", "shape_key", "size", "tensors")

    def __init__(self, tensors, size, shape_key, job):
        self.tensors = tensors
        self.size = size
        self.shape_key = shape_key
        self.job = job
        self.enqueued = time.monotonic()
        self.done = threading.Event()
        self.outputs = None
        self.error = None


class _Queue:
    """The waiting tasks of one (model, version, signature)."""

    def __init__(self, servable, signature_key):
        self.servable = servable
        self.signature_key = signature_key
        self.tasks = collections.deque()
        self.rows = 0


class BatchScheduler:
    """Queues per servable signature, drained by a pool of batch threads."""

    def __init__(self, parameters: BatchingParameters, metrics: Metrics | None = None):
        self.parameters = parameters
        self.metrics = metrics
        self._execution_limit = execution_batch_size(parameters)
        self._queues = {}
        self._condition = threading.Condition()
        self._stopping = False
        self._threads = [
            threading.Thread(
                target=self._work, name=f"{parameters.thread_pool_name}_{index}", daemon=True
            )
            for index in range(parameters.num_batch_threads)
        ]
        for thread in self._threads:
            thread.start()

    def close(self, timeout: float = 30.0) -> None:
        """Stops the batch threads once the queued work is done (waits `timeout` s)."""
        with self._condition:
            self._stopping = True
            self._condition.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))

    def forget_version(self, model_name: str, version: int) -> None:
        """Drops the empty queues of an unloaded version (the others drain first)."""
        with self._condition:
            for key in [k for k in self._queues if k[:2] == (model_name, version)]:
                if not self._queues[key].tasks:
                    del self._queues[key]

    def run(
        self,
        servable: LoadedVersion,
        signature_key: str,
        tensors: dict[str, np.ndarray],
        job: Job,
    ) -> dict[str, np.ndarray]:
        """Runs a request through its queue; returns alias -> numpy outputs.

        Args:
            servable: The LoadedVersion.
            signature_key: The signature to run.
            tensors: alias -> numpy input.
            job: The request's deadline (DEADLINE_EXCEEDED after it) and
                abandonment: a queued task whose job is over is dropped.

        Raises:
            ServingError: Bad batch dimensions, a full queue, the model's own
                error, or DEADLINE_EXCEEDED.
        """
        size = _batch_size(tensors)
        if size == 0:
            return servable.run(signature_key, tensors)
        if size > self.parameters.max_batch_size:
            raise ServingError(
                "INVALID_ARGUMENT",
                f"Task size {size} is larger than maximum input batch size "
                f"{self.parameters.max_batch_size}",
            )
        limit = self._execution_limit
        if size > limit:
            # Only with enable_large_batch_splitting: the request runs in pieces.
            pieces = [
                {alias: value[start : start + limit] for alias, value in tensors.items()}
                for start in range(0, size, limit)
            ]
        else:
            pieces = [tensors]
        tasks = [self._submit(servable, signature_key, piece, job) for piece in pieces]
        for task in tasks:
            if not task.done.wait(job.remaining()):
                raise ServingError("DEADLINE_EXCEEDED", DEADLINE_MESSAGE)
            if task.error is not None:
                raise task.error
        if len(tasks) == 1:
            return tasks[0].outputs
        return {
            alias: np.concatenate([task.outputs[alias] for task in tasks])
            for alias in tasks[0].outputs
        }

    def _submit(self, servable, signature_key, tensors, job):
        if self.parameters.pad_variable_length_inputs:
            shape_key = tuple(sorted((alias, value.ndim) for alias, value in tensors.items()))
        else:
            shape_key = tuple(sorted((alias, value.shape[1:]) for alias, value in tensors.items()))
        task = _Task(tensors, _batch_size(tensors), shape_key, job)
        # A version unloaded and loaded again is a new servable with its own
        # queue; the old queue still drains the requests it holds.
        key = (servable.model_name, servable.version, signature_key, id(servable))
        with self._condition:
            queue = self._queues.get(key)
            if queue is None:
                queue = self._queues[key] = _Queue(servable, signature_key)
            enqueued_batches = math.ceil((queue.rows + task.size) / self._execution_limit)
            # Batches already running are not counted, as in TF Serving.
            if enqueued_batches > self.parameters.max_enqueued_batches:
                raise ServingError(
                    "UNAVAILABLE",
                    "The batch scheduling queue to which this task was submitted is full",
                )
            queue.tasks.append(task)
            queue.rows += task.size
            self._condition.notify()
        if self.metrics is not None:
            self.metrics.batch_input_size.observe(task.size)
        return task

    def _take_batch(self):
        """A ready batch (queue, tasks), or the seconds until one may be ready."""
        now = time.monotonic()
        timeout = self.parameters.batch_timeout_micros / 1e6
        limit = self._execution_limit
        soonest = None
        for queue in list(self._queues.values()):
            _drop_tasks_nobody_waits_for(queue)
            if not queue.tasks:
                continue
            head = queue.tasks[0]
            waited = now - head.enqueued
            if queue.rows < limit and waited < timeout:
                remaining = timeout - waited
                soonest = remaining if soonest is None else min(soonest, remaining)
                continue
            batch = []
            rows = 0
            kept = collections.deque()
            while queue.tasks:
                task = queue.tasks.popleft()
                if task.shape_key == head.shape_key and rows + task.size <= limit:
                    batch.append(task)
                    rows += task.size
                else:
                    kept.append(task)
            queue.tasks = kept
            queue.rows -= rows
            # Serve the other queues first next time.
            key = next(k for k, v in self._queues.items() if v is queue)
            self._queues[key] = self._queues.pop(key)
            return queue, batch
        return soonest

    def _work(self):
        while True:
            with self._condition:
                while True:
                    taken = self._take_batch()
                    if isinstance(taken, tuple):
                        break
                    if self._stopping and taken is None:
                        return
                    self._condition.wait(taken)
            queue, batch = taken
            self._run_batch(queue, batch)

    def _run_batch(self, queue, batch):
        started = time.monotonic()
        if self.metrics is not None:
            for task in batch:
                self.metrics.batch_queuing_latency.labels(self.parameters.thread_pool_name).observe(
                    (started - task.enqueued) * 1e6
                )
        try:
            merged, rows, padded_rows = self._merge(batch)
            if self.metrics is not None:
                self.metrics.batch_processed_size.observe(padded_rows)
                if padded_rows > rows:
                    self.metrics.batch_padding_size.labels(str(padded_rows)).observe(
                        padded_rows - rows
                    )
            outputs = queue.servable.run(queue.signature_key, merged)
            for alias, value in outputs.items():
                if value.ndim == 0 or value.shape[0] != padded_rows:
                    raise ServingError(
                        "FAILED_PRECONDITION",
                        f"Batched output tensor {alias} has shape {list(value.shape)}: its 0th "
                        "dimension does not equal the sum of the 0th dimension sizes of the "
                        f"input tensors ({padded_rows})",
                    )
            offset = 0
            for task in batch:
                task.outputs = {
                    alias: value[offset : offset + task.size] for alias, value in outputs.items()
                }
                offset += task.size
        except ServingError as error:
            for task in batch:
                task.error = error
        except Exception as error:
            LOGGER.exception("Batch failed")
            for task in batch:
                task.error = ServingError("INTERNAL", f"{type(error).__name__}: {error}")
        finally:
            for task in batch:
                task.done.set()

    def _merge(self, batch):
        """Concatenates a batch's inputs; returns (tensors, rows, padded rows)."""
        rows = sum(task.size for task in batch)
        padded_rows = rows
        for allowed in self.parameters.allowed_batch_sizes:
            if allowed >= rows:
                padded_rows = allowed
                break
        merged = {}
        for alias in batch[0].tensors:
            parts = [task.tensors[alias] for task in batch]
            if self.parameters.pad_variable_length_inputs:
                parts = _pad_to_common_shape(parts)
            if padded_rows > rows:
                first_row = parts[0][:1]
                parts.append(np.repeat(first_row, padded_rows - rows, axis=0))
            merged[alias] = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return merged, rows, padded_rows


def _batch_size(tensors):
    """The shared 0th dimension of a request's inputs, or TF Serving's error."""
    size = None
    for value in tensors.values():
        if np.ndim(value) == 0:
            raise ServingError(
                "INVALID_ARGUMENT",
                "Batching session Run() input tensors must have at least one dimension",
            )
        if size is not None and value.shape[0] != size:
            raise ServingError(
                "INVALID_ARGUMENT",
                "Batching session Run() input tensors must have equal 0th-dimension size",
            )
        size = value.shape[0]
    return size or 0


def _drop_tasks_nobody_waits_for(queue):
    """Removes the tasks whose deadline has passed or whose client has gone: not computed."""
    if not any(task.job.is_over() for task in queue.tasks):
        return
    kept = collections.deque()
    for task in queue.tasks:
        try:
            task.job.check()
        except ServingError as error:
            queue.rows -= task.size
            task.error = error
            task.done.set()
        else:
            kept.append(task)
    queue.tasks = kept


def _pad_to_common_shape(parts):
    """Pads every part to the largest size in each dimension but the 0th.

    As TF Serving does, the padding value is each tensor's first element.
    """
    largest = [max(part.shape[axis] for part in parts) for axis in range(1, parts[0].ndim)]
    padded = []
    for part in parts:
        widths = [(0, 0)] + [(0, size - part.shape[axis + 1]) for axis, size in enumerate(largest)]
        if any(width for _, width in widths) and part.size:
            fill = part.reshape(-1)[0]
            padded.append(np.pad(part, widths, mode="constant", constant_values=fill))
        else:
            padded.append(part)
    return padded
