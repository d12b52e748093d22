"""Serving metrics, exported in Prometheus text format as TF Serving names them.

TF Serving keeps its metrics under paths such as `/tensorflow/serving/request_count`
and exports them with every character outside `[a-zA-Z0-9_]` replaced by
`:`, so `:tensorflow:serving:request_count{model_name="m",status="OK"} 3`.
Histograms (TensorFlow "samplers") give `_bucket{...,le="..."}` lines with
cumulative counts, then `_sum` and `_count`.

The page is off unless `--monitoring_config_file` holds
`prometheus_config { enable: true }`; its path defaults to
`/monitoring/prometheus/metrics`.
"""

import re
import threading

from mnist_serving.text_protos import MonitoringConfigProto, parse_text_file

DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"


def read_monitoring_config(path):
    """The Prometheus path a monitoring config enables, or None when disabled.

    Raises:
        text_protos.ProtoTextError: Unreadable file or invalid MonitoringConfig.
    """
    config = parse_text_file(path, MonitoringConfigProto, "--monitoring_config_file")
    if not config.prometheus_config.enable:
        return None
    return config.prometheus_config.path or DEFAULT_PROMETHEUS_PATH


def exponential_buckets(scale, growth, count):
    """TensorFlow's `Buckets::Exponential`: `count` limits from `scale`, then +Inf."""
    return [scale * growth**index for index in range(count)]


def _metric_name(path):
    name = re.sub(r"[^a-zA-Z0-9_]", ":", path)
    return "_" + name if name[:1].isdigit() else name


def _label_value(value):
    return str(value).replace("\\", "\\\\").replace('"', '\\"')


def _number(value):
    """A double as absl::StrCat writes it: six significant digits."""
    text = f"{value:.6g}"
    return text


class Counter:
    """A monotonically increasing count per label combination."""

    kind = "counter"

    def __init__(self, path, *label_names):
        self.name = _metric_name(path)
        self.label_names = label_names
        self._values = {}
        self._lock = threading.Lock()

    def increment(self, *labels, amount=1):
        """Adds `amount` to the cell of `labels`."""
        with self._lock:
            self._values[labels] = self._values.get(labels, 0) + amount

    def lines(self):
        """Prometheus text lines."""
        with self._lock:
            cells = sorted(self._values.items())
        lines = [f"# TYPE {self.name} counter"]
        for labels, value in cells:
            pairs = ",".join(
                f'{name}="{_label_value(label)}"'
                for name, label in zip(self.label_names, labels, strict=True)
            )
            lines.append(f"{self.name}{{{pairs}}} {value}")
        return lines


class Histogram:
    """A distribution with fixed bucket limits per label combination."""

    kind = "histogram"

    def __init__(self, path, bucket_limits, *label_names):
        self.name = _metric_name(path)
        self.limits = list(bucket_limits)
        self.label_names = label_names
        self._cells = {}
        self._lock = threading.Lock()

    def add(self, value, *labels):
        """Records one sample for `labels`."""
        index = len(self.limits)
        for position, limit in enumerate(self.limits):
            if value < limit:
                index = position
                break
        with self._lock:
            cell = self._cells.get(labels)
            if cell is None:
                cell = self._cells[labels] = [[0] * (len(self.limits) + 1), 0.0]
            cell[0][index] += 1
            cell[1] += value

    def lines(self):
        """Prometheus text lines."""
        with self._lock:
            cells = sorted(
                (labels, (list(counts), total)) for labels, (counts, total) in self._cells.items()
            )
        lines = [f"# TYPE {self.name} histogram"]
        for labels, (counts, total) in cells:
            pairs = [
                f'{name}="{_label_value(label)}"'
                for name, label in zip(self.label_names, labels, strict=True)
            ]
            prefix = f"{self.name}_bucket{{" + "".join(pair + "," for pair in pairs)
            cumulative = 0
            for position, count in enumerate(counts):
                cumulative += count
                limit = _number(self.limits[position]) if position < len(self.limits) else "+Inf"
                lines.append(f'{prefix}le="{limit}"}} {cumulative}')
            joined = ",".join(pairs)
            lines.append(f"{self.name}_sum{{{joined}}} {_number(total)}")
            lines.append(f"{self.name}_count{{{joined}}} {cumulative}")
        return lines


class Metrics:
    """The metrics model_server.py keeps, named as TF Serving names them."""

    def __init__(self):
        # Microseconds; 10 * 1.8^k for k < 33 covers up to about 20 minutes.
        latency_buckets = exponential_buckets(10, 1.8, 33)
        size_buckets = exponential_buckets(1, 2, 14)
        self.request_count = Counter("/tensorflow/serving/request_count", "model_name", "status")
        self.request_latency = Histogram(
            "/tensorflow/serving/request_latency",
            latency_buckets,
            "model_name",
            "API",
            "entrypoint",
        )
        self.runtime_latency = Histogram(
            "/tensorflow/serving/runtime_latency",
            latency_buckets,
            "model_name",
            "API",
            "runtime",
        )
        self.request_example_counts = Histogram(
            "/tensorflow/serving/request_example_counts", size_buckets, "model"
        )
        self.batch_input_size = Histogram(
            "/tensorflow/serving/batching_session/input_batch_size", size_buckets
        )
        self.batch_processed_size = Histogram(
            "/tensorflow/serving/batching_session/processed_batch_size", size_buckets
        )
        self.batch_padding_size = Histogram(
            "/tensorflow/serving/batching_session/padding_size",
            size_buckets,
            "execution_batch_size",
        )
        self.batch_queuing_latency = Histogram(
            "/tensorflow/serving/batching_session/queuing_latency",
            latency_buckets,
            "thread_pool_name",
        )
        self._all = [
            self.batch_input_size,
            self.batch_padding_size,
            self.batch_processed_size,
            self.batch_queuing_latency,
            self.request_count,
            self.request_example_counts,
            self.request_latency,
            self.runtime_latency,
        ]

    def prometheus_page(self):
        """The whole page: every metric that has at least one cell."""
        lines = []
        for metric in self._all:
            metric_lines = metric.lines()
            if len(metric_lines) > 1:
                lines.extend(metric_lines)
        return "\n".join(lines) + "\n"
