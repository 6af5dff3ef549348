"""When has a measuring window seen enough? Confidence intervals and a stopping rule.

A story that measures a distribution (latencies, say) and judges a threshold on
a statistic of it can stop measuring as soon as a confidence interval for that
statistic lies wholly on one side of the threshold: more samples would not
change the verdict. Intervals here are a percentile bootstrap (for quantiles
and their ratios, which have no simple closed form) and Wilson's score interval
(for a proportion such as throttled periods over periods). Everything is pure and
seeded, so a run can be replayed from its samples.

A window that is looked at after every chunk is tested several times; the
default 99% confidence keeps the chance of any wrong early stop below about 5%
over the handful of looks a bounded window allows (Bonferroni: 4 looks x 1%).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

CONFIDENCE = 0.99
RESAMPLES = 2000

Stop = Literal["settled", "maximum reached"]


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile, as the load generator computes it (so a window's
    reported p95 and the one the interval is built around are the same number)."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float

    def side(self, op: str, bound: float) -> bool | None:
        """True when the whole interval satisfies ``<value> op bound``, False when
        none of it does, None while it straddles the bound (not settled)."""
        if op in (">=", ">"):
            if self.low >= bound if op == ">=" else self.low > bound:
                return True
            if self.high < bound if op == ">=" else self.high <= bound:
                return False
            return None
        if op in ("<=", "<"):
            if self.high <= bound if op == "<=" else self.high < bound:
                return True
            if self.low > bound if op == "<=" else self.low >= bound:
                return False
            return None
        raise ValueError(f"an interval cannot settle {op!r}; use >=, >, <= or <")


def bootstrap_quantile_ratio(
    numerator: Sequence[float],
    denominator: Sequence[float],
    p: float,
    *,
    seed: int,
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    floor: float = 0.001,
) -> Interval:
    """Percentile-bootstrap interval for percentile(numerator, p) / percentile(denominator, p),
    resampling the two independent samples separately. ``floor`` keeps a zero
    denominator from dividing by zero, as the story's point estimate does."""
    if not numerator or not denominator:
        raise ValueError("a ratio needs samples on both sides")
    rng = random.Random(seed)

    def ratio(a: Sequence[float], b: Sequence[float]) -> float:
        return percentile(a, p) / max(percentile(b, p), floor)

    stats = sorted(
        ratio(
            rng.choices(numerator, k=len(numerator)), rng.choices(denominator, k=len(denominator))
        )
        for _ in range(resamples)
    )
    tail = (1 - confidence) / 2
    low = stats[max(0, math.floor(tail * resamples))]
    high = stats[min(resamples - 1, math.ceil((1 - tail) * resamples) - 1)]
    return Interval(ratio(numerator, denominator), low, high)


def wilson(successes: int, trials: int, confidence: float = CONFIDENCE) -> Interval:
    """Wilson score interval for a proportion (no trials: the whole of [0, 1])."""
    if trials <= 0:
        return Interval(0.0, 0.0, 1.0)
    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    share = successes / trials
    centre = (share + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(share * (1 - share) / trials + z * z / (4 * trials * trials))
    half /= 1 + z * z / trials
    return Interval(share, max(0.0, centre - half), min(1.0, centre + half))


def stopping(
    settled: bool, samples: int, minimum: int, elapsed: float, maximum: float
) -> Stop | None:
    """The window's stopping rule: stop once the verdict is settled and at least
    ``minimum`` samples are in, or once ``maximum`` seconds have been measured;
    None means measure another chunk."""
    if settled and samples >= minimum:
        return "settled"
    if elapsed >= maximum:
        return "maximum reached"
    return None
