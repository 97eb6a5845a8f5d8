import struct

import pytest

from deploy.errors import DeployError
from deploy.synth import synthetic_tokenizer
from deploy.tokenizer import read_tokenizer, write_tokenizer
from tests.conftest import shared


def test_llama2_tokenizer_encodes_like_run_c():
    tok = read_tokenizer(shared("llama2-tokenizer.bin"), 32000)
    assert tok.encode("I believe the meaning of life is") == [1, 306, 4658, 278, 6593, 310, 2834, 338]
    assert tok.encode("") == [1]
    # an emoji is not in the vocabulary: it falls back to byte tokens
    assert tok.encode("\N{GRINNING FACE}")[2:] == [byte + 3 for byte in "\N{GRINNING FACE}".encode()]


def test_decode_rules():
    tok = read_tokenizer(shared("llama2-tokenizer.bin"), 32000)
    assert tok.decode_piece(1, 306) == b"I"  # leading space stripped after BOS
    assert tok.decode_piece(306, 4658) == b" believe"
    assert tok.decode_piece(5, 13) == b"\n"  # <0x0A> becomes the raw byte


def test_round_trip_both_byte_orders(tmp_path):
    tok = synthetic_tokenizer(400)
    for order in ("little", "big"):
        write_tokenizer(tok, tmp_path / order, order)
        back = read_tokenizer(tmp_path / order, 400, order)
        assert back.pieces == tok.pieces and back.scores == tok.scores


def _entries(*pieces, max_length=8):
    data = struct.pack("<I", max_length)
    for piece in pieces:
        data += struct.pack("<fi", 0.0, len(piece)) + piece
    return data


@pytest.mark.parametrize("data, vocab, message", [
    (_entries(b"a", b"bb") + struct.pack("<fi", 0.0, 5) + b"ab", 3, "runs 3 bytes past the end"),
    (_entries(b"a", b"toolongpiece"), 2, "has length 12, outside 0..8"),
    (_entries(b"a", b"b"), 3, "has 2 tokens but the model's vocabulary has 3"),
    (_entries(b"a", b"b", b"c"), 2, "has more tokens than the model's vocabulary of 2 (9 bytes follow entry 1)"),
    (_entries(b"a") + b"\0\0", 2, "cut short"),
    (struct.pack(">I", 8), None, "implausible max_token_length"),
])
def test_bad_tokenizers(tmp_path, data, vocab, message):
    path = tmp_path / "tok.bin"
    path.write_bytes(data)
    with pytest.raises(DeployError) as caught:
        read_tokenizer(path, vocab)
    assert str(path) in str(caught.value) and message in str(caught.value)
