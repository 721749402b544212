"""Oracle: Hugging Face's `tokenizers` library trains a byte-level BPE vocabulary and encodes texts with it.

Run in a subprocess whose working directory is not the repo root (our tokenizers.py shadows the library):

    python tests/oracle_hf_tokenizers.py OUT_DIR TEXTS.json

It trains a GPT-2-style byte-level BPE (the kind Replit Code V1.5 uses) on a code corpus, writes
OUT_DIR/tokenizer.json, and writes OUT_DIR/ids.json: the library's ids for each text in TEXTS.json.
"""
import json
import os
import sys

here = os.path.dirname(os.path.abspath(__file__))
sys.path = [p for p in sys.path if os.path.abspath(p or ".") not in (os.path.dirname(here), here)]

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402

CORPUS = [
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n",
    "for (int i = 0; i < n; ++i) {\n\tsum += a[i] * b[i];\n}\n",
    "class Point:\n    \"\"\"A point in the plane.\"\"\"\n    def __init__(self, x: float, y: float) -> None:\n",
    "const greet = (name) => `Hello, ${name}!`;  // arrow function\n",
    "SELECT id, name FROM users WHERE age >= 18 ORDER BY name;\n",
    "# Überprüfung: naïve café — 日本語のコメント 🚀\nprint('done')\n",
] * 30


def main(out_dir, texts_path):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    with open(texts_path, encoding="utf-8") as f:
        texts = json.load(f)
    with open(os.path.join(out_dir, "ids.json"), "w") as f:
        json.dump([tok.encode(t).ids for t in texts], f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
