"""The evidence that a stage's drop-off is rising, from counts of its entrants as known at
each age (nights since their entry night, 0 = tonight's), per entry time of day:

* `compare`: how far behind the baseline's hazards of moving on the recent entrants are, by
  now (observed against expected movers, log-rank style, scanned over the last 1, 2, ...
  nights' entrants), and the drop-off they are heading for: the size of the rise, for the
  relative-rise floor, holding an open alert and the message;
* `steps` + `Chart`: the moves at each age — of the customers still in the stage as known the
  night before, how many moved on by the next — as a likelihood ratio against the baseline's
  hazards, averaged over designs of the change and accumulated over entry nights (a one-sided
  CUSUM). Evidence of a slow stage builds up as its cohorts age, at every age up to the
  stage's horizon, and Ville's inequality calibrates it without simulation.

The alternative a design looks for is "drop-off rose by a factor (1 + rise)": the share of
entrants who never move on goes from p to p * (1 + rise), and those who do move on keep the
baseline's timing (cumulative share moved by age a scaled by rho = (1 - p (1 + rise)) / (1 - p)),
among every entrant or among those still in after the fast movers have gone.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from journey_defs.model import AlertPolicy

HOLD_SIGNIFICANCE = 0.05  # an open alert holds while some scan length shows a rise at this level,
HOLD_RISE = 0.5  # of at least this share of the journey's min_relative_rise
DESIGN_RISES = (1, 2, 4, 8)  # designs for every mover: drop-off rose by 1, 2, 4, 8 x min_relative_rise
LATE_RATIOS = (0.7, 0.5, 0.3, 0.1)  # designs for the late movers: their hazard of moving on times these
STAGE_SHARE = 0.75  # of a stage's significance, for its own series (the rest for its slices)
MAX_DROP = 0.99  # an alternative never has every entrant drop: one mover would refute it forever


@dataclass(frozen=True)
class Comparison:
    """The entrants of a stage's last `days` nights against the baseline's hazards of moving on."""

    days: int
    recent_n: int
    moved_on: int          # recent entrants who have reached a later stage by tonight
    expected: float        # how many would have, at the baseline's hazard at each age, of those still in (log-rank)
    variance: float        # of moved_on under those hazards, plus the baseline's own sampling error
    baseline_n: int
    baseline_rate: float   # the baseline's drop-off: not moved on by the horizon's last age
    heading_for: float | None = None  # the recent entrants' drop-off by the same age (see recent_rate)
    evidence: float = 0.0  # log-likelihood ratio of their moves, best of the design rises
    baseline_variance: float = 0.0  # the part of `variance` from the baseline's sampling error

    @property
    def recent_rate(self) -> float:
        """The drop-off the recent entrants are heading for: a life table of their own hazards
        at the ages they have reached and, at the ages they have not, the baseline's scaled by
        their pace so far (movers / expected); without one, the baseline's share moving on
        scaled by that pace."""
        if self.heading_for is not None:
            return self.heading_for
        ratio = self.moved_on / self.expected if self.expected else 1.0
        return min(1.0, max(0.0, 1 - ratio * (1 - self.baseline_rate)))

    @property
    def evidence_p(self) -> float:
        """One-sided p-value of the likelihood ratio (2 log LR ~ chi-square, 1 degree of freedom)."""
        return 0.5 * math.erfc(math.sqrt(self.evidence))

    @property
    def relative_rise(self) -> float:
        if self.baseline_rate:
            return self.recent_rate / self.baseline_rate - 1
        return math.inf if self.recent_rate else 0.0

    @property
    def p_value(self) -> float:
        """One-sided: the chance of this few movers (or fewer) if the stage kept the baseline's pace."""
        if self.variance <= 0:
            return 1.0
        z = (self.expected - self.moved_on - 0.5) / math.sqrt(self.variance)
        return 0.5 * math.erfc(z / math.sqrt(2))

    def large_enough(self, policy: AlertPolicy) -> bool:
        """Opens an alert (with the chart's evidence): the rise passes the journey's floor on
        `min_sample` customers on both sides."""
        return (self.recent_n >= policy.min_sample and self.baseline_n >= policy.min_sample
                and self.relative_rise >= policy.min_relative_rise)

    def holding(self, policy: AlertPolicy) -> bool:
        """Keeps an open alert: the rise still shows, at the lower bars of HOLD_*. Whatever the
        sample sizes: `min_sample` is for opening; a week of entrants dipping below it is not a
        recovery (the p-value already weighs how few they are). Either test will do: movers
        against expected (log-rank) weighs every age alike, the likelihood ratio sees a drop
        confined to late ages."""
        return (self.relative_rise >= HOLD_RISE * policy.min_relative_rise
                and min(self.p_value, self.evidence_p) < HOLD_SIGNIFICANCE)


def compare(at_risk: np.ndarray, movers: np.ndarray, entrants: np.ndarray, h0: np.ndarray,
            baseline_at_risk: np.ndarray, alternatives: tuple[np.ndarray, ...] = ()) -> list[Comparison]:
    """One comparison per scan length k (the entrants of the last 1 .. horizon nights), from
    the recent cohorts' cells [cohort (0 = tonight's), age, time of day] of those at risk and
    those who moved on, for the ages each has reached (zero beyond), their `entrants` as known
    tonight, and the baseline's hazards and at-risk counts [age, time of day]. The baseline's
    sampling error is added per cell; times of day are weighed as in the baseline."""
    ok = (baseline_at_risk > 0)
    h0 = np.where(ok, h0, 0.0)
    risk, moved = np.cumsum(np.where(ok, at_risk, 0), axis=0), np.cumsum(np.where(ok, movers, 0), axis=0)
    expected = (risk * h0).sum(axis=(1, 2))
    own = (risk * h0 * (1 - h0)).sum(axis=(1, 2))
    sampling = np.divide(risk ** 2 * h0 * (1 - h0), baseline_at_risk, out=np.zeros(risk.shape), where=ok).sum(axis=(1, 2))
    weights = baseline_at_risk[0] / baseline_at_risk[0].sum() if baseline_at_risk[0].sum() else np.zeros(h0.shape[1])
    baseline_rate = float((np.prod(1 - h0, axis=0) * weights).sum())
    n, observed = np.cumsum(entrants), moved.sum(axis=(1, 2))
    pace = np.divide(observed, expected, out=np.ones(len(n)), where=expected > 0)[:, None, None]
    recent_h = np.divide(moved, risk, out=np.minimum(1.0, h0[None] * pace), where=risk > 0)
    recent_rate = (np.prod(1 - recent_h, axis=1) * weights).sum(axis=1)
    evidence = np.zeros(len(n))
    if alternatives:  # the designs' hazards: the scan's evidence is the best one's
        evidence = np.maximum(evidence, design_evidence(risk, moved, h0, alternatives).max(axis=0))
    return [Comparison(k + 1, int(n[k]), int(observed[k]), float(expected[k]), float(own[k] + sampling[k]),
                       int(baseline_at_risk[0].sum()), baseline_rate, float(recent_rate[k]), float(evidence[k]),
                       float(sampling[k]))
            for k in range(len(n))]


def steps(counts: np.ndarray, known: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(at risk, moved) per [entry night, age, time of day] from cumulative counts [entry
    night, age, time of day, (entrants, moved on)] as known at each age: the entrants not yet
    moved on as known the night before, and how many of them moved on by tonight. A cell
    whose snapshot, or the one before it, was not published (`known` [entry night, age]) is
    empty: its moves would be counted on the wrong night."""
    entrants, moved = counts[..., 0], counts[..., 1]
    before = np.zeros_like(moved)
    before[:, 1:] = moved[:, :-1]
    valid = known.copy()
    valid[:, 1:] &= known[:, :-1]
    at_risk = np.maximum(entrants - before, 0)
    movers = np.clip(moved - before, 0, at_risk)
    return np.where(valid[..., None], at_risk, 0), np.where(valid[..., None], movers, 0)


def hazard(at_risk: np.ndarray, movers: np.ndarray) -> np.ndarray:
    """Share of those at risk who moved on, per [age, time of day] (0 where none were at risk)."""
    return np.divide(movers, at_risk, out=np.zeros(at_risk.shape), where=at_risk > 0)


def alternative(h0: np.ndarray, rise: float) -> np.ndarray:
    """The hazards [age, time of day] if drop-off rose by `rise`: the movers' timing kept,
    their share scaled by rho (per time of day, from the baseline's drop at the last age)."""
    survival = np.cumprod(1 - h0, axis=0)
    before = np.vstack([np.ones((1, h0.shape[1])), survival[:-1]])
    drop = survival[-1]
    rho = np.divide(1 - np.minimum(drop * (1 + rise), MAX_DROP), 1 - drop, out=np.ones(drop.shape), where=drop < 1)
    moved_before = 1 - before
    return np.divide(rho * h0 * before, 1 - rho * moved_before, out=np.zeros(h0.shape), where=rho * moved_before < 1)


def late_start(h0: np.ndarray) -> int:
    """The age by which half the baseline's movers (of those who move within the horizon) have
    moved on: where a change sparing the fast movers would start."""
    moved = 1 - np.cumprod(1 - h0, axis=0).mean(axis=1)
    if moved[-1] <= 0:
        return 0
    return int(np.argmax(moved >= moved[-1] / 2)) + 1 if len(moved) > 1 else 0


def log_likelihood_ratio(at_risk: np.ndarray, movers: np.ndarray, h0: np.ndarray, h1: np.ndarray) -> np.ndarray:
    """log P(moves | hazards h1) / P(moves | h0) per cell (binomial); cells where the baseline
    saw no move, or only moves, carry no evidence."""
    ok = (h0 > 0) & (h0 < 1) & (at_risk > 0)
    p0 = np.where(ok, h0, 0.5)
    p1 = np.where(ok, np.clip(h1, 1e-12, 1 - 1e-12), 0.5)
    return np.where(ok, movers * np.log(p1 / p0) + (at_risk - movers) * np.log((1 - p1) / (1 - p0)), 0.0)


def design_evidence(at_risk: np.ndarray, movers: np.ndarray, h0: np.ndarray,
                    alternatives: tuple[np.ndarray, ...]) -> np.ndarray:
    """[design, cohort]: the log-likelihood ratio of each cohort's cells [cohort, age, time of
    day] under each design's hazards, all designs at once (one array operation, not one per
    design: the replay's hot spot)."""
    h1 = np.stack(alternatives)[:, None]
    return log_likelihood_ratio(at_risk[None], movers[None], h0[None, None], h1).sum(axis=(2, 3))


def threshold(policy: AlertPolicy, charts: int, share: float) -> float:
    """The CUSUM threshold keeping the chance that any of `charts` alerts on a night below
    `share` of the `significance` (see `Chart`). Per stage, its own series gets STAGE_SHARE and
    its slices the rest: a quiet stage alerts on a night with chance at most `significance`."""
    return math.log(max(charts, 1) / (share * policy.significance))


def trust(comparison: Comparison) -> float:
    """How far tonight's evidence is to be believed, given that the baseline's hazards are
    estimates: the share of the variance of the movers expected that their own chance
    accounts for, not the baseline's sampling error (a likelihood ratio of roughly normal
    counts shrinks by that factor when the variance is that much larger). A small baseline
    that happened to move fast would otherwise make every later night look slow, and the
    CUSUM would add that up night after night."""
    own = comparison.variance - comparison.baseline_variance
    return own / comparison.variance if comparison.variance > 0 else 0.0


@dataclass(frozen=True)
class Design:
    """One alternative to "no change": drop-off rose by `rise` (see `alternative`), or, for a
    late design, the hazard of moving on is `late_ratio` times the baseline's from the age by
    which half its movers have moved (`late_start`): a change that spares the fast path, as
    when onboarding goes on as before but fewer buy again a week later."""

    rise: float = 0.0
    late_ratio: float | None = None

    def hazards(self, h0: np.ndarray) -> np.ndarray:
        if self.late_ratio is None:
            return alternative(h0, self.rise)
        start = late_start(h0)
        return np.vstack([h0[:start], h0[start:] * self.late_ratio])


def designs(policy: AlertPolicy) -> tuple[Design, ...]:
    return (tuple(Design(k * policy.min_relative_rise) for k in DESIGN_RISES)
            + tuple(Design(late_ratio=r) for r in LATE_RATIOS))


class Chart:
    """A one-sided CUSUM over entry nights of a mixture likelihood ratio: for each night the
    change may have begun, the average over the designs of the likelihood ratio of every
    cohort's moves since (at every age each has reached, within the horizon), against "no
    change"; the chart's value is the log of the largest. For each onset that average is a
    test martingale, so a quiet series passes exp(h) with chance at most exp(-h) per night
    (Ville's inequality; the CUSUM stops no sooner than the Shiryaev-Roberts rule) — with
    no price for trying several designs, where taking the best one would pay log(designs)."""

    def __init__(self, designs: tuple[Design, ...], first: int = 0):
        self.designs = designs
        self.first = first       # the first cohort (entry night index) judged
        self.frozen: list[np.ndarray] = []  # cohorts first, first + 1, ... past the horizon: evidence per design

    def add(self, at_risk: np.ndarray, movers: np.ndarray, h0: np.ndarray, tonight: int, span: int,
            weights: np.ndarray | None = None, h1: tuple[np.ndarray, ...] | None = None) -> float:
        """Tonight's value from [entry night, age, slot] cells (ages 0 .. span-1). The
        evidence of the last k nights' cohorts counts `weights[k - 1]` times (see `trust`:
        the scans of `compare`); a cohort past the horizon keeps the whole horizon's weight
        and its evidence then. The designs' hazards `h1` are derived unless given (a
        benchmark's oracle)."""
        weights = np.ones(span) if weights is None else weights
        h1 = tuple(d.hazards(h0) for d in self.designs) if h1 is None else h1
        passed = np.arange(self.first + len(self.frozen), tonight - span + 1)  # past the horizon tonight
        if len(passed):
            risk, moved = at_risk[passed, :span], movers[passed, :span]
            self.frozen.extend(weights[-1] * design_evidence(risk, moved, h0, h1).T)
        live = np.arange(max(self.first, tonight - span + 1), tonight + 1)
        seen = (np.arange(span)[None, :] <= (tonight - live)[:, None])[..., None]
        risk, moved = at_risk[live, :span] * seen, movers[live, :span] * seen
        evidence = design_evidence(risk, moved, h0, h1)
        # summed evidence per design from each onset: the live cohorts (latest first), then the frozen ones
        sums = (np.cumsum(evidence[:, ::-1], axis=1) * weights[None, :len(live)]).T
        if self.frozen:
            total = sums[-1] if len(sums) else np.zeros(len(h1))
            sums = np.vstack([sums, total + np.cumsum(np.array(self.frozen)[::-1], axis=0)])
        if not len(sums):
            return 0.0
        top = sums.max(axis=1, keepdims=True)
        mixture = top[:, 0] + np.log(np.exp(sums - top).mean(axis=1))
        return float(max(0.0, mixture.max()))

    def restart(self, tonight: int) -> None:
        """After an alert resolves: only cohorts entering from tomorrow count."""
        self.first, self.frozen = tonight + 1, []
