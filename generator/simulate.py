"""Vectorized simulation of a population moving through the subscription journey.

Customers are numpy arrays, not objects: every step below is one array operation over
all customers, so generating millions of events takes seconds."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np

from generator import scenario as sc
from generator.events import EventCollector

US = 1_000_000
MINUTE = 60 * US
HOUR = 60 * MINUTE
DAY = 24 * HOUR


@dataclass(frozen=True)
class Incident:
    """From `from_day` (0-based) on, customers entering `stage` drop out `factor` times as often."""

    stage: str
    from_day: int
    factor: float

    @classmethod
    def parse(cls, text: str) -> "Incident":
        try:
            parts = dict(item.split("=", 1) for item in text.split(","))
            incident = cls(parts.pop("stage"), int(parts.pop("from")), float(parts.pop("factor")))
        except (KeyError, ValueError) as exc:
            raise ValueError(f"bad incident {text!r}; expected stage=X,from=DAY,factor=F") from exc
        if parts:
            raise ValueError(f"bad incident {text!r}: unknown keys {sorted(parts)}")
        if incident.stage not in sc.STAGES[:-1]:
            raise ValueError(f"incident stage must be one of {', '.join(sc.STAGES[:-1])}, got {incident.stage!r}")
        if incident.factor <= 0 or incident.from_day < 0:
            raise ValueError("incident factor must be > 0 and from >= 0")
        return incident


@dataclass
class Population:
    """Per-customer arrays (length n) describing who they are and what they intend to do."""

    start_us: int
    end_us: int
    persona: np.ndarray
    via_email: np.ndarray        # discovered through a promo e-mail: a CRM lead from the start
    entries: np.ndarray          # (n, stages) intended stage entry times, µs, NaN = never
    skip_ts: np.ndarray          # first purchase without verifying (skipped required stage)
    exit_ts: np.ndarray
    exit_event: np.ndarray       # 'unsubscribe' | 'account_cancelled' | None
    second_device: np.ndarray

    @property
    def n(self) -> int:
        return len(self.persona)

    @property
    def ident_ts(self) -> np.ndarray:
        """When the web analytics first learns the customer id (e-mail link or sign-up)."""
        return np.where(self.via_email, self.entries[:, sc.DISCOVER], self.entries[:, sc.SIGN_UP])

    @property
    def in_crm(self) -> np.ndarray:
        return self.via_email | ~np.isnan(self.entries[:, sc.SIGN_UP])


def _lognormal_us(rng, n, median_hours, sigma):
    return rng.lognormal(np.log(median_hours), sigma, n) * HOUR


def _persona_values(persona: np.ndarray, getter) -> np.ndarray:
    table = np.array([getter(p) for p in sc.PERSONAS], dtype=float)
    return table[persona]


def simulate_population(rng, customers: int, days: int, start: date, incident: Incident | None) -> Population:
    n = customers
    start_us = int(np.datetime64(start, "us").astype(np.int64))
    end_us = start_us + days * DAY
    persona = rng.choice(len(sc.PERSONAS), n, p=[p.weight for p in sc.PERSONAS] / np.sum([p.weight for p in sc.PERSONAS]))

    weekday0 = start.weekday()
    day_weight = sc.WEEKDAY_WEIGHT[(weekday0 + np.arange(days)) % 7]
    arrival_day = rng.choice(days, n, p=day_weight / day_weight.sum())
    time_of_day = np.clip(rng.normal(14, 4, n), 0.2, 23.8) * HOUR
    entries = np.full((n, len(sc.STAGES)), np.nan)
    entries[:, sc.DISCOVER] = start_us + arrival_day * DAY + time_of_day
    via_email = rng.random(n) < _persona_values(persona, lambda p: p.email_discovery)

    def continues(stage: int, among: np.ndarray) -> np.ndarray:
        p_continue = _persona_values(persona, lambda p: p.continue_prob[stage])
        if incident is not None and sc.STAGES.index(incident.stage) == stage:
            hit = entries[:, stage] >= start_us + incident.from_day * DAY
            p_continue = np.where(hit, 1 - np.minimum(1.0, (1 - p_continue) * incident.factor), p_continue)
        return among & (rng.random(n) < p_continue)

    def advance(from_stage: int, to_stage: int, who: np.ndarray, delay=None) -> None:
        median, sigma = delay or sc.DELAY_HOURS[to_stage]
        # At least two minutes between stages, so rounding a timestamp never reorders them.
        entries[who, to_stage] = entries[who, from_stage] + 2 * MINUTE + _lognormal_us(rng, int(who.sum()), median, sigma)

    reached = lambda stage: ~np.isnan(entries[:, stage])  # noqa: E731
    dropped_at = np.full(n, -1)

    signs_up = continues(sc.DISCOVER, reached(sc.DISCOVER))
    dropped_at[reached(sc.DISCOVER) & ~signs_up] = sc.DISCOVER
    advance(sc.DISCOVER, sc.SIGN_UP, signs_up)

    goes_on = continues(sc.SIGN_UP, reached(sc.SIGN_UP))
    dropped_at[reached(sc.SIGN_UP) & ~goes_on] = sc.SIGN_UP
    skips = goes_on & (rng.random(n) < sc.SKIP_VERIFY_RATE)
    advance(sc.SIGN_UP, sc.VERIFY, goes_on & ~skips)
    skip_ts = np.full(n, np.nan)
    skip_delay = 4 * MINUTE + _lognormal_us(rng, n, *sc.DELAY_HOURS[sc.VERIFY]) + _lognormal_us(rng, n, *sc.DELAY_HOURS[sc.FIRST_PURCHASE])
    skip_ts[skips] = entries[skips, sc.SIGN_UP] + skip_delay[skips]

    buys = continues(sc.VERIFY, reached(sc.VERIFY))
    dropped_at[reached(sc.VERIFY) & ~buys] = sc.VERIFY
    advance(sc.VERIFY, sc.FIRST_PURCHASE, buys)

    onboards = reached(sc.FIRST_PURCHASE) & (rng.random(n) < _persona_values(persona, lambda p: p.onboarding))
    advance(sc.FIRST_PURCHASE, sc.ONBOARDING, onboards)
    repeat_direct = continues(sc.FIRST_PURCHASE, reached(sc.FIRST_PURCHASE) & ~onboards)
    repeat_after_onboarding = continues(sc.ONBOARDING, onboards)
    dropped_at[reached(sc.FIRST_PURCHASE) & ~onboards & ~repeat_direct] = sc.FIRST_PURCHASE
    dropped_at[onboards & ~repeat_after_onboarding] = sc.ONBOARDING
    advance(sc.FIRST_PURCHASE, sc.REPEAT, repeat_direct)
    advance(sc.ONBOARDING, sc.REPEAT, repeat_after_onboarding, sc.ONBOARDING_TO_REPEAT_HOURS)

    # Nothing happens after the period: later intentions are simply not observed (yet).
    entries[entries >= end_us] = np.nan
    skip_ts[skip_ts >= end_us] = np.nan

    exit_ts, exit_event = _explicit_exits(rng, entries, dropped_at, via_email, end_us)
    second_device = ~np.isnan(entries[:, sc.SIGN_UP]) & (rng.random(n) < sc.SECOND_DEVICE_RATE)
    return Population(start_us, end_us, persona, via_email, entries, skip_ts, exit_ts, exit_event, second_device)


def _explicit_exits(rng, entries, dropped_at, via_email, end_us):
    """Some droppers say so: they unsubscribe from e-mail or cancel their account."""
    n = len(dropped_at)
    signed_up = ~np.isnan(entries[:, sc.SIGN_UP])
    can_exit = (dropped_at >= 0) & (signed_up | via_email)
    exits = can_exit & (rng.random(n) < sc.EXIT_RATE)
    last_entry = entries[np.arange(n), np.maximum(dropped_at, 0)]
    exit_ts = np.where(exits, last_entry + _lognormal_us(rng, n, 48, 0.8) + 5 * MINUTE, np.nan)
    exit_ts[exit_ts >= end_us] = np.nan
    cancel = signed_up & (rng.random(n) < 0.5)
    exit_event = np.where(np.isnan(exit_ts), None, np.where(cancel, "account_cancelled", "unsubscribe")).astype(object)
    return exit_ts, exit_event


def stage_window_end(pop: Population, stage: int, horizon_us: float) -> np.ndarray:
    """End of the time a customer spends in `stage`: the next progress, the exit, the end of
    the period, or `horizon_us` after entering, whichever comes first."""
    later = pop.entries[:, stage + 1:]
    candidates = [pop.entries[:, stage] + horizon_us, np.full(pop.n, float(pop.end_us)), pop.exit_ts, pop.skip_ts]
    if later.shape[1]:
        candidates.append(np.nanmin(np.where(np.isnan(later), np.inf, later), axis=1))
    return np.nanmin(np.vstack([np.where(np.isnan(c), np.inf, c) for c in candidates]), axis=0)


def emit_events(rng, pop: Population) -> EventCollector:
    """Turn the population's intentions into touchpoint events on every channel."""
    ev = EventCollector()
    _stage_events(rng, pop, ev)
    _fillers(rng, pop, ev)
    _support_detours(rng, pop, ev)
    _backtracks_and_off_map(rng, pop, ev)
    _exits_and_surveys(rng, pop, ev)
    _unknown_identities(rng, pop, ev)
    return ev


def _who(mask) -> np.ndarray:
    return np.flatnonzero(mask)


def _uniform_us(rng, n, low_us, high_us) -> np.ndarray:
    return rng.uniform(low_us, high_us, n)


def _stage_events(rng, pop: Population, ev: EventCollector) -> None:
    E = pop.entries
    p = pop.persona

    # Discover: a promo e-mail click (known lead), landing on the site identified by the link,
    # or an anonymous first visit.
    c = _who(pop.via_email)
    t = E[c, sc.DISCOVER]
    ev.add(c, t - _uniform_us(rng, len(c), HOUR, 3 * HOUR), source="email", event_type="delivered", role="ignored", stage=sc.DISCOVER,
           campaign=ev.pick(rng, ["promo_spring", "promo_welcome10"], len(c)))
    ev.add(c, t - _uniform_us(rng, len(c), 5 * MINUTE, 50 * MINUTE), source="email", event_type="open", role="ignored", stage=sc.DISCOVER,
           campaign="promo_spring")
    ev.add(c, t, source="email", event_type="click", role="stage", stage=sc.DISCOVER, campaign="promo_spring")
    ev.add(c, t + _uniform_us(rng, len(c), 10 * US, 40 * US), source="web", event_type="page_view", role="filler", stage=sc.DISCOVER,
           page=ev.pick(rng, sc.DISCOVER_PAGES, len(c)))
    c = _who(~pop.via_email)
    ev.add(c, E[c, sc.DISCOVER], source="web", event_type="page_view", role="stage", stage=sc.DISCOVER,
           page=ev.pick(rng, sc.DISCOVER_PAGES, len(c)))

    # Sign-up on the web (the first moment the site knows a non-lead's customer id).
    c = _who(~np.isnan(E[:, sc.SIGN_UP]))
    ev.add(c, E[c, sc.SIGN_UP], source="web", event_type="signup_completed", role="stage", stage=sc.SIGN_UP, page="/signup")
    ev.add(c, E[c, sc.SIGN_UP] + 1 * US, source="web", event_type="login", role="ignored", stage=sc.SIGN_UP)
    ev.add(c, E[c, sc.SIGN_UP] + 5 * US, source="email", event_type="delivered", role="ignored", stage=sc.SIGN_UP, campaign="verify_email")

    # Verify: the e-mail link or the /verify page.
    c = _who(~np.isnan(E[:, sc.VERIFY]))
    by_email = rng.random(len(c)) < np.array([x.email_verify for x in sc.PERSONAS])[p[c]]
    ce = c[by_email]
    t = E[ce, sc.VERIFY]
    ev.add(ce, np.maximum(E[ce, sc.SIGN_UP] + 10 * US, t - _uniform_us(rng, len(ce), MINUTE, 10 * MINUTE)),
           source="email", event_type="open", role="ignored", stage=sc.SIGN_UP, campaign="verify_email")
    ev.add(ce, t, source="email", event_type="click", role="stage", stage=sc.VERIFY, campaign="verify_email")
    cw = c[~by_email]
    ev.add(cw, E[cw, sc.VERIFY], source="web", event_type="page_view", role="stage", stage=sc.VERIFY, page="/verify")

    # First purchase: online checkout or an order by phone; skippers buy without verifying.
    c = _who(~np.isnan(E[:, sc.FIRST_PURCHASE]))
    by_phone = rng.random(len(c)) < np.array([x.phone_orders for x in sc.PERSONAS])[p[c]]
    cp = c[by_phone]
    ev.add(cp, E[cp, sc.FIRST_PURCHASE], source="phone", event_type="call", role="stage", stage=sc.FIRST_PURCHASE,
           queue="sales", disposition="order_placed", duration_s=rng.integers(180, 900, len(cp)),
           score=_optional_scores(rng, len(cp), 1, 5))
    cw = c[~by_phone]
    ev.add(cw, E[cw, sc.FIRST_PURCHASE], source="web", event_type="checkout_completed", role="stage", stage=sc.FIRST_PURCHASE,
           page="/checkout/done")
    c = _who(~np.isnan(pop.skip_ts))
    ev.add(c, pop.skip_ts[c], source="web", event_type="checkout_completed", role="skip", stage=sc.VERIFY, page="/checkout/done")

    # Onboarding (optional): an onboarding e-mail click or an onboarding chat.
    c = _who(~np.isnan(E[:, sc.ONBOARDING]))
    in_chat = rng.random(len(c)) < np.array([x.chat_onboarding for x in sc.PERSONAS])[p[c]]
    ce = c[~in_chat]
    t = E[ce, sc.ONBOARDING]
    campaign = ev.pick(rng, ["onboarding_1", "onboarding_2", "onboarding_3"], len(ce))
    ev.add(ce, np.maximum(E[ce, sc.FIRST_PURCHASE] + MINUTE, t - _uniform_us(rng, len(ce), HOUR, 4 * HOUR)),
           source="email", event_type="delivered", role="ignored", stage=sc.FIRST_PURCHASE, campaign=campaign)
    ev.add(ce, t, source="email", event_type="click", role="stage", stage=sc.ONBOARDING, campaign=campaign)
    cc = c[in_chat]
    _chat_conversation(rng, pop, ev, cc, E[cc, sc.ONBOARDING], topic=np.full(len(cc), ev.vocab.code("onboarding")),
                       role="stage", stage=sc.ONBOARDING)

    # Repeat purchase: reorder on the site or through the reminder e-mail.
    c = _who(~np.isnan(E[:, sc.REPEAT]))
    on_web = rng.random(len(c)) < 0.7
    cw = c[on_web]
    ev.add(cw, E[cw, sc.REPEAT], source="web", event_type="reorder_completed", role="stage", stage=sc.REPEAT, page="/reorder")
    ce = c[~on_web]
    previous = np.fmax(E[ce, sc.FIRST_PURCHASE], E[ce, sc.ONBOARDING])
    t = E[ce, sc.REPEAT]
    ev.add(ce, np.maximum(previous + MINUTE, t - _uniform_us(rng, len(ce), HOUR, 24 * HOUR)), source="email",
           event_type="delivered", role="ignored", stage=sc.FIRST_PURCHASE, campaign="reorder_reminder")
    ev.add(ce, t, source="email", event_type="click", role="stage", stage=sc.REPEAT, campaign="reorder_reminder")


def _optional_scores(rng, n, low, high) -> np.ndarray:
    scores = rng.integers(low, high + 1, n).astype(float)
    scores[rng.random(n) < 0.5] = np.nan
    return scores


def _chat_conversation(rng, pop, ev, cust, t0, topic, role, stage) -> None:
    """A chat: started (the touchpoint), a few messages, closed, sometimes a CSAT rating."""
    n = len(cust)
    if n == 0:
        return
    conv = ev.new_ids(n)
    known = pop.ident_ts[cust] <= t0
    chat_email = known & (rng.random(n) < 0.5)
    common = dict(source="chat", conversation=conv, chat_email=chat_email, topic=topic)
    ev.add(cust, t0, event_type="conversation_started", role=role, stage=stage, **common)
    messages = rng.integers(1, 4, n)
    rep = np.repeat(np.arange(n), messages)
    offsets = np.concatenate([np.arange(1, m + 1) for m in messages]) * 2 * MINUTE if n else np.empty(0)
    ev.add(cust[rep], t0[rep] + offsets, event_type="message", role="ignored", stage=stage, source="chat",
           conversation=conv[rep], chat_email=chat_email[rep], topic=topic[rep])
    closed = t0 + (messages + 1) * 2 * MINUTE
    ev.add(cust, closed, event_type="conversation_closed", role="ignored", stage=stage, **common)
    rated = rng.random(n) < sc.CHAT_RATING_RATE
    r = np.flatnonzero(rated)
    ev.add(cust[r], closed[r] + 30 * US, event_type="rating", role="feedback", stage=stage, source="chat",
           conversation=conv[r], chat_email=chat_email[r], topic=topic[r], score=rng.integers(1, 6, len(r)))


def _fillers(rng, pop: Population, ev: EventCollector) -> None:
    """Repeat touches of the current stage and account pages: activity that is not progress."""
    E = pop.entries
    for stage in range(len(sc.STAGES)):
        c = _who(~np.isnan(E[:, stage]))
        if stage == sc.DISCOVER:
            count, pages, role = rng.poisson(1.5, len(c)), sc.DISCOVER_PAGES, "filler"
        else:
            count, pages, role = rng.poisson(1.0, len(c)), ("/account", "/account/orders", "/account/settings"), "ignored"
        rep = np.repeat(c, count)
        gaps = rng.uniform(30 * US, 5 * MINUTE, len(rep))
        t = E[rep, stage] + _cumulative_within_groups(gaps, count)
        ok = t < stage_window_end(pop, stage, 30 * MINUTE)[rep] - MINUTE
        second = pop.second_device[rep] & (stage >= sc.VERIFY)
        ev.add(rep[ok], t[ok], source="web", event_type="page_view", role=role, stage=stage,
               page=ev.pick(rng, pages, int(ok.sum())), device=second[ok].astype(np.int64))
    # The second device is seen logged in at least once, so its anonymous id co-occurs with the user id.
    c = _who(pop.second_device)
    t = E[c, sc.SIGN_UP] + _uniform_us(rng, len(c), HOUR, 48 * HOUR)
    ok = t < np.fmin(np.where(np.isnan(pop.exit_ts[c]), np.inf, pop.exit_ts[c]), pop.end_us)
    ev.add(c[ok], t[ok], source="web", event_type="login", role="ignored", stage=sc.SIGN_UP, device=1)


def _cumulative_within_groups(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Running sum of `values` restarting at each group (groups laid out by np.repeat)."""
    if len(values) == 0:
        return values
    total = np.cumsum(values)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    starts = starts[counts > 0]
    base = np.repeat(np.concatenate([[0.0], total])[starts], counts[counts > 0])
    return total - base


def _support_detours(rng, pop: Population, ev: EventCollector) -> None:
    """Support contacts inside a stage: chats on billing/delivery/technical topics or support calls."""
    E = pop.entries
    rate = np.array([x.support_rate for x in sc.PERSONAS])[pop.persona]
    by_phone_rate = np.array([x.support_by_phone for x in sc.PERSONAS])[pop.persona]
    for stage in range(len(sc.STAGES) - 1):
        c = _who(~np.isnan(E[:, stage]) & (rng.random(pop.n) < rate))
        lo = E[c, stage] + 2 * MINUTE
        hi = stage_window_end(pop, stage, 3 * DAY)[c] - 20 * MINUTE
        ok = hi > lo
        c, t = c[ok], rng.uniform(lo[ok], hi[ok])
        phone = (pop.ident_ts[c] <= t) & pop.in_crm[c] & (rng.random(len(c)) < by_phone_rate[c])
        cp = c[phone]
        ev.add(cp, t[phone], source="phone", event_type="call", role="detour", stage=stage, queue="support",
               disposition=ev.pick(rng, ["resolved", "transferred", "callback"], len(cp)),
               duration_s=rng.integers(60, 1200, len(cp)), score=_optional_scores(rng, len(cp), 1, 5))
        cc = c[~phone]
        _chat_conversation(rng, pop, ev, cc, t[~phone], topic=ev.pick(rng, sc.SUPPORT_TOPICS, len(cc)), role="detour", stage=stage)


def _backtracks_and_off_map(rng, pop: Population, ev: EventCollector) -> None:
    E = pop.entries
    # Backtrack: after verifying (or buying), back on the pricing page of the discover stage.
    for stage in (sc.VERIFY, sc.FIRST_PURCHASE):
        c = _who(~np.isnan(E[:, stage]) & (rng.random(pop.n) < sc.BACKTRACK_RATE / 2))
        lo = E[c, stage] + 2 * MINUTE
        hi = stage_window_end(pop, stage, 7 * DAY)[c] - 2 * MINUTE
        ok = hi > lo
        c, t = c[ok], rng.uniform(lo[ok], hi[ok])
        ev.add(c, t, source="web", event_type="page_view", role="backtrack", stage=stage, page="/pricing")
    # Off-map: event types the map does not know yet.
    for stage in range(len(sc.STAGES)):
        c = _who(~np.isnan(E[:, stage]) & (rng.random(pop.n) < sc.OFF_MAP_RATE))
        lo = E[c, stage] + 2 * MINUTE
        hi = stage_window_end(pop, stage, 2 * DAY)[c] - 2 * MINUTE
        ok = hi > lo
        c, t = c[ok], rng.uniform(lo[ok], hi[ok])
        ev.add(c, t, source="web", event_type=ev.pick(rng, sc.OFF_MAP_EVENTS, len(c)), role="off_map", stage=stage,
               page=ev.pick(rng, ["/product/box", "/blog/recipes", "/product/gift"], len(c)))


def _exits_and_surveys(rng, pop: Population, ev: EventCollector) -> None:
    c = _who(~np.isnan(pop.exit_ts))
    unsub = pop.exit_event[c] == "unsubscribe"
    ev.add(c[unsub], pop.exit_ts[c[unsub]], source="email", event_type="unsubscribe", role="exit", stage=-1, campaign="any")
    cancel = c[~unsub]
    ev.add(cancel, pop.exit_ts[cancel], source="web", event_type="account_cancelled", role="exit", stage=-1, page="/account/cancel")

    c = _who(~np.isnan(pop.entries[:, sc.FIRST_PURCHASE]) & (rng.random(pop.n) < sc.NPS_RATE))
    t = pop.entries[c, sc.FIRST_PURCHASE] + _uniform_us(rng, len(c), 24 * HOUR, 72 * HOUR)
    # Keep answers out of 00:00-03:00 UTC: Berlin's ambiguous autumn hour must never be written.
    hour = (t // HOUR) % 24
    t = np.where(hour < 3, t + 3 * HOUR, t)
    nps_mean = np.array([x.nps_mean for x in sc.PERSONAS])[pop.persona[c]]
    score = np.clip(np.round(rng.normal(nps_mean, 2.0)), 0, 10)
    ev.add(c, t, source="survey", event_type="nps_response", role="feedback", stage=-1, score=score, topic="first_purchase")


def _unknown_identities(rng, pop: Population, ev: EventCollector) -> None:
    """Identities nobody can resolve: calls from unknown numbers, bounces to unknown addresses."""
    span = (pop.start_us, pop.end_us - MINUTE)
    k = rng.binomial(pop.n, sc.UNKNOWN_CALLERS_RATE)
    numbers = np.array([f"+1 (555) {i // 10000:03d}-{i % 10000:04d}" for i in range(k)], dtype=object)
    ev.add(np.full(k, -1), rng.uniform(*span, k), source="phone", event_type="call", role="noise", queue="support",
           disposition="abandoned", duration_s=rng.integers(5, 60, k), identity=numbers)
    k = rng.binomial(pop.n, sc.UNKNOWN_BOUNCES_RATE)
    addresses = np.array([f"nobody{i}@example.net" for i in range(k)], dtype=object)
    ev.add(np.full(k, -1), rng.uniform(*span, k), source="email", event_type="bounce", role="noise",
           campaign="promo_spring", identity=addresses)
