"""Oracle: Hugging Face transformers' float forward of a Llama-architecture GGUF.

transformers dequantizes every tensor of the GGUF (with gguf-py) into a float32 `LlamaForCausalLM` and runs its own
PyTorch forward: an implementation we did not write. Run it in a subprocess whose working directory is NOT the repo
root, because our top-level `tokenizers.py` would shadow the `tokenizers` package that transformers imports:

    python tests/oracle_transformers.py JOBS.json

JOBS.json is a list of jobs, all run in one process (importing torch once):
    {"model": "tiny.gguf", "ids": [1, 2, 3], "out": "logits.npy"}
        float32 logits [n_tokens, vocab] of one full-sequence forward over the ids;
    {"model": "tiny.gguf", "ids": [1, 2, 3], "out": "greedy.json", "greedy": 24}
        the 24 greedily generated ids after them, with the top-2 logit gap at each step (to spot genuine near-ties).
    {"mpt_dir": "tiny-mpt/", "ids": [1, 2, 3], "out": "logits.npy"}
        the same for an MPT checkpoint directory. transformers' MptForCausalLM has no grouped-query attention,
        so each key/value head is repeated for the query heads that share it, into a multi-head checkpoint.
A job may add "rope_scaling": {"factor", "low_freq_factor", "high_freq_factor", "original_context"}: transformers
ignores a GGUF's `rope_freqs.weight`, so the Llama 3.1 scaling parameters are set on its config instead and it
computes its own scaled frequencies from them.
"""
import json
import os
import sys

# Make sure the repo root (where our tokenizers.py lives) is not on the path, whatever the caller's cwd is.
here = os.path.dirname(os.path.abspath(__file__))
sys.path = [p for p in sys.path if os.path.abspath(p or ".") not in (os.path.dirname(here), here)]

import numpy as np
import torch
from transformers import AutoConfig, LlamaForCausalLM
from transformers.utils import logging

logging.set_verbosity_error()
logging.disable_progress_bar()


def load(path, rope_scaling):
    folder, name = os.path.split(os.path.abspath(path))
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    if rope_scaling:  # transformers >= 5 keeps theta and the scaling together in `rope_parameters`
        s = rope_scaling
        config.rope_parameters = {"rope_type": "llama3", "rope_theta": config.rope_parameters["rope_theta"],
                                  "factor": s["factor"], "low_freq_factor": s["low_freq_factor"],
                                  "high_freq_factor": s["high_freq_factor"],
                                  "original_max_position_embeddings": s["original_context"]}
    model = LlamaForCausalLM.from_pretrained(folder, gguf_file=name, config=config, dtype=torch.float32)
    model.eval()
    return model


def load_mpt(folder):
    import safetensors.torch
    from transformers import MptConfig, MptForCausalLM

    with open(os.path.join(folder, "config.json")) as f:
        hf = json.load(f)
    state = safetensors.torch.load_file(os.path.join(folder, "model.safetensors"))
    state = {k: v.float() for k, v in state.items()}
    attn = dict(hf["attn_config"])
    d, n_heads = hf["d_model"], hf["n_heads"]
    n_kv = attn.pop("kv_n_heads", n_heads)
    head_size, kv_mul = d // n_heads, n_heads // n_kv
    for key in [k for k in state if k.endswith("attn.Wqkv.weight")]:
        q, k, v = state[key].split([d, n_kv * head_size, n_kv * head_size])
        # query head h reads key/value head h // kv_mul: repeat each kv head kv_mul times, in order
        k = k.reshape(n_kv, head_size, d).repeat_interleave(kv_mul, dim=0).reshape(d, d)
        v = v.reshape(n_kv, head_size, d).repeat_interleave(kv_mul, dim=0).reshape(d, d)
        state[key] = torch.cat([q, k, v])
    attn["attn_type"] = "multihead_attention"
    config = MptConfig(d_model=d, n_heads=n_heads, n_layers=hf["n_layers"], expansion_ratio=hf["expansion_ratio"],
                       max_seq_len=hf["max_seq_len"], vocab_size=hf["vocab_size"], attn_config=attn,
                       no_bias=True, learned_pos_emb=False, layer_norm_epsilon=hf.get("layer_norm_epsilon", 1e-5))
    model = MptForCausalLM(config).float()
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    model.tie_weights()
    assert torch.equal(model.lm_head.weight, state["transformer.wte.weight"])
    model.eval()
    return model


def greedy(model, ids, n):
    """n greedy steps with transformers' own KV cache; returns the ids and the top-2 gap of each step."""
    out, gaps, past, step = [], [], None, ids
    for _ in range(n):
        r = model(step, past_key_values=past, use_cache=True)
        past = r.past_key_values
        last = r.logits[0, -1].double()
        top2 = torch.topk(last, 2).values
        out.append(int(torch.argmax(last)))
        gaps.append(float(top2[0] - top2[1]))
        step = torch.tensor([[out[-1]]], dtype=torch.long)
    return out, gaps


def main(jobs_path):
    torch.set_num_threads(2)
    with open(jobs_path) as f:
        jobs = json.load(f)
    models = {}
    for job in jobs:
        key = (job.get("model") or job["mpt_dir"], json.dumps(job.get("rope_scaling")))
        if key not in models:
            models[key] = load_mpt(job["mpt_dir"]) if "mpt_dir" in job else load(job["model"], job.get("rope_scaling"))
        model = models[key]
        ids = torch.tensor([job["ids"]], dtype=torch.long)
        with torch.no_grad():
            if job.get("greedy"):
                out, gaps = greedy(model, ids, job["greedy"])
                with open(job["out"], "w") as f:
                    json.dump({"ids": out, "gaps": gaps}, f)
            else:
                np.save(job["out"], model(ids).logits[0].float().numpy())


if __name__ == "__main__":
    main(sys.argv[1])
