"""Benchmark (i): the cost of sealing personal data, at the store, on PostgreSQL.

Side by side in one run, on one engine and one fresh (migrated) database: today's store (``EventStore``
without a sealer, as before personal data was sealed) and the service's store (with the sealer
of ``People``: each personal field encrypted with AES-256-GCM under its person's key). Alternated
plain, sealed, plain, sealed after a warm-up of each; events/s = appends/s, one client.

i1  ``nps_recorded`` with its respondent (one sealed field), a person the writer has seen, on one
    existing stream each: a record of ordinary size. Target: sealed >= 0.90x plain.
i1w ``quote_added`` (text and speaker: two sealed fields) on a record that keeps its latest 20
    quotes in its state: the worst case, since the state row carries 40 sealed fields (ciphertext
    is longer than the text and does not compress). Reported against the same target.
i2  ``committed`` of a new record whose champion is a new person each time (three sealed fields,
    and the person's key made and stored: one more transaction). Reported, not a target.
i3  ``metrics_recorded`` (no personal field): what the sealer costs an event it has nothing to do
    for. Reported.

Run alone: ``.venv/bin/python -m bench.personal_data``.
"""
from __future__ import annotations

import json
import statistics
import uuid

from bench.common import COMMITTED, env_float, env_int, fresh_db, log, metrics, quiet_service_logging, sa_url
from bench.store_throughput import _timed

QUOTE = {"text": "It made onboarding twice as fast for our whole team.", "speaker": "Jo Park"}
NPS = {"score": 9, "respondent": "Jo Park"}


def _totals(rounds: list[dict]) -> dict:
    events = sum(r["events"] for r in rounds)
    seconds = sum(r["seconds"] for r in rounds)
    return {"events_per_s": events / seconds, "events": events, "mean_latency_ms": 1000 * seconds / events,
            "per_round_events_per_s": [round(r["events_per_s"], 1) for r in rounds]}


def run() -> dict:
    import os

    from service import migrations
    from service.config import Settings
    from service.events.backends import make_engine
    from service.events.event import NewEvent
    from service.events.store import EventStore
    from service.people.erasure import People

    quiet_service_logging()
    # Many short rounds, each side in turn: the machine's drift hits both sides alike.
    seconds, warmup, rounds = env_float("BENCH_PD_SECONDS", 1.5), env_float("BENCH_PD_WARMUP", 1.0), \
        env_int("BENCH_PD_ROUNDS", 10)
    cache = Settings.from_env().state_cache_size
    with fresh_db("personal") as dbname:
        engine = make_engine(sa_url(dbname))
        migrations.upgrade(engine)
        people = People(engine, lambda: sealed, os.environ["PERSONAL_DATA_KEY"])
        plain = EventStore(engine, cache_size=cache)
        sealed = EventStore(engine, cache_size=cache, sealer=people.sealer)
        stores = {"plain": plain, "sealed": sealed}
        for name, store in stores.items():
            store.append(f"{name}-quotes", [NewEvent("committed", COMMITTED)], actor="bench")
            store.append(f"{name}-metrics", [NewEvent("committed", COMMITTED)], actor="bench")
            store.append(f"{name}-nps", [NewEvent("committed", COMMITTED)], actor="bench")

        def nps(store, name):
            return lambda n: store.append(f"{name}-nps", [NewEvent("nps_recorded", NPS)], actor="bench")

        def quote(store, name):
            return lambda n: store.append(f"{name}-quotes", [NewEvent("quote_added", QUOTE)], actor="bench")

        def new_record(store, name):
            def op(n):
                tag = uuid.uuid4().hex[:12]
                champion = {"name": f"Person {tag}", "title": "VP", "email": f"p{tag}@customer.example"}
                store.append(f"{name}-new-{tag}", [NewEvent("committed", {**COMMITTED, "champion": champion})],
                             actor="bench")
            return op

        def no_personal(store, name):
            return lambda n: store.append(f"{name}-metrics", [NewEvent("metrics_recorded", metrics(n))], actor="bench")

        out = {"config": {"seconds": seconds, "warmup": warmup, "rounds": rounds, "database": "postgresql"}}
        for case, make in (("i1_nps_known_person", nps), ("i1w_quote_20_quotes_kept", quote),
                           ("i2_committed_new_person", new_record),
                           ("i3_no_personal_field", no_personal)):
            ops = {name: make(store, name) for name, store in stores.items()}
            for op in ops.values():
                _timed(op, warmup)
            runs: dict[str, list[dict]] = {"plain": [], "sealed": []}
            for r in range(rounds):
                for name, op in ops.items():
                    result = _timed(op, seconds)
                    runs[name].append(result)
                    log(f"  {case} round {r + 1} {name}: {result['events_per_s']:.0f} events/s "
                        f"({result['mean_latency_ms']:.3f} ms/append)")
            p, s = _totals(runs["plain"]), _totals(runs["sealed"])
            per_round = [b / a for a, b in zip(p["per_round_events_per_s"], s["per_round_events_per_s"])]
            out[case] = {"plain": p, "sealed": s, "ratio": s["events_per_s"] / p["events_per_s"],
                         "median_round_ratio": statistics.median(per_round),
                         "per_round_ratio": [round(x, 3) for x in per_round]}
        for case in ("i1_nps_known_person", "i1w_quote_20_quotes_kept"):
            out[case].update(target=0.90, met=out[case]["ratio"] >= 0.90)
        engine.dispose()
    return out


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
