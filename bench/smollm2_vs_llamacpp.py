"""A first speed check: llama3.py against llama.cpp on the same SmolLM2 GGUF, same threads, in one process.

    python bench/smollm2_vs_llamacpp.py [--threads 2] [--rounds 3]

Both run the same 128-token prompt in one batch, then 64 single-token decode steps (no sampling, F32 KV cache for
llama.cpp), alternating, and the medians are compared. Absolute figures drift on a shared machine; the ratio is
the number to read. (The full benchmark of issue 4 will cover more models, prompt sizes, cold starts and memory.)
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import llama3  # first: it sets up NumPy's threads before NumPy loads  # noqa: E402
import numpy as np  # noqa: E402
import quant  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    import llama_cpp

    path = llama3.bundled_model_path("smollm2")
    quant.set_threads(args.threads)
    ours = llama3.load(path, max_length=512)
    theirs = llama_cpp.Llama(path, n_ctx=512, n_batch=512, n_threads=args.threads, n_threads_batch=args.threads,
                             type_k=0, type_v=0, verbose=False)
    text = "The history of the printing press begins in the fifteenth century, when " * 12
    ids = ours.tokenizer.encode(text)[:128]

    def run_ours():
        t = time.perf_counter()
        ours.forward(ids, 0)
        prompt = len(ids) / (time.perf_counter() - t)
        t = time.perf_counter()
        for i in range(64):
            ours.forward([ids[-1]], len(ids) + i)
        return prompt, 64 / (time.perf_counter() - t)

    def run_theirs():
        theirs.reset()
        t = time.perf_counter()
        theirs.eval(ids)
        prompt = len(ids) / (time.perf_counter() - t)
        t = time.perf_counter()
        for _ in range(64):
            theirs.eval([ids[-1]])
        return prompt, 64 / (time.perf_counter() - t)

    run_ours(), run_theirs()  # warm up: compile our kernels, touch every page of the file
    a, b = [], []
    for _ in range(args.rounds):
        a.append(run_ours())
        b.append(run_theirs())
    a, b = np.median(a, axis=0), np.median(b, axis=0)
    print(f"SmolLM2-135M Q4_1, {args.threads} threads, 128-token prompt, 64 decode steps")
    print(f"{'':10s} {'prompt tok/s':>13s} {'decode tok/s':>13s}")
    print(f"{'llama3.py':10s} {a[0]:13.1f} {a[1]:13.1f}")
    print(f"{'llama.cpp':10s} {b[0]:13.1f} {b[1]:13.1f}")
    print(f"{'ratio':10s} {a[0] / b[0]:13.2f} {a[1] / b[1]:13.2f}")


if __name__ == "__main__":
    main()
