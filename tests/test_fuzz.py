"""Bad model files never crash: mutations of a valid tiny GGUF go through `llama3.py` (and of a valid checkpoint
directory through `replit.py`) in a subprocess, and each run must end with exit status 0 (the damage was harmless),
1 (a one-line message naming the problem) or 2, never a traceback, a signal (segfault) or a hang.

The cases are deterministic: truncation at every section boundary and inside each section, flipped bytes in the
header, the metadata and the tensor infos, and out-of-range counts, lengths, offsets and types written over the
fields where they live. FUZZ_CASES=N adds N random byte-flip mutations (default 20 in CI; more for a long run).
"""
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

import models
from conftest import ROOT

N_RANDOM = int(os.environ.get("FUZZ_CASES", "20"))


def layout(data):
    """Byte offsets of the GGUF sections of a valid file: end of header, of metadata, of tensor infos."""
    pos = 24
    n_tensors, n_kv = struct.unpack_from("<QQ", data, 8)

    def skip_value(kind, pos):
        sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
        if kind == 8:
            return pos + 8 + struct.unpack_from("<Q", data, pos)[0]
        if kind == 9:
            elem, count = struct.unpack_from("<IQ", data, pos)
            pos += 12
            for _ in range(count):
                pos = skip_value(elem, pos)
            return pos
        return pos + sizes[kind]

    kv_fields = []
    for _ in range(n_kv):
        key_start = pos
        pos += 8 + struct.unpack_from("<Q", data, pos)[0]
        kind = struct.unpack_from("<I", data, pos)[0]
        kv_fields.append((key_start, pos))  # (where the key length is, where the value type is)
        pos = skip_value(kind, pos + 4)
    meta_end = pos
    infos = []
    for _ in range(n_tensors):
        name_at = pos
        pos += 8 + struct.unpack_from("<Q", data, pos)[0]
        n_dims = struct.unpack_from("<I", data, pos)[0]
        dims_at = pos + 4
        pos += 4 + 8 * n_dims
        infos.append((name_at, dims_at, pos, pos + 4))  # name, dims, type, offset
        pos += 12
    return kv_fields, meta_end, infos, pos


def mutations(data, rng):
    kv_fields, meta_end, infos, info_end = layout(data)
    cases = {}
    for cut in [4, 8, 16, 24, 30, meta_end - 1, meta_end, meta_end + 20, info_end, info_end + 40, len(data) // 2,
                len(data) - 100]:
        cases[f"truncated at {cut}"] = data[:cut]

    def put(name, offset, fmt, value):
        b = bytearray(data)
        struct.pack_into(fmt, b, offset, value)
        cases[name] = bytes(b)

    put("version 99", 4, "<I", 99)
    put("tensor count huge", 8, "<Q", 1 << 62)
    put("kv count huge", 16, "<Q", 1 << 62)
    put("tensor count short", 8, "<Q", len(infos) - 1)
    for i in (0, 3, len(kv_fields) // 2, len(kv_fields) - 1):
        key_at, type_at = kv_fields[i]
        put(f"key {i} length huge", key_at, "<Q", 1 << 40)
        put(f"key {i} value type 77", type_at, "<I", 77)
        put(f"key {i} value type string", type_at, "<I", 8)
        put(f"key {i} value type u8", type_at, "<I", 0)
    for i in (0, 1, len(infos) // 2, len(infos) - 1):
        name_at, dims_at, type_at, offset_at = infos[i]
        put(f"tensor {i} dim huge", dims_at, "<Q", 1 << 40)
        put(f"tensor {i} dim zero", dims_at, "<Q", 0)
        put(f"tensor {i} dim halved", dims_at, "<Q", struct.unpack_from("<Q", data, dims_at)[0] // 2)
        put(f"tensor {i} type 200", type_at, "<I", 200)
        put(f"tensor {i} type Q4_K", type_at, "<I", 12)
        put(f"tensor {i} type F16", type_at, "<I", 1)
        put(f"tensor {i} offset far", offset_at, "<Q", 1 << 50)
        put(f"tensor {i} offset misaligned", offset_at, "<Q", struct.unpack_from("<Q", data, offset_at)[0] + 1)
    for j in range(N_RANDOM):  # a few random bytes flipped anywhere before the tensor data
        b = bytearray(data)
        for at in rng.integers(0, info_end, size=rng.integers(1, 4)):
            b[at] ^= int(rng.integers(1, 256))
        cases[f"random flips {j}"] = bytes(b)
    return cases


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    good = folder / "good.gguf"
    models.write_tiny_llama(good, qtype="Q8_0", n_layers=1, dim=64, n_heads=2, n_kv_heads=1, hidden_dim=128)
    data = good.read_bytes()
    out = []
    for i, (name, blob) in enumerate(mutations(data, np.random.default_rng(0)).items()):
        path = folder / f"case{i}.gguf"
        path.write_bytes(blob)
        out.append((name, str(path)))
    return out


def run_all(script, paths, extra=()):
    """Run script's main() on each path in ONE subprocess (importing Numba costs a second per process); a crash
    of the runner itself (a signal) fails the test. Returns [(status, stderr)] per path."""
    runner = (
        f"import sys, {script}\n"
        "for path in sys.argv[1:]:\n"
        f"    code = {script}.main(['--model-path', path, '--prompt', 'hi', '--max-new-tokens', '2',"
        f" '--temperature', '0', '--max-length', '16', *{list(extra)!r}])\n"
        "    print('STATUS', code, flush=True)\n"
        "    print('CASE-END', file=sys.stderr, flush=True)\n"
        "import resource\n"
        "print('PEAK-MIB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)\n")
    r = subprocess.run([sys.executable, "-c", runner, *paths], cwd=ROOT, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, f"runner died with {r.returncode}:\n{r.stderr[-3000:]}"
    # The files are a few hundred KB: no case may make the loader allocate what a declared size claims.
    peak = int(r.stdout.split("PEAK-MIB")[1])
    assert peak < 1500, f"the runner peaked at {peak} MiB"
    statuses = [int(line.split()[1]) for line in r.stdout.splitlines() if line.startswith("STATUS")]
    assert len(statuses) == len(paths)
    return list(zip(statuses, r.stderr.split("CASE-END\n")))


def assert_clean(names, results, prog):
    for name, (status, err) in zip(names, results):
        assert status in (0, 1, 2), name
        assert "Traceback" not in err, f"{name}:\n{err}"
        if status:
            assert err.strip().startswith(f"{prog}: error:") and err.strip().count("\n") == 0, f"{name}: {err}"


def test_mutated_files_fail_cleanly(cases):
    assert_clean([n for n, _ in cases], run_all("llama3", [p for _, p in cases]), "llama3.py")


# Well-formed files with wrong values: every one must be refused with a message (status 1).
SEMANTIC = {
    "dim as string": {"llama.embedding_length": "sixty-four"},
    "no heads": {"llama.attention.head_count": 0},
    "kv heads do not divide": {"llama.attention.head_count_kv": 3},
    "negative eps": {"llama.attention.layer_norm_rms_epsilon": -1.0},
    "negative rope base": {"llama.rope.freq_base": -5.0},
    "no context": {"llama.context_length": 0},
    "more blocks than tensors": {"llama.block_count": 5},
    "vocab larger than embedding": {"llama.vocab_size": 100000},
    "bos outside vocab": {"tokenizer.ggml.bos_token_id": 10 ** 6},
    "eos outside vocab": {"tokenizer.ggml.eos_token_id": 10 ** 6},
    "tokens are numbers": {"tokenizer.ggml.tokens": list(range(269))},
    "token types too few": {"tokenizer.ggml.token_type": [1, 1]},
    "merges garbage": {"tokenizer.ggml.merges": ["nospace", "x"]},
    "unknown pre-tokenizer": {"tokenizer.ggml.pre": "klingon"},
    "unknown tokenizer model": {"tokenizer.ggml.model": "wordpiece"},
    "eps missing": {"llama.attention.layer_norm_rms_epsilon": None},
}


def rewrite(src, dst, changes):
    """Copy a GGUF with gguf-py's writer, replacing (or with None, dropping) some metadata values."""
    import gguf
    import quant

    meta, tensors = quant.read_gguf(src)
    w = gguf.GGUFWriter(dst, meta["general.architecture"])
    for key, value in meta.items():
        value = changes.get(key, value)
        if key == "general.architecture" or value is None:
            continue
        if isinstance(value, bool):
            w.add_bool(key, value)
        elif isinstance(value, str):
            w.add_string(key, value)
        elif isinstance(value, float):
            w.add_float32(key, value)
        elif isinstance(value, int):
            w.add_int64(key, value) if value < 0 else w.add_uint64(key, value)
        else:
            w.add_array(key, value)
    for name, t in tensors.items():
        w.add_tensor(name, np.array(t.data), raw_dtype=t.qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_wrong_values_are_refused(tmp_path):
    good = tmp_path / "good.gguf"
    models.write_tiny_llama(good, qtype="Q8_0", n_layers=1, dim=64, n_heads=2, n_kv_heads=1, hidden_dim=128)
    paths = []
    for i, changes in enumerate(SEMANTIC.values()):
        paths.append(str(tmp_path / f"bad{i}.gguf"))
        rewrite(str(good), paths[-1], changes)
    results = run_all("llama3", paths)
    assert_clean(list(SEMANTIC), results, "llama3.py")
    assert [status for status, _ in results] == [1] * len(SEMANTIC), list(zip(SEMANTIC, results))


def checkpoint_mutations(folder, out):
    """Broken copies of a tiny Replit checkpoint directory: name -> directory."""
    import json
    import shutil

    config = json.loads((folder / "config.json").read_text())
    weights = (folder / "model.safetensors").read_bytes()
    header_len = int.from_bytes(weights[:8], "little")
    cases = {}

    def variant(name, config_changes=None, files=None):
        d = out / f"case{len(cases)}"
        shutil.copytree(folder, d)
        if config_changes is not None:
            (d / "config.json").write_text(json.dumps({**config, **config_changes}))
        for fname, blob in (files or {}).items():
            if blob is None:
                (d / fname).unlink()
            else:
                (d / fname).write_bytes(blob)
        cases[name] = str(d)

    variant("config not json", files={"config.json": b"{nope"})
    variant("config missing", files={"config.json": None})
    variant("no d_model", {"d_model": None})
    variant("heads a string", {"n_heads": "many"})
    variant("no heads", {"n_heads": 0})
    variant("kv heads do not divide", {"attn_config": {**config["attn_config"], "kv_n_heads": 5}})
    variant("negative context", {"max_seq_len": -1})
    variant("negative eps", {"layer_norm_epsilon": -1.0})
    variant("not mpt", {"model_type": "gpt2"})
    variant("vocab larger than embedding", {"vocab_size": 10 ** 6})
    for cut in (4, 8, header_len // 2, 8 + header_len, len(weights) // 2, len(weights) - 1):
        variant(f"safetensors cut at {cut}", files={"model.safetensors": weights[:cut]})
    variant("safetensors header huge", files={"model.safetensors": (1 << 60).to_bytes(8, "little") + weights[8:]})
    bad_header = weights[8:8 + header_len].replace(b'"F32"', b'"I64"', 1)
    variant("safetensors dtype I64", files={"model.safetensors": weights[:8] + bad_header + weights[8 + header_len:]})
    shifted = weights[8:8 + header_len].replace(b'"data_offsets":[0,', b'"data_offsets":[1,', 1)
    variant("safetensors offsets off", files={"model.safetensors": weights[:8] + shifted + weights[8 + header_len:]})
    variant("tokenizer not json", files={"tokenizer.json": b"[1, 2"})
    variant("tokenizer wordpiece", files={"tokenizer.json": json.dumps({"model": {"type": "WordPiece"}}).encode()})
    variant("tokenizer missing", files={"tokenizer.json": None})
    variant("bin truncated", files={"model.safetensors": None, "pytorch_model.bin": b"PK\x03\x04garbage"})
    return cases


def test_broken_checkpoints_fail_cleanly(tmp_path):
    models.write_tiny_mpt_hf(str(tmp_path / "good"), d_model=256, n_heads=8, kv_n_heads=2, n_layers=1)
    cases = checkpoint_mutations(tmp_path / "good", tmp_path)
    results = run_all("replit", list(cases.values()))
    assert_clean(list(cases), results, "replit.py")
    assert all(status == 1 for status, _ in results), list(zip(cases, results))
