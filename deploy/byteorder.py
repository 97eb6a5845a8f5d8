"""Byte-order conversion of checkpoints and tokenizers as a stream in fixed-size chunks: constant memory at any size."""

import dataclasses
import hashlib
import struct
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from deploy.atomic import atomic_writer
from deploy.checkpoint import ENDIAN, check_byteorder, pack_header, read_header, segments
from deploy.errors import DeployError, file_error
from deploy.manifest import describe_checkpoint, describe_tokenizer, write_manifest
from deploy.tokenizer import read_tokenizer, write_tokenizer

CHUNK_BYTES = 8 << 20


class _HashingWriter:
    """Writes blocks and hashes them on a worker thread (hashlib releases the GIL), so hashing overlaps the I/O.

    Blocks alternate between two buffers: a buffer is refilled only after its previous hash has finished."""

    def __init__(self, handle, chunk_bytes):
        self.handle, self.digest = handle, hashlib.sha256()
        self.buffers = [bytearray(chunk_bytes), bytearray(chunk_bytes)]
        self.pending = [None, None]
        self.turn = 0
        self.pool = ThreadPoolExecutor(max_workers=1)

    def next_buffer(self):
        """The buffer to fill next, once the hash that last used it is done."""
        self.turn ^= 1
        if self.pending[self.turn] is not None:
            self.pending[self.turn].result()
        return self.buffers[self.turn]

    def write(self, view):
        self.pending[self.turn] = self.pool.submit(self.digest.update, view)
        self.handle.write(view)

    def hexdigest(self):
        self.pool.shutdown(wait=True)
        return self.digest.hexdigest()


def convert_checkpoint_byteorder(source, dest, byteorder, chunk_bytes=CHUNK_BYTES):
    """Copy checkpoint `source` to `dest` in `byteorder`, swapping every 4-byte field; writes a manifest."""
    header = read_header(source)
    target = dataclasses.replace(header, byteorder=check_byteorder(byteorder, dest))
    chunk_bytes -= chunk_bytes % 4
    swap = header.byteorder != byteorder
    with open(source, "rb") as src, atomic_writer(dest) as raw_out:
        out = _HashingWriter(raw_out, chunk_bytes)
        src.seek(header.size)
        packed = pack_header(target)
        out.next_buffer()[:len(packed)] = packed
        out.write(memoryview(out.buffers[out.turn])[:len(packed)])
        for segment in segments(header):
            remaining = segment.nbytes
            while remaining:
                view = memoryview(out.next_buffer())[:min(remaining, chunk_bytes)]
                got = src.readinto(view)
                if got != len(view):
                    raise DeployError(source, f"ended early inside {segment.name}")
                if swap and segment.dtype == "f4":
                    np.frombuffer(view, dtype=np.uint32).byteswap(inplace=True)
                out.write(view)
                remaining -= got
        digest = out.hexdigest()
    return write_manifest(dest, describe_checkpoint(target), digest)


def convert_tokenizer_byteorder(source, dest, byteorder, from_byteorder="little", vocab_size=None):
    check_byteorder(byteorder, dest)
    tokenizer = read_tokenizer(source, vocab_size, from_byteorder)
    write_tokenizer(tokenizer, dest, byteorder)
    return write_manifest(dest, describe_tokenizer(tokenizer, byteorder))


def detect_tokenizer_byteorder(path):
    """The byte order in which max_token_length reads as a small positive number."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(4)
    except OSError as error:
        raise file_error(path, error) from None
    if len(raw) < 4:
        raise DeployError(path, f"too short for a tokenizer ({len(raw)} bytes)")
    for order, mark in ENDIAN.items():
        if 0 < struct.unpack(mark + "I", raw)[0] < 1 << 16:
            return order
    raise DeployError(path, "max_token_length is implausible in either byte order")

