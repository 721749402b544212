"""Oracle: Hugging Face transformers' float forward of a Llama-architecture GGUF.

transformers dequantizes every tensor of the GGUF (with gguf-py) into a float32 `LlamaForCausalLM` and runs its own
PyTorch forward: an implementation we did not write. Run it in a subprocess whose working directory is NOT the repo
root, because our top-level `tokenizers.py` would shadow the `tokenizers` package that transformers imports:

    python tests/oracle_transformers.py MODEL.gguf IDS_JSON OUT.npy [--greedy N]

It writes float32 logits [n_tokens, vocab] for the given token ids (one full-sequence forward), or with --greedy N
the N greedily generated ids after them, and the top-2 logit gap at each step (to spot genuine near-ties), as JSON.
transformers ignores `rope_freqs.weight`; when the file has one, pass the Llama 3.1 scaling parameters with
--rope-scaling: they are set on the config, and transformers computes its own scaled frequencies from them.
"""
import argparse
import json
import os
import sys

# Make sure the repo root (where our tokenizers.py lives) is not on the path, whatever the caller's cwd is.
here = os.path.dirname(os.path.abspath(__file__))
sys.path = [p for p in sys.path if os.path.abspath(p or ".") not in (os.path.dirname(here), here)]

import numpy as np
import torch
from transformers import AutoConfig, LlamaForCausalLM


def load(path, rope_scaling):
    folder, name = os.path.split(os.path.abspath(path))
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    if rope_scaling:  # transformers >= 5 keeps theta and the scaling together in `rope_parameters`
        s = json.loads(rope_scaling)
        config.rope_parameters = {"rope_type": "llama3", "rope_theta": config.rope_parameters["rope_theta"],
                                  "factor": s["factor"], "low_freq_factor": s["low_freq_factor"],
                                  "high_freq_factor": s["high_freq_factor"],
                                  "original_max_position_embeddings": s["original_context"]}
    model = LlamaForCausalLM.from_pretrained(folder, gguf_file=name, config=config, dtype=torch.float32)
    model.eval()
    return model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("ids")
    ap.add_argument("out")
    ap.add_argument("--greedy", type=int, default=0)
    ap.add_argument("--rope-scaling", default="")
    args = ap.parse_args()
    torch.set_num_threads(2)
    model = load(args.model, args.rope_scaling)
    ids = torch.tensor([json.loads(args.ids)], dtype=torch.long)
    with torch.no_grad():
        if not args.greedy:
            logits = model(ids).logits[0].float().numpy()
            np.save(args.out, logits.astype(np.float32))
            return
        out, gaps, past = [], [], None
        step = ids
        for _ in range(args.greedy):
            r = model(step, past_key_values=past, use_cache=True)
            past = r.past_key_values
            last = r.logits[0, -1].double()
            top2 = torch.topk(last, 2).values
            nxt = int(torch.argmax(last))
            out.append(nxt)
            gaps.append(float(top2[0] - top2[1]))
            step = torch.tensor([[nxt]], dtype=torch.long)
        with open(args.out, "w") as f:
            json.dump({"ids": out, "gaps": gaps}, f)


if __name__ == "__main__":
    main()
