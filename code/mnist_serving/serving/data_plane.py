"""The data plane: what every transport (REST and gRPC) calls into.

It owns the model manager (versions, labels, status), the batching scheduler,
the pool of worker threads that runs TensorFlow, and the metrics. Transports
parse their protocol, then ask the data plane to resolve a model, run a
signature and report status; they never touch threads or TensorFlow.

TensorFlow runs on a bounded pool of worker threads so that the event loop
never blocks on it: when every worker is busy and the queue behind them is
full, a request is refused at once with UNAVAILABLE (HTTP 503), as TF Serving
answers when its batching queue is full, instead of waiting in an unbounded
queue.

`run` is where every request's size limits are checked and where it waits
for room among the images in flight (`limits`), whatever its transport. Each
request runs as a `limits.Job` (its deadline, and whether its client still
waits): the worker pool sets it for the work it runs, so `run` finds it
without the transports passing it along. Work still queued when its client
goes or its deadline passes is dropped, not computed.
"""

import asyncio
import concurrent.futures
import contextlib
import contextvars
import logging
from collections.abc import Callable
from typing import TypeVar

import numpy as np

from mnist_serving.serving import limits
from mnist_serving.serving.batching import BatchScheduler
from mnist_serving.serving.errors import ServingError
from mnist_serving.serving.loaded_version import LoadedVersion
from mnist_serving.serving.manager import ModelManager
from mnist_serving.serving.metrics import Metrics
from mnist_serving.serving.model_config import ModelConfig
from mnist_serving.serving.options import ServerOptions

LOGGER = logging.getLogger("model_server")
Result = TypeVar("Result")
# The metrics' model_name of requests for a model the server does not serve: one
# label for them all, so that names sent by clients cannot grow the metrics.
UNKNOWN_MODEL_LABEL = ""


class WorkerPool:
    """A fixed number of threads with a bounded queue, used from the event loop."""

    def __init__(self, threads: int, max_queued: int):
        self.threads = threads
        self.capacity = threads + max_queued
        self._executor = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="worker")
        self._pending = 0  # Running or queued; only changed on the event loop's thread.

    async def run(self, work: Callable[[], Result], timeout: float | None) -> Result:
        """Runs `work()` on a worker thread and waits up to `timeout` seconds for it.

        Raises:
            ServingError: UNAVAILABLE at once when the pool and its queue are
                full; DEADLINE_EXCEEDED after `timeout`. A timed-out call
                keeps its thread until TensorFlow returns, and keeps counting
                against the pool's capacity until then.
        """
        if self._pending >= self.capacity:
            raise ServingError(
                "UNAVAILABLE",
                f"The server is at capacity: {self.threads} requests running and "
                f"{self.capacity - self.threads} queued; retry later",
            )
        loop = asyncio.get_running_loop()
        job = limits.Job(timeout)
        context = contextvars.copy_context()
        context.run(limits.CURRENT_JOB.set, job)
        self._pending += 1
        future = self._executor.submit(context.run, work)
        future.add_done_callback(lambda _: _call_soon(loop, self._finished))
        try:
            # Cancelled (client gone) or timed out, the wait cancels the future:
            # work still queued is then dropped without running.
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout)
        except TimeoutError:
            raise ServingError("DEADLINE_EXCEEDED", limits.DEADLINE_MESSAGE) from None
        finally:
            # Work already running stops at its next check (`DataPlane.run`).
            job.abandon()

    @property
    def pending(self) -> int:
        """Requests running or queued."""
        return self._pending

    def _finished(self) -> None:
        self._pending -= 1

    def close(self) -> None:
        """Stops taking work; whatever still runs has no client waiting any more."""
        self._executor.shutdown(wait=False, cancel_futures=True)


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
    """Hands `callback` to the event loop from a worker thread, unless the loop has ended."""
    # RuntimeError: the server stopped while TensorFlow was still computing.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(callback)


class DataPlane:
    """Models, batching, worker threads and metrics behind every transport."""

    def __init__(self, options: ServerOptions):
        self.options = options
        self.metrics = Metrics()
        self.scheduler = None
        if options.batching_parameters is not None:
            self.scheduler = BatchScheduler(options.batching_parameters, self.metrics)
        self.manager = ModelManager(
            list(options.models),
            poll_wait_seconds=options.file_system_poll_wait_seconds,
            warmup_iterations=options.warmup_iterations,
            allow_labels_for_unavailable_models=(
                options.allow_version_labels_for_unavailable_models
            ),
            on_change=self._version_changed,
        )
        self.workers = WorkerPool(
            options.rest_api_num_threads, options.rest_api_max_queued_requests
        )
        self._update_lock = asyncio.Lock()
        self.in_flight = limits.ImagesInFlight(options.max_images_in_flight)

    def _version_changed(self, model_name: str, version: int, state: str) -> None:
        if self.scheduler is not None and state == "END":
            self.scheduler.forget_version(model_name, version)

    async def infer(self, work: Callable[[], Result], deadline: float | None = None) -> Result:
        """Runs `work()` (parse, `run`, encode) on a worker within `--rest_api_timeout_in_ms`.

        `deadline`: the seconds the client gives the request (a gRPC deadline),
        when shorter than the server's limit.
        """
        timeout = self.options.timeout_seconds
        if deadline is not None:
            timeout = deadline if timeout is None else min(timeout, deadline)
        return await self.workers.run(work, timeout)

    async def update_models(self, models: list[ModelConfig]) -> None:
        """Replaces the served models (a config file re-read, a gRPC reload), one update at a time.

        Returns once new models are loaded; the labels are checked first.

        Raises:
            ServingError: A label TF Serving would refuse; nothing changes then.
        """
        async with self._update_lock:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, self.manager.update_models, models)

    def resolve(self, model_name: str, version: int | None, label: str | None) -> LoadedVersion:
        """The loaded version a request addresses (404/400 with TF Serving's messages)."""
        return self.manager.resolve(model_name, version, label)

    def run(
        self, servable: LoadedVersion, signature_key: str, tensors: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """Runs a signature, through the batching queues when batching is on (worker threads).

        The request's size is checked first, then it waits for room among the
        images in flight; it is computed only if its deadline has not passed
        and its client still waits.

        Raises:
            ServingError: A limit of `limits.check_request` (400), the job's
                deadline or abandonment, or the model's own error.
        """
        options = self.options
        images = limits.check_request(
            tensors,
            options.max_images_per_request,
            options.max_pixels_per_image,
            options.max_pixels_per_request,
        )
        job = limits.current_job()
        with self.in_flight.hold(images, job):
            job.check()
            if self.scheduler is not None:
                return self.scheduler.run(servable, signature_key, tensors, job)
            return servable.run(signature_key, tensors)

    def record_request(
        self, model_name: str, api: str, code: str, seconds: float, entrypoint: str
    ) -> None:
        """Counts one request as TF Serving does: every status, and the latency of OK ones.

        Names of models the server does not serve are all counted under
        `UNKNOWN_MODEL_LABEL`, a bounded set of labels whatever clients send.
        """
        if not self.manager.serves(model_name):
            model_name = UNKNOWN_MODEL_LABEL
        self.metrics.request_count.labels(model_name, code).inc()
        if code == "OK":
            self.metrics.request_latency.labels(model_name, api, entrypoint).observe(seconds * 1e6)

    def close(self) -> None:
        """Stops polling, batching and the workers (after the transports stopped)."""
        self.manager.stop()
        if self.scheduler is not None:
            # Whatever is still queued has no client waiting any more.
            self.scheduler.close(timeout=1.0)
        self.workers.close()
