import subprocess
import sys

import numpy as np

from nodeflow.cache import OutputCache, cache_key, estimate_nbytes

ARGS = ("Scale", 2, {"factor": 2.0, "mode": "mul"}, {"x": ("abc", "number")}, None)


def test_keys_are_stable_across_processes():
    code = f"from nodeflow.cache import cache_key;print(cache_key(*{ARGS!r}))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert other.stdout.strip() == cache_key(*ARGS)


def test_every_part_of_the_key_matters():
    base = cache_key(*ARGS)
    assert cache_key("Scale", 2, {"mode": "mul", "factor": 2.0}, {"x": ("abc", "number")}) == base
    variants = [
        ("Add", 2, ARGS[2], ARGS[3], None),
        ("Scale", 3, ARGS[2], ARGS[3], None),
        ("Scale", 2, {"factor": 2.5, "mode": "mul"}, ARGS[3], None),
        ("Scale", 2, ARGS[2], {"x": ("abd", "number")}, None),
        ("Scale", 2, ARGS[2], {"x": ("abc", "low")}, None),
        ("Scale", 2, ARGS[2], {"y": ("abc", "number")}, None),
        ("Scale", 2, ARGS[2], ARGS[3], ["file", 10, 123]),
    ]
    keys = {cache_key(*v) for v in variants}
    assert base not in keys and len(keys) == len(variants)


def test_lru_evicts_least_recently_used_by_bytes():
    cache = OutputCache(max_bytes=3 * 8000 + 500)
    for name in "abc":
        cache.put(name, {"x": np.zeros(1000)})  # 8000 bytes each
    assert cache.get("a") is not None  # a is now most recent
    cache.put("d", {"x": np.zeros(1000)})
    assert "b" not in cache and {"a", "c", "d"} <= {k for k in "abcd" if k in cache}
    cache.put("huge", {"x": np.zeros(10_000)})  # larger than the whole budget: not kept
    assert "huge" not in cache and len(cache) == 3
    assert cache.nbytes == sum(estimate_nbytes({"x": np.zeros(1000)}) for _ in range(3))


def test_size_estimates_count_array_storage_and_honour_overrides():
    class Handle:
        def __nodeflow_nbytes__(self):
            return 0

    assert estimate_nbytes(np.zeros((10, 10), dtype=np.float32)) == 400
    assert estimate_nbytes({"model": Handle()}) < 100
    assert OutputCache(0).put("k", {"x": 1}) is None and len(OutputCache(0)) == 0
