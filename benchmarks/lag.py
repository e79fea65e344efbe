"""The server's event-loop lag, read from outside: its Prometheus histogram scraped from
/metrics before and after a stretch of load, and percentiles of the difference.

The percentiles are interpolated inside buckets as Prometheus's histogram_quantile does; the
buckets (agent.metrics.LOOP_LAG_BUCKETS_S) are 1 to 10 ms wide below 50 ms, which bounds
the error there."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

LAG_METRIC = "voice_agent_event_loop_lag_seconds"


@dataclass(frozen=True)
class LagHistogram:
    bounds: tuple[float, ...]
    """Upper bounds of the buckets, in seconds, ending with +inf."""
    cumulative: tuple[float, ...]
    sum_s: float

    @property
    def count(self) -> int:
        return int(self.cumulative[-1]) if self.cumulative else 0

    def minus(self, earlier: LagHistogram) -> LagHistogram:
        if earlier.bounds != self.bounds:
            raise ValueError("histograms with different buckets")
        return LagHistogram(
            self.bounds,
            tuple(a - b for a, b in zip(self.cumulative, earlier.cumulative, strict=True)),
            self.sum_s - earlier.sum_s,
        )

    def quantile(self, q: float) -> float:
        """Seconds; in the +inf bucket, the largest finite bound (a lower bound)."""
        if self.count == 0:
            return math.nan
        rank = q * self.count
        lower, below = 0.0, 0.0
        for bound, cumulative in zip(self.bounds, self.cumulative, strict=True):
            if cumulative >= rank:
                if math.isinf(bound):
                    return lower
                inside = cumulative - below
                return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
            lower, below = bound, cumulative
        return lower

    def share_above(self, threshold_s: float) -> float:
        """Share of samples above `threshold_s`, which must be a bucket bound."""
        index = self.bounds.index(threshold_s)
        return (self.count - self.cumulative[index]) / self.count if self.count else math.nan

    def max_bound(self) -> float:
        """The upper bound of the highest bucket that holds a sample."""
        for bound, cumulative in zip(self.bounds, self.cumulative, strict=True):
            if cumulative >= self.count:
                return bound
        return math.inf

    def summary(self) -> dict[str, Any]:
        if self.count == 0:
            return {"samples": 0}
        top = self.max_bound()
        return {
            "samples": self.count,
            "mean_ms": round(self.sum_s / self.count * 1000, 3),
            "p50_ms": round(self.quantile(0.5) * 1000, 2),
            "p99_ms": round(self.quantile(0.99) * 1000, 2),
            "share_over_50ms": round(self.share_above(0.05), 5),
            "max_at_most_ms": None if math.isinf(top) else round(top * 1000, 1),
        }


def parse_lag(metrics_text: str) -> LagHistogram:
    for family in text_string_to_metric_families(metrics_text):
        if family.name != LAG_METRIC:
            continue
        buckets = sorted(
            (float(s.labels["le"]), float(s.value))
            for s in family.samples
            if s.name == f"{LAG_METRIC}_bucket"
        )
        total = next(float(s.value) for s in family.samples if s.name == f"{LAG_METRIC}_sum")
        return LagHistogram(tuple(b for b, _ in buckets), tuple(c for _, c in buckets), total)
    raise ValueError(f"/metrics has no {LAG_METRIC}: is the server's loop monitor running?")


async def scrape_lag(http: aiohttp.ClientSession, base_url: str) -> LagHistogram:
    async with http.get(f"{base_url.rstrip('/')}/metrics") as response:
        response.raise_for_status()
        return parse_lag(await response.text())


__all__ = ["LAG_METRIC", "LagHistogram", "parse_lag", "scrape_lag"]
