#!/usr/bin/env python3
"""numpy side of bench/matmul.mjs: a persistent worker so runs can alternate with Switchyard's.

Protocol (one JSON object per line on stdin / stdout):
  -> {"op": "info"}                                   <- {"numpy": ..., "blas": ..., "coretype": ..., "threads": ...}
  -> {"op": "run", "case": {...}, "iters": N}         <- {"times": [seconds, ...]}
  -> {"op": "quit"}
A case is {"name", "kind": "mm" | "grouped", "m", "k", "n", "experts"?}; "grouped" computes
Y[e] = X[e] · W[e]^T for every expert e with one batched np.matmul (numpy's best form of a
grouped GEMM with equal group sizes).
Thread count and OpenBLAS core type come from the environment set by the parent.
"""
import ctypes
import ctypes.util
import json
import os
import sys
import time

import numpy as np


def blas_info():
    info = {"numpy": np.__version__, "blas": None, "coretype": None, "threads": None}
    try:
        cfg = np.__config__
        libs = None
        for key in ("blas_opt_info", "openblas_info", "blas_info"):
            d = getattr(cfg, key, None)
            if isinstance(d, dict) and d.get("libraries"):
                libs = d["libraries"]
                break
        info["blas"] = ",".join(libs) if libs else None
    except Exception:  # pragma: no cover - informational only
        pass
    # Ask the OpenBLAS that numpy actually loaded (via /proc/self/maps) for its core and threads.
    try:
        path = None
        with open("/proc/self/maps") as f:
            for line in f:
                cand = line.split()[-1]
                base = os.path.basename(cand)
                if ".so" in base and "blas" in base and "lapack" not in base:
                    path = cand
                    break
        if path:
            lib = ctypes.CDLL(path)
            lib.openblas_get_corename.restype = ctypes.c_char_p
            info["coretype"] = lib.openblas_get_corename().decode()
            info["threads"] = lib.openblas_get_num_threads()
            info["blas"] = os.path.realpath(path)
    except Exception:
        pass
    return info


cache = {}


def setup(case):
    key = json.dumps(case, sort_keys=True)
    if key in cache:
        return cache[key]
    rng = np.random.default_rng(1)
    m, k, n = case["m"], case["k"], case["n"]
    if case["kind"] == "mm":
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        c = np.empty((m, n), dtype=np.float32)

        def run():
            np.matmul(a, b, out=c)

    else:
        e = case["experts"]
        x = rng.standard_normal((e, m, k), dtype=np.float32)
        w = rng.standard_normal((e, n, k), dtype=np.float32)
        wt = w.transpose(0, 2, 1)
        y = np.empty((e, m, n), dtype=np.float32)

        def run():
            np.matmul(x, wt, out=y)

    run()  # warm up
    cache[key] = run
    return run


def main():
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        msg = json.loads(line)
        op = msg.get("op")
        if op == "quit":
            break
        if op == "info":
            out = blas_info()
        elif op == "run":
            run = setup(msg["case"])
            times = []
            for _ in range(int(msg.get("iters", 1))):
                t0 = time.perf_counter()
                run()
                times.append(time.perf_counter() - t0)
            out = {"times": times}
        else:
            out = {"error": f"unknown op {op}"}
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
