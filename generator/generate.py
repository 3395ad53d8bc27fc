"""`journeys generate`: a realistic multi-channel sample with its ground truth, deterministic
for a seed. Layout under OUT: <source>/<YYYY-MM-DD>/<file> per channel and day,
crm/customers.csv, ground_truth/*.parquet and ground_truth/summary.json."""
from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
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
from generator.events import Vocabulary
from generator.faults import EXPECTED_REASON, FileAssembler, corrupt, fault_kinds
from generator.render import ENRICHED_TABLE, LAYOUTS, render_source
from generator.simulate import DAY, US, Incident, emit_events, simulate_population
from journey_defs.canonical import unresolved_customer_id
from journey_defs.loader import BUILTIN_JOURNEYS, load_journey

ROUNDING_US = {"web": 1000, "email": US, "chat": US, "phone": US, "survey": 60 * US}
"""Each raw format's timestamp resolution; true times are rounded to it so truth equals the files."""

COMMENTS = ("", "Great so far", "Delivery was late, again", 'Box arrived "damaged"', "ok", "Love it, thanks!")

IDENTITY_COLUMNS = {"web": ("anonymous_id", "user_id"), "email": ("email",), "chat": ("anonymous_id", "email"),
                    "phone": ("phone",), "survey": ("email",)}
"""Identity fields each raw format carries (see journey_defs/sources/*.yaml)."""


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
    collector = emit_events(rng, pop)
    vocab = collector.vocab
    cols = _observable(collector.columns(), pop, vocab)
    ids = _identities(rng, pop)
    codes, keys = _customer_codes(cols, pop, ids, vocab)
    progress(f"simulated {pop.n:,} customers, {len(cols['ts']):,} events")

    with duckdb.connect() as con:
        _register_events(con, cols, codes, pop, ids, vocab, config, rng)
        fault_rows, records = _write_sources(con, out, rng, config, cols, vocab)
        keys_by_event = keys.take(pa.array(codes))
        identities = _identity_truth(con, keys)
    _write_crm(out, pop, ids)
    progress(f"wrote {len(records)} raw files: {sum(records.values()):,} records, {len(fault_rows):,} faults")

    entries, channels = truth.stage_entries(cols, pop.n, vocab)
    customer_keys = keys.slice(0, pop.n)
    tables = {
        "customers": _customer_truth(pop, ids, customer_keys, entries, channels, cols, journey, vocab),
        "status_history": truth.status_history(customer_keys, entries, pop.exit_ts, pop.start_us, config.days, journey,
                                               _identified_at(pop)),
        "sessions": truth.sessions(codes, keys, cols["ts"], journey.session_gap.total_seconds() * US),
        "deviations": truth.deviations(cols, keys_by_event, journey, vocab),
        "feedback": truth.feedback(cols, keys_by_event, entries, journey, vocab),
        "identities": identities,
        "events": _event_truth(cols, keys_by_event, vocab),
        "faults": pa.Table.from_pylist(fault_rows, schema=_FAULT_SCHEMA),
    }
    gt = out / "ground_truth"
    gt.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        pq.write_table(table, gt / f"{name}.parquet")
    seconds = time.perf_counter() - began
    summary = _summary(config, journey, tables, records, seconds)
    (gt / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return summary


def _observable(cols: dict, pop, vocab: Vocabulary) -> dict:
    """Keep what happened inside the period and round each time to its format's resolution."""
    kept = np.flatnonzero((cols["ts"] >= pop.start_us) & (cols["ts"] < pop.end_us))
    source = cols["source"][kept]
    resolution = np.ones(len(kept))
    for name, us in ROUNDING_US.items():
        resolution[source == vocab.code(name)] = us
    ts = np.floor(cols["ts"][kept] / resolution) * resolution
    order = np.lexsort((kept, ts))
    out = {k: v[kept[order]] for k, v in cols.items()}
    out["ts"] = ts[order]
    return out


def _identities(rng, pop) -> dict[str, np.ndarray]:
    """Per-customer identity values; the CRM writes phones formatted, call logs compactly."""
    i = np.arange(pop.n)
    number = 2_000_000_000 + 7 * i
    first = np.array(["ada", "bo", "chen", "dana", "eli", "fatima", "goran", "hana"])[i % 8]
    area = (number // 10**7).astype(str)
    mid = np.char.zfill((number // 10**4 % 1000).astype(str), 3)
    last = np.char.zfill((number % 10**4).astype(str), 4)
    hex_ids = rng.integers(0, 1 << 48, (2, pop.n))
    return {
        "customer_id": np.char.add("C", np.char.zfill(i.astype(str), 7)),
        "anon1": np.array([f"a-{x:012x}" for x in hex_ids[0]]),
        "anon2": np.array([f"a-{x:012x}" for x in hex_ids[1]]),
        "email": np.char.add(np.char.add(first, "."), np.char.add(i.astype(str), "@example.com")),
        "phone_crm": np.char.add(np.char.add(np.char.add("+1 (", area), np.char.add(") ", mid)), np.char.add("-", last)),
        "phone_compact": np.char.add("+1", number.astype(str)),
    }


def _customer_codes(cols: dict, pop, ids, vocab: Vocabulary) -> tuple[np.ndarray, pa.Array]:
    """An integer code per event for its true customer, and the customer id of every code: the
    CRM id, or the unresolved id a correct stitching must give (anonymous visitor, unknown
    caller or address). Codes 0..n-1 are the population, in order."""
    anonymous = np.char.add("anonymous_id:", ids["anon1"])
    population_keys = np.where(pop.in_crm, ids["customer_id"], anonymous)
    outside = cols["cust"] < 0
    raw = vocab.texts(cols["identity"][outside]).to_pylist()
    noise_keys, noise_codes = np.unique(np.array([_normalized_noise(x) for x in raw], dtype=str), return_inverse=True)
    codes = cols["cust"].copy()
    codes[outside] = pop.n + noise_codes
    return codes, pa.array(np.concatenate([population_keys, noise_keys]).tolist(), pa.string())


def _normalized_noise(identity: str) -> str:
    if "@" in identity:
        return unresolved_customer_id("email", identity.strip().lower())
    return unresolved_customer_id("phone", "+" + "".join(ch for ch in identity if ch.isdigit()))


def _register_events(con, cols: dict, codes, pop, ids, vocab: Vocabulary, config: GenerateConfig, rng) -> None:
    """The events (text columns dictionary-encoded) and customers tables behind ENRICHED_TABLE."""
    cust = cols["cust"]
    safe = np.maximum(cust, 0)
    source = cols["source"]
    texts = {name: vocab.dictionary(cols[name]) for name in
             ("source", "event_type", "role", "page", "campaign", "queue", "topic", "disposition", "identity")}
    comment = pa.array(COMMENTS, pa.string()).take(pa.array(rng.integers(0, len(COMMENTS), len(cust))))
    start_us = int(np.datetime64(config.start, "us").astype(np.int64))
    events = pa.table({
        "seq": pa.array(np.arange(len(cust), dtype=np.int64)),
        "cust": pa.array(cust),
        "customer_code": pa.array(codes),
        "rank": pa.array(_rank_within(source)),
        "ts": pa.array(cols["ts"].astype(np.int64)),
        "file_day": pa.array(((cols["ts"] - start_us) // DAY).astype(np.int64)),
        **texts,
        "stage": pa.array(cols["stage"]),
        "score": pa.array(cols["score"], from_pandas=True),
        "duration_s": pa.array(cols["duration_s"], from_pandas=True),
        "device": pa.array(cols["device"]),
        "chat_email": pa.array(cols["chat_email"]),
        "conversation": pa.array(cols["conversation"]),
        "identified": pa.array((cust >= 0) & (pop.ident_ts[safe] <= cols["ts"])),
        # Survey answers come with hand-typed addresses: upper case, stray spaces.
        "messy": pa.array((source == vocab.code("survey")) & (rng.random(len(cust)) < 0.3)),
        "comment": comment,
    })
    customers = pa.table({"cust": pa.array(np.arange(pop.n)), **{k: pa.array(ids[k]) for k in
                          ("customer_id", "anon1", "anon2", "email", "phone_compact")}})
    con.register("events", events)
    con.register("customers", customers)
    con.execute(ENRICHED_TABLE)


def _rank_within(groups: np.ndarray) -> np.ndarray:
    """1-based position of each element among the elements of its group, in array order."""
    order = np.argsort(groups, kind="stable")
    sorted_groups = groups[order]
    starts = np.flatnonzero(np.r_[True, sorted_groups[1:] != sorted_groups[:-1]])
    counts = np.diff(np.r_[starts, len(groups)])
    rank = np.empty(len(groups), dtype=np.int64)
    rank[order] = np.arange(len(groups)) - np.repeat(starts, counts) + 1
    return rank


def _write_sources(con, out: Path, rng, config: GenerateConfig, cols: dict, vocab: Vocabulary):
    """Choose faults, render every source, write one file per source and day."""
    faults, skew = {}, []
    for source, layout in LAYOUTS.items():
        seq = np.flatnonzero(cols["source"] == vocab.code(source))
        kinds = np.asarray(fault_kinds(layout), dtype=object)
        chosen = seq[rng.random(len(seq)) < config.fault_rate]
        kind = kinds[rng.integers(0, len(kinds), len(chosen))]
        late_by = rng.integers(1, 4, len(chosen))
        day = ((cols["ts"][chosen] - np.datetime64(config.start, "us").astype(np.int64)) // DAY).astype(int)
        keep = (kind != "late") | (day + late_by < config.days)  # a late record needs a later file
        faults[source] = {int(s): (k, int(b)) for s, k, b in zip(chosen[keep], kind[keep], late_by[keep])}
        skewed = chosen[keep][kind[keep] == "clock_skew"]
        skew.append(np.stack([skewed, (rng.uniform(2, 5, len(skewed)) * DAY).astype(np.int64)], axis=1))
    skew = np.concatenate(skew)
    source_of = cols["source"][skew[:, 0]]
    real_counts = np.bincount(cols["source"], minlength=source_of.max(initial=0) + 1)
    copy_rank = real_counts[source_of] + _rank_within(source_of)
    con.register("skew_rows", pa.table({"seq": pa.array(skew[:, 0]), "shift_us": pa.array(skew[:, 1]),
                                        "copy_rank": pa.array(copy_rank)}))
    con.execute("CREATE TABLE skew AS SELECT * FROM skew_rows")  # a table: every thread's cursor sees it

    def write(source: str) -> tuple[list[dict], dict[str, int]]:
        layout, rows, counts = LAYOUTS[source], [], {}
        assembler = _assemble(layout, rng_by_source[source], config, render_source(con.cursor(), source), faults[source])
        for day in assembler.days():
            relative = layout.relative_path((config.start + timedelta(days=day)).isoformat())
            path = out / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            counts[relative], numbered = assembler.write(day, path)
            rows += [{"source": source, "file": relative, "line": line, "kind": fault,
                      "reason": EXPECTED_REASON.get(fault), "event_id": event_id,
                      "true_date": config.start + timedelta(days=int(true_day)) if true_day is not None else None}
                     for line, (fault, event_id, true_day) in numbered]
        return rows, counts

    # One generator per source keeps the output identical whatever order the threads run in.
    rng_by_source = {source: np.random.default_rng(seed) for source, seed in
                     zip(LAYOUTS, rng.integers(0, 2**63, len(LAYOUTS)))}
    fault_rows, records = [], {}
    with ThreadPoolExecutor(max_workers=2) as pool:
        for rows, counts in pool.map(write, LAYOUTS):
            fault_rows += rows
            records.update(counts)
    return fault_rows, records


def _assemble(layout, rng, config, rendered: pa.Table, faults: dict) -> FileAssembler:
    """Files of one source: real lines in time order; late ones moved; broken copies inserted."""
    day = rendered.column("file_day").to_numpy()
    seq = rendered.column("seq").to_numpy()
    is_copy = rendered.column("is_copy").to_numpy()
    lines = rendered.column("line").combine_chunks()
    assembler = FileAssembler(layout, lines, rng)
    real_days, real_seq = day[~is_copy], seq[~is_copy]  # real rows come first, in time order
    if np.any(np.diff(real_seq) <= 0):
        raise RuntimeError(f"{layout.name}: rendered rows are not in time order; files would mix days")
    for d in np.unique(real_days):
        assembler.set_range(int(d), int(np.searchsorted(real_days, d)), int(np.searchsorted(real_days, d, side="right")))
    faulty_seq = np.fromiter(faults, dtype=np.int64, count=len(faults))
    event_ids = rendered.column("event_id")
    for i in np.flatnonzero(is_copy | np.isin(seq, faulty_seq)):
        d, line = int(day[i]), lines[i].as_py()
        if is_copy[i]:  # a clock-skewed copy stays in the file of its original day
            assembler.insert(d, line, ("clock_skew", None, None))
            continue
        kind, late_by = faults[int(seq[i])]
        event_id = f"{layout.name}:{event_ids[i].as_py()}"
        if kind == "late":
            assembler.exclude(d, int(i))
            assembler.insert(d + late_by, line, ("late", event_id, d))
        elif kind == "duplicate":
            target = d + 1 if rng.random() < 0.2 and d + 1 < config.days else d
            assembler.insert(target, line, ("duplicate", event_id, None))
        elif kind != "clock_skew":
            assembler.insert(d, corrupt(layout, line[:-1], kind, rng) + "\n", (kind, None, None))
    return assembler


def _write_crm(out: Path, pop, ids) -> None:
    crm = pop.in_crm
    created = np.where(pop.via_email, pop.start_us - 90 * DAY, pop.entries[:, sc.SIGN_UP])
    table = pa.table({
        "customer_id": pa.array(ids["customer_id"][crm]),
        "email": pa.array(ids["email"][crm]),
        "phone": pa.array(ids["phone_crm"][crm]),
        "segment": pa.array(np.array([p.name for p in sc.PERSONAS])[pop.persona[crm]]),
        "created_at": truth.timestamps(created[crm]),
    })
    (out / "crm").mkdir(parents=True, exist_ok=True)
    pacsv.write_csv(table, out / "crm" / "customers.csv", pacsv.WriteOptions(quoting_style="needed"))


def _identity_truth(con, keys: pa.Array) -> pa.Table:
    """Every identity value written to the raw files (normalised as a reader must normalise
    it) with the customer a correct stitching resolves it to."""
    con.register("customer_keys", pa.table({"customer_code": pa.array(np.arange(len(keys))), "customer_key": keys}))
    selects = [f"SELECT '{c}' AS identity_key, {c} AS raw_value, customer_code FROM enriched "
               f"WHERE source = '{s}' AND {c} IS NOT NULL" for s, columns in IDENTITY_COLUMNS.items() for c in columns]
    return con.sql(f"""
        SELECT DISTINCT identity_key,
               CASE identity_key WHEN 'email' THEN lower(trim(raw_value))
                    WHEN 'phone' THEN '+' || regexp_replace(raw_value, '[^0-9]', '', 'g')
                    ELSE trim(raw_value) END AS value,
               customer_key
        FROM (SELECT DISTINCT * FROM ({' UNION ALL '.join(selects)})) JOIN customer_keys USING (customer_code)
        ORDER BY identity_key, value""").to_arrow_table()


def _identified_at(pop) -> np.ndarray:
    """When each customer's user id or e-mail first appears in its events: the promo e-mail
    click of a CRM lead, else the sign-up (NaN: an anonymous visitor, never identified)."""
    return np.where(pop.in_crm, pop.ident_ts, np.nan)


def _customer_truth(pop, ids, keys, entries, channels, cols, journey, vocab) -> pa.Table:
    n_events = np.bincount(cols["cust"][cols["cust"] >= 0], minlength=pop.n)
    status, current = truth.statuses_as_of(entries, pop.exit_ts, pop.end_us, journey, _identified_at(pop))
    personas = np.array([p.name for p in sc.PERSONAS])[pop.persona]
    anonymous_ids = [[a, b] if two else [a] for a, b, two in zip(ids["anon1"], ids["anon2"], pop.second_device)]
    columns = {
        "customer_key": keys,
        "customer_id": pa.array(ids["customer_id"], mask=~pop.in_crm),
        "persona": pa.array(personas),
        "segment": pa.array(personas, mask=~pop.in_crm),
        "anonymous_ids": pa.array(anonymous_ids, pa.list_(pa.string())),
        "discovered_via_email": pa.array(pop.via_email),
        "furthest_stage": pa.array(journey.stage_ids, pa.string()).take(pa.array(current)),
        "status": pa.array(truth.STATUS_NAMES, pa.string()).take(pa.array(status)),
        "exit_event": pa.array(pop.exit_event, pa.string()),
        "exit_at": truth.timestamps(pop.exit_ts),
        "n_events": pa.array(n_events, pa.int64()),
    }
    for k, stage in enumerate(journey.stage_ids):
        columns[f"entered_{stage}"] = truth.timestamps(entries[:, k])
        columns[f"entry_channel_{stage}"] = vocab.texts(channels[:, k])
    return pa.table(columns)


def _event_truth(cols: dict, keys_by_event: pa.Array, vocab: Vocabulary) -> pa.Table:
    """Every true event (faults excluded) with its customer and the role it was generated for."""
    return pa.table({
        "seq": pa.array(np.arange(len(cols["ts"]), dtype=np.int64)),
        "source": vocab.texts(cols["source"]),
        "event_type": vocab.texts(cols["event_type"]),
        "ts": truth.timestamps(cols["ts"]),
        "customer_key": keys_by_event,
        "role": vocab.texts(cols["role"]),
        "stage": pa.array(cols["stage"], pa.int64()),
    })


_FAULT_SCHEMA = pa.schema([
    ("source", pa.string()), ("file", pa.string()), ("line", pa.int64()), ("kind", pa.string()),
    ("reason", pa.string()), ("event_id", pa.string()), ("true_date", pa.date32()),
])


def _summary(config, journey, tables, records, seconds) -> dict:
    customers = tables["customers"]
    counts = lambda column: {d["values"]: d["counts"] for d in column.value_counts().to_pylist()}  # noqa: E731
    return {
        "config": {"customers": config.customers, "days": config.days, "seed": config.seed,
                   "start": config.start.isoformat(), "fault_rate": config.fault_rate,
                   "incident": None if config.incident is None else vars(config.incident)},
        "journey": journey.id,
        "events": tables["events"].num_rows,
        "records_written": sum(records.values()),
        "files": len(records),
        "events_by_source": counts(tables["events"].column("source")),
        "faults_by_kind": counts(tables["faults"].column("kind")),
        "customers_reaching_stage": {
            stage: customers.num_rows - customers.column(f"entered_{stage}").null_count for stage in journey.stage_ids},
        "status_at_end": counts(customers.column("status")),
        "seconds": round(seconds, 3),
        "events_per_second": round(tables["events"].num_rows / seconds),
    }
