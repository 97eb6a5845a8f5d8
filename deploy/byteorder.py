"""Byte-order conversion of checkpoints and tokenizers as a stream in fixed-size chunks: constant memory at any size."""

import dataclasses
import hashlib
import struct

import numpy as np

from deploy.atomic import atomic_writer
from deploy.checkpoint import ENDIAN, pack_header, read_header, segments
from deploy.errors import DeployError
from deploy.manifest import describe_checkpoint, describe_tokenizer, write_manifest
from deploy.tokenizer import read_tokenizer, write_tokenizer

CHUNK_BYTES = 8 << 20


class _HashingWriter:
    def __init__(self, handle):
        self.handle, self.digest = handle, hashlib.sha256()

    def write(self, data):
        self.digest.update(data)
        self.handle.write(data)


def convert_checkpoint_byteorder(source, dest, byteorder, chunk_bytes=CHUNK_BYTES):
    """Copy checkpoint `source` to `dest` in `byteorder`, swapping every 4-byte field; writes a manifest."""
    header = read_header(source)
    target = dataclasses.replace(header, byteorder=byteorder)
    chunk_bytes -= chunk_bytes % 4
    buffer = bytearray(chunk_bytes)
    swap = header.byteorder != byteorder
    with open(source, "rb") as src, atomic_writer(dest) as raw_out:
        out = _HashingWriter(raw_out)
        src.seek(header.size)
        out.write(pack_header(target))
        for segment in segments(header):
            remaining = segment.nbytes
            while remaining:
                view = memoryview(buffer)[:min(remaining, chunk_bytes)]
                got = src.readinto(view)
                if got != len(view):
                    raise DeployError(source, f"ended early inside {segment.name}")
                if swap and segment.dtype == "f4":
                    np.frombuffer(view, dtype=np.uint32).byteswap(inplace=True)
                out.write(view)
                remaining -= got
    return write_manifest(dest, describe_checkpoint(target), out.digest.hexdigest())


def convert_tokenizer_byteorder(source, dest, byteorder, from_byteorder="little", vocab_size=None):
    tokenizer = read_tokenizer(source, vocab_size, from_byteorder)
    write_tokenizer(tokenizer, dest, byteorder)
    return write_manifest(dest, describe_tokenizer(tokenizer, byteorder))


def detect_tokenizer_byteorder(path):
    """The byte order in which max_token_length reads as a small positive number."""
    with open(path, "rb") as handle:
        raw = handle.read(4)
    if len(raw) < 4:
        raise DeployError(path, f"too short for a tokenizer ({len(raw)} bytes)")
    for order, mark in ENDIAN.items():
        if 0 < struct.unpack(mark + "I", raw)[0] < 1 << 16:
            return order
    raise DeployError(path, "max_token_length is implausible in either byte order")

