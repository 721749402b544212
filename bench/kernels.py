"""How fast each matrix kernel reads its weights: GB/s of one-token products, per weight type and path.

    python bench/kernels.py [--threads 1,2] [--types Q4_K,Q6_K,Q8_0,Q4_0,Q4_1] [--shape 2048x8192] [--json F]

Decoding one token reads every weight once, so a kernel's GB/s decides the decode speed of every model stored in
its type. Each product here is a [rows, cols] matrix of random blocks times one float32 vector, through
quant.matmul as the models call it, once on the float path and once on the int8 path. The matrices come from a
pool of ~150 MB, used in turn, so that the bytes come from memory and not from the 32 MB cache (a matrix used
again and again would overstate the speed). The best of 5 passes is reported, beside NumPy's float32
matrix-vector product over the same pool as a reference for what the memory delivers.
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import llama3  # noqa: E402,F401  (first: it limits NumPy's BLAS threads before NumPy loads)
import numpy as np  # noqa: E402
import quant  # noqa: E402


def random_matrix(qtype, rows, cols, kernels, rng):
    """A QMatrix of random blocks with small, finite fp16 scales (their position differs per type)."""
    block_size, type_size = quant.gguf.GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, (rows, cols // block_size, type_size), dtype=np.uint8)
    scales = {quant.QT.Q4_K: [0, 2], quant.QT.Q4_1: [0, 2], quant.QT.Q6_K: [208]}.get(qtype, [0])
    for at in scales:
        raw[:, :, at:at + 2] = np.float16(0.001).reshape(1).view(np.uint8)
    return quant.QMatrix(raw.reshape(rows, -1), qtype, (rows, cols), kernels)


def best_gbps(run, nbytes, passes=5):
    run()  # compile / warm up
    best = 0.0
    for _ in range(passes):
        t = time.perf_counter()
        run()
        best = max(best, nbytes / (time.perf_counter() - t) / 1e9)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--types", default="Q4_K,Q6_K,Q8_0,Q4_0,Q4_1")
    ap.add_argument("--shape", default="2048x8192", help="rows x cols of each matrix")
    ap.add_argument("--pool-mb", type=int, default=150)
    ap.add_argument("--json", default="", help="also write the figures to this JSON file")
    args = ap.parse_args()
    results = {"shape": [0, 0], "gbps": {}, "numpy_gbps": 0.0}
    rows, cols = (int(v) for v in args.shape.split("x"))
    results["shape"] = [rows, cols]
    rng = np.random.default_rng(0)
    x = rng.standard_normal(cols).astype(np.float32)
    print(f"one-token products of [{rows}, {cols}] matrices, GB/s of weights read (best of 5 passes over "
          f"{args.pool_mb} MB)")
    print(f"{'type':6s} {'threads':>7s} {'float':>7s} {'int8':>7s}")
    for threads in (int(t) for t in args.threads.split(",")):
        quant.set_threads(threads)
        for name in args.types.split(","):
            qtype = quant.QT[name]
            speeds = []
            for kernels in quant.KERNELS:
                one = random_matrix(qtype, rows, cols, kernels, rng)
                pool = [one] + [random_matrix(qtype, rows, cols, kernels, rng)
                                for _ in range(max(0, args.pool_mb * 10**6 // one.raw.nbytes - 1))]
                out = np.empty(rows, np.float32)
                speeds.append(best_gbps(lambda: [quant.matmul(x, w, out) for w in pool],
                                        sum(w.raw.nbytes for w in pool)))
            print(f"{name:6s} {threads:7d} {speeds[0]:7.1f} {speeds[1]:7.1f}", flush=True)
            results["gbps"][f"{name} {threads}"] = dict(zip(quant.KERNELS, speeds))
    pool = [rng.standard_normal((rows // 4, cols)).astype(np.float32) for _ in range(args.pool_mb * 10**6 // (rows * cols))]
    results["numpy_gbps"] = best_gbps(lambda: [w @ x for w in pool], sum(w.nbytes for w in pool))
    print(f"NumPy float32 matrix . vector (1 BLAS thread): {results['numpy_gbps']:.1f} GB/s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
