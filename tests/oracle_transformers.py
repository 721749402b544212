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
        key = (job["model"], json.dumps(job.get("rope_scaling")))
        if key not in models:
            models[key] = load(job["model"], job.get("rope_scaling"))
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
