"""replit.py against implementations we did not write.

- Tiny Replit-shaped checkpoints (tests/models.py: safetensors written by the safetensors library): 24 heads over
  8 KV heads (ALiBi for a head count that is not a power of two, grouped-query attention), bfloat16 weights, and a
  multi-head SentencePiece variant like Replit Code V1. Logits equal transformers' MptForCausalLM (K/V heads
  repeated into a multi-head checkpoint, exact GELU) to 1e-4, prefill and token by token.
- The converter's GGUF gives the same logits as the checkpoint directory, and llama.cpp loads it and agrees within
  its tanh-approximated GELU.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

import replit
import models
from conftest import ROOT, max_diff, run_transformers

TOL = 1e-4
IDS = [5, 17, 200, 3, 99, 100, 42, 7, 8, 264, 11, 12, 70, 71, 72, 32]

VARIANTS = {
    "gqa": dict(seed=1),
    "gqa-bf16": dict(seed=1, dtype="bfloat16"),
    "mha-spm": dict(seed=2, d_model=256, n_heads=8, kv_n_heads=None, tokenizer="spm"),
}


@pytest.fixture(scope="session")
def mpt_dirs(tmp_path_factory):
    base = tmp_path_factory.mktemp("mpt")
    out = {}
    for name, opts in VARIANTS.items():
        models.write_tiny_mpt_hf(str(base / name), **opts)
        out[name] = str(base / name)
    return out


@pytest.fixture(scope="session")
def mpt_reference(mpt_dirs, tmp_path_factory):
    work = str(tmp_path_factory.mktemp("mpt-oracle"))
    jobs = [{"mpt_dir": d, "ids": IDS, "out": os.path.join(work, n + ".npy")} for n, d in mpt_dirs.items()]
    run_transformers(jobs, work)
    return {n: np.load(os.path.join(work, n + ".npy")) for n in mpt_dirs}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_prefill_and_decode_match_transformers(name, mpt_dirs, mpt_reference):
    ref = mpt_reference[name]
    model = replit.load(mpt_dirs[name], max_length=64, kernels="float")
    assert max_diff(model.forward(IDS, 0), ref) <= TOL
    one_by_one = np.concatenate([model.forward([t], pos) for pos, t in enumerate(IDS)])
    assert max_diff(one_by_one, ref) <= TOL
    mixed = [model.forward(IDS[:6], 0)] + [model.forward([t], 6 + i) for i, t in enumerate(IDS[6:])]
    assert max_diff(np.concatenate(mixed), ref) <= TOL


def test_config_read_from_checkpoint(mpt_dirs):
    c = replit.load(mpt_dirs["gqa"], max_length=None).config
    assert (c.dim, c.n_heads, c.n_kv_heads, c.head_size, c.hidden_dim, c.n_layers, c.max_length) == \
        (768, 24, 8, 32, 3072, 2, 128)
    c = replit.load(mpt_dirs["mha-spm"], max_length=32).config
    assert (c.n_heads, c.n_kv_heads, c.vocab_size) == (8, 8, 400)


def test_alibi_slopes_for_24_heads():
    """MPT's recipe for a head count that is not a power of two (REFERENCE.md; ggml computes the same)."""
    expected = [2 ** (-j / 2) for j in range(1, 17)] + [2 ** (-k / 4) for k in range(1, 16, 2)]
    assert np.allclose(replit.alibi_slopes(24, 8), expected, rtol=1e-6)
    assert np.allclose(replit.alibi_slopes(8, 8), [2.0 ** -k for k in range(1, 9)], rtol=1e-6)


def test_spm_tokenizer_matches_sentencepiece(mpt_dirs):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=os.path.join(mpt_dirs["mha-spm"], "spiece.model"))
    tok = replit.load(mpt_dirs["mha-spm"], max_length=32).tokenizer
    for text in models.SPM_CORPUS[:5] + ["\tx = 1\n    y = 2", "naïve"]:
        assert tok.encode(text, bos=False) == sp.encode(text)


@pytest.fixture(scope="session")
def gguf_f32(mpt_dirs, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("mpt-gguf") / "gqa-f32.gguf")
    return replit.convert(mpt_dirs["gqa"], path, "f32")


def test_gguf_equals_checkpoint(mpt_dirs, gguf_f32):
    a = replit.load(mpt_dirs["gqa"], max_length=64).forward(IDS, 0)
    b = replit.load(gguf_f32, max_length=64).forward(IDS, 0)
    assert max_diff(a, b) <= 1e-6
    text = "the then\n\tthere"
    assert replit.load(gguf_f32, 64).tokenizer.encode(text) == replit.load(mpt_dirs["gqa"], 64).tokenizer.encode(text)


def test_gguf_f16_close_to_checkpoint(mpt_dirs, tmp_path):
    path = replit.convert(mpt_dirs["gqa"], str(tmp_path / "f16.gguf"), "f16")
    a = replit.load(mpt_dirs["gqa"], max_length=64).forward(IDS, 0)
    b = replit.load(path, max_length=64).forward(IDS, 0)
    assert max_diff(a, b) <= 0.05 and (a.argmax(1) == b.argmax(1)).all()


def test_llamacpp_loads_our_gguf_and_agrees(mpt_dirs, gguf_f32):
    """llama.cpp's MPT uses the tanh approximation of GELU (from an fp16 table): a few 1e-3 apart, same argmax."""
    import llama_cpp

    ours = replit.load(gguf_f32, max_length=64).forward(IDS, 0)
    llm = llama_cpp.Llama(gguf_f32, n_ctx=64, n_threads=2, logits_all=True, type_k=0, type_v=0, verbose=False)
    llm.eval(IDS)
    theirs = np.array(llm.scores[:len(IDS)])
    assert max_diff(ours, theirs) <= 2e-2
    assert (ours.argmax(1) == theirs.argmax(1)).all()


@pytest.mark.parametrize("kind", ["q8_0", "q4_0", "q4_k", "q6_k"])
def test_quantized_gguf_greedy_matches_llamacpp(kind, mpt_dirs, tmp_path):
    """Quantized by our converter, run by both: llama.cpp also quantizes the activations (q8), so the logits
    differ slightly; the first greedy steps must still agree."""
    import llama_cpp

    path = replit.convert(mpt_dirs["gqa"], str(tmp_path / f"{kind}.gguf"), kind)
    ids = IDS[:8]
    ours = list(replit.generate(replit.load(path, max_length=64), ids, 5, temperature=0, stop_ids=()))
    llm = llama_cpp.Llama(path, n_ctx=64, n_threads=2, logits_all=True, type_k=0, type_v=0, verbose=False)
    llm.eval(ids)
    theirs = []
    for _ in range(5):
        theirs.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
        llm.eval([theirs[-1]])
    assert ours == theirs


def cli(*args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "replit.py"), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)


def test_cli_completes(mpt_dirs):
    r = cli("--model-path", mpt_dirs["gqa"], "--prompt", "def f():\\n  return", "--max-new-tokens", "4",
            "--temperature", "0", "--num-warmups", "1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("def f():\n  return")  # the typed \n became a newline
    assert "output size: 4 tokens" in r.stderr and "peak memory:" in r.stderr


@pytest.mark.parametrize("args, status, words", [
    (["--model-path", "/no/such/dir"], 1, "no such file"),
    (["--model-path", "/tmp"], 1, "config.json"),
    (["--temperature", "-1"], 2, "--temperature"),
    (["--convert-to", "x.gguf"], 2, "--convert-to"),
])
def test_cli_errors(args, status, words):
    r = cli(*args)
    assert r.returncode == status and words in r.stderr and "Traceback" not in r.stderr


# ----------------------------------------------------------------------------------------------------------------------
# The original pytorch_model.bin, read without torch and without running code from the file


def test_pytorch_bin_equals_safetensors(mpt_dirs, tmp_path):
    import shutil

    import torch
    from safetensors.torch import load_file

    for name in ["gqa", "gqa-bf16"]:
        folder = tmp_path / name
        folder.mkdir()
        for f in ["config.json", "tokenizer.json"]:
            shutil.copy(os.path.join(mpt_dirs[name], f), folder)
        state = load_file(os.path.join(mpt_dirs[name], "model.safetensors"))
        state["transformer.wte.weight"] = torch.nn.Parameter(state["transformer.wte.weight"], requires_grad=False)
        torch.save(state, folder / "pytorch_model.bin")  # torch's own writer, as the hub's checkpoints were made
        a = replit.load(mpt_dirs[name], max_length=64).forward(IDS, 0)
        b = replit.load(str(folder), max_length=64).forward(IDS, 0)
        assert max_diff(a, b) == 0.0


def test_hostile_pickle_is_refused(mpt_dirs, tmp_path):
    import pickle
    import shutil
    import zipfile

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    folder = tmp_path / "evil"
    folder.mkdir()
    shutil.copy(os.path.join(mpt_dirs["gqa"], "config.json"), folder)
    with zipfile.ZipFile(folder / "pytorch_model.bin", "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"transformer.wte.weight": Evil()}))
    with pytest.raises(replit.ModelError, match="refusing to unpickle"):
        replit.load(str(folder))
    assert not marker.exists()


# ----------------------------------------------------------------------------------------------------------------------
# Byte-level BPE from tokenizer.json, against Hugging Face's tokenizers library on a vocabulary it trained

CODE_TEXTS = [
    "", "x", "def f(a, b):\n\treturn a + b\n", "    indented = True\n        more = False\n",
    "if (x) {\n\t\ty = 1;   // trailing spaces   \n}\n", "naïve café — 日本語 🚀🚀 ok", "12345 + 678 = 13023",
    "It's they'll we'd I'm", "<|endoftext|>print(1)<|endoftext|>", "\n\n\n\t \t", "SELECT * FROM t;",
]


def test_bpe_tokenizer_json_matches_hf_tokenizers(tmp_path):
    import json

    import tokenizers as ours

    texts = tmp_path / "texts.json"
    texts.write_text(json.dumps(CODE_TEXTS), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "oracle_hf_tokenizers.py"), str(tmp_path),
                        str(texts)], cwd=str(tmp_path), env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    expected = json.loads((tmp_path / "ids.json").read_text())
    tok = ours.from_hf_tokenizer_json(str(tmp_path / "tokenizer.json"), add_bos=False)
    for text, ids in zip(CODE_TEXTS, expected):
        assert tok.encode(text) == ids, text
        assert tok.decode(ids) == text


def test_failed_conversion_leaves_nothing(mpt_dirs, tmp_path):
    import shutil

    folder = tmp_path / "broken"
    shutil.copytree(mpt_dirs["gqa"], folder)
    (folder / "tokenizer.json").write_text("{}")  # the weights convert, the vocabulary then fails
    with pytest.raises(replit.ModelError):
        replit.convert(str(folder), str(tmp_path / "out.gguf"), "f32")
    assert os.listdir(tmp_path) == ["broken"]


def test_cli_offline_default_download_is_one_clear_line(tmp_path):
    """No --model-path and no reachable hub: one line naming the repo and what to pass instead."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_") and k != "PYTHONPATH"}
    env.update(HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path), HF_HUB_DISABLE_TELEMETRY="1",
               HF_HUB_ETAG_TIMEOUT="3", HF_HUB_DOWNLOAD_TIMEOUT="3")
    r = subprocess.run([sys.executable, os.path.join(ROOT, "replit.py"), "--prompt", "x"], capture_output=True,
                       text=True, cwd=ROOT, env=env, timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1 and "replit/replit-code-v1_5-3b" in r.stderr and "checkpoint directory" in r.stderr


def test_padded_vocabulary_converts_for_llamacpp(tmp_path):
    """An embedding with more rows than the tokenizer has tokens (as many real checkpoints have): the GGUF pads
    the token list, and llama.cpp loads it and agrees with us."""
    import llama_cpp

    folder = str(tmp_path / "padded")
    models.write_tiny_mpt_hf(folder, seed=3, d_model=256, n_heads=8, kv_n_heads=2, vocab_rows=320)
    path = replit.convert(folder, str(tmp_path / "padded.gguf"), "f32")
    ours = replit.load(path, max_length=32).forward(IDS, 0)
    assert ours.shape == (len(IDS), 320)
    assert max_diff(ours, replit.load(folder, max_length=32).forward(IDS, 0)) <= 1e-6
    llm = llama_cpp.Llama(path, n_ctx=32, n_threads=2, logits_all=True, type_k=0, type_v=0, verbose=False)
    llm.eval(IDS)
    assert max_diff(ours, np.array(llm.scores[:len(IDS)])) <= 2e-2


@pytest.mark.parametrize("change", [
    {"norm_type": "rmsnorm"}, {"ffn_config": {"ffn_type": "mptglu"}}, {"logit_scale": 0.5},
    {"attn_config": {"alibi": True, "softmax_scale": 0.1}}, {"attn_config": {"alibi": False}},
    {"attn_config": {"alibi": True, "sliding_window_size": 16}}, {"no_bias": False}, {"attn_config": "x"},
])
def test_unsupported_mpt_options_are_refused(change, mpt_dirs, tmp_path):
    import json
    import shutil

    folder = tmp_path / "variant"
    shutil.copytree(mpt_dirs["gqa"], folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(replit.ModelError):
        replit.load(str(folder), max_length=32)


def test_zip_bomb_pickle_is_refused(mpt_dirs, tmp_path):
    import shutil
    import zipfile

    folder = tmp_path / "bomb"
    folder.mkdir()
    shutil.copy(os.path.join(mpt_dirs["gqa"], "config.json"), folder)
    with zipfile.ZipFile(folder / "pytorch_model.bin", "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data.pkl", b"\0" * (80 << 20))  # 80 MB of zeros, deflated to ~80 KB
    with pytest.raises(replit.ModelError, match="data.pkl"):
        replit.load(str(folder))
