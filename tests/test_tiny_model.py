"""The project's own tiny model (models/tiny260k.bin, trained by training/train.py) and its tokenizer."""

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from deploy.checkpoint import Config, read_header, read_model  # noqa: E402
from deploy.reference import generate  # noqa: E402
from deploy.tokenizer import read_tokenizer  # noqa: E402
from training.corpus import generate_stories, vocabulary, words  # noqa: E402
from training.tokenizer import Encoder, check  # noqa: E402

MODEL = ROOT / "models" / "tiny260k.bin"
TOKENIZER = ROOT / "models" / "tiny260k-tok.bin"
STORIES260K = Config(dim=64, hidden_dim=172, n_layers=5, n_heads=8, n_kv_heads=4, vocab_size=512, seq_len=512)


@pytest.fixture(scope="module")
def tokenizer():
    return read_tokenizer(TOKENIZER, 512)


@pytest.fixture(scope="module")
def greedy_text(tokenizer):
    generation = generate(read_model(MODEL), tokenizer, "Once upon a time", 64, 0.0, 0.9, 1)
    return generation.text.decode("utf-8")


def test_files_validate(tokenizer):
    header = read_header(MODEL)
    assert (header.version, header.byteorder, header.config) == (0, "little", STORIES260K)
    assert MODEL.stat().st_size == 1_056_540
    assert TOKENIZER.stat().st_size < 10_000
    assert tokenizer.pieces[:3] == [b"<unk>", b"\n<s>\n", b"\n</s>\n"]
    assert tokenizer.pieces[3:259] == [b"<0x%02X>" % byte for byte in range(256)]
    assert b" " in tokenizer.pieces and b" the" in tokenizer.pieces


def test_tokenizer_round_trips_the_corpus(tokenizer):
    stories = generate_stories(30, seed=12345)  # not the seed the tokenizer learned from
    per_word = check(tokenizer, stories)  # run.c's encoding, decoded, gives " " + story back
    assert per_word < 2.5
    assert tokenizer.encode("Once upon a time") == Encoder(tokenizer).encode("Once upon a time")


def test_corpus_words_are_the_vocabulary():
    vocab = vocabulary()
    assert 200 <= len(vocab) <= 500
    stories = generate_stories(300, seed=7)
    assert set(words(" ".join(stories))) <= vocab
    for opening in ("Once upon a time", "There was once", "Long ago", "One morning", "In a big green forest"):
        assert any(story.startswith(opening) for story in stories), opening
    assert generate_stories(5, seed=3) == generate_stories(5, seed=3)


def test_greedy_story_reads_as_corpus_english(greedy_text):
    print(greedy_text)
    assert greedy_text.startswith("Once upon a time")
    generated = words(greedy_text[len("Once upon a time"):])
    assert len(generated) >= 20
    known = sum(word in vocabulary() for word in generated)
    assert known / len(generated) >= 0.9, greedy_text
    sentences = re.findall(r"[A-Z][a-z]*(?: [A-Za-z',]+){2,}\.", greedy_text)
    assert sentences, greedy_text
