"""Scraping Causeway's admin endpoint (`GET /metrics`, Prometheus text) for the benchmark.

Standard library only; shared by bench.py and fresh_read.py. A scrape is a dict
{(metric name, ((label, value), ...)): float}; `diff` subtracts two scrapes and `routing`
condenses a diff of the routing counters into what the benchmark reports.
"""

from __future__ import annotations

import re
import urllib.request

_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')

Scrape = dict  # {(name, labels tuple): value}


def scrape(admin: str, timeout: float = 5.0) -> Scrape:
    """GET http://<admin>/metrics and parse every sample."""
    with urllib.request.urlopen(f"http://{admin}/metrics", timeout=timeout) as reply:
        return parse(reply.read().decode("utf-8", "replace"))


def parse(text: str) -> Scrape:
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            continue
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        labels = tuple(sorted(_LABEL.findall(m.group(2) or "")))
        samples[(m.group(1), labels)] = value
    return samples


def diff(before: Scrape, after: Scrape) -> Scrape:
    """Counter increments between two scrapes (samples missing before count from 0)."""
    return {key: value - before.get(key, 0.0) for key, value in after.items()}


def labelled(samples: Scrape, name: str) -> list[tuple[dict, float]]:
    return [(dict(labels), value) for (n, labels), value in samples.items() if n == name]


def value(samples: Scrape, name: str, **labels: str) -> float | None:
    for got, v in labelled(samples, name):
        if all(got.get(k) == want for k, want in labels.items()):
            return v
    return None


def routing(delta: Scrape) -> dict:
    """What a run's statements did, from a diff of two scrapes.

    statements: causeway_queries_total over all targets and reasons;
    writes: those with reason="write" (every other reason is a read or a session/transaction
    statement; the benchmark's scripts have no explicit transactions);
    replica: those sent to a node other than "primary".
    """
    per_target: dict[str, int] = {}
    per_reason: dict[str, int] = {}
    statements = writes = replica = 0
    for labels, v in labelled(delta, "causeway_queries_total"):
        n = int(round(v))
        if n == 0:
            continue
        target, reason = labels.get("target", "?"), labels.get("reason", "?")
        statements += n
        per_target[target] = per_target.get(target, 0) + n
        key = f"{target}:{reason}"
        per_reason[key] = per_reason.get(key, 0) + n
        if reason == "write":
            writes += n
        if target != "primary":
            replica += n
    fallbacks = {labels.get("reason", "?"): int(round(v))
                 for labels, v in labelled(delta, "causeway_consistency_fallbacks_total") if round(v)}
    waits = value(delta, "causeway_consistency_wait_seconds_count") or 0.0
    wait_sum = value(delta, "causeway_consistency_wait_seconds_sum") or 0.0
    evictions = {f"{labels.get('replica', '?')}:{labels.get('reason', '?')}": int(round(v))
                 for labels, v in labelled(delta, "causeway_replica_evictions_total") if round(v)}
    return {
        "statements": statements, "writes": writes, "reads": statements - writes, "replica": replica,
        "per_target": per_target, "per_reason": per_reason, "fallbacks": fallbacks,
        "waits": int(round(waits)), "wait_s": wait_sum, "evictions": evictions,
    }


def add_routing(total: dict | None, more: dict) -> dict:
    """Sums two `routing` dicts."""
    if total is None:
        return {k: (dict(v) if isinstance(v, dict) else v) for k, v in more.items()}
    out = {}
    for key, v in more.items():
        if isinstance(v, dict):
            merged = dict(total.get(key, {}))
            for k, n in v.items():
                merged[k] = merged.get(k, 0) + n
            out[key] = merged
        else:
            out[key] = total.get(key, 0) + v
    return out


def replicas_in_pool(samples: Scrape) -> dict[str, bool]:
    return {labels.get("replica", "?"): v == 1.0 for labels, v in labelled(samples, "causeway_replica_in_pool")}


STORE_DURATION = "causeway_session_store_duration_seconds"
STORE_OPS = ("get", "advance")


def store(delta: Scrape) -> dict:
    """Session-store operations in a diff of two scrapes: per op ("get": read a shared floor,
    "advance": raise it), the count (the histogram's _count), the summed seconds, the
    histogram buckets (cumulative counts by upper bound `le`) and the errors/timeouts."""
    out = {}
    for op in STORE_OPS:
        buckets = {}
        for labels, v in labelled(delta, STORE_DURATION + "_bucket"):
            if labels.get("op") == op:
                buckets[labels.get("le", "+Inf")] = int(round(v))
        out[op] = {
            "count": int(round(value(delta, STORE_DURATION + "_count", op=op) or 0)),
            "sum_s": value(delta, STORE_DURATION + "_sum", op=op) or 0.0,
            "errors": int(round(value(delta, "causeway_session_store_errors_total", op=op) or 0)),
            "buckets": buckets,
        }
    return out


def add_store(total: dict | None, more: dict) -> dict:
    """Sums two `store` dicts."""
    if total is None:
        return {op: {**v, "buckets": dict(v["buckets"])} for op, v in more.items()}
    out = {}
    for op, v in more.items():
        t = total.get(op, {"count": 0, "sum_s": 0.0, "errors": 0, "buckets": {}})
        buckets = dict(t["buckets"])
        for le, n in v["buckets"].items():
            buckets[le] = buckets.get(le, 0) + n
        out[op] = {"count": t["count"] + v["count"], "sum_s": t["sum_s"] + v["sum_s"],
                   "errors": t["errors"] + v["errors"], "buckets": buckets}
    return out


def bucket_quantile(buckets: dict, q: float) -> str | None:
    """The histogram bucket a quantile falls in, as its upper bound ("≤0.25 ms", "> 100 ms"):
    Prometheus buckets are coarse, so this is a bound, not an estimate."""
    bounds = sorted(((float(le), n) for le, n in buckets.items()), key=lambda kv: kv[0])
    total = bounds[-1][1] if bounds else 0
    if not total:
        return None
    previous = 0.0
    for le, n in bounds:
        if n >= q * total:
            if le == float("inf"):
                return f">{1000 * previous:g} ms"
            return f"≤{1000 * le:g} ms"
        previous = le
    return None


def slower_than(op: dict, seconds: float) -> int | None:
    """Operations slower than `seconds` (a bucket bound, e.g. 0.01 = the default store timeout):
    with errors counted, those are the timeouts."""
    for le, n in op["buckets"].items():
        if le != "+Inf" and abs(float(le) - seconds) < 1e-12:
            return op["count"] - n
    return None
