"""Bad model files never crash: mutations of a valid tiny GGUF go through `llama3.py` in a subprocess, and each
run must end with exit status 0 (the damage was harmless), 1 (a one-line message naming the problem) or 2, never
a traceback, a signal (segfault) or a hang.

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


def test_mutated_files_fail_cleanly(cases):
    # One Python process runs every case (the import of Numba costs a second each); each case in a fresh
    # subprocess would be cleaner but 100x slower. A crash of the runner itself shows as a signal here.
    runner = (
        "import sys, llama3\n"
        "for path in sys.argv[1:]:\n"
        "    code = llama3.main(['--model-path', path, '--prompt', 'hi', '--max-new-tokens', '2',"
        " '--temperature', '0', '--max-length', '16'])\n"
        "    print('STATUS', code, flush=True)\n"
        "    print('CASE-END', file=sys.stderr, flush=True)\n")
    r = subprocess.run([sys.executable, "-c", runner, *[p for _, p in cases]], cwd=ROOT, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, f"runner died with {r.returncode}:\n{r.stderr[-3000:]}"
    statuses = [int(line.split()[1]) for line in r.stdout.splitlines() if line.startswith("STATUS")]
    errors = r.stderr.split("CASE-END\n")
    assert len(statuses) == len(cases)
    for (name, _), status, err in zip(cases, statuses, errors):
        assert status in (0, 1, 2), name
        assert "Traceback" not in err, f"{name}:\n{err}"
        if status:
            assert err.strip().startswith("llama3.py: error:") and err.strip().count("\n") == 0, f"{name}: {err}"
