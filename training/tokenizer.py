"""Train a byte-pair-encoding tokenizer in llama2.c's tokenizer.bin semantics.

Layout of the vocabulary (512 tokens by default):

- 0, 1, 2: `<unk>`, `\\n<s>\\n` (BOS), `\\n</s>\\n` (EOS); 3..258: the byte tokens `<0x00>`..`<0xFF>` (score 0);
- then every character of the corpus (the " " piece among them), with low scores (-1000 and below);
- then the learned merges in the order they were learned, merge number r scoring -r.

run.c's encoder repeatedly merges the adjacent pair whose concatenation is a piece with the highest score, so with
the scores above it replays the learned merges in order. Words are learned sentencepiece-style: a space belongs to the
word after it (" the", " garden"), and letters and punctuation are never merged together, so no piece spans two words
and run.c's global merging gives the same tokens as merging each word on its own (which is how `Encoder` is fast).

    python3 -m training.tokenizer --out models/tiny260k-tok.bin
"""

import argparse
import collections
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from deploy.tokenizer import BOS, BYTE_TOKEN_OFFSET, Tokenizer, read_tokenizer, write_tokenizer  # noqa: E402

SPECIALS = [b"<unk>", b"\n<s>\n", b"\n</s>\n"]
CHAR_SCORE = -1000.0
# A word: an optional leading space and a run of letters, or of other non-space characters; or a run of white space.
WORD = re.compile(r" ?[A-Za-z]+| ?[^\sA-Za-z]+|\s+")


def split_words(text):
    """The text as the tokenizer sees it (the dummy " " run.c adds in front included), cut into words."""
    return WORD.findall(" " + text)


def _code_points(word):
    return [char.encode("utf-8") for char in word]


def train_bpe(texts, vocab_size=512):
    """A Tokenizer of `vocab_size` pieces learned from `texts` (an iterable of strings)."""
    counts = collections.Counter()
    for text in texts:
        counts.update(split_words(text))
    chars = sorted({char for word in counts for char in word})
    pieces = SPECIALS + [b"<0x%02X>" % byte for byte in range(256)]
    scores = [0.0] * len(pieces)
    for index, char in enumerate(chars):
        pieces.append(char.encode("utf-8"))
        scores.append(CHAR_SCORE - index)
    if len(pieces) > vocab_size:
        raise ValueError(f"{len(chars)} distinct characters do not fit in {vocab_size} tokens")
    known = set(pieces)
    words = [(_code_points(word), count) for word, count in counts.items()]
    rank = 0
    while len(pieces) < vocab_size:
        pairs = collections.Counter()
        for symbols, count in words:
            for left, right in zip(symbols, symbols[1:]):
                pairs[left, right] += count
        candidates = [(count, pair) for pair, count in pairs.items() if pair[0] + pair[1] not in known]
        if not candidates:
            break
        # most frequent pair; ties go to the smallest bytes, so training is deterministic
        best = min(candidates, key=lambda item: (-item[0], item[1]))[1]
        merged = best[0] + best[1]
        rank += 1
        pieces.append(merged)
        scores.append(-float(rank))
        known.add(merged)
        words = [(_apply_merge(symbols, best, merged), count) for symbols, count in words]
    return Tokenizer(pieces, scores, max(len(piece) for piece in pieces))


def _apply_merge(symbols, pair, merged):
    out, index = [], 0
    while index < len(symbols):
        if index + 1 < len(symbols) and (symbols[index], symbols[index + 1]) == pair:
            out.append(merged)
            index += 2
        else:
            out.append(symbols[index])
            index += 1
    return out


class Encoder:
    """run.c's encoding, word by word with a cache: the same tokens as deploy.tokenizer's encode(), much faster."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.cache = {}

    def word(self, word):
        found = self.cache.get(word)
        if found is None:
            tok = self.tokenizer
            tokens = []
            for point in _code_points(word):
                index = tok.id_of(point)
                tokens.extend([index] if index != -1 else [byte + BYTE_TOKEN_OFFSET for byte in point])
            while True:
                best_score, best_index, best_id = -1e10, -1, -1
                for index in range(len(tokens) - 1):
                    merged = tok.id_of(tok.pieces[tokens[index]] + tok.pieces[tokens[index + 1]])
                    if merged != -1 and tok.scores[merged] > best_score:
                        best_score, best_index, best_id = tok.scores[merged], index, merged
                if best_index == -1:
                    break
                tokens[best_index:best_index + 2] = [best_id]
            found = self.cache[word] = tokens
        return found

    def encode(self, text, bos=True):
        tokens = [BOS] if bos else []
        if text:
            for word in split_words(text):
                tokens.extend(self.word(word))
        return tokens


def decode(tokenizer, tokens):
    """The bytes the tokens stand for (byte tokens as their byte; BOS and EOS dropped)."""
    out = b""
    for token in tokens:
        if token < BYTE_TOKEN_OFFSET:
            continue
        if token < BYTE_TOKEN_OFFSET + 256:
            out += bytes([token - BYTE_TOKEN_OFFSET])
        else:
            out += tokenizer.pieces[token]
    return out


def check(tokenizer, texts):
    """Raise if run.c's encoding (deploy.tokenizer) and Encoder disagree, or if decoding does not give the text back.
    Returns the mean number of tokens per word."""
    encoder, tokens_total, words_total = Encoder(tokenizer), 0, 0
    for text in texts:
        slow = tokenizer.encode(text, bos=True)
        fast = encoder.encode(text, bos=True)
        if slow != fast:
            raise AssertionError(f"the word-by-word encoder differs from run.c's on {text[:60]!r}")
        if decode(tokenizer, slow) != (" " + text).encode("utf-8"):
            raise AssertionError(f"decoding does not round-trip {text[:60]!r}")
        tokens_total += len(slow) - 1
        words_total += len(text.split())
    return tokens_total / max(words_total, 1)


def build(out, stories=5000, seed=0, vocab_size=512):
    """Train on `stories` stories of the corpus (seed `seed`), check, write to `out`; returns the Tokenizer."""
    from training.corpus import generate_stories

    texts = generate_stories(stories, seed)
    tokenizer = train_bpe(texts, vocab_size)
    per_word = check(tokenizer, texts[:200])
    write_tokenizer(tokenizer, out)
    back = read_tokenizer(out, vocab_size)
    assert back.pieces == tokenizer.pieces and back.scores == tokenizer.scores
    print(f"tokenizer: {vocab_size} tokens, longest piece {tokenizer.max_token_length} bytes, "
          f"{per_word:.2f} tokens per word on the corpus, written to {out}")
    return back


def main():
    parser = argparse.ArgumentParser(description="Train the 512-token BPE tokenizer on the story corpus.")
    parser.add_argument("--out", default=str(ROOT / "models" / "tiny260k-tok.bin"))
    parser.add_argument("--stories", type=int, default=5000, help="stories to learn from")
    parser.add_argument("--seed", type=int, default=0, help="corpus seed")
    parser.add_argument("--vocab-size", type=int, default=512)
    args = parser.parse_args()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    tokenizer = build(args.out, args.stories, args.seed, args.vocab_size)
    merged = [piece.decode() for piece in tokenizer.pieces[259:] if len(piece) > 1]
    print("some pieces:", " | ".join(repr(piece) for piece in merged[:40]))


if __name__ == "__main__":
    main()
