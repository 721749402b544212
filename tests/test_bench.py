"""The benchmark scripts, end to end, in miniature.

bench/make_models.py --tiny writes small models of the benchmark's kinds through the same code as the real ones
(F16 source by gguf-py, Q4_K_M by llama.cpp's quantizer); bench/bench.py --quick then measures SmolLM2 and those
files against llama.cpp, and its JSON must hold every figure, with positive speeds and ratios that are the
quotients of the figures beside them. The numbers themselves are not checked: they depend on the machine.
"""
import importlib.util
import json
import math
import os
import subprocess
import sys

import pytest

import quant
from conftest import ROOT

TINY_MODELS = ["llama1b-q4_k_m", "replit3b-q4_k_m"]


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-models")
    cmd = [sys.executable, os.path.join(ROOT, "bench", "make_models.py"), "--tiny", "--out", str(out),
           "--only", ",".join(TINY_MODELS)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return out, cmd


@pytest.fixture(scope="module")
def bench_results(tiny_cache, tmp_path_factory):
    cache, _ = tiny_cache
    out = tmp_path_factory.mktemp("bench-out")
    models = ["smollm2"] + [f"tiny-{name}" for name in TINY_MODELS]
    cmd = [sys.executable, os.path.join(ROOT, "bench", "bench.py"), "--models", ",".join(models), "--cache",
           str(cache), "--rounds", "1", "--quick", "--json", str(out / "bench.json")]
    if importlib.util.find_spec("matplotlib"):
        cmd += ["--plot", str(out / "bench.png")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    with open(out / "bench.json") as f:
        return json.load(f), r.stdout, out


def test_make_models_writes_llamacpp_quantized_files(tiny_cache):
    cache, cmd = tiny_cache
    meta, tensors = quant.read_gguf(str(cache / "tiny-llama1b-q4_k_m.gguf"))
    assert meta["general.architecture"] == "llama" and meta["llama.rope.freq_base"] == 500000.0
    assert len(meta["tokenizer.ggml.tokens"]) == 128256  # Meta's vocabulary, as in the real 1B
    assert "output.weight" not in tensors and "rope_freqs.weight" in tensors  # tied, 3.1-style rope scaling
    # llama.cpp's Q4_K_M mix: Q4_K matrices, Q6_K for the (tied) embedding and some attn_v / ffn_down
    assert {t.qtype.name for t in tensors.values() if len(t.shape) == 2} == {"Q4_K", "Q6_K"}
    assert tensors["token_embd.weight"].qtype.name == "Q6_K"
    meta, tensors = quant.read_gguf(str(cache / "tiny-replit3b-q4_k_m.gguf"))
    assert meta["general.architecture"] == "mpt" and meta["mpt.attention.head_count_kv"] == 8
    assert tensors["token_embd.weight"].shape[0] == 32768
    assert not [p for p in os.listdir(cache) if p.endswith(".part")]  # no sources or partial files left behind
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)  # files that exist are not made again
    assert r.returncode == 0 and r.stdout.count("skipped") == len(TINY_MODELS)


def test_bench_json_has_every_figure(bench_results):
    results, stdout, out = bench_results
    bandwidth = results["machine"]["bandwidth_bytes_per_s"]
    assert 1e9 < bandwidth < 1e12
    assert set(results["models"]) == {"smollm2", "tiny-llama1b-q4_k_m", "tiny-replit3b-q4_k_m"}
    assert results["settings"]["decode_tokens"] == 16 and results["settings"]["rounds"] == 1
    for name, r in results["models"].items():
        assert r["file_bytes"] == os.path.getsize(r["path"])
        assert 0 < r["bytes_per_token"] <= r["file_bytes"] and r["kv_bytes"] > 0
        assert "llama.cpp" in r["engines"] and len(r["engines"]) >= 2
        ref = r["engines"]["llama.cpp"]
        for engine, e in r["engines"].items():
            for m in ("pp32", "pp256", "decode", "ttft_warm_s", "peak_rss_bytes"):
                assert math.isfinite(e[m]) and e[m] > 0, (name, engine, m, e[m])
                assert len(e["runs"][m]) == 1
            assert e["ttft_cold_s"] is None  # --quick skips the cold start
            assert e["peak_rss_bytes"] > 20e6  # at least Python and NumPy
            assert e["rss_ok"] == (e["peak_rss_bytes"] <= r["file_bytes"] + r["kv_bytes"] + 300e6)
            assert e["bandwidth_fraction"] == pytest.approx(r["bytes_per_token"] * e["decode"] / bandwidth)
            if engine != "llama.cpp":
                q = r["ratios"][engine]
                for m in ("pp32", "pp256", "decode", "ttft_warm_s", "peak_rss_bytes"):
                    assert q[m] == pytest.approx(e[m] / ref[m])
                assert q["ttft_cold_s"] is None
        assert set(r["ratios"]) == set(r["engines"]) - {"llama.cpp"}
        assert f"== {name}:" in stdout  # a table per model
    if importlib.util.find_spec("matplotlib"):
        assert os.path.getsize(out / "bench.png") > 10000
