"""llama2.c tokenizer.bin: reading, validation, writing, and the BPE encode/decode that run.c performs."""

import dataclasses
import struct
from pathlib import Path

from deploy.atomic import atomic_writer
from deploy.checkpoint import ENDIAN, check_byteorder
from deploy.errors import DeployError, file_error

BOS, EOS = 1, 2
BYTE_TOKEN_OFFSET = 3  # <0x00> is token 3


@dataclasses.dataclass
class Tokenizer:
    pieces: list  # bytes per token id
    scores: list  # float per token id
    max_token_length: int

    def __post_init__(self):
        self._lookup = {}
        for index, piece in enumerate(self.pieces):
            self._lookup.setdefault(piece, index)

    @property
    def vocab_size(self):
        return len(self.pieces)

    def id_of(self, piece):
        return self._lookup.get(piece, -1)

    def encode(self, text, bos=True, eos=False):
        """run.c's encoder: dummy-prefix space, UTF-8 code points (byte fallback), then best-score pair merges."""
        data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        tokens = [BOS] if bos else []
        if data and self.id_of(b" ") != -1:
            tokens.append(self.id_of(b" "))
        for point in _code_points(data):
            found = self.id_of(point)
            tokens.extend([found] if found != -1 else [byte + BYTE_TOKEN_OFFSET for byte in point])
        while True:
            best = (-1e10, -1, -1)
            for index in range(len(tokens) - 1):
                merged = self.id_of(self.pieces[tokens[index]] + self.pieces[tokens[index + 1]])
                if merged != -1 and self.scores[merged] > best[0]:
                    best = (self.scores[merged], merged, index)
            if best[2] == -1:
                break
            tokens[best[2]:best[2] + 2] = [best[1]]
        if eos:
            tokens.append(EOS)
        return tokens

    def decode_piece(self, previous, token):
        """The bytes run.c prints for `token` after `previous` (before its unprintable-byte filter)."""
        piece = self.pieces[token]
        if previous == BOS and piece.startswith(b" "):
            piece = piece[1:]
        byte = _byte_token(piece)
        return bytes([byte]) if byte is not None else piece


def printable(piece):
    """run.c prints a piece unless it is empty or a single byte that is neither printable nor whitespace (C locale)."""
    if not piece:
        return b""
    if len(piece) == 1 and not (0x20 <= piece[0] <= 0x7E or piece[0] in b" \t\n\v\f\r"):
        return b""
    return piece


def _byte_token(piece):
    if not piece.startswith(b"<0x"):
        return None
    digits = b""
    for char in piece[3:5]:
        if chr(char) not in "0123456789abcdefABCDEF":
            break
        digits += bytes([char])
    return int(digits, 16) if digits else None


def _code_points(data):
    """Split bytes the way run.c does: a leading byte plus at most three continuation bytes."""
    start = 0
    while start < len(data):
        end = start + 1
        while end < len(data) and data[end] & 0xC0 == 0x80 and end - start < 4:
            end += 1
        yield data[start:end]
        start = end


def read_tokenizer(path, vocab_size=None, byteorder="little"):
    """Read and validate a tokenizer.bin; with `vocab_size`, its entry count must match the model's."""
    path = Path(path)
    mark = ENDIAN[byteorder]
    try:
        data = path.read_bytes()
    except OSError as error:
        raise file_error(path, error) from None
    if len(data) < 4:
        raise DeployError(path, f"too short for a tokenizer ({len(data)} bytes)")
    max_length = struct.unpack_from(mark + "I", data, 0)[0]
    if not 0 < max_length < 1 << 16:
        raise DeployError(path, f"implausible max_token_length {max_length} (wrong byte order?)")
    pieces, scores, offset = [], [], 4
    while offset < len(data):
        index = len(pieces)
        if index == vocab_size:  # stop here: a hostile file's millions of empty entries cost no memory
            raise DeployError(path, f"has more tokens than the model's vocabulary of {vocab_size} ({len(data) - offset} "
                                    f"bytes follow entry {index - 1})")
        if offset + 8 > len(data):
            raise DeployError(path, f"entry {index} at byte {offset} is cut short")
        score, length = struct.unpack_from(mark + "fi", data, offset)
        if length < 0 or length > max_length:
            raise DeployError(path, f"entry {index} at byte {offset} has length {length}, outside 0..{max_length}")
        offset += 8
        if offset + length > len(data):
            raise DeployError(path, f"entry {index} at byte {offset - 8} runs {offset + length - len(data)} bytes "
                                    f"past the end of the file")
        pieces.append(data[offset:offset + length])
        scores.append(score)
        offset += length
    if vocab_size is not None and len(pieces) != vocab_size:
        raise DeployError(path, f"has {len(pieces)} tokens but the model's vocabulary has {vocab_size}")
    return Tokenizer(pieces, scores, max_length)


def write_tokenizer(tokenizer, path, byteorder="little"):
    mark = ENDIAN[check_byteorder(byteorder, path)]
    with atomic_writer(path) as out:
        out.write(struct.pack(mark + "I", tokenizer.max_token_length))
        for piece, score in zip(tokenizer.pieces, tokenizer.scores):
            out.write(struct.pack(mark + "fi", score, len(piece)))
            out.write(piece)
