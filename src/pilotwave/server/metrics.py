"""Prometheus metrics: counters updated on the hot path, queue gauges read from the database at scrape."""

from __future__ import annotations

from collections.abc import Iterator

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from pilotwave.store.db import Database
from pilotwave.store.schema import jobs, pilots

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_WAIT_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 60, 300, 1800, 3600, 6 * 3600)


class _QueueCollector(Collector):
    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterator[GaugeMetricFamily]:
        by_queue = GaugeMetricFamily(
            "pilotwave_jobs", "Jobs by queue and state (not final)", labels=["queue", "state"]
        )
        by_pilot = GaugeMetricFamily("pilotwave_pilots", "Pilots by state", labels=["state"])
        with self.db.read() as conn:
            rows = conn.execute(
                sa.select(jobs.c.queue, jobs.c.state, sa.func.count())
                .where(jobs.c.state.in_(["pending", "queued", "running"]))
                .group_by(jobs.c.queue, jobs.c.state)
            ).all()
            prows = conn.execute(
                sa.select(pilots.c.state, sa.func.count()).group_by(pilots.c.state)
            ).all()
        for queue, state, n in rows:
            by_queue.add_metric([queue, state], n)
        for state, n in prows:
            by_pilot.add_metric([state], n)
        yield by_queue
        yield by_pilot


class Metrics:
    def __init__(self, db: Database) -> None:
        self.registry = CollectorRegistry()
        self.submitted = Counter(
            "pilotwave_jobs_submitted", "Jobs submitted", ["queue"], registry=self.registry
        )
        self.claimed = Counter(
            "pilotwave_jobs_claimed", "Jobs handed to pilots", registry=self.registry
        )
        self.claims = Counter(
            "pilotwave_claim_requests", "Claim requests from pilots", registry=self.registry
        )
        self.ended = Counter(
            "pilotwave_attempts_ended",
            "Attempts ended, by outcome",
            ["outcome"],
            registry=self.registry,
        )
        self.queue_wait = Histogram(
            "pilotwave_queue_wait_seconds",
            "Submit to claim",
            buckets=_WAIT_BUCKETS,
            registry=self.registry,
        )
        self.request_latency = Histogram(
            "pilotwave_request_seconds",
            "API request latency by route",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_QueueCollector(db))

    def render(self) -> bytes:
        return generate_latest(self.registry)
