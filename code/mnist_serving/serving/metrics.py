"""Serving metrics under TF Serving's names, exported by prometheus_client.

TF Serving keeps its metrics under paths such as `/tensorflow/serving/request_count`
and exports them with every character outside `[a-zA-Z0-9_]` replaced by
`:`, so `:tensorflow:serving:request_count{model_name="m",status="OK"} 3`.
prometheus_client holds the values (thread-safe) and writes the text format
(escaping, histogram buckets, `_sum` and `_count`).

One difference in presentation: prometheus_client's text format names every
counter's samples `<name>_total`, whereas TF Serving's counter has no suffix.
To keep TF Serving's sample names (what dashboards query), `request_count` is
exported as an untyped family with the exact name.

The page is off unless `--monitoring_config_file` holds
`prometheus_config { enable: true }`; its path defaults to
`/monitoring/prometheus/metrics`.
"""

import re
from collections.abc import Iterator
from pathlib import Path

import prometheus_client
from prometheus_client.core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

from mnist_serving.serving.config_protos import MonitoringConfigProto, parse_text_file

DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"
# TF Serving's samplers: microseconds, 10 * 1.8^k for k < 33 (about 20 minutes).
LATENCY_BUCKETS = tuple(float(f"{10 * 1.8**index:.6g}") for index in range(33))
# Batch sizes: 1, 2, 4, ... 8192.
SIZE_BUCKETS = tuple(2.0**index for index in range(14))

# The `_created` gauges prometheus_client adds are not part of TF Serving's page.
prometheus_client.disable_created_metrics()


def read_monitoring_config(path: str | Path) -> str | None:
    """The Prometheus path a monitoring config enables, or None when disabled.

    Raises:
        ConfigError: Unreadable file or invalid MonitoringConfig.
    """
    config = parse_text_file(path, MonitoringConfigProto, "--monitoring_config_file")
    if not config.prometheus_config.enable:
        return None
    return config.prometheus_config.path or DEFAULT_PROMETHEUS_PATH


def metric_name(path: str) -> str:
    """TF Serving's exported name of a metric path: `/a/b-c` -> `:a:b:c`."""
    return re.sub(r"[^a-zA-Z0-9_]", ":", path)


class _SuffixFreeCounters(Collector):
    """Re-exports counters with TF Serving's sample names (no `_total`), untyped."""

    def __init__(self, counters: list[prometheus_client.Counter]):
        self.counters = counters

    def collect(self) -> Iterator[Metric]:
        for counter in self.counters:
            for family in counter.collect():
                untyped = Metric(family.name, family.documentation, "unknown")
                for sample in family.samples:
                    if sample.name == family.name + "_total":
                        untyped.add_sample(family.name, sample.labels, sample.value)
                yield untyped


class Metrics:
    """The metrics model_server.py keeps, named as TF Serving names them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)

        def histogram(path, documentation, buckets, *labels):
            return prometheus_client.Histogram(
                metric_name(path), documentation, labels, buckets=buckets, registry=self.registry
            )

        # Not registered itself: `_SuffixFreeCounters` exports it.
        self.request_count = prometheus_client.Counter(
            metric_name("/tensorflow/serving/request_count"),
            "The total number of requests.",
            ("model_name", "status"),
            registry=None,
        )
        self.registry.register(_SuffixFreeCounters([self.request_count]))
        self.request_latency = histogram(
            "/tensorflow/serving/request_latency",
            "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
            LATENCY_BUCKETS,
            "model_name",
            "API",
            "entrypoint",
        )
        self.batch_input_size = histogram(
            "/tensorflow/serving/batching_session/input_batch_size",
            "Tracks the batch size distribution on the inputs by model.",
            SIZE_BUCKETS,
        )
        self.batch_processed_size = histogram(
            "/tensorflow/serving/batching_session/processed_batch_size",
            "Tracks the batch size distribution on processing by model.",
            SIZE_BUCKETS,
        )
        self.batch_padding_size = histogram(
            "/tensorflow/serving/batching_session/padding_size",
            "Tracks the padding size distribution on batches by model.",
            SIZE_BUCKETS,
            "execution_batch_size",
        )
        self.batch_queuing_latency = histogram(
            "/tensorflow/serving/batching_session/queuing_latency",
            "Tracks the latency (in microseconds) for tasks to be queued.",
            LATENCY_BUCKETS,
            "thread_pool_name",
        )

    def prometheus_page(self) -> bytes:
        """The whole page in Prometheus' text format."""
        return prometheus_client.generate_latest(self.registry)
