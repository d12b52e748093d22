"""Training on several workers with `tf.distribute.MultiWorkerMirroredStrategy`.

`TF_CONFIG`, the variable that Kubeflow's TFJob operator and TensorFlow's
documentation set, describes the cluster:

    {"cluster": {"worker": ["host1:2222", "host2:2222"]},
     "task": {"type": "worker", "index": 0}}

Every worker holds a copy of the model; each trains on its own share of every
epoch and the gradients are summed across workers at every step (all-reduce),
so all copies stay the same. The chief (the `chief` task, or worker 0 when
there is none) validates, evaluates and writes the model, the metrics and the
figures; the other workers write nothing.

A worker that dies or never comes up stops the others through TensorFlow's own
mechanisms, not through a watchdog of ours:

- Every worker registers with the coordination service, which the chief runs.
  Registration is a barrier: unless all workers have registered within the
  start-up timeout, each fails with DEADLINE_EXCEEDED.
- Each worker sends heartbeats to the coordination service. One that stays
  silent for the worker timeout is declared dead; the error is sent to all the
  others, which abort their collective operations.
- Every collective operation (the gradients' all-reduce) has the worker timeout
  too (`tf.distribute.experimental.CommunicationOptions`): a worker that lives
  but no longer takes part stops the others as well.
- A worker that is killed closes its connections: the others fail at their next
  step, at once.
"""

import contextlib
import dataclasses
import json
import math
import os
import re
import sys
import tempfile
from pathlib import Path

# Roles that MultiWorkerMirroredStrategy trains with; "ps" and "evaluator" tasks
# belong to other strategies.
TRAINING_JOBS = ("chief", "worker")
# Bound on the TF_CONFIG text and the workers it names (Kubernetes jobs of
# thousands of workers are not this trainer's business).
MAX_TF_CONFIG_CHARACTERS = 1_000_000
MAX_WORKERS = 1000
# How long the other workers wait for the chief to evaluate and write
# everything after training. A chief that dies is noticed sooner, through its
# heartbeats: this only bounds a chief that lives but hangs.
CHIEF_FINISH_TIMEOUT_SECONDS = 3600
FINISHED_BARRIER = "mnist_serving/training_finished"
TASK_NAME = re.compile(r"/job:(\w+)/(?:replica:\d+/)?task:(\d+)")

# Set once this process has started TensorFlow's distributed runtime.
_runtime_started = False


class ClusterError(ValueError):
    """TF_CONFIG is not a cluster this trainer can run in."""


class WorkerError(RuntimeError):
    """Another worker died, hung or never came up."""


@dataclasses.dataclass(frozen=True)
class Cluster:
    """This process's place in the cluster that TF_CONFIG describes.

    Attributes:
        jobs: job name ("chief", "worker") -> addresses of its tasks.
        task_type: this process's job.
        task_index: this process's index in its job.
    """

    jobs: dict = dataclasses.field(default_factory=dict)
    task_type: str = "worker"
    task_index: int = 0

    @property
    def workers(self) -> int:
        """All processes that train, the chief included (1 without TF_CONFIG)."""
        return max(1, sum(len(addresses) for addresses in self.jobs.values()))

    @property
    def worker_index(self) -> int:
        """0 for the chief, then 1, 2... for the others, as TensorFlow numbers them."""
        if self.task_type == "chief":
            return 0
        return len(self.jobs.get("chief", [])) + self.task_index

    @property
    def is_chief(self) -> bool:
        return self.worker_index == 0

    @property
    def is_distributed(self) -> bool:
        return self.workers > 1

    @property
    def leader(self) -> str:
        """The task that runs the coordination service: the chief."""
        job = "chief" if "chief" in self.jobs else "worker"
        return f"/job:{job}/replica:0/task:0"

    @property
    def name(self) -> str:
        return f"/job:{self.task_type}/replica:0/task:{self.task_index}"


def cluster_from_environment(environment=os.environ) -> Cluster:
    """Reads TF_CONFIG: no variable, or a cluster of one worker, is a single worker.

    Raises:
        ClusterError: TF_CONFIG is not JSON, names other tasks than chief and
            worker, or gives this task a role or index the cluster lacks.
    """
    text = environment.get("TF_CONFIG", "").strip()
    if not text:
        return Cluster()
    if len(text) > MAX_TF_CONFIG_CHARACTERS:
        raise ClusterError(f"TF_CONFIG is over {MAX_TF_CONFIG_CHARACTERS:,} characters")
    try:
        tf_config = json.loads(text)
    except json.JSONDecodeError as error:
        raise ClusterError(f"TF_CONFIG is not valid JSON: {error}") from None
    if not isinstance(tf_config, dict):
        raise ClusterError("TF_CONFIG must be a JSON object with 'cluster' and 'task'")
    jobs = tf_config.get("cluster") or {}
    task = tf_config.get("task") or {}
    if not isinstance(jobs, dict) or not isinstance(task, dict):
        raise ClusterError("TF_CONFIG's 'cluster' and 'task' must be JSON objects")
    others = sorted(set(jobs) - set(TRAINING_JOBS))
    if others:
        raise ClusterError(
            f"TF_CONFIG names {', '.join(others)} tasks; MultiWorkerMirroredStrategy "
            "trains with 'chief' and 'worker' tasks only"
        )
    for job, addresses in jobs.items():
        if not isinstance(addresses, list) or not all(isinstance(a, str) for a in addresses):
            raise ClusterError(f"TF_CONFIG's '{job}' must be a list of host:port addresses")
    if len(jobs.get("chief", [])) > 1:
        raise ClusterError("TF_CONFIG names more than one chief")
    if sum(len(addresses) for addresses in jobs.values()) > MAX_WORKERS:
        raise ClusterError(f"TF_CONFIG names more than {MAX_WORKERS} workers")
    if not jobs:
        return Cluster()
    task_type, task_index = task.get("type"), task.get("index", 0)
    if task_type not in jobs:
        raise ClusterError(
            f"TF_CONFIG's task type {task_type!r} is not one of the cluster's: "
            + ", ".join(sorted(jobs))
        )
    if not isinstance(task_index, int) or not 0 <= task_index < len(jobs[task_type]):
        raise ClusterError(
            f"TF_CONFIG's task index {task_index!r} is not in 0..{len(jobs[task_type]) - 1}"
        )
    return Cluster(jobs=jobs, task_type=task_type, task_index=task_index)


def steps_per_epoch(images: int, batch_size: int, workers: int) -> int:
    """Synchronous steps in one epoch: each worker takes `batch_size` images of its share.

    Every worker gets the same share, `images // workers` (see
    `training.make_training_dataset`), so all take the same number of steps; the
    learning-rate schedule counts these global steps.
    """
    return math.ceil(images // workers / batch_size)


def start(cluster: Cluster, worker_timeout: float, startup_timeout: float):
    """Joins the cluster: returns its `MultiWorkerMirroredStrategy` once all workers are up.

    Call it before anything else uses TensorFlow: the coordination service is
    configured with TensorFlow's context, before the context starts.

    Raises:
        WorkerError: Not all workers registered within `startup_timeout`.
    """
    global _runtime_started
    import tensorflow as tf
    from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
    from tensorflow.python.eager import context

    # The strategy configures the same service with TensorFlow's defaults (10 s
    # heartbeats, no registration deadline) unless it is configured already.
    context.context().configure_coordination_service(
        service_type="standalone",
        service_leader=cluster.leader,
        heartbeat_timeout_in_ms=int(worker_timeout * 1000),
        cluster_register_timeout_in_ms=int(startup_timeout * 1000),
        coordinated_jobs=[
            coordination_config_pb2.CoordinatedJob(name=job, num_tasks=len(addresses))
            for job, addresses in cluster.jobs.items()
        ],
    )
    # Registration as a barrier, so that a worker that never comes up fails the
    # others after startup_timeout (without it, they wait an hour for it).
    context.context().coordination_service.cluster_register_with_barrier = True
    _runtime_started = True
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=worker_timeout)
    with worker_errors(
        cluster,
        timeout=f"not all {cluster.workers} workers came up within {startup_timeout:g} s "
        "(--startup-timeout)",
        consequence="the training did not start",
    ):
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)


def scope(strategy):
    """The strategy's scope, or no scope at all for a single worker (None)."""
    return contextlib.nullcontext() if strategy is None else strategy.scope()


def fit(
    model,
    strategy,
    cluster: Cluster,
    make_dataset,
    epochs: int,
    steps: int,
    worker_timeout: float,
    validation=None,
    verbose: int = 2,
    callbacks=(),
):
    """`Model.fit` for several workers: Keras's own `train_step` in step on every worker.

    Keras 3's `Model.fit` does not run under MultiWorkerMirroredStrategy (it
    reduces its logs along a batch axis they do not have: keras-team/keras
    issue 20585), so this is TensorFlow's custom training loop for multiple
    workers around the model's own `train_step`, with Keras's callbacks for the
    progress lines and the history.

    Args:
        model: A compiled model, built in `strategy.scope()`.
        make_dataset: `make_dataset(shards, shard_index)` -> this worker's
            batches (see `training.make_training_dataset`).
        epochs, steps: Epochs, and synchronous steps in each (`steps_per_epoch`).
        worker_timeout: The collectives' timeout given to `start`, for the message.
        validation: `(inputs, one-hot labels)` to validate on at the end of each
            epoch, on this worker alone (the chief); None on the others.
        verbose: As `Model.fit`'s.
        callbacks: Keras callbacks, as `Model.fit`'s.

    Returns:
        The `keras.callbacks.History`, as `Model.fit` returns it.

    Raises:
        WorkerError: Another worker died or stopped answering.
    """
    import keras
    import tensorflow as tf

    dataset = strategy.distribute_datasets_from_function(
        lambda context: make_dataset(
            context.num_input_pipelines, context.input_pipeline_id
        ).repeat()
    )

    @tf.function
    def train_step(iterator):
        strategy.run(model.train_step, args=(next(iterator),))
        # Read outside the replicas, the metrics are summed over all workers.
        return model.get_metrics_result()

    validator = _Validator(model, *validation) if validation is not None else None
    callbacks = keras.callbacks.CallbackList(
        list(callbacks),
        add_history=True,
        add_progbar=verbose != 0,
        model=model,
        verbose=verbose,
        epochs=epochs,
        steps=steps,
    )
    with worker_errors(
        cluster,
        timeout=f"another worker did not answer within {worker_timeout:g} s (--worker-timeout)",
        consequence="the training stopped",
    ):
        iterator = iter(dataset)
        callbacks.on_train_begin()
        logs = {}
        for epoch in range(epochs):
            model.reset_metrics()
            callbacks.on_epoch_begin(epoch)
            for step in range(steps):
                callbacks.on_train_batch_begin(step)
                logs = _numbers(train_step(iterator))
                callbacks.on_train_batch_end(step, logs)
            if validator is not None:
                logs = {**logs, **validator.validate()}
            callbacks.on_epoch_end(epoch, logs)
        callbacks.on_train_end(logs)
    return model.history


class _Validator:
    """Validates a distributed model on this worker alone, as `Model.fit` would.

    The distributed model's own `evaluate` would wait for the other workers;
    a plain copy, refreshed with the current weights, evaluates alone.
    """

    def __init__(self, model, inputs, labels):
        self.model, self.inputs, self.labels = model, inputs, labels
        self.copy = local_copy(model)
        self.copy.compile(loss=model.loss, metrics=["accuracy"])

    def validate(self) -> dict:
        self.copy.set_weights(self.model.get_weights())
        results = self.copy.evaluate(self.inputs, self.labels, verbose=0, return_dict=True)
        return {f"val_{name}": float(value) for name, value in results.items()}


def local_copy(model):
    """A copy of a distributed model outside the strategy, with its current weights.

    It predicts, evaluates and saves on this worker alone, exactly as a model
    trained on one worker does.
    """
    import keras

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def discard_model(model) -> None:
    """What the other workers do with the trained model: save it, then remove it.

    TensorFlow's documented pattern: every worker saves, the others to a
    temporary folder that they remove, so that only the chief writes into the
    project.
    """
    from mnist_serving import training

    with tempfile.TemporaryDirectory(prefix="mnist_serving-worker-") as folder:
        training.save_model(model, Path(folder) / "cnnModel.h5")


def wait_for_everyone(cluster: Cluster) -> None:
    """All workers meet here once the chief has written everything.

    The other workers wait for the chief, so that they stay in the cluster (and
    keep sending heartbeats) until it is done, then all end together. The
    chief's files are complete by then: if another worker is gone, the chief
    says so on stderr and ends well.

    Raises:
        WorkerError: On the other workers, when the chief died before the end.
    """
    from tensorflow.python.eager import context

    try:
        with worker_errors(
            cluster,
            timeout=f"the chief did not finish within {CHIEF_FINISH_TIMEOUT_SECONDS} s",
            consequence="the workers did not end together",
        ):
            context.context().wait_at_barrier(FINISHED_BARRIER, CHIEF_FINISH_TIMEOUT_SECONDS * 1000)
    except WorkerError as error:
        if not cluster.is_chief:
            raise
        print(f"warning: {error} (the model and its metrics were written)", file=sys.stderr)


@contextlib.contextmanager
def worker_errors(cluster: Cluster, timeout: str, consequence: str):
    """Turns TensorFlow's errors about other workers into one clear `WorkerError`.

    Args:
        timeout: What a DEADLINE_EXCEEDED means where this is used.
        consequence: What a lost worker means there, after "... stopped or
            cannot be reached; ".
    """
    import tensorflow as tf

    try:
        yield
    except tf.errors.DeadlineExceededError:
        raise WorkerError(timeout) from None
    except (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.CancelledError) as error:
        tasks = [
            f"/job:{job}/task:{index}"
            for job, index in TASK_NAME.findall(str(error))
            if f"/job:{job}/replica:0/task:{index}" != cluster.name
        ]
        who = tasks[0] if tasks else "another worker"
        raise WorkerError(f"{who} stopped or cannot be reached; {consequence}") from None


@contextlib.contextmanager
def prompt_exit():
    """Ends a process that started the distributed runtime as soon as its work is done.

    TensorFlow's distributed runtime has no clean shutdown (its gRPC server
    says so in the log) and takes 5 to 25 s to tear down at exit; once the
    files are written, this process ends at once, with the same status and
    message as `sys.exit`. Single-worker runs exit as usual.
    """
    try:
        yield
    except SystemExit as exit:
        if not _runtime_started:
            raise
        _end_process(exit.code)
    if _runtime_started:
        _end_process(0)


def _end_process(code) -> None:
    if isinstance(code, str):
        print(code, file=sys.stderr)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)


def _numbers(logs) -> dict:
    return {name: float(value) for name, value in logs.items()}
