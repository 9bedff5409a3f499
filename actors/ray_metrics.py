"""Copies raysys's metrics into Ray's metrics API, so the Ray dashboard shows them.

Ray exports them with its ``ray_`` prefix on each node's metrics port. The canonical,
unprefixed names (``/metrics`` of the Serve app) stay what alerts and Grafana query. Values are
the system-wide totals read from Redis (:mod:`raysys.metrics`), set as gauges every interval by
the Coordinator: a Ray counter could only add this process's share and would restart from zero
with the actor.
"""

from __future__ import annotations

import logging

from ray.util import metrics as ray_metrics

from raysys import metrics

log = logging.getLogger(__name__)


class RayMetricsMirror:
    def __init__(self) -> None:
        self._gauges: dict[str, ray_metrics.Gauge] = {}

    def publish(self, snap: metrics.Snapshot) -> int:
        """Set one Ray gauge per sample of ``snap``; return how many samples were set."""
        n = 0
        for value, labels, name in ((v, lab, key.split("{", 1)[0])
                                    for key, (v, lab) in metrics.flat(snap).items()):
            gauge = self._gauges.get(name)
            if gauge is None:
                gauge = ray_metrics.Gauge(name, description=f"raysys {name} (system-wide)",
                                          tag_keys=tuple(sorted(labels)))
                self._gauges[name] = gauge
            gauge.set(value, tags=labels)
            n += 1
        return n
