"""Synthetic models: a valid checkpoint of any shape and version from a seed, for tests and benchmarks."""

import numpy as np

from deploy.checkpoint import Config, Model, check_byteorder, check_version, write_model
from deploy.errors import DeployError

# Shapes of the public llama2.c models, for benchmarks that need a realistic size.
SHAPES = {
    "stories260K": Config(64, 172, 5, 8, 4, 512, 512),
    "stories15M": Config(288, 768, 6, 6, 6, 32000, 256),
    "stories42M": Config(512, 1376, 8, 8, 8, 32000, 1024),
    "stories110M": Config(768, 2048, 12, 12, 12, 32000, 1024),
}


def random_model(config, seed=0, scale=None):
    """Gaussian weights scaled like a trained model's (about 1/sqrt(fan-in)) so activations stay in range."""
    problems = config.problems()
    if problems:
        raise DeployError("synthetic model", "; ".join(problems))
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise DeployError("synthetic model", f"seed {seed!r} must be a whole number, 0 or more")
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in config.shapes().items():
        if name.startswith("rms"):
            weights[name] = (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        else:
            std = scale if scale is not None else 1.0 / np.sqrt(shape[-1])
            weights[name] = (std * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)
    return Model(config, weights)


def write_random_model(path, config, version=0, seed=0, byteorder="little", group_size=None):
    check_version(version, path)
    check_byteorder(byteorder, path)
    return write_model(random_model(config, seed), path, version, byteorder, group_size)


def synthetic_tokenizer(vocab_size=512, seed=0):
    """A valid tokenizer: <unk>, BOS, EOS, the 256 byte tokens, then merged pieces of common English letters."""
    from deploy.tokenizer import Tokenizer

    if vocab_size < 259:
        raise DeployError("synthetic tokenizer", f"needs at least 259 tokens, got {vocab_size}")
    letters = b" etaoinshrdlucmwfgypb"
    pieces = [b"<unk>", b"\n<s>\n", b"\n</s>\n"] + [b"<0x%02X>" % byte for byte in range(256)]
    pieces += [bytes([letter]) for letter in letters][:vocab_size - len(pieces)]
    rng = np.random.default_rng(seed)
    while len(pieces) < vocab_size:
        piece = bytes(int(letter) for letter in rng.choice(list(letters), size=int(rng.integers(2, 6))))
        if piece not in pieces:
            pieces.append(piece)
    scores = [0.0] * 259 + [-float(i) for i in range(vocab_size - 259)]
    return Tokenizer(pieces, scores, max(len(piece) for piece in pieces))


def write_large_model(path, config, version=2, group_size=None, seed=0, tile_bytes=16 << 20):
    """A checkpoint of any size written at disk speed, for streaming benchmarks: every region filled from one
    repeated tile of random values (int8 values, fp32 weights about 1/sqrt(dim)), norms 1, int8 scales that keep the
    activations in range. Every byte is written (no sparse holes), so reading it back reads the disk."""
    from deploy.atomic import atomic_writer
    from deploy.checkpoint import Header, default_group_size, pack_header, segments

    check_version(version, path)
    group = (group_size or default_group_size(config)) if version == 2 else 0
    header = Header(version, "little", config, group)
    rng = np.random.default_rng(seed)
    weights = (rng.standard_normal(tile_bytes // 4) / np.sqrt(config.dim)).astype("<f4").tobytes()
    values = rng.integers(-127, 128, tile_bytes, dtype=np.int8).tobytes()
    scale = np.float32(1.0 / (127.0 * np.sqrt(config.dim)))

    def fill(out, tile, nbytes):
        while nbytes:
            step = min(nbytes, len(tile))
            out.write(tile[:step])
            nbytes -= step

    with atomic_writer(path) as out:
        out.write(pack_header(header))
        for segment in segments(header):
            if segment.name.startswith(("rms", "freq_cis")):
                out.write(np.ones(segment.count, dtype="<f4").tobytes())
            elif segment.name.endswith(".s"):
                fill(out, np.full(min(segment.count, tile_bytes // 4), scale, dtype="<f4").tobytes(), segment.nbytes)
            else:
                fill(out, values if segment.dtype == "i1" else weights, segment.nbytes)
    return header
