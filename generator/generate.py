"""`journeys generate`: a realistic multi-channel sample with its ground truth, deterministic
for a seed. Layout under OUT: <source>/<YYYY-MM-DD>/<file> per channel and day,
crm/customers.csv, ground_truth/*.parquet and ground_truth/summary.json."""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from generator import scenario as sc
from generator import truth
from generator.events import to_arrow
from generator.faults import EXPECTED_REASON, FileAssembler, corrupt, fault_kinds
from generator.render import LAYOUTS, render_source
from generator.simulate import DAY, US, Incident, emit_events, simulate_population
from journey_defs.canonical import unresolved_customer_id
from journey_defs.loader import BUILTIN_JOURNEYS, load_journey

ROUNDING_US = {"web": 1000, "email": US, "chat": US, "phone": US, "survey": 60 * US}
"""Each raw format's timestamp resolution; true times are rounded to it so truth equals the files."""

COMMENTS = np.array(["", "Great so far", "Delivery was late, again", 'Box arrived "damaged"', "ok", "Love it, thanks!"], dtype=object)


@dataclass(frozen=True)
class GenerateConfig:
    customers: int = 10_000
    days: int = 30
    seed: int = 0
    start: date = date(2026, 1, 5)
    fault_rate: float = 0.005
    incident: Incident | None = None


def generate(out: str | Path, config: GenerateConfig, progress=print) -> dict:
    """Write the sample under `out` and return the summary (also written as ground_truth/summary.json)."""
    if config.customers < 1 or config.days < 1 or not 0 <= config.fault_rate < 0.5:
        raise ValueError("customers and days must be >= 1 and fault_rate in [0, 0.5)")
    began = time.perf_counter()
    out = Path(out)
    journey = load_journey(BUILTIN_JOURNEYS["subscription"])
    rng = np.random.default_rng(config.seed)
    pop = simulate_population(rng, config.customers, config.days, config.start, config.incident)
    cols = _observable(emit_events(rng, pop).columns(), pop)
    ids = _identities(rng, pop)
    codes, keys = _customer_codes(cols, pop, ids)
    frame = _event_frame(cols, pop, ids, rng)
    progress(f"simulated {pop.n:,} customers, {len(cols['ts']):,} events")

    fault_rows, records, source_tables = _write_sources(out, rng, config, cols, frame)
    _write_crm(out, pop, ids)
    progress(f"wrote raw files: {sum(records.values()):,} records, {len(fault_rows):,} faults")

    entries, channels = truth.stage_entries(cols, pop.n)
    gt = out / "ground_truth"
    gt.mkdir(parents=True, exist_ok=True)
    keys_by_event = keys.take(pa.array(codes))
    customer_keys = keys.slice(0, pop.n)
    tables = {
        "customers": _customer_truth(pop, ids, customer_keys, entries, channels, cols, journey),
        "status_daily": truth.status_daily(customer_keys, entries, pop.exit_ts, pop.start_us, config.days, journey),
        "sessions": truth.sessions(codes, keys, cols["ts"], journey.session_gap.total_seconds() * US),
        "deviations": truth.deviations(cols, keys_by_event, journey),
        "feedback": truth.feedback(cols, keys_by_event, entries, journey),
        "identities": _identity_truth(source_tables, keys_by_event),
        "events": _event_truth(cols, keys_by_event),
        "faults": pa.Table.from_pylist(fault_rows, schema=_FAULT_SCHEMA),
    }
    for name, table in tables.items():
        pq.write_table(table, gt / f"{name}.parquet")
    seconds = time.perf_counter() - began
    summary = _summary(config, journey, tables, records, seconds)
    (gt / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return summary


def _observable(cols: dict, pop) -> dict:
    """Keep what happened inside the period and round each time to its format's resolution."""
    kept = np.flatnonzero((cols["ts"] >= pop.start_us) & (cols["ts"] < pop.end_us))
    source = cols["source"][kept]
    resolution = np.ones(len(kept))
    for name, us in ROUNDING_US.items():
        resolution[source == name] = us
    ts = np.floor(cols["ts"][kept] / resolution) * resolution
    index = kept[np.lexsort((kept, ts))]
    out = {k: v[index] for k, v in cols.items()}
    out["ts"] = np.sort(ts)
    return out


def _identities(rng, pop) -> dict[str, np.ndarray]:
    """Per-customer identity values; the CRM writes phones formatted, call logs compactly."""
    i = np.arange(pop.n)
    number = 2_000_000_000 + 7 * i
    first = np.array(["ada", "bo", "chen", "dana", "eli", "fatima", "goran", "hana"])[i % 8]
    area, mid, last = (number // 10**7).astype(str), np.char.zfill((number // 10**4 % 1000).astype(str), 3), \
        np.char.zfill((number % 10**4).astype(str), 4)
    hex_ids = rng.integers(0, 1 << 48, (2, pop.n))
    to_object = lambda a: np.asarray(a, dtype=object)  # noqa: E731
    return {
        "customer_id": to_object(np.char.add("C", np.char.zfill(i.astype(str), 7))),
        "anon1": to_object([f"a-{x:012x}" for x in hex_ids[0]]),
        "anon2": to_object([f"a-{x:012x}" for x in hex_ids[1]]),
        "email": to_object(np.char.add(np.char.add(first, "."), np.char.add(i.astype(str), "@example.com"))),
        "phone_crm": to_object(np.char.add(np.char.add(np.char.add("+1 (", area), np.char.add(") ", mid)), np.char.add("-", last))),
        "phone_compact": to_object(np.char.add("+1", number.astype(str))),
    }


def _customer_codes(cols: dict, pop, ids) -> tuple[np.ndarray, pa.Array]:
    """An integer code per event for its true customer, and the customer id of every code: the
    CRM id, or the unresolved id a correct stitching must give (anonymous visitor, unknown
    caller or address). Codes 0..n-1 are the population, in order."""
    anonymous = np.char.add("anonymous_id:", ids["anon1"].astype(str)).astype(object)
    population_keys = np.where(pop.in_crm, ids["customer_id"], anonymous)
    outside = cols["cust"] < 0
    noise_keys, noise_codes = np.unique(
        np.array([_normalized_noise(x) for x in cols["identity"][outside]], dtype=str), return_inverse=True)
    codes = cols["cust"].copy()
    codes[outside] = pop.n + noise_codes
    return codes, pa.array(np.concatenate([population_keys, noise_keys.astype(object)]), pa.string())


def _normalized_noise(identity: str) -> str:
    if "@" in identity:
        return unresolved_customer_id("email", identity.strip().lower())
    return unresolved_customer_id("phone", "+" + "".join(ch for ch in identity if ch.isdigit()))


def _event_frame(cols: dict, pop, ids, rng) -> dict[str, np.ndarray]:
    """Identity and attribute columns of every event, as the raw formats write them."""
    cust = cols["cust"]
    safe = np.maximum(cust, 0)
    ts = cols["ts"]
    known = cust >= 0
    identified = known & (pop.ident_ts[safe] <= ts)
    noise = cols["identity"]
    source = cols["source"]
    email = np.where(known, ids["email"][safe], noise)
    # Survey answers come with hand-typed addresses: mixed case, stray spaces.
    messy = np.flatnonzero((source == "survey") & (rng.random(len(cust)) < 0.3))
    email[messy] = [f"  {e.title()} " for e in email[messy]]
    second = cols["device"] == 1
    return {
        "ts": ts.astype(np.int64),
        "seq": np.arange(len(ts), dtype=np.int64),
        "event_type": cols["event_type"],
        "page": cols["page"],
        "referrer": np.where((cols["role"] == "stage") & (cols["stage"] == 0), "https://www.google.com/", None),
        "user_agent": np.where(second, "Mobile Safari", "Chrome/142"),
        "campaign": cols["campaign"],
        "queue": cols["queue"],
        "topic": cols["topic"],
        "disposition": cols["disposition"],
        "score": cols["score"],
        "duration_s": cols["duration_s"],
        "conversation": cols["conversation"],
        "anonymous_id": np.where(known, np.where(second, ids["anon2"][safe], ids["anon1"][safe]), None),
        "user_id": np.where(identified, ids["customer_id"][safe], None),
        "email": np.where((source == "chat") & ~cols["chat_email"], None, email),
        "phone": np.where(known, ids["phone_compact"][safe], noise),
        "comment": COMMENTS[rng.integers(0, len(COMMENTS), len(cust))],
    }


def _write_sources(out: Path, rng, config: GenerateConfig, cols: dict, frame: dict):
    """Render every source, inject faults, write one file per source and day."""
    fault_rows, records, source_tables = [], {}, {}
    start_us = int(np.datetime64(config.start, "us").astype(np.int64))
    day_of = ((cols["ts"] - start_us) // DAY).astype(np.int64)
    for source, layout in LAYOUTS.items():
        pick = cols["source"] == source
        part = {k: v[pick] for k, v in frame.items()}
        m = len(part["ts"])
        part["file_day"] = day_of[pick]
        part["is_copy"] = np.zeros(m, dtype=bool)
        kinds = np.asarray(fault_kinds(layout), dtype=object)
        kind = np.where(rng.random(m) < config.fault_rate, kinds[rng.integers(0, len(kinds), m)], None)
        late_by = rng.integers(1, 4, m)
        kind[(kind == "late") & (part["file_day"] + late_by >= config.days)] = None
        skew = np.flatnonzero(kind == "clock_skew")
        copies = {k: v[skew] for k, v in part.items()}
        copies["ts"] = copies["ts"] + (rng.uniform(2, 5, len(skew)) * DAY).astype(np.int64)
        copies["is_copy"] = np.ones(len(skew), dtype=bool)
        table = to_arrow({k: np.concatenate([part[k], copies[k]]) for k in part})
        source_tables[source] = table.slice(0, m)
        rendered = render_source(source, table)
        faulty = np.flatnonzero(kind != None)  # noqa: E711 (element-wise)
        faults = {int(part["seq"][i]): (kind[i], int(late_by[i])) for i in faulty}
        assembler = _assemble(layout, rng, config, rendered, faults)
        for day, text, numbered in assembler.finish():
            relative = layout.relative_path((config.start + timedelta(days=int(day))).isoformat())
            path = out / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(text.encode("utf-8", "surrogateescape"))
            records[relative] = text.count("\n") - (1 if layout.header else 0)
            for line, (fault, event_id, true_day) in numbered:
                fault_rows.append({
                    "source": source, "file": relative, "line": line, "kind": fault,
                    "reason": EXPECTED_REASON.get(fault), "event_id": event_id,
                    "true_date": config.start + timedelta(days=int(true_day)) if true_day is not None else None,
                })
    return fault_rows, records, source_tables


def _assemble(layout, rng, config, rendered: pa.Table, faults: dict) -> FileAssembler:
    """Files of one source: real lines in time order; late ones moved; broken copies inserted."""
    assembler = FileAssembler(layout, rng)
    day = rendered.column("file_day").to_numpy()
    seq = rendered.column("seq").to_numpy()
    is_copy = rendered.column("is_copy").to_numpy(zero_copy_only=False)
    faulty_seq = np.fromiter(faults, dtype=np.int64, count=len(faults))
    late_seq = np.fromiter((s for s, (k, _) in faults.items() if k == "late"), dtype=np.int64)
    stays = ~is_copy & ~np.isin(seq, late_seq)
    lines = rendered.column("line").combine_chunks()
    for d in np.unique(day):
        in_day = np.flatnonzero(stays & (day == d))
        assembler.set_lines(int(d), lines.take(pa.array(in_day)))
    event_ids = rendered.column("event_id")
    for i in np.flatnonzero(is_copy | np.isin(seq, faulty_seq)):
        d, line = int(day[i]), lines[i].as_py()
        if is_copy[i]:  # a clock-skewed copy stays in the file of its original day
            assembler.insert(d, line, ("clock_skew", None, None))
            continue
        kind, late_by = faults[int(seq[i])]
        event_id = f"{layout.name}:{event_ids[i].as_py()}"
        if kind == "late":
            assembler.insert(d + late_by, line, ("late", event_id, d))
        elif kind == "duplicate":
            target = d + 1 if rng.random() < 0.2 and d + 1 < config.days else d
            assembler.insert(target, line, ("duplicate", event_id, None))
        elif kind != "clock_skew":
            assembler.insert(d, corrupt(layout, line, kind, rng), (kind, None, None))
    return assembler


def _write_crm(out: Path, pop, ids) -> None:
    crm = pop.in_crm
    created = np.where(pop.via_email, pop.start_us - 90 * DAY, pop.entries[:, sc.SIGN_UP])
    table = pa.table({
        "customer_id": pa.array(ids["customer_id"][crm], pa.string()),
        "email": pa.array(ids["email"][crm], pa.string()),
        "phone": pa.array(ids["phone_crm"][crm], pa.string()),
        "segment": pa.array(np.array([p.name for p in sc.PERSONAS], dtype=object)[pop.persona[crm]], pa.string()),
        "created_at": truth.timestamps(created[crm]),
    })
    (out / "crm").mkdir(parents=True, exist_ok=True)
    pacsv.write_csv(table, out / "crm" / "customers.csv", pacsv.WriteOptions(quoting_style="needed"))


def _customer_truth(pop, ids, keys, entries, channels, cols, journey) -> pa.Table:
    n_events = np.bincount(cols["cust"][cols["cust"] >= 0], minlength=pop.n)
    status, current = truth.statuses_as_of(entries, pop.exit_ts, pop.end_us, journey)
    status = np.array(truth.STATUS_NAMES, dtype=object)[status]
    personas = np.array([p.name for p in sc.PERSONAS], dtype=object)[pop.persona]
    anonymous_ids = [[a, b] if two else [a] for a, b, two in zip(ids["anon1"], ids["anon2"], pop.second_device)]
    columns = {
        "customer_key": keys,
        "customer_id": pa.array(np.where(pop.in_crm, ids["customer_id"], None), pa.string()),
        "persona": pa.array(personas, pa.string()),
        "segment": pa.array(np.where(pop.in_crm, personas, None), pa.string()),
        "anonymous_ids": pa.array(anonymous_ids, pa.list_(pa.string())),
        "discovered_via_email": pa.array(pop.via_email),
        "furthest_stage": pa.array(np.array(journey.stage_ids, dtype=object)[current], pa.string()),
        "status": pa.array(status, pa.string()),
        "exit_event": pa.array(pop.exit_event, pa.string()),
        "exit_at": truth.timestamps(pop.exit_ts),
        "n_events": pa.array(n_events, pa.int64()),
    }
    for k, stage in enumerate(journey.stage_ids):
        columns[f"entered_{stage}"] = truth.timestamps(entries[:, k])
        columns[f"entry_channel_{stage}"] = pa.array(channels[:, k], pa.string())
    return pa.table(columns)


IDENTITY_COLUMNS = {"web": ("anonymous_id", "user_id"), "email": ("email",), "chat": ("anonymous_id", "email"),
                    "phone": ("phone",), "survey": ("email",)}
"""Identity fields each raw format carries (see journey_defs/sources/*.yaml)."""


def _identity_truth(source_tables: dict[str, pa.Table], keys_by_event: pa.Array) -> pa.Table:
    """Every identity value written to the raw files (normalised as a reader must normalise
    it) with the customer a correct stitching resolves it to."""
    selects = []
    with duckdb.connect() as con:
        con.register("keys", pa.table({"seq": pa.array(np.arange(len(keys_by_event))), "customer_key": keys_by_event}))
        for source, identity_columns in IDENTITY_COLUMNS.items():
            con.register(f"src_{source}", source_tables[source].select(["seq", *identity_columns]))
            selects += [f"SELECT '{c}' AS identity_key, {c} AS raw_value, seq FROM src_{source} WHERE {c} IS NOT NULL"
                        for c in identity_columns]
        return con.sql(f"""
            SELECT DISTINCT identity_key,
                   CASE identity_key WHEN 'email' THEN lower(trim(raw_value))
                        WHEN 'phone' THEN '+' || regexp_replace(raw_value, '[^0-9]', '', 'g')
                        ELSE trim(raw_value) END AS value,
                   customer_key
            FROM ({' UNION ALL '.join(selects)}) JOIN keys USING (seq)
            ORDER BY identity_key, value""").to_arrow_table()


def _event_truth(cols: dict, keys_by_event: pa.Array) -> pa.Table:
    """Every true event (faults excluded) with its customer and the role it was generated for."""
    return pa.table({
        "seq": pa.array(np.arange(len(cols["ts"]), dtype=np.int64)),
        "source": pa.array(cols["source"], pa.string()),
        "event_type": pa.array(cols["event_type"], pa.string()),
        "ts": truth.timestamps(cols["ts"]),
        "customer_key": keys_by_event,
        "role": pa.array(cols["role"], pa.string()),
        "stage": pa.array(cols["stage"], pa.int64()),
    })


_FAULT_SCHEMA = pa.schema([
    ("source", pa.string()), ("file", pa.string()), ("line", pa.int64()), ("kind", pa.string()),
    ("reason", pa.string()), ("event_id", pa.string()), ("true_date", pa.date32()),
])


def _summary(config, journey, tables, records, seconds) -> dict:
    customers = tables["customers"]
    events = tables["events"]
    reached = {
        stage: customers.num_rows - customers.column(f"entered_{stage}").null_count for stage in journey.stage_ids
    }
    faults = tables["faults"].column("kind").value_counts().to_pylist()
    statuses = customers.column("status").value_counts().to_pylist()
    return {
        "config": {"customers": config.customers, "days": config.days, "seed": config.seed,
                   "start": config.start.isoformat(), "fault_rate": config.fault_rate,
                   "incident": None if config.incident is None else vars(config.incident)},
        "journey": journey.id,
        "events": events.num_rows,
        "records_written": sum(records.values()),
        "files": len(records),
        "events_by_source": {d["values"]: d["counts"] for d in events.column("source").value_counts().to_pylist()},
        "faults_by_kind": {d["values"]: d["counts"] for d in faults},
        "customers_reaching_stage": reached,
        "status_at_end": {d["values"]: d["counts"] for d in statuses},
        "seconds": round(seconds, 3),
        "events_per_second": round(events.num_rows / seconds),
    }
