"""Replit Code V1.5 3B code completion (the MPT architecture), in NumPy and Numba.

Read it as "what differs from llama3.py": the sampler, the generation loop, the streaming and the statistics are
llama3.py's own; what is new is the MPT block:

    Llama 3                                   MPT (Replit Code)
    RMSNorm                                   LayerNorm with a weight and no bias
    separate q, k, v projections              one fused Wqkv projection, rows [q | k | v]
    RoPE rotates q and k by position          ALiBi: no positions in q/k, a distance penalty on the scores
    SwiGLU feed-forward (3 matrices)          GELU feed-forward (2 matrices), exact erf GELU
    separate or tied output matrix            always tied: the logits reuse the token embedding

    python replit.py --model-path replit-code-v1_5-3b/ --prompt 'def fib(n):\\n'

Weights come from a Hugging Face checkpoint directory as published (config.json, *.safetensors in float32,
float16 or bfloat16, and the tokenizer files), or from a GGUF file of architecture "mpt" in any type quant.py reads.
Every size is read from the model's own config. The arithmetic is float32 and the KV cache is float32.
"""
import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass

T_START = time.perf_counter()  # "startup time" counts from here

import llama3  # first: it limits NumPy's BLAS threads before NumPy loads
import numba
import numpy as np

import quant
import tokenizers
from llama3 import ModelError, UsageError, generate  # noqa: F401  (generate: the generation loop both models share)


# ----------------------------------------------------------------------------------------------------------------------
# Config


@dataclass
class Config:
    dim: int              # d_model: width of the residual stream
    hidden_dim: int       # width of the feed-forward layer (expansion_ratio * d_model)
    n_layers: int         # number of transformer blocks
    n_heads: int          # number of query heads
    n_kv_heads: int       # number of key/value heads (kv_n_heads; = n_heads for plain multi-head attention)
    head_size: int        # dim // n_heads
    vocab_size: int       # number of tokens (rows of the embedding)
    seq_len: int          # the context the model was trained for (max_seq_len)
    max_length: int       # the context we allocate: prompt + generated tokens, sizes the KV cache
    norm_eps: float       # LayerNorm's epsilon
    alibi_bias_max: float # ALiBi's largest slope exponent (8 in MPT)
    clip_qkv: float       # clamp q, k, v to [-clip_qkv, clip_qkv] (0: no clamping)
    name: str             # for the user's information

    @property
    def kv_dim(self):
        return self.n_kv_heads * self.head_size

    @property
    def kv_mul(self):
        return self.n_heads // self.n_kv_heads


def make_config(dim, n_heads, n_kv_heads, n_layers, hidden_dim, vocab_size, seq_len, max_length, fit_context,
                norm_eps, alibi_bias_max, clip_qkv, name):
    """Check the hyper-parameters for consistency and build the Config (shared by both file formats)."""
    if min(dim, n_heads, n_kv_heads, n_layers, hidden_dim, vocab_size, seq_len) <= 0:
        raise ModelError("every size in the config must be positive")
    if not (float(norm_eps) > 0 and float(alibi_bias_max) > 0):
        raise ModelError(f"bad hyper-parameters: eps {norm_eps}, alibi_bias_max {alibi_bias_max}")
    if dim % n_heads or n_heads % n_kv_heads:
        raise ModelError(f"d_model {dim} must divide into {n_heads} heads, and those into {n_kv_heads} KV heads")
    max_length = llama3.fit_max_length(max_length, seq_len, fit_context)
    return Config(dim=dim, hidden_dim=hidden_dim, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv_heads,
                  head_size=dim // n_heads, vocab_size=vocab_size, seq_len=seq_len, max_length=max_length,
                  norm_eps=float(norm_eps), alibi_bias_max=float(alibi_bias_max), clip_qkv=float(clip_qkv or 0.0),
                  name=name)


def config_from_hf(hf, max_length, fit_context):
    """From a checkpoint's config.json (MPT's names: d_model, n_heads, attn_config.kv_n_heads, ...). Options that
    would change the arithmetic and that this file does not implement are refused, never silently ignored."""
    attn = hf.get("attn_config") or {} if isinstance(hf, dict) else None
    ffn = hf.get("ffn_config") or {} if isinstance(hf, dict) else None
    if not isinstance(attn, dict) or not isinstance(ffn, dict):
        raise ModelError("config.json: the config and its attn_config / ffn_config must be JSON objects")
    if hf.get("model_type") != "mpt":
        raise ModelError(f"config.json: model_type is {hf.get('model_type')!r}, but replit.py runs 'mpt' models")
    unsupported = {
        "position encoding other than ALiBi": not attn.get("alibi", False) or attn.get("rope", False),
        "biases (no_bias false)": not hf.get("no_bias", True),
        "qk_ln / qk_gn": attn.get("qk_ln", False) or attn.get("qk_gn", False),
        "a sliding attention window": attn.get("sliding_window_size", -1) not in (-1, None),
        "a custom softmax_scale or logit_scale": attn.get("softmax_scale") is not None
        or hf.get("logit_scale") is not None,
        f"norm_type {hf.get('norm_type')!r}": hf.get("norm_type", "low_precision_layernorm")
        not in ("layernorm", "low_precision_layernorm"),
        f"ffn_type {ffn.get('ffn_type')!r}": ffn.get("ffn_type", "mptmlp") != "mptmlp",
        "an activation other than exact GELU": ffn.get("ffn_act_fn", {"name": "gelu"}) not in (
            {"name": "gelu"}, {"name": "gelu", "approximate": "none"}),
    }
    for what, present in unsupported.items():
        if present:
            raise ModelError(f"config.json: {what} is not supported (Replit Code has none)")
    try:
        n_heads = int(hf["n_heads"])
        kind = attn.get("attn_type", "multihead_attention")
        n_kv_heads = {"multihead_attention": n_heads, "multiquery_attention": 1}.get(kind)
        if n_kv_heads is None:  # grouped_query_attention
            n_kv_heads = int(attn.get("kv_n_heads") or n_heads)
        return make_config(
            dim=int(hf["d_model"]), n_heads=n_heads, n_kv_heads=n_kv_heads,
            n_layers=int(hf["n_layers"]), hidden_dim=int(hf.get("expansion_ratio", 4) * hf["d_model"]),
            vocab_size=int(hf["vocab_size"]), seq_len=int(hf["max_seq_len"]), max_length=max_length,
            fit_context=fit_context, norm_eps=float(hf.get("layer_norm_epsilon", 1e-5)),
            alibi_bias_max=float(attn.get("alibi_bias_max", 8)), clip_qkv=attn.get("clip_qkv"),
            name=str(hf.get("_name_or_path") or hf.get("tokenizer_name") or "mpt"))
    except (KeyError, TypeError, ValueError) as e:
        raise ModelError(f"config.json: missing or bad value ({type(e).__name__}: {e})") from None


def config_from_gguf(meta, tensors, max_length, fit_context):
    """From a GGUF's metadata (llama.cpp's mpt.* keys)."""
    if meta.get("general.architecture") != "mpt":
        raise ModelError(f"architecture is {meta.get('general.architecture')!r}, but replit.py runs 'mpt' files")
    try:
        n_heads = int(meta["mpt.attention.head_count"])
        return make_config(
            dim=int(meta["mpt.embedding_length"]), n_heads=n_heads,
            n_kv_heads=int(meta.get("mpt.attention.head_count_kv", n_heads)),
            n_layers=int(meta["mpt.block_count"]), hidden_dim=int(meta["mpt.feed_forward_length"]),
            vocab_size=int(tensors["token_embd.weight"].shape[0]), seq_len=int(meta["mpt.context_length"]),
            max_length=max_length, fit_context=fit_context, norm_eps=meta["mpt.attention.layer_norm_epsilon"],
            alibi_bias_max=meta.get("mpt.attention.max_alibi_bias", 8.0),
            clip_qkv=meta.get("mpt.attention.clamp_kqv"), name=str(meta.get("general.name", "mpt")))
    except (KeyError, TypeError, ValueError) as e:
        raise ModelError(f"GGUF metadata: missing or bad value ({e})") from None


# ----------------------------------------------------------------------------------------------------------------------
# Weights: the same QMatrix views as llama3.py, from either file format


@dataclass
class LayerWeights:
    norm_1: np.ndarray      # [dim] LayerNorm weight before attention
    wqkv: quant.QMatrix     # [dim + 2*kv_dim, dim] fused projection: rows [q | k | v]
    wo: quant.QMatrix       # [dim, dim] attention output projection (out_proj)
    norm_2: np.ndarray      # [dim] LayerNorm weight before the feed-forward layer
    w_up: quant.QMatrix     # [hidden_dim, dim]
    w_down: quant.QMatrix   # [dim, hidden_dim]


@dataclass
class Weights:
    token_embedding: quant.QMatrix  # [vocab_size, dim] (wte), also the output projection
    layers: list                    # n_layers x LayerWeights
    final_norm: np.ndarray          # [dim] (norm_f)
    output: quant.QMatrix           # [vocab_size, dim]: the embedding itself unless a GGUF stores its own


# Our names for an MPT block's tensors in a Hugging Face checkpoint and in a llama.cpp GGUF.
HF_NAMES = {"norm_1": "transformer.blocks.{}.norm_1.weight", "wqkv": "transformer.blocks.{}.attn.Wqkv.weight",
            "wo": "transformer.blocks.{}.attn.out_proj.weight", "norm_2": "transformer.blocks.{}.norm_2.weight",
            "w_up": "transformer.blocks.{}.ffn.up_proj.weight", "w_down": "transformer.blocks.{}.ffn.down_proj.weight",
            "embedding": "transformer.wte.weight", "final_norm": "transformer.norm_f.weight"}
GGUF_NAMES = {"norm_1": "blk.{}.attn_norm.weight", "wqkv": "blk.{}.attn_qkv.weight",
              "wo": "blk.{}.attn_output.weight", "norm_2": "blk.{}.ffn_norm.weight",
              "w_up": "blk.{}.ffn_up.weight", "w_down": "blk.{}.ffn_down.weight",
              "embedding": "token_embd.weight", "final_norm": "output_norm.weight", "output": "output.weight"}


def load_weights(tensors, names, cfg, kernels="int8"):
    """tensors: {name: quant.GGUFTensor-like (qtype, shape, data)}; names: HF_NAMES or GGUF_NAMES; kernels: how
    quant.matmul multiplies the matrices (see llama3.load)."""

    def tensor(key, shape, layer=None, optional=False):
        name = names[key].format(layer)
        t = tensors.get(name)
        if t is None:
            if optional:
                return None
            raise ModelError(f"tensor {name} is missing")
        if tuple(t.shape) != shape:
            raise ModelError(f"tensor {name} has shape {tuple(t.shape)}, expected {shape}")
        if t.qtype not in quant.SUPPORTED:
            raise ModelError(f"tensor {name} has type {t.qtype.name}, which quant.py does not support")
        if len(shape) == 1:
            return quant.dequantize(t.data, t.qtype).reshape(shape)
        try:
            return quant.QMatrix(t.data, t.qtype, shape, kernels)
        except ValueError as e:
            raise ModelError(f"tensor {name}: {e}") from None

    expected = {names[k].format(l) for k in names for l in range(cfg.n_layers)} | {"lm_head.weight"}
    unexpected = sorted(set(tensors) - expected)
    if unexpected:  # biases, position embeddings, q/k norms...: weights this file would silently not use
        raise ModelError(f"tensor {unexpected[0]} is not part of the model replit.py runs "
                         f"({len(unexpected)} unexpected tensors)")
    d, h = cfg.dim, cfg.hidden_dim
    layers = [LayerWeights(
        norm_1=tensor("norm_1", (d,), l),
        wqkv=tensor("wqkv", (d + 2 * cfg.kv_dim, d), l),
        wo=tensor("wo", (d, d), l),
        norm_2=tensor("norm_2", (d,), l),
        w_up=tensor("w_up", (h, d), l),
        w_down=tensor("w_down", (d, h), l),
    ) for l in range(cfg.n_layers)]
    embedding = tensor("embedding", (cfg.vocab_size, d))
    output = tensor("output", (cfg.vocab_size, d), optional=True) if "output" in names else None
    return Weights(token_embedding=embedding, layers=layers, final_norm=tensor("final_norm", (d,)),
                   output=embedding if output is None else output)


# ----------------------------------------------------------------------------------------------------------------------
# Reading a Hugging Face checkpoint: safetensors files, memory-mapped

SAFETENSORS_TYPES = {"F32": (quant.QT.F32, np.float32), "F16": (quant.QT.F16, np.float16),
                     "BF16": (quant.QT.BF16, np.uint16)}  # bfloat16 stays raw: quant.py decodes it in the kernels


@dataclass
class HFTensor:
    qtype: object
    shape: tuple
    data: np.ndarray


def read_safetensors(path):
    """{name: HFTensor} of one .safetensors file: an 8-byte header length, a JSON header naming each tensor's
    dtype, shape and byte range, then the raw little-endian data (which we memory-map, never copy)."""
    mm = np.memmap(path, dtype=np.uint8, mode="r")                      # [file_size]
    if len(mm) < 8:
        raise ModelError(f"{path}: too short for a safetensors file")
    n = int(mm[:8].view("<u8")[0])
    if n > len(mm) - 8:
        raise ModelError(f"{path}: header of {n} bytes runs past the end of the file")
    try:
        header = json.loads(bytes(mm[8:8 + n]))
    except ValueError as e:
        raise ModelError(f"{path}: unreadable header ({e})") from None
    data = mm[8 + n:]
    if not isinstance(header, dict):
        raise ModelError(f"{path}: the header is not a JSON object")
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype_name, shape, (start, end) = info["dtype"], tuple(int(s) for s in info["shape"]), info["data_offsets"]
            start, end = int(start), int(end)
        except (KeyError, TypeError, ValueError):
            raise ModelError(f"{path}: tensor {name} has a malformed header entry") from None
        if dtype_name not in SAFETENSORS_TYPES:
            raise ModelError(f"{path}: tensor {name} has dtype {dtype_name}; supported: F32, F16, BF16")
        qtype, dtype = SAFETENSORS_TYPES[dtype_name]
        nbytes = int(np.prod(shape, dtype=np.float64)) * np.dtype(dtype).itemsize
        if min(shape, default=1) < 0 or not 0 <= start <= end <= len(data) or end - start != nbytes:
            raise ModelError(f"{path}: tensor {name} has a byte range that does not fit its shape or the file")
        tensors[name] = HFTensor(qtype, shape, data[start:end].view(dtype).reshape(shape))
    return tensors


# A pytorch_model.bin is a zip archive: data.pkl, a pickle of the state dict, and data/<key>, the raw bytes of each
# storage. Unpickling runs whatever functions the pickle names, so a hostile file could run any code: we unpickle
# with an Unpickler that knows only the few names a state dict needs, and map each storage's bytes from the zip.
TORCH_STORAGES = {"FloatStorage": (quant.QT.F32, np.float32), "HalfStorage": (quant.QT.F16, np.float16),
                  "BFloat16Storage": (quant.QT.BF16, np.uint16)}


def read_torch_bin(path):
    """{name: HFTensor} of a PyTorch state dict saved with torch.save, without torch and without running any
    code from the file. Tensors must be contiguous, in float32, float16 or bfloat16 storages."""
    import collections
    import io
    import pickle
    import zipfile

    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise ModelError(f"{path}: not a PyTorch zip checkpoint ({e})") from None
    names = archive.namelist()
    pkl = next((n for n in names if n.endswith("/data.pkl") or n == "data.pkl"), None)
    if pkl is None:
        raise ModelError(f"{path}: no data.pkl inside: not a PyTorch checkpoint")
    prefix = pkl[: -len("data.pkl")]

    def storage_bytes(key, dtype, numel):
        """The storage data/<key>, memory-mapped where the zip keeps it (torch.save stores it uncompressed)."""
        info = archive.getinfo(f"{prefix}data/{key}")
        if info.compress_type != zipfile.ZIP_STORED or info.file_size != numel * np.dtype(dtype).itemsize:
            raise ModelError(f"{path}: storage {key} is compressed or has the wrong size")
        with open(path, "rb") as f:  # the member's bytes follow its 30-byte local header, name and extra field
            f.seek(info.header_offset)
            header = f.read(30)
        start = info.header_offset + 30 + int.from_bytes(header[26:28], "little") + int.from_bytes(header[28:30],
                                                                                                   "little")
        return np.memmap(path, dtype=dtype, mode="r", offset=start, shape=(numel,))

    def rebuild_tensor(storage, offset, shape, stride, *_):
        qtype, data = storage
        shape = tuple(shape)
        contiguous = tuple(int(np.prod(shape[i + 1:])) for i in range(len(shape)))
        if shape and tuple(stride) != contiguous:
            raise ModelError(f"{path}: a tensor is not contiguous; re-save the checkpoint")
        n = int(np.prod(shape))
        if offset < 0 or offset + n > data.size:
            raise ModelError(f"{path}: a tensor lies outside its storage")
        return HFTensor(qtype, shape, data[offset:offset + n].reshape(shape))

    class StateDictUnpickler(pickle.Unpickler):
        def find_class(self, module, name):
            allowed = {("collections", "OrderedDict"): collections.OrderedDict,
                       ("torch._utils", "_rebuild_tensor_v2"): rebuild_tensor,
                       ("torch._utils", "_rebuild_parameter"): lambda tensor, *_: tensor}
            if (module, name) in allowed:
                return allowed[(module, name)]
            if module == "torch" and name in TORCH_STORAGES:
                return TORCH_STORAGES[name]
            raise ModelError(f"{path}: refusing to unpickle {module}.{name} (not part of a plain state dict)")

        def persistent_load(self, pid):  # ("storage", storage type, key, location, numel)
            if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and pid[1] in
                    TORCH_STORAGES.values()):
                raise ModelError(f"{path}: unexpected storage reference {pid!r:.80}")
            qtype, dtype = pid[1]
            return qtype, storage_bytes(pid[2], dtype, int(pid[4]))

    if archive.getinfo(pkl).file_size > 64 << 20:  # a state dict's pickle is small; its tensors live elsewhere
        raise ModelError(f"{path}: data.pkl declares {archive.getinfo(pkl).file_size} bytes: not a plain state dict")
    try:
        with archive.open(pkl) as f:
            state = StateDictUnpickler(io.BytesIO(f.read(64 << 20))).load()  # never more than the limit
    except ModelError:
        raise
    except Exception as e:  # a malformed pickle: any of pickle's many exception types
        raise ModelError(f"{path}: unreadable state dict ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or not all(isinstance(t, HFTensor) for t in state.values()):
        raise ModelError(f"{path}: does not hold a plain state dict of tensors")
    return dict(state)


def read_hf_checkpoint(folder):
    """config.json and every tensor of a checkpoint directory: .safetensors shards, or else the original
    pytorch_model*.bin files (read safely, see read_torch_bin)."""
    config_path = os.path.join(folder, "config.json")
    if not os.path.isfile(config_path):
        raise ModelError(f"{folder}: no config.json: not a Hugging Face checkpoint directory")
    with open(config_path, encoding="utf-8") as f:
        try:
            hf = json.load(f)
        except ValueError as e:
            raise ModelError(f"{config_path}: not valid JSON ({e})") from None
    files = sorted(os.listdir(folder))
    tensors = {}
    shards = [n for n in files if n.endswith(".safetensors")]
    for shard in shards:
        tensors.update(read_safetensors(os.path.join(folder, shard)))
    if not shards:
        bins = [n for n in files if n.startswith("pytorch_model") and n.endswith(".bin")]
        if not bins:
            raise ModelError(f"{folder}: no *.safetensors or pytorch_model*.bin weights")
        for shard in bins:
            tensors.update(read_torch_bin(os.path.join(folder, shard)))
    return hf, tensors


def load_hf_tokenizer(folder):
    """tokenizer.json (byte-level BPE, Replit Code V1.5) or spiece.model (SentencePiece, Replit Code V1)."""
    try:
        if os.path.isfile(os.path.join(folder, "tokenizer.json")):
            return tokenizers.from_hf_tokenizer_json(os.path.join(folder, "tokenizer.json"), add_bos=False)
        if os.path.isfile(os.path.join(folder, "spiece.model")):
            return tokenizers.from_sentencepiece_file(os.path.join(folder, "spiece.model"))
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError) as e:  # malformed files
        raise ModelError(f"{folder}: tokenizer: {type(e).__name__}: {e}") from None
    raise ModelError(f"{folder}: no tokenizer.json or spiece.model")


# ----------------------------------------------------------------------------------------------------------------------
# Neural net blocks: what MPT does differently


def layernorm(x, weight, eps):
    """Centre and scale each row to unit variance, then multiply by a learned weight (MPT has no bias).
    [n, dim] -> [n, dim]"""
    mean = np.mean(x, axis=-1, keepdims=True)              # [n, 1]
    var = np.mean((x - mean) ** 2, axis=-1, keepdims=True)  # [n, 1]
    return (x - mean) / np.sqrt(var + eps) * weight        # [n, dim]


@numba.vectorize(["float32(float32)"], cache=True)
def gelu(x):
    """The exact GELU, x * Phi(x) with Phi the normal CDF (NumPy has no erf; Numba has math.erf)."""
    return 0.5 * x * (1.0 + math.erf(x * 0.7071067811865476))


def alibi_slopes(n_heads, alibi_bias_max):
    """ALiBi's per-head slopes. For a power of two H: 2^(-max/H * k), k = 1..H. Otherwise MPT takes the slopes of
    the next power of two n2 and keeps the odd-indexed ones, then the even-indexed ones, the first H of them
    (for 24 heads: 2^(-j/2), j = 1..16, then 2^(-k/4), k = 1, 3, ..., 15)."""
    n2 = 2 ** math.ceil(math.log2(n_heads))
    slopes = 2.0 ** (-alibi_bias_max / n2 * np.arange(1, n2 + 1))   # [n2]
    if n2 != n_heads:
        slopes = np.concatenate([slopes[1::2], slopes[0::2]])[:n_heads]
    return slopes.astype(np.float32)                                # [n_heads]


def alibi_bias(slopes, pos, n, T, kv_mul):
    """ALiBi replaces RoPE: no positions in q or k, but a penalty on each attention score that grows with the
    distance between query and key, steeper for some heads than for others: -slope[h] * (i - j).
    slopes [n_heads] -> bias [n_kv_heads, kv_mul, n, T], grouped like llama3.attention's scores."""
    distance = (pos + np.arange(n))[:, None] - np.arange(T)[None, :]    # [n, T]  i - j (negative: masked anyway)
    return -slopes.reshape(-1, kv_mul, 1, 1) * distance.astype(np.float32)  # [n_kv_heads, kv_mul, n, T]


# ----------------------------------------------------------------------------------------------------------------------
# The model


class Replit:
    def __init__(self, cfg, weights, tokenizer, path):
        self.config = cfg
        self.weights = weights
        self.tokenizer = tokenizer
        self.path = path
        self.key_cache = np.zeros((cfg.n_layers, cfg.max_length, cfg.kv_dim), np.float32)    # [layer, pos, kv_dim]
        self.value_cache = np.zeros((cfg.n_layers, cfg.max_length, cfg.kv_dim), np.float32)  # [layer, pos, kv_dim]
        self.slopes = alibi_slopes(cfg.n_heads, cfg.alibi_bias_max)                         # [n_heads]

    @property
    def max_length(self):
        return self.config.max_length

    def forward(self, tokens, pos, last_only=False):
        """Run len(tokens) tokens at positions pos, pos+1, ... and return float32 logits [n, vocab_size] (or the
        last token's only, [1, vocab_size], with last_only: see llama3.Llama.forward)."""
        cfg, w = self.config, self.weights
        tokens = llama3.check_tokens(tokens, pos, cfg)
        n = len(tokens)
        T = pos + n
        d, kv_dim = cfg.dim, cfg.kv_dim

        # 1. The token embeddings; no position embedding at all: ALiBi puts positions into the attention scores,
        # with a bias that depends only on the positions, so every layer shares it.
        x = quant.get_rows(w.token_embedding, tokens)                                      # [n, dim]
        bias = alibi_bias(self.slopes, pos, n, T, cfg.kv_mul)                              # [n_kv, kv_mul, n, T]

        for l, lw in enumerate(w.layers):
            # 2. Attention: LayerNorm, then one fused projection, split into queries, keys and values.
            xb = layernorm(x, lw.norm_1, cfg.norm_eps)                                     # [n, dim]
            qkv = quant.matmul(xb, lw.wqkv)                                                # [n, dim + 2*kv_dim]
            if cfg.clip_qkv:
                qkv = np.clip(qkv, -cfg.clip_qkv, cfg.clip_qkv)
            q = qkv[:, :d].reshape(n, cfg.n_heads, cfg.head_size)                          # [n, n_heads, head_size]
            self.key_cache[l, pos:T] = qkv[:, d:d + kv_dim]
            self.value_cache[l, pos:T] = qkv[:, d + kv_dim:]
            keys = self.key_cache[l, :T].reshape(T, cfg.n_kv_heads, cfg.head_size)         # [T, n_kv_heads, head_size]
            values = self.value_cache[l, :T].reshape(T, cfg.n_kv_heads, cfg.head_size)     # [T, n_kv_heads, head_size]
            xb = llama3.attention(q, keys, values, pos, cfg.kv_mul, bias)                  # [n, dim]
            x = x + quant.matmul(xb, lw.wo)                                                # [n, dim]

            # 3. Feed-forward: LayerNorm, up, exact GELU, down.
            xb = layernorm(x, lw.norm_2, cfg.norm_eps)                                     # [n, dim]
            hb = gelu(quant.matmul(xb, lw.w_up))                                           # [n, hidden_dim]
            x = x + quant.matmul(hb, lw.w_down)                                            # [n, dim]

        # 4. Final LayerNorm, and logits through the (tied) embedding matrix.
        if last_only:
            x = x[-1:]                                                                     # [1, dim]
        x = layernorm(x, w.final_norm, cfg.norm_eps)                                       # [n, dim]
        return quant.matmul(x, w.output)                                                   # [n, vocab_size]


def load(path, max_length=512, fit_context=False, kernels="int8"):
    """A Replit/MPT model from a Hugging Face checkpoint directory or an "mpt" GGUF file, ready to run.
    kernels: "int8" (llama.cpp's arithmetic, fast) or "float" (the reference), as in llama3.load."""
    if kernels not in quant.KERNELS:
        raise ValueError(f"kernels must be one of {', '.join(quant.KERNELS)}, got {kernels!r}")
    path = os.fspath(path)
    if os.path.isdir(path):
        hf, tensors = read_hf_checkpoint(path)
        cfg = config_from_hf(hf, max_length, fit_context)
        weights = load_weights(tensors, HF_NAMES, cfg, kernels)
        tokenizer = load_hf_tokenizer(path)
    elif os.path.isfile(path):
        try:
            meta, tensors = quant.read_gguf(path)
        except (ValueError, OSError) as e:
            raise ModelError(f"{path}: not a readable GGUF file ({e})") from None
        cfg = config_from_gguf(meta, tensors, max_length, fit_context)
        weights = load_weights(tensors, GGUF_NAMES, cfg, kernels)
        tokenizer = llama3.load_tokenizer(meta)
    else:
        raise ModelError(f"{path}: no such file or directory")
    llama3.check_tokenizer(tokenizer, cfg.vocab_size)
    return Replit(cfg, weights, tokenizer, path)


# ----------------------------------------------------------------------------------------------------------------------
# Converting a checkpoint directory into a GGUF that this project and llama.cpp both load

CONVERT_TYPES = {"f32": quant.QT.F32, "f16": quant.QT.F16, "q8_0": quant.QT.Q8_0, "q4_0": quant.QT.Q4_0,
                 "q4_k": quant.QT.Q4_K, "q6_k": quant.QT.Q6_K}


def gguf_vocabulary(folder, vocab_size):
    """The tokenizer metadata of a GGUF, from the checkpoint's tokenizer.json or spiece.model:
    {key: value} with the keys llama.cpp reads; the token list is padded to the embedding's vocab_size rows
    (llama.cpp requires one token per row)."""
    path = os.path.join(folder, "tokenizer.json")
    if os.path.isfile(path):
        load_hf_tokenizer(folder)  # the same checks as for running it: a clear error for a malformed file
        with open(path, encoding="utf-8") as f:
            spec = json.load(f)
        pre = spec.get("pre_tokenizer") or {}
        if spec["model"].get("type") != "BPE" or pre.get("type") != "ByteLevel" or not pre.get("use_regex", True):
            raise ModelError(f"{path}: only byte-level BPE with GPT-2's pre-tokenizer can be written to GGUF")
        vocab = dict(spec["model"]["vocab"])
        types = {}  # id -> GGUF token type, for the ids that are not normal tokens
        for added in spec.get("added_tokens", []):
            vocab[added["content"]] = added["id"]
            types[added["id"]] = 3 if added.get("special") else 4  # control, or user-defined
        n = max(vocab_size, max(vocab.values()) + 1)
        tokens = [f"[PAD{i}]" for i in range(n)]  # rows no token names are padding, marked unused (5)
        types.update({i: 5 for i in range(n) if i not in vocab.values()})
        for text, i in vocab.items():
            tokens[i] = text
        ids = {t: i for i, t in enumerate(tokens)}
        meta = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "mpt", "tokenizer.ggml.tokens": tokens,
                "tokenizer.ggml.token_type": [types.get(i, 1) for i in range(n)],
                "tokenizer.ggml.merges": [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]}
        if "<|endoftext|>" in ids:
            meta["tokenizer.ggml.eos_token_id"] = ids["<|endoftext|>"]
            meta["tokenizer.ggml.bos_token_id"] = ids["<|endoftext|>"]
        meta["tokenizer.ggml.add_bos_token"] = False
        return meta
    tok = load_hf_tokenizer(folder)  # spiece.model: SentencePiece pieces, scores and types
    return {"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": tok.pieces,
            "tokenizer.ggml.scores": tok.scores, "tokenizer.ggml.token_type": tok.types,
            "tokenizer.ggml.bos_token_id": tok.bos_id, "tokenizer.ggml.eos_token_id": tok.eos_id,
            "tokenizer.ggml.unknown_token_id": tok.unk_id, "tokenizer.ggml.add_bos_token": False}


def convert(folder, out_path, type_name="f32"):
    """Write the checkpoint in folder as an "mpt" GGUF: 2-D weights in the chosen type (quantized by quant.py),
    norms in F32. The file is written under a temporary name and renamed only when complete."""
    hf, tensors = read_hf_checkpoint(folder)
    cfg = config_from_hf(hf, None, False)
    qtype = CONVERT_TYPES[type_name]
    part = out_path + ".part"
    try:
        load_weights(tensors, HF_NAMES, cfg)  # every tensor present, with its expected shape, before writing
        write_gguf(part, cfg, tensors, gguf_vocabulary(folder, cfg.vocab_size), qtype)
        os.replace(part, out_path)
    finally:
        if os.path.exists(part):  # a failed or interrupted conversion leaves nothing behind
            os.remove(part)
    return out_path


def write_gguf(path, cfg, tensors, vocabulary, qtype):
    import gguf

    w = gguf.GGUFWriter(path, "mpt")
    w.add_name(cfg.name)
    w.add_context_length(cfg.seq_len)
    w.add_embedding_length(cfg.dim)
    w.add_block_count(cfg.n_layers)
    w.add_feed_forward_length(cfg.hidden_dim)
    w.add_head_count(cfg.n_heads)
    w.add_head_count_kv(cfg.n_kv_heads)
    w.add_layer_norm_eps(cfg.norm_eps)
    w.add_max_alibi_bias(cfg.alibi_bias_max)
    if cfg.clip_qkv:
        w.add_clamp_kqv(cfg.clip_qkv)
    for key, value in vocabulary.items():
        w.add_key_value(key, value, gguf_value_type(value))
    for key, hf_name in HF_NAMES.items():
        for l in (range(cfg.n_layers) if "{}" in hf_name else [None]):
            t = tensors[hf_name.format(l)]
            x = quant.dequantize(t.data, t.qtype).reshape(t.shape).astype(np.float32)  # [rows, cols] or [n]
            out_name = GGUF_NAMES[key].format(l)
            if x.ndim == 1 or qtype == quant.QT.F32:
                w.add_tensor(out_name, x)
            elif qtype == quant.QT.F16:
                w.add_tensor(out_name, x.astype(np.float16))
            else:
                w.add_tensor(out_name, quant.quantize(x, qtype), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file(progress=True)
    w.close()


def gguf_value_type(value):
    """gguf-py's type tag for a metadata value we write."""
    import gguf

    V = gguf.GGUFValueType
    if isinstance(value, bool):
        return V.BOOL
    if isinstance(value, str):
        return V.STRING
    if isinstance(value, int):
        return V.UINT32
    if isinstance(value, float):
        return V.FLOAT32
    return V.ARRAY


# ----------------------------------------------------------------------------------------------------------------------
# Command line: MAX's replit pipeline options, and llama3.py's streaming and statistics

DEFAULT_REPO = "replit/replit-code-v1_5-3b"
HINT = "Pass --model-path with a checkpoint directory or an mpt GGUF file that you have"


def download_default():
    """The published checkpoint, file by file, through llama3.py's hub download: config.json, the weights
    (model.safetensors, or else the original pytorch_model.bin) and the tokenizer (tokenizer.json, or else
    spiece.model). All land in one snapshot directory of the hub cache."""
    folder = os.path.dirname(llama3.hub_download(DEFAULT_REPO, "config.json", HINT))
    for choices in (["model.safetensors", "pytorch_model.bin"], ["tokenizer.json", "spiece.model"]):
        for i, name in enumerate(choices):
            try:
                llama3.hub_download(DEFAULT_REPO, name, HINT)
                break
            except ModelError:
                if i == len(choices) - 1:
                    raise
    return folder


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Replit Code (MPT) code completion, in NumPy + Numba.")
    p.add_argument("--prompt", default='def hello():\\n  print("hello world")',
                   help="code to complete; a typed \\n becomes a newline")
    p.add_argument("--model-path", "--converted-weights-path", dest="model_path", default="",
                   help="a Hugging Face checkpoint directory or an 'mpt' GGUF file; empty: download "
                        f"{DEFAULT_REPO}")
    p.add_argument("--max-length", type=int, default=None, help="prompt + generated tokens (default 512)")
    p.add_argument("--max-new-tokens", type=int, default=-1, help="-1: until max-length or end of text")
    p.add_argument("--temperature", type=float, default=1.0, help="0: greedy")
    p.add_argument("--min-p", type=float, default=0.05, help="keep tokens with p >= min_p * p_max (0: off)")
    p.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens (0: off)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling threshold (1: off)")
    p.add_argument("--seed", type=int, default=None, help="random seed, for reproducible sampling")
    p.add_argument("--quantization-encoding", default="float32", choices=["float32", "bfloat16"],
                   help="MAX's option; the weights run in whatever encoding the file holds")
    p.add_argument("--num-warmups", type=int, default=1, help="throwaway prompt passes before timing")
    p.add_argument("--threads", type=int, default=None, help="threads for the matrix kernels (default: all cores)")
    p.add_argument("--kernels", default="int8", choices=quant.KERNELS,
                   help="int8: round activations to 8 bits like llama.cpp (fast); float: float32 (the reference)")
    p.add_argument("--convert-to", default="", help="write the checkpoint directory of --model-path as this GGUF file "
                   "(llama.cpp loads it too), then exit")
    p.add_argument("--convert-type", default="q4_k", choices=list(CONVERT_TYPES), help="weight type for --convert-to")
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    args = p.parse_args(argv)
    llama3.check_sampling_args(p, args)
    if args.convert_to and not os.path.isdir(args.model_path):
        p.error("--convert-to needs --model-path to name a checkpoint directory")
    if args.num_warmups < 0:
        p.error("--num-warmups must be >= 0")
    args.prompt = args.prompt.replace("\\n", "\n")
    return args


def run(args):
    if args.threads:
        quant.set_threads(args.threads)
    if args.convert_to:
        print(f"wrote {convert(args.model_path, args.convert_to, args.convert_type)}", file=sys.stderr)
        return
    path = args.model_path or download_default()
    model = load(path, 512 if args.max_length is None else args.max_length, fit_context=args.max_length is None,
                 kernels=args.kernels)
    cfg = model.config
    print(f"model: {cfg.name} ({cfg.n_layers} layers, dim {cfg.dim}, {cfg.n_heads}/{cfg.n_kv_heads} heads, "
          f"vocab {cfg.vocab_size}) from {model.path}", file=sys.stderr)
    llama3.complete(model, args, T_START, warmups=args.num_warmups)


def main(argv=None):
    return llama3.main_guard(run, parse_args(argv), "replit.py")


if __name__ == "__main__":
    sys.exit(main())
