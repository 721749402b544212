"""Write docs/performance.md from its template and the measurements the benchmarks saved.

    python docs/performance_page.py           # rewrite docs/performance.md
    python docs/performance_page.py --check   # fail if docs/performance.md is not what this would write

The figures come from docs/benchmark.json and docs/benchmark_paths.json (python bench/bench.py ... --json F) and
docs/kernels.json (python bench/kernels.py --json docs/kernels.json); the template is docs/performance.md.in.
Nothing here measures anything: the page shows what those runs measured, so it can be regenerated anywhere.
"""
import argparse
import json
import os
import re
import sys

DOCS = os.path.dirname(os.path.abspath(__file__))
TARGETS = {  # model name -> the decode ratio the project aims for (issue: speed and memory)
    "llama1b-q4_k_m": 1.0, "llama8b-q4_k_m": 1.0}
COLUMNS = [("pp32", "pp32 tok/s", "{:.1f}"), ("pp256", "pp256 tok/s", "{:.1f}"), ("decode", "decode tok/s", "{:.1f}"),
           ("bandwidth_fraction", "of limit", "{:.0%}"), ("ttft_cold_s", "TTFT cold s", "{:.2f}"),
           ("ttft_warm_s", "TTFT warm s", "{:.2f}"), ("peak_rss_bytes", "peak RSS MB", "{:.0f}")]


def fmt(key, value, spec):
    if value is None:
        return "-"
    return spec.format(value / 2**20 if key == "peak_rss_bytes" else value)


def model_table(name, m):
    """One model's table: a row per engine, then the ratios ours / llama.cpp."""
    lines = [f"**{name}**: {m['description']} ({m['types']}), file {m['file_bytes'] / 1e6:.0f} MB, KV cache "
             f"{m['kv_bytes'] / 1e6:.1f} MB, {m['bytes_per_token'] / 1e6:.0f} MB of weights read per token", "",
             "| | " + " | ".join(title for _, title, _ in COLUMNS) + " | RSS <= file + KV + 300 MB |",
             "|---|" + "---|" * (len(COLUMNS) + 1)]
    engines = m["engines"]
    for engine, e in engines.items():
        cells = [fmt(key, e.get(key), spec) for key, _, spec in COLUMNS]
        lines.append(f"| {engine} | " + " | ".join(cells) + f" | {'yes' if e.get('rss_ok') else 'no'} |")
    ref = engines.get("llama.cpp", {})
    for engine, e in engines.items():
        if engine == "llama.cpp":
            continue
        cells = []
        for key, _, _ in COLUMNS:
            a, b = e.get(key), ref.get(key)
            cells.append("" if key == "bandwidth_fraction" or not a or not b else f"{a / b:.2f}")
        lines.append(f"| {engine} / llama.cpp | " + " | ".join(cells) + " | |")
    return "\n".join(lines)


def targets_table(models):
    """The issue's targets against what was measured, for the default (int8) path."""
    rows = ["| model | decode ratio (target) | pp256 ratio (target 0.5) | peak RSS within file + KV + 300 MB |",
            "|---|---|---|---|"]
    for name, m in models.items():
        ours, ref = m["engines"].get("ours int8"), m["engines"].get("llama.cpp")
        if not ours or not ref:
            continue
        target = TARGETS.get(name, 0.8)
        dec, pp = ours["decode"] / ref["decode"], ours["pp256"] / ref["pp256"]
        rows.append(f"| {name} | {dec:.2f} ({target}) {'reached' if dec >= target else 'missed'} | {pp:.2f} "
                    f"{'reached' if pp >= 0.5 else 'missed'} | {'yes' if ours.get('rss_ok') else 'no'} |")
    return "\n".join(rows)


def kernel_table(k):
    names = list(dict.fromkeys(key.split()[0] for key in k["gbps"]))  # in the order measured
    threads = sorted({int(key.split()[1]) for key in k["gbps"]})
    lines = ["| type | " + " | ".join(f"float, {t} thread{'s' if t > 1 else ''} | int8, {t} thread{'s' if t > 1 else ''}"
                                      for t in threads) + " |", "|---|" + "---|---|" * len(threads)]
    for n in names:
        cells = []
        for t in threads:
            g = k["gbps"].get(f"{n} {t}", {})
            cells += [f"{g.get('float', 0):.1f}", f"{g.get('int8', 0):.1f}"]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render():
    with open(os.path.join(DOCS, "benchmark.json")) as f:
        bench = json.load(f)
    with open(os.path.join(DOCS, "kernels.json")) as f:
        kernels = json.load(f)
    with open(os.path.join(DOCS, "benchmark_paths.json")) as f:
        paths = json.load(f)
    models = bench["models"]
    bw = bench["machine"]["bandwidth_bytes_per_s"]
    one_b = models.get("llama1b-q4_k_m")
    values = {
        "bandwidth": f"{bw / 1e9:.0f}",
        "limit_1b": f"{bw / one_b['bytes_per_token']:.0f}" if one_b else "?",
        "machine": f"{bench['machine']['cpu']} (AVX2, no AVX-512)",
        "threads": str(bench["machine"]["threads"]),
        "llama_cpp": bench["machine"]["llama_cpp_python"],
        "benchmark_tables": "\n\n".join(model_table(n, m) for n, m in models.items()),
        "targets": targets_table(models),
        "k_rows": str(kernels["shape"][0]), "k_cols": str(kernels["shape"][1]),
        "numpy_gbps": f"{kernels['numpy_gbps']:.0f}",
        "kernel_table": kernel_table(kernels),
        "paths_tables": "\n\n".join(model_table(n, m) for n, m in paths["models"].items()),
        "smollm2_decode": "{:.2f}".format(models["smollm2"]["engines"]["ours int8"]["decode"]
                                          / models["smollm2"]["engines"]["llama.cpp"]["decode"]),
        "smollm2_warm": "{:.1f}".format(models["smollm2"]["engines"]["ours int8"]["ttft_warm_s"]),
    }
    with open(os.path.join(DOCS, "performance.md.in"), encoding="utf-8") as f:
        template = f.read()
    missing = set(re.findall(r"\{\{(\w+)\}\}", template)) - set(values)
    if missing:
        raise SystemExit(f"performance.md.in uses unknown placeholders: {sorted(missing)}")
    page = re.sub(r"\{\{(\w+)\}\}", lambda m: values[m.group(1)], template)
    return ("<!-- Generated by docs/performance_page.py from docs/performance.md.in and the benchmarks' JSON files "
            "-->\n" + page)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="fail if docs/performance.md is out of date")
    args = ap.parse_args()
    page = render()
    path = os.path.join(DOCS, "performance.md")
    if args.check:
        with open(path, encoding="utf-8") as f:
            if f.read() != page:
                sys.exit("docs/performance.md is out of date: run python docs/performance_page.py")
        print("docs/performance.md is current")
        return
    with open(path, "w", encoding="utf-8") as f:
        f.write(page)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
