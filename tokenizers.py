"""
Tokenizers for LLM inference: text <-> token ids, read from the model file.

A language model does not see characters, it sees integers ("token ids"), each one a row of its embedding
matrix. A tokenizer turns text into those ids and back. Every model ships its own tokenizer, and the ids must
be EXACTLY the ones its training used: a different (even equally sensible) split of the same text is input the
model has never seen. So this module is written to reproduce reference implementations id for id, and the
tests compare it with them (tiktoken, llama.cpp, sentencepiece).

Byte Pair Encoding (BPE) in one paragraph
-----------------------------------------
Start from the text as a sequence of small symbols (bytes, or characters). Training counted which adjacent pair
occurs most often in a big corpus, glued it into a new symbol, and repeated that tens of thousands of times; the
ordered list of these "merges" is the tokenizer. Encoding replays it: among the adjacent pairs of the current
symbols, merge the one that was learned first (lowest rank), and repeat until no pair is in the list:

    "lower"  ->  l o w e r  ->  lo w e r  ->  low e r  ->  low er  ->  lower     (if those merges exist, in that order)

Each final symbol is a vocabulary entry, and its position in the vocabulary is its id.

The byte-level trick (GPT-2, Llama 3, SmolLM2, ...)
---------------------------------------------------
If the base symbols are the 256 possible BYTES of UTF-8, any string can be encoded: there is no "unknown
character", emoji and Chinese just cost more tokens. GPT-2's vocabulary files store tokens as printable strings,
so each byte is shown as one printable unicode character: printable ASCII stands for itself and the rest are
shifted up (the space byte 0x20 is shown as "Ġ", newline 0x0A as "Ċ"). The token "Ġworld" is the bytes b" world".
`bytes_to_unicode()` below builds that table; decoding maps each character back to its byte.

Pre-tokenization
----------------
Before BPE, a regular expression cuts the text into "words" and merges never cross a cut. It keeps a word's
leading space with the word (" world"), separates letters from digits and punctuation, and decides details such
as "numbers are split into groups of at most 3 digits" (Llama 3) or "every digit is its own word" (SmolLM2).
The regex is part of the tokenizer: GGUF files name it by `tokenizer.ggml.pre` ("llama-bpe", "smollm", ...),
and `PRE_TOKENIZERS` below maps those names to patterns (the same ones llama.cpp uses).

Special tokens
--------------
Control tokens such as "<|begin_of_text|>" or "<|eot_id|>" are not produced by merges: they are matched
literally in the text BEFORE pre-tokenization, and each becomes its single id. Here every special-token text
found in the input is encoded as that token (like tiktoken's `allowed_special="all"` and llama.cpp's
`parse_special=True`). That is what a chat template needs, and it also means untrusted text can inject them:
sanitize user input in a real application.

SentencePiece (Llama 2 style GGUF files, Replit v1's spiece.model)
-----------------------------------------------------------------
The older SentencePiece "BPE" works on characters, not bytes: spaces are first replaced by "▁" (and one is
added in front of the text), then adjacent pieces are merged greedily by the SCORE of the merged piece, highest
first. Characters that no piece covers fall back to byte tokens "<0x00>".."<0xFF>" when the vocabulary has them.

What this module supports, and how
----------------------------------
* GGUF `tokenizer.ggml.model == "gpt2"`: byte-level BPE with a merges list        -> `BPETokenizer`
* a Llama 3 tiktoken-format `tokenizer.model`                                     -> `TiktokenTokenizer`
* GGUF `tokenizer.ggml.model == "llama"` and SentencePiece `.model` files          -> `SentencePieceTokenizer`
* a byte-level BPE `tokenizer.json` of Hugging Face                               -> `BPETokenizer`
Entry points: `from_gguf(meta)`, `from_tiktoken_file(path)`, `from_sentencepiece_file(path)`,
`from_hf_tokenizer_json(path)`; `StreamDecoder` turns ids into text one at a time for streaming.

Concessions, in the open
------------------------
* The BPE merge loops are plain Python: a few microseconds per token plus a per-word cache. Fine for prompts and
  for generation (one token at a time); slow for tokenizing a data set.
* Only the pre-tokenizer names in `PRE_TOKENIZERS` are known; the ones tested against llama.cpp are listed in
  tests/test_tokenizers.py. Unicode character classes (\\p{L}, \\p{N}) come from the `regex` module, whose
  Unicode version may differ from llama.cpp's tables for characters added in recent Unicode releases.
* SentencePiece: only the "identity" normalization is exact (Llama 2 and most LLM models use it); others are
  approximated by NFKC. Unigram models are encoded with the Viterbi algorithm; "unused" pieces are treated as
  normal ones (as llama.cpp does). No sampling, no alternative segmentations.
"""

import base64
import codecs
import heapq
import json
import struct
import unicodedata

import regex  # like `re`, plus the \p{L} / \p{N} Unicode classes the pre-tokenizer patterns need

# GGUF token types (tokenizer.ggml.token_type), the same numbers as SentencePiece's piece types.
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

# Texts of tokens that end a generation, in the model families we know about. A control token with one of
# these texts is added to `stop_ids` even when the file does not name it as eos/eot/eom (Llama 3 instruct
# ends a turn with <|eot_id|> although its eos is <|end_of_text|>; SmolLM2 ends with <|im_end|>).
END_MARKERS = {"<|end_of_text|>", "<|eot_id|>", "<|eom_id|>", "<|endoftext|>", "<|im_end|>", "</s>", "<|end|>"}


# -----------------------------------------------------------------------------------------------------------------
# Byte-level BPE helpers


def bytes_to_unicode():
    """The GPT-2 table that shows each byte as one printable unicode character.

    Bytes that are printable (and not the space) stand for themselves; the other 68 are mapped, in order, to
    the characters from U+0100 on. So the table is a bijection between the 256 bytes and 256 characters:

    >>> t = bytes_to_unicode()
    >>> t[ord("a")], t[ord(" ")], t[ord("\\n")], t[0xF0]
    ('a', 'Ġ', 'Ċ', 'ð')
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    table, shifted = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + shifted)
            shifted += 1
    return table


BYTE_TO_UNICODE = bytes_to_unicode()
UNICODE_TO_BYTE = {c: b for b, c in BYTE_TO_UNICODE.items()}


def byte_encode(text):
    """Raw text -> its UTF-8 bytes written in the GPT-2 alphabet: ' world€' -> 'ĠworldâĤ¬'."""
    return "".join(BYTE_TO_UNICODE[b] for b in text.encode("utf-8"))


def byte_decode(token):
    """The inverse of byte_encode, for one vocabulary entry: 'Ġworld' -> b' world'.

    A character outside the table (which a well-formed vocabulary never has) is kept as its UTF-8 bytes.
    """
    return b"".join(bytes([UNICODE_TO_BYTE[c]]) if c in UNICODE_TO_BYTE else c.encode("utf-8") for c in token)


# -----------------------------------------------------------------------------------------------------------------
# Pre-tokenizers: the regexes that cut text into words before BPE

# Llama 3 (Meta's tokenizer.model and tokenizer.json). Contractions ('s 't 're 've 'm 'll 'd, any case), words with
# at most one leading non-letter, numbers of at most 3 digits, punctuation runs with trailing newlines, newline
# runs, and whitespace that does not swallow the space before the next word.
# (llama.cpp spells the contractions as '[sS]... instead of (?i:'s...); the two differ only for characters whose
# case folding lands on s/t/m/... such as the long s 'ſ'. We use Meta's original.)
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
# GPT-2: lower-case contractions, letters / digits / other, each with an optional leading space.
GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
# Qwen2 / StableLM2: the Llama 3 pattern with single digits.
QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)


class PreTokenizer:
    """A pre-tokenizer: regexes applied one after the other, plus two flags of the BPE that follows.

    patterns:      each regex cuts every piece left by the previous one; text between matches is kept as a piece
                   of its own (Hugging Face's Split "Isolated" behaviour, and llama.cpp's).
    ignore_merges: a word that is already a whole vocabulary entry is emitted as is, without running merges
                   (Llama 3 does this: tiktoken, and HF's `ignore_merges`).
    add_bos:       whether a BOS token is prepended when the file does not say (llama.cpp's default per type).
    """

    def __init__(self, patterns, ignore_merges=False, add_bos=False):
        self.patterns = [regex.compile(p) for p in patterns]
        self.ignore_merges = ignore_merges
        self.add_bos = add_bos

    def split(self, text):
        """Cut text into words. With the GPT-2 pattern:

        >>> PreTokenizer([GPT2_PATTERN]).split("Hello world!!  42")
        ['Hello', ' world', '!!', ' ', ' 42']
        """
        pieces = [text]
        for pattern in self.patterns:
            pieces = [part for piece in pieces for part in split_keeping_gaps(pattern, piece)]
        return pieces


def split_keeping_gaps(pattern, text):
    """Split text into the matches of pattern AND the unmatched text between them, in order.

    >>> split_keeping_gaps(regex.compile(r"\\p{N}"), "ab12c")
    ['ab', '1', '2', 'c']
    """
    pieces, pos = [], 0
    for m in pattern.finditer(text):
        if m.start() > pos:
            pieces.append(text[pos : m.start()])
        if m.end() > m.start():
            pieces.append(m.group())
        pos = m.end()
    if pos < len(text):
        pieces.append(text[pos:])
    return pieces


_LLAMA3 = PreTokenizer([LLAMA3_PATTERN], ignore_merges=True, add_bos=True)
_GPT2 = PreTokenizer([GPT2_PATTERN])
# StarCoder / SmolLM2: first every digit becomes its own piece, then the GPT-2 pattern runs on each piece. Doing
# it in two passes matters: in "a  1" the two spaces end their piece, so they stay one word ("  "), where a single
# combined regex would give " ", " ".
_STARCODER = PreTokenizer([r"\p{N}", GPT2_PATTERN])
_QWEN2 = PreTokenizer([QWEN2_PATTERN])
# llama.cpp's fallback for "default" (and for files that name no pre-tokenizer): its own guess, kept for fidelity.
_DEFAULT = PreTokenizer([r"[\p{P}\$\+<=>\^~\|]+", GPT2_PATTERN, r"\p{N}+", r"[0-9][0-9][0-9]"])

# tokenizer.ggml.pre -> pre-tokenizer, following llama.cpp's src/llama-vocab.cpp.
PRE_TOKENIZERS = {
    "llama-bpe": _LLAMA3, "llama3": _LLAMA3, "llama-v3": _LLAMA3,
    "dbrx": PreTokenizer([LLAMA3_PATTERN]), "smaug-bpe": PreTokenizer([LLAMA3_PATTERN]),
    "gpt-2": _GPT2, "phi-2": _GPT2, "mpt": _GPT2, "olmo": _GPT2, "jais": _GPT2,
    "smollm": _STARCODER, "starcoder": _STARCODER, "refact": _STARCODER, "codeshell": _STARCODER,
    "command-r": _STARCODER, "exaone": _STARCODER, "minerva-7b": _STARCODER,
    "qwen2": _QWEN2, "stablelm2": _QWEN2, "deepseek-r1-qwen": _QWEN2, "megrez": _QWEN2,
    "default": _DEFAULT, "": _DEFAULT,
}


# -----------------------------------------------------------------------------------------------------------------
# The merge loop shared by byte-level BPE and SentencePiece BPE


def merge_symbols(symbols, priority):
    """Repeatedly merge the adjacent pair with the best (lowest) priority; return the final symbols.

    priority(left, right) returns a sortable number, or None when the pair cannot merge. Ties go to the leftmost
    pair. This is the loop llama.cpp, Hugging Face and SentencePiece run: a priority queue of candidate pairs
    over a doubly linked list of symbols, so a long word costs O(n log n) instead of O(n^2) rescans.

    >>> ranks = {("l", "o"): 0, ("lo", "w"): 1, ("e", "r"): 2}
    >>> merge_symbols(list("lower"), lambda a, b: ranks.get((a, b)))
    ['low', 'er']
    """
    symbols = list(symbols)
    n = len(symbols)
    prev = list(range(-1, n - 1))  # prev[i] / nxt[i]: neighbours of symbol i in the current sequence (-1: none)
    nxt = list(range(1, n + 1))
    if n:
        nxt[-1] = -1
    queue = []  # entries (priority, left index, right index, left text, right text)

    def consider(i, j):
        if i != -1 and j != -1:
            p = priority(symbols[i], symbols[j])
            if p is not None:
                heapq.heappush(queue, (p, i, j, symbols[i], symbols[j]))

    for i in range(n - 1):
        consider(i, i + 1)
    while queue:
        _, i, j, left, right = heapq.heappop(queue)
        # Skip stale candidates: one of the two symbols has changed (or vanished) since the pair was queued.
        if nxt[i] != j or symbols[i] != left or symbols[j] != right:
            continue
        symbols[i] = left + right  # merge j into i and unlink j
        symbols[j] = None
        nxt[i] = nxt[j]
        if nxt[j] != -1:
            prev[nxt[j]] = i
        consider(prev[i], i)  # the merged symbol forms new pairs with both neighbours
        consider(i, nxt[i])
    return [s for s in symbols if s is not None]


# -----------------------------------------------------------------------------------------------------------------
# Tokenizers


class Tokenizer:
    """What every tokenizer here offers. Subclasses fill in `_encode_text` and `token_bytes`.

    Attributes: vocab_size, bos_id, eos_id (int or None), add_bos (the file's choice for encode(bos=None)),
    stop_ids (set of ids that end a generation), special (dict text -> id of the tokens matched literally).
    """

    def __init__(self, vocab_size, bos_id=None, eos_id=None, add_bos=False, stop_ids=(), special=None):
        self.vocab_size = vocab_size
        self.bos_id = bos_id
        self.eos_id = eos_id
        self.add_bos = bool(add_bos) and bos_id is not None
        self.stop_ids = set(stop_ids) | ({eos_id} if eos_id is not None else set())
        self.special = dict(special or {})
        self.special_ids = set(self.special.values())
        # One regex that finds any special-token text; longest first, so "<|a|>x" wins over a shorter "<|a|>".
        texts = sorted((t for t in self.special if t), key=len, reverse=True)
        self._special_re = regex.compile("|".join(regex.escape(t) for t in texts)) if texts else None

    def encode(self, text, bos=None):
        """Text -> ids. bos=None follows the file (`add_bos`); True / False force a BOS token or none."""
        if bos is None:
            bos = self.add_bos
        if bos and self.bos_id is None:
            raise ValueError("this tokenizer has no BOS token")
        ids = [self.bos_id] if bos else []
        for piece in self._split_special(text):
            ids.extend([piece] if isinstance(piece, int) else self._encode_text(piece))
        return ids

    def _split_special(self, text):
        """'a<|eot_id|>b' -> ['a', 128009, 'b']: special tokens as ids, the text between them as strings."""
        if self._special_re is None:
            return [text] if text else []
        pieces, pos = [], 0
        for m in self._special_re.finditer(text):
            if m.start() > pos:
                pieces.append(text[pos : m.start()])
            pieces.append(self.special[m.group()])
            pos = m.end()
        if pos < len(text):
            pieces.append(text[pos:])
        return pieces

    def _encode_text(self, text):
        """Text without special tokens -> ids."""
        raise NotImplementedError

    def token_bytes(self, token_id):
        """The bytes one token stands for (special tokens: the UTF-8 of their text)."""
        raise NotImplementedError

    def decode_bytes(self, ids):
        return b"".join(self.token_bytes(i) for i in ids)

    def decode(self, ids):
        """ids -> text. Bytes that are not valid UTF-8 (a character cut in half) become U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def token_text(self, token_id):
        """A readable form of one token for debugging: its text, with bytes that are not UTF-8 shown as \\xNN.

        For Llama 3: token_text(128000) == '<|begin_of_text|>', token_text(1917) == ' world'.
        """
        return self.token_bytes(token_id).decode("utf-8", errors="backslashreplace")


class BPETokenizer(Tokenizer):
    """Byte-level BPE with a merges list (GGUF "gpt2" and HF tokenizer.json), the way llama.cpp and HF run it.

    tokens:    vocabulary in the GPT-2 byte alphabet ("Ġworld"), index = id; special tokens in plain text.
    merges:    ["Ġ t", "h e", ...]; the position in the list is the rank (lower merges first).
    types:     GGUF token types; CONTROL / USER_DEFINED / UNKNOWN tokens are special (matched in the text).
    pre:       a name in PRE_TOKENIZERS (tokenizer.ggml.pre) or a PreTokenizer.

    Why our own merge loop and not tiktoken: tiktoken merges the adjacent pair whose CONCATENATION has the lowest
    rank, and will merge any two pieces whose concatenation is a token. A merges list ranks PAIRS: a token can be
    made by several merges of different ranks, and two pieces whose concatenation is a token may not be a listed
    pair at all. For Llama 3 (whose merges were generated from tiktoken's ranks) both give the same ids, but for a
    vocabulary trained by HF tokenizers (SmolLM2) nothing guarantees it, so we replay the pair ranks exactly as
    llama.cpp does. (Measured on SmolLM2: no token is made by two merges, and tiktoken given "rank of the first
    merge that makes a token" agreed on every one of 1853 words tried. Evidence, not proof; and SmolLM2's
    two-pass pre-tokenizer is not one tiktoken pattern anyway.) tiktoken is used where it is the original:
    Meta's tokenizer.model (TiktokenTokenizer).
    """

    def __init__(self, tokens, merges, types=None, pre="gpt-2", bos_id=None, eos_id=None, add_bos=None,
                 extra_stop_ids=()):
        if isinstance(pre, str):
            if pre not in PRE_TOKENIZERS:
                raise ValueError(f"unknown pre-tokenizer {pre!r} (tokenizer.ggml.pre); known: {sorted(PRE_TOKENIZERS)}")
            pre = PRE_TOKENIZERS[pre]
        self.pre = pre
        types = list(types) if types is not None else [NORMAL] * len(tokens)
        self.types = types
        self.token_to_id = {t: i for i, t in enumerate(tokens)}
        # "Ġ t" -> ("Ġ", "t"): split at the first space after the first character, as llama.cpp does.
        self.merge_rank = {}
        for rank, merge in enumerate(merges):
            if isinstance(merge, str):
                cut = merge.index(" ", 1)
                merge = (merge[:cut], merge[cut + 1 :])
            self.merge_rank.setdefault(tuple(merge), rank)
        # Bytes of every token, for decoding: normal tokens are written in the GPT-2 alphabet, special ones not.
        is_special = [t in (CONTROL, USER_DEFINED, UNKNOWN) for t in types]
        self._bytes = [t.encode("utf-8") if s else byte_decode(t) for t, s in zip(tokens, is_special)]
        special = {t: i for i, (t, s) in enumerate(zip(tokens, is_special)) if s}
        stops = {i for t, i in special.items() if t in END_MARKERS and types[i] == CONTROL}
        super().__init__(len(tokens), bos_id, eos_id, self.pre.add_bos if add_bos is None else add_bos,
                         stops | set(extra_stop_ids), special)
        self._cache = {}  # word (GPT-2 alphabet) -> ids

    def _encode_text(self, text):
        ids = []
        for word in self.pre.split(text):
            word = byte_encode(word)
            if word not in self._cache:
                if len(self._cache) > 100_000:  # keep memory bounded in long sessions
                    self._cache.clear()
                self._cache[word] = self._encode_word(word)
            ids.extend(self._cache[word])
        return ids

    def _encode_word(self, word):
        """One pre-tokenized word (GPT-2 alphabet) -> ids, by replaying the merges."""
        if self.pre.ignore_merges and word in self.token_to_id:
            return [self.token_to_id[word]]
        rank = self.merge_rank
        symbols = merge_symbols(word, lambda a, b: rank.get((a, b)))  # start from single bytes
        ids = []
        for s in symbols:
            if s in self.token_to_id:
                ids.append(self.token_to_id[s])
            else:  # a merge whose result is not a token (a broken file): fall back to the byte tokens
                ids.extend(self.token_to_id[c] for c in s if c in self.token_to_id)
        return ids

    def token_bytes(self, token_id):
        return self._bytes[token_id]


class TiktokenTokenizer(Tokenizer):
    """A tiktoken.Encoding (Meta's Llama 3 tokenizer.model) behind our interface.

    tiktoken's rank-of-merged-bytes loop is the original algorithm for this file, and in Rust it is fast.
    """

    def __init__(self, encoding, special, bos_id=None, eos_id=None, add_bos=True, stop_ids=()):
        self.encoding = encoding
        super().__init__(encoding.n_vocab, bos_id, eos_id, add_bos, stop_ids, special)

    def encode(self, text, bos=None):
        if bos is None:
            bos = self.add_bos
        if bos and self.bos_id is None:
            raise ValueError("this tokenizer has no BOS token")
        ids = self.encoding.encode(text, allowed_special="all")
        return [self.bos_id] + ids if bos else ids

    def token_bytes(self, token_id):
        return self.encoding.decode_single_token_bytes(token_id)

    def decode_bytes(self, ids):
        return self.encoding.decode_bytes(ids)


class SentencePieceTokenizer(Tokenizer):
    """SentencePiece models (GGUF "llama", and .model files): BPE by piece score, or unigram by Viterbi.

    pieces / scores / types: the vocabulary ("▁the", "<0x0A>", ...), index = id.
    add_space_prefix:        put one "▁" in front of the text (SentencePiece's add_dummy_prefix).
    unigram:                 the model is a unigram model (best-scoring segmentation) rather than BPE.

    Why our own loops and not the sentencepiece library: a GGUF file carries pieces, scores and types but no
    model file, and building one would mean writing protobuf; the BPE loop is the same few lines as for byte-level
    BPE (`merge_symbols`, with the score of the merged piece as priority), and it matches llama.cpp's handling of
    special tokens. The tests compare it with the sentencepiece library.
    """

    def __init__(self, pieces, scores, types=None, bos_id=1, eos_id=2, unk_id=0, add_bos=True,
                 add_space_prefix=True, remove_extra_whitespaces=False, normalization="identity", unigram=False,
                 extra_stop_ids=()):
        types = list(types) if types is not None else [NORMAL] * len(pieces)
        self.pieces, self.scores, self.types = list(pieces), [float(s) for s in scores], types
        self.unk_id = unk_id
        self.add_space_prefix = add_space_prefix
        self.remove_extra_whitespaces = remove_extra_whitespaces
        self.normalization = normalization
        self.unigram = unigram
        # Pieces that text can be segmented into (control, unknown and byte pieces never come from merges).
        self.piece_to_id = {p: i for i, p in enumerate(pieces) if types[i] in (NORMAL, USER_DEFINED, UNUSED)}
        self.byte_to_id = {}
        for i, p in enumerate(pieces):
            if types[i] == BYTE:  # "<0x0A>" -> byte 10
                self.byte_to_id[int(p[3:5], 16)] = i
        self._bytes = [self._piece_bytes(i) for i in range(len(pieces))]
        special = {p: i for i, p in enumerate(pieces) if types[i] in (CONTROL, USER_DEFINED, UNKNOWN) and p}
        stops = {i for p, i in special.items() if p in END_MARKERS and types[i] == CONTROL}
        super().__init__(len(pieces), bos_id, eos_id, add_bos, stops | set(extra_stop_ids), special)
        if unigram:  # Viterbi needs the longest piece length and SentencePiece's score for unknown characters
            self._max_len = max((len(p) for p in self.piece_to_id), default=1)
            self._unk_score = min((s for s, t in zip(self.scores, types) if t == NORMAL), default=0.0) - 10.0

    def _piece_bytes(self, i):
        piece, kind = self.pieces[i], self.types[i]
        if kind == BYTE:
            return bytes([int(piece[3:5], 16)])
        if kind in (CONTROL, UNKNOWN, USER_DEFINED):
            return piece.encode("utf-8")
        return piece.replace("▁", " ").encode("utf-8")

    def _encode_text(self, text):
        if self.normalization != "identity":
            text = unicodedata.normalize("NFKC", text)  # an approximation of nmt_nfkc, see the module docstring
        if self.remove_extra_whitespaces:
            text = " ".join(t for t in text.split(" ") if t)
        # The dummy prefix: llama.cpp adds it to every piece of text, i.e. also to text that follows a special token
        # (the sentencepiece library adds it once, at the start, and reads control tokens as plain text).
        if self.add_space_prefix:
            text = " " + text
        text = text.replace(" ", "▁")
        symbols = self._encode_unigram(text) if self.unigram else self._encode_bpe(text)
        ids = []
        for s in symbols:
            if s in self.piece_to_id:
                ids.append(self.piece_to_id[s])
            elif self.byte_to_id:  # byte fallback: the UTF-8 bytes of an unknown character
                ids.extend(self.byte_to_id[b] for b in s.encode("utf-8"))
            else:
                ids.append(self.unk_id)
        return ids

    def _encode_bpe(self, text):
        """SentencePiece BPE: merge the adjacent pair whose concatenation is the highest-scoring piece."""
        scores, piece_to_id = self.scores, self.piece_to_id

        def priority(a, b):
            i = piece_to_id.get(a + b)
            return None if i is None else -scores[i]  # heap pops the lowest: negate to take the highest score

        return merge_symbols(text, priority)  # start from single characters

    def _encode_unigram(self, text):
        """Unigram: the segmentation with the highest total score (Viterbi over character positions).

        best[e] is the best score of text[:e] and back[e] where its last piece starts. Characters no piece
        covers get SentencePiece's unknown score (the lowest piece score minus 10).
        """
        n = len(text)
        best = [0.0] + [float("-inf")] * n
        back = [0] * (n + 1)
        for start in range(n):
            if best[start] == float("-inf"):
                continue
            found_single = False
            for end in range(start + 1, min(n, start + self._max_len) + 1):
                i = self.piece_to_id.get(text[start:end])
                if i is None:
                    continue
                found_single |= end == start + 1
                if best[start] + self.scores[i] > best[end]:
                    best[end], back[end] = best[start] + self.scores[i], start
            if not found_single and best[start] + self._unk_score > best[start + 1]:
                best[start + 1], back[start + 1] = best[start] + self._unk_score, start
        symbols, end = [], n
        while end > 0:
            symbols.append(text[back[end] : end])
            end = back[end]
        return symbols[::-1]

    def token_bytes(self, token_id):
        return self._bytes[token_id]

    def decode_bytes(self, ids):
        data = super().decode_bytes(ids)
        # Undo the dummy prefix: drop one leading space of the first token (llama.cpp's rule).
        if self.add_space_prefix and ids and self._bytes[ids[0]].startswith(b" "):
            data = data[1:]
        return data


# -----------------------------------------------------------------------------------------------------------------
# Loading: GGUF metadata, tiktoken files, SentencePiece files, tokenizer.json


# GGUF value types -> struct format of one value (8 = string and 9 = array are handled apart).
def read_gguf_metadata(path_or_reader):
    """All key/value metadata of a GGUF file as a dict: strings as str, arrays as lists.

    Given an open gguf.GGUFReader, its fields are converted with `contents()`. Given a path, quant.read_gguf
    parses the file directly, which is much faster with a big vocabulary (0.3 s instead of 12 s for Llama 3's
    tokenizer: GGUFReader builds a numpy view for every array element).
    """
    if not isinstance(path_or_reader, (str, bytes)) and not hasattr(path_or_reader, "__fspath__"):
        return {name: field.contents() for name, field in path_or_reader.fields.items()
                if not name.startswith("GGUF.")}
    import quant  # the GGUF container reader lives with the tensor formats

    return quant.read_gguf(path_or_reader)[0]


def from_gguf(meta):
    """Build the tokenizer a GGUF file describes, from its metadata dict (see read_gguf_metadata).

    BOS policy (encode(bos=None)): tokenizer.ggml.add_bos_token when the file has it; otherwise llama.cpp's
    defaults: True for SentencePiece and for the Llama 3 pre-tokenizer, False for other byte-level BPE files.
    bos_id / eos_id come from tokenizer.ggml.bos_token_id / eos_token_id; SentencePiece files without them get
    the classic 1 / 2 (unknown 0). stop_ids = eos, eot, eom (when given) and control tokens named in END_MARKERS.
    """
    model = meta.get("tokenizer.ggml.model")
    tokens = meta["tokenizer.ggml.tokens"]
    types = meta.get("tokenizer.ggml.token_type")
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise ValueError("tokenizer.ggml.tokens must be a list of strings")
    for key in ("tokenizer.ggml.token_type", "tokenizer.ggml.scores"):  # one entry per token, or none at all
        if key in meta and (not isinstance(meta[key], list) or len(meta[key]) != len(tokens)):
            raise ValueError(f"{key} must have one entry for each of the {len(tokens)} tokens")
    extra_stops = [meta[k] for k in ("tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id") if k in meta]
    add_bos = meta.get("tokenizer.ggml.add_bos_token")
    if model == "gpt2":
        pre = meta.get("tokenizer.ggml.pre", "default")
        return BPETokenizer(tokens, meta["tokenizer.ggml.merges"], types, pre,
                            bos_id=meta.get("tokenizer.ggml.bos_token_id"),
                            eos_id=meta.get("tokenizer.ggml.eos_token_id"), add_bos=add_bos,
                            extra_stop_ids=extra_stops)
    if model == "llama":
        return SentencePieceTokenizer(
            tokens, meta.get("tokenizer.ggml.scores", [0.0] * len(tokens)), types,
            bos_id=meta.get("tokenizer.ggml.bos_token_id", 1), eos_id=meta.get("tokenizer.ggml.eos_token_id", 2),
            unk_id=meta.get("tokenizer.ggml.unknown_token_id", 0), add_bos=True if add_bos is None else add_bos,
            add_space_prefix=meta.get("tokenizer.ggml.add_space_prefix", True), extra_stop_ids=extra_stops)
    raise ValueError(f"unsupported tokenizer.ggml.model {model!r} (supported: 'gpt2', 'llama')")


# Llama 3.1's special tokens follow the 128000 BPE tokens (ids 128000..128255), as in Meta's Hugging Face
# release of 3.1. (Llama 3.0 named 128004, 128005, 128008, 128010 "<|reserved_special_token_2..5|>" and numbered
# the other reserved tokens accordingly; the ids of the tokens in use are the same.)
LLAMA31_SPECIAL_TOKENS = [
    "<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>", "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>", "<|reserved_special_token_2|>", "<|start_header_id|>", "<|end_header_id|>",
    "<|eom_id|>", "<|eot_id|>", "<|python_tag|>",
] + [f"<|reserved_special_token_{i}|>" for i in range(3, 248)]


def from_tiktoken_file(path, pattern=LLAMA3_PATTERN, special_tokens=LLAMA31_SPECIAL_TOKENS):
    """A tiktoken-format tokenizer.model (Meta's Llama 3): one "base64(token bytes) rank" per line.

    The rank is both the merge priority and the token id; the special tokens get the ids after the last rank.
    bos = <|begin_of_text|>, eos = <|end_of_text|>; encode adds BOS by default, as Meta's code does.
    """
    import tiktoken

    ranks = {}
    with open(path, "rb") as f:
        for line in f:
            if line.strip():
                token, rank = line.split()
                ranks[base64.b64decode(token)] = int(rank)
    special = {text: len(ranks) + i for i, text in enumerate(special_tokens)}
    encoding = tiktoken.Encoding(name="llama3", pat_str=pattern, mergeable_ranks=ranks, special_tokens=special)
    stops = {i for t, i in special.items() if t in END_MARKERS}
    return TiktokenTokenizer(encoding, special, bos_id=special.get("<|begin_of_text|>"),
                             eos_id=special.get("<|end_of_text|>"), add_bos=True, stop_ids=stops)


def protobuf_fields(data):
    """Decode one protobuf message into (field number, value) pairs, in file order.

    Protobuf is a list of fields, each a varint key (field_number << 3 | wire_type) and a value: wire type 0 a
    varint, 1 eight bytes, 2 a varint length and that many bytes (strings and nested messages), 5 four bytes.
    Values come back as int (types 0, 1, 5: reinterpret with struct as needed) or bytes (type 2).

    >>> list(protobuf_fields(bytes([0x08, 0x96, 0x01, 0x12, 0x02, 0x68, 0x69])))
    [(1, 150), (2, b'hi')]
    """

    def varint(pos):
        result = shift = 0
        while True:
            b = data[pos]
            result |= (b & 0x7F) << shift
            pos += 1
            shift += 7
            if b < 0x80:
                return result, pos

    pos = 0
    while pos < len(data):
        key, pos = varint(pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = varint(pos)
        elif wire == 1:
            value, pos = int.from_bytes(data[pos : pos + 8], "little"), pos + 8
        elif wire == 2:
            size, pos = varint(pos)
            value, pos = bytes(data[pos : pos + size]), pos + size
        elif wire == 5:
            value, pos = int.from_bytes(data[pos : pos + 4], "little"), pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, value


def from_sentencepiece_file(path):
    """A SentencePiece .model file (a serialized ModelProto), read with the small decoder above.

    The fields used (numbers from sentencepiece_model.proto): ModelProto.pieces = 1 (piece = 1, score = 2 as
    float32, type = 3), trainer_spec = 2 (model_type = 3: 1 unigram, 2 BPE; unk_id 40, bos_id 41, eos_id 42),
    normalizer_spec = 3 (name = 1, add_dummy_prefix = 3, remove_extra_whitespaces = 4).
    """
    with open(path, "rb") as f:
        data = f.read()
    pieces, scores, types = [], [], []
    trainer, normalizer = {}, {}
    for number, value in protobuf_fields(data):
        if number == 1:
            piece = {1: b"", 2: 0, 3: NORMAL}  # proto defaults
            piece.update(protobuf_fields(value))
            pieces.append(piece[1].decode("utf-8"))
            scores.append(struct.unpack("<f", struct.pack("<I", piece[2]))[0])
            types.append(piece[3])
        elif number == 2:
            trainer.update(protobuf_fields(value))
        elif number == 3:
            normalizer.update(protobuf_fields(value))

    def signed(v):  # int32 fields are varints of the 64-bit two's complement (-1 = "not set")
        return v - (1 << 64) if v >= 1 << 63 else v

    model_type = trainer.get(3, 1)
    if model_type not in (1, 2):
        raise ValueError(f"unsupported SentencePiece model_type {model_type} (only 1 unigram and 2 BPE)")
    unk_id, bos_id, eos_id = (signed(trainer.get(k, d)) for k, d in ((40, 0), (41, 1), (42, 2)))
    return SentencePieceTokenizer(
        pieces, scores, types, bos_id=bos_id if bos_id >= 0 else None, eos_id=eos_id if eos_id >= 0 else None,
        unk_id=unk_id, add_bos=bos_id >= 0, add_space_prefix=bool(normalizer.get(3, 1)),
        remove_extra_whitespaces=bool(normalizer.get(4, 1)), normalization=normalizer.get(1, b"nmt_nfkc").decode(),
        unigram=model_type == 1)


def from_hf_tokenizer_json(path, add_bos=None):
    """A byte-level BPE tokenizer.json of Hugging Face (model.type "BPE", ByteLevel pre-tokenizer).

    Supported pre-tokenizers: ByteLevel (use_regex: the GPT-2 pattern), Split with a regex ("Isolated"),
    Digits, and a Sequence of those; anything else raises ValueError. Added tokens become special tokens.
    bos / eos are guessed from the added tokens' texts (<|begin_of_text|>, <s>, <|endoftext|>, ...): pass
    add_bos to choose whether encode prepends BOS.
    """
    with open(path, encoding="utf-8") as f:
        spec = json.load(f)
    model = spec["model"]
    if model.get("type") != "BPE" or spec.get("normalizer") is not None:
        raise ValueError("only byte-level BPE tokenizer.json files without a normalizer are supported")

    def patterns(pre):
        kind = pre["type"]
        if kind == "Sequence":
            return [p for sub in pre["pretokenizers"] for p in patterns(sub)]
        if kind == "ByteLevel":
            if pre.get("add_prefix_space"):
                raise ValueError("ByteLevel add_prefix_space is not supported")
            return [GPT2_PATTERN] if pre.get("use_regex", True) else []
        if kind == "Split" and "Regex" in pre["pattern"] and pre.get("behavior") == "Isolated":
            return [pre["pattern"]["Regex"]]
        if kind == "Digits":
            return [r"\p{N}" if pre.get("individual_digits") else r"\p{N}+"]
        raise ValueError(f"unsupported pre-tokenizer {kind!r} in {path}")

    tokens = [None] * (max(model["vocab"].values()) + 1)
    for token, i in model["vocab"].items():
        tokens[i] = token
    types = [NORMAL] * len(tokens)
    for added in spec.get("added_tokens", []):
        if added["id"] >= len(tokens):
            tokens += [None] * (added["id"] + 1 - len(tokens))
            types += [NORMAL] * (added["id"] + 1 - len(types))
        tokens[added["id"]] = added["content"]
        types[added["id"]] = CONTROL if added.get("special") else USER_DEFINED
    tokens = [t if t is not None else f"[UNUSED_{i}]" for i, t in enumerate(tokens)]
    pre = PreTokenizer(patterns(spec["pre_tokenizer"]), ignore_merges=model.get("ignore_merges", False))
    specials = {t: i for i, t in enumerate(tokens) if types[i] == CONTROL}
    bos = next((specials[t] for t in ("<|begin_of_text|>", "<s>", "<|endoftext|>") if t in specials), None)
    eos = next((specials[t] for t in ("<|end_of_text|>", "</s>", "<|endoftext|>") if t in specials), None)
    return BPETokenizer(tokens, model["merges"], types, pre, bos_id=bos, eos_id=eos, add_bos=bool(add_bos))


# -----------------------------------------------------------------------------------------------------------------
# Streaming


class StreamDecoder:
    """Turn generated ids into text one token at a time, never printing half a character.

    A token can end in the middle of a multi-byte UTF-8 character (emoji often take 2-4 tokens), so decoding
    each token on its own would print garbage. An incremental UTF-8 decoder keeps the unfinished bytes until
    the character is complete; bytes that can never form a character come out as U+FFFD.

        stream = StreamDecoder(tok)
        for token_id in generated:
            print(stream.feed(token_id), end="", flush=True)
        print(stream.flush())

    The concatenated output equals tok.decode(ids), except that for SentencePiece it keeps the leading space
    that decode() strips (a stream usually continues a prompt, so that space is wanted).
    """

    def __init__(self, tok):
        self.tok = tok
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, token_id):
        """Add one token; return the text of the characters completed by it (often "", never half of one)."""
        return self._utf8.decode(self.tok.token_bytes(token_id))

    def flush(self):
        """End of stream: whatever bytes are left (an unfinished character) come out as U+FFFD."""
        return self._utf8.decode(b"", final=True)


# -----------------------------------------------------------------------------------------------------------------
# Usage: python tokenizers.py model.gguf "some text"   (or a tokenizer.model / .model / tokenizer.json)

if __name__ == "__main__":
    import sys

    path = sys.argv[1]
    text = sys.argv[2] if len(sys.argv) > 2 else "Hello world! 12345 héllo 👋"
    if path.endswith(".gguf"):
        tok = from_gguf(read_gguf_metadata(path))
    elif path.endswith(".json"):
        tok = from_hf_tokenizer_json(path)
    else:
        with open(path, "rb") as f:
            first = f.readline().split()  # tiktoken files are text lines "base64 rank"; SentencePiece is protobuf
        is_tiktoken = len(first) == 2 and first[1].isdigit()
        tok = from_tiktoken_file(path) if is_tiktoken else from_sentencepiece_file(path)
    ids = tok.encode(text)
    print(f"vocab_size={tok.vocab_size} bos={tok.bos_id} eos={tok.eos_id} stop_ids={sorted(tok.stop_ids)}")
    print(ids)
    print([tok.token_text(i) for i in ids])
    print(repr(tok.decode(ids)))
