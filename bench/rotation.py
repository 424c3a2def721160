"""Shared by fresh_read.py and store_latency.py: variants measured in blocks whose order
rotates from round to round, so they share the machine's noise, bounded by an iteration
count and a deadline; and the percentile both report. Standard library only.
"""

from __future__ import annotations

import math
import time


def percentile(sorted_values, q):
    """The q-quantile (0..1) of already sorted values, nearest rank; None when empty."""
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))]


def run_rotating(variants, connect_all, iterations, block, deadline, accounts, rng):
    """Connect every variant (connect_all()), then run blocks of `block` iterations of each
    (variant.run_block(n, accounts, rng)) in rotating order until `iterations` or `deadline`
    seconds; always close them. Returns (elapsed seconds, stopped at the deadline)."""
    started = time.monotonic()
    stopped_early = False
    try:
        connect_all()
        done, rnd = 0, 0
        while done < iterations:
            if time.monotonic() - started > deadline:
                stopped_early = True
                break
            n = min(block, iterations - done)
            k = rnd % len(variants)
            for v in variants[k:] + variants[:k]:
                v.run_block(n, accounts, rng)
            done += n
            rnd += 1
    finally:
        for v in variants:
            v.close()
    return time.monotonic() - started, stopped_early
