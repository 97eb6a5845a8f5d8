"""llama2.c checkpoints: headers, tensor layout, reading, validation and writing for v0, v1, v2 and v3 (ternary).

A checkpoint is described by its `Header` (version, byte order, shape, group size); `segments(header)` lists every
region of the body in file order with its element type, so readers, writers and the streaming byte-order converter
all walk the same layout.
"""

import dataclasses
import math
import os
import struct
from pathlib import Path

import numpy as np

from deploy.atomic import atomic_writer
from deploy.errors import DeployError, file_error
from deploy.ternary import dequantize_layers, invalid_codes, pack, quantize as quantize_ternary, row_bytes, unpack

MAGIC = 0x616B3432  # "ak42" as a little-endian uint32
V0_HEADER_BYTES = 28
V1_HEADER_BYTES = 256
VERSIONS = (0, 1, 2, 3)
TERNARY = 3  # the project's own: 2-bit ternary layer matrices, docs/ternary.md
ENDIAN = {"little": "<", "big": ">"}

# Tensor kinds in the order each version stores them. Shapes are (rows, cols) per layer, cols being the input size.
LAYER_MATRICES = ("wq", "wk", "wv", "wo", "w1", "w2", "w3")
NORMS = ("rms_att", "rms_ffn", "rms_final")


@dataclasses.dataclass(frozen=True)
class Config:
    dim: int
    hidden_dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    vocab_size: int
    seq_len: int
    shared_classifier: bool = True

    @property
    def head_size(self):
        return self.dim // self.n_heads

    @property
    def kv_dim(self):
        return self.dim * self.n_kv_heads // self.n_heads

    def problems(self):
        """Every reason this shape cannot be a llama2.c model; empty when it is fine."""
        found = [f"{field.name} = {getattr(self, field.name)} is not positive"
                 for field in dataclasses.fields(self)[:7] if getattr(self, field.name) <= 0]
        if found:
            return found
        if self.dim % self.n_heads:
            found.append(f"dim {self.dim} is not a multiple of n_heads {self.n_heads}")
        elif self.head_size % 2:
            found.append(f"head size {self.head_size} is odd (RoPE rotates pairs)")
        if self.n_heads % self.n_kv_heads:
            found.append(f"n_heads {self.n_heads} is not a multiple of n_kv_heads {self.n_kv_heads}")
        return found

    def shapes(self):
        """Canonical fp32 tensor shapes, as the reference and the writers use them."""
        L, d, h, kv, V = self.n_layers, self.dim, self.hidden_dim, self.kv_dim, self.vocab_size
        shapes = {
            "tok_embeddings": (V, d),
            "rms_att": (L, d), "rms_ffn": (L, d), "rms_final": (d,),
            "wq": (L, d, d), "wk": (L, kv, d), "wv": (L, kv, d), "wo": (L, d, d),
            "w1": (L, h, d), "w2": (L, d, h), "w3": (L, h, d),
        }
        if not self.shared_classifier:
            shapes["wcls"] = (V, d)
        return shapes

    def parameter_count(self):
        return sum(math.prod(shape) for shape in self.shapes().values())


@dataclasses.dataclass(frozen=True)
class Header:
    version: int
    byteorder: str
    config: Config
    group_size: int = 0  # v2 only

    @property
    def size(self):
        return V0_HEADER_BYTES if self.version == 0 else V1_HEADER_BYTES

    @property
    def quantized(self):
        return self.version == 2


@dataclasses.dataclass(frozen=True)
class Segment:
    name: str
    dtype: str  # "f4", "i1" (int8) or "u1" (packed ternary bytes)
    count: int

    @property
    def nbytes(self):
        return self.count * (4 if self.dtype == "f4" else 1)


def quantized_kinds(config):
    """(name, elements per tensor, how many) of each kind of separately quantized tensor of a v2 file, in file order:
    the per-layer matrices are quantized one layer at a time."""
    shapes = config.shapes()
    kinds = [("tok_embeddings", math.prod(shapes["tok_embeddings"]), 1)]
    kinds += [(kind, math.prod(shapes[kind][1:]), config.n_layers) for kind in LAYER_MATRICES]
    if not config.shared_classifier:
        kinds.append(("wcls", math.prod(shapes["wcls"]), 1))
    return kinds


def segments(header):
    """Every region of the body in file order (one per layer for v2: walk it only after `read_header`)."""
    config = header.config
    sizes = {name: math.prod(shape) for name, shape in config.shapes().items()}
    if header.version == 0:
        order = ["tok_embeddings", "rms_att", "wq", "wk", "wv", "wo", "rms_ffn", "w1", "w2", "w3", "rms_final"]
        found = [Segment(name, "f4", sizes[name]) for name in order]
        rope = config.seq_len * config.head_size // 2
        found += [Segment("freq_cis_real", "f4", rope), Segment("freq_cis_imag", "f4", rope)]
        if not config.shared_classifier:
            found.append(Segment("wcls", "f4", sizes["wcls"]))
        return found
    if header.version == 1:
        order = [*NORMS, "tok_embeddings", *LAYER_MATRICES]
        if not config.shared_classifier:
            order.append("wcls")
        return [Segment(name, "f4", sizes[name]) for name in order]
    if header.version == TERNARY:
        found = [Segment(name, "f4", sizes[name]) for name in (*NORMS, "tok_embeddings")]
        for kind, (layers, rows, cols) in ((kind, config.shapes()[kind]) for kind in LAYER_MATRICES):
            for layer in range(layers):
                found += [Segment(f"{kind}.{layer}.t", "u1", rows * row_bytes(cols)),
                          Segment(f"{kind}.{layer}.s", "f4", 1)]
        if not config.shared_classifier:
            found.append(Segment("wcls", "f4", sizes["wcls"]))
        return found
    found = [Segment(name, "f4", sizes[name]) for name in NORMS]
    for kind, count, repeat in quantized_kinds(config):
        for name in [f"{kind}.{layer}" for layer in range(repeat)] if kind in LAYER_MATRICES else [kind]:
            found += [Segment(f"{name}.q", "i1", count), Segment(f"{name}.s", "f4", count // header.group_size)]
    return found


def expected_size(header):
    """The file size the header promises, in constant time and memory whatever the header says (Python integers do
    not overflow), so that it can be checked against the real size before anything is walked or allocated."""
    config = header.config
    if header.version == TERNARY:
        shapes = config.shapes()
        fp32 = sum(math.prod(shapes[name]) for name in shapes if name not in LAYER_MATRICES)
        packed = sum(layers * (rows * row_bytes(cols) + 4) for layers, rows, cols in
                     (shapes[kind] for kind in LAYER_MATRICES))
        return header.size + 4 * fp32 + packed
    if header.version != 2:
        total = 4 * config.parameter_count()
        if header.version == 0:
            total += 4 * config.seq_len * config.head_size  # the two RoPE tables, seq_len * head_size / 2 each
        return header.size + total
    norms = 4 * (2 * config.n_layers * config.dim + config.dim)
    quantized = sum(repeat * (count + 4 * (count // header.group_size))
                    for _, count, repeat in quantized_kinds(config))
    return header.size + norms + quantized


def default_group_size(config, wanted=64):
    """Halve the group size until it divides dim and hidden_dim, so that no group straddles two rows of a matrix
    (llama2.c's exporter checks dim only; the ports multiply row by row)."""
    group = wanted
    while group > 1 and (config.dim % group or config.hidden_dim % group):
        group //= 2
    return group


def group_sizes_that_fit(config, largest=256):
    """The group sizes up to `largest` that divide both dim and hidden_dim."""
    common = math.gcd(config.dim, config.hidden_dim)
    return [size for size in range(1, min(common, largest) + 1) if common % size == 0]


def choose_group_size(config, wanted=None, where="group size"):
    """`wanted` when it divides dim and hidden_dim (refused otherwise, naming the sizes that would); the default
    when None."""
    if wanted is None:
        return default_group_size(config)
    if isinstance(wanted, bool) or not isinstance(wanted, int) or wanted <= 0 or config.dim % wanted or \
            config.hidden_dim % wanted:
        raise DeployError(where, f"group size {wanted!r} must divide both dim {config.dim} and hidden_dim "
                                 f"{config.hidden_dim}; sizes that do: "
                                 f"{', '.join(map(str, group_sizes_that_fit(config)))}")
    return wanted


def check_version(version, where="checkpoint"):
    if isinstance(version, bool) or version not in VERSIONS:
        raise DeployError(where, f"unknown checkpoint version {version!r} (known: 0, 1, 2, 3)")
    return version


def check_byteorder(byteorder, where="checkpoint"):
    if byteorder not in ENDIAN:
        raise DeployError(where, f"unknown byte order {byteorder!r} (known: little, big)")
    return byteorder


# ---------------------------------------------------------------------------------------------------------------------
# headers


def _plausible_v0(fields):
    dim, hidden, layers, heads, kv_heads, vocab, seq = fields
    return (0 < dim <= 1 << 16 and 0 < hidden <= 1 << 18 and 0 < layers <= 1024 and 0 < heads <= dim
            and 0 < kv_heads <= heads and 0 < abs(vocab) <= 1 << 22 and 0 < seq <= 1 << 20)


def parse_header(raw, path="checkpoint"):
    """Header from the first bytes of a file (at least 256 when the file has them). Detects the byte order."""
    if len(raw) < V0_HEADER_BYTES:
        raise DeployError(path, f"too short for a llama2.c checkpoint ({len(raw)} bytes)")
    for order, mark in ENDIAN.items():
        magic = struct.unpack_from(mark + "I", raw, 0)[0]
        if magic == MAGIC:
            return _parse_versioned(raw, path, order)
    for order, mark in ENDIAN.items():
        fields = struct.unpack_from(mark + "7i", raw, 0)
        if _plausible_v0(fields):
            return _make_header(path, 0, order, fields, 0)
    head = raw[:4].hex(" ")
    raise DeployError(path, f"not a llama2.c checkpoint: no 'ak42' magic and no plausible v0 header (starts {head})")


def _parse_versioned(raw, path, order):
    mark = ENDIAN[order]
    if len(raw) < V1_HEADER_BYTES:
        raise DeployError(path, f"truncated header: {len(raw)} of {V1_HEADER_BYTES} bytes")
    version = struct.unpack_from(mark + "i", raw, 4)[0]
    if version not in (1, 2, TERNARY):
        raise DeployError(path, f"unsupported checkpoint version {version} (known: 0, 1, 2, 3)")
    fields = struct.unpack_from(mark + "7i", raw, 8)
    shared = raw[36]
    if shared not in (0, 1):
        raise DeployError(path, f"shared-classifier flag is {shared}, expected 0 or 1")
    group = struct.unpack_from(mark + "i", raw, 37)[0] if version == 2 else 0
    return _make_header(path, version, order, (*fields[:5], fields[5] if shared else -fields[5], fields[6]), group)


def _make_header(path, version, order, fields, group):
    dim, hidden, layers, heads, kv_heads, vocab, seq = fields
    config = Config(dim, hidden, layers, heads, kv_heads, abs(vocab), seq, shared_classifier=vocab > 0)
    problems = config.problems()
    if problems:
        raise DeployError(path, "; ".join(problems))
    header = Header(version, order, config, group)
    if version == 2:
        check_group_size(config, group, path)
    return header


def check_group_size(config, group, path="checkpoint"):
    """The group size a v2 file can hold: it divides dim and every quantized tensor (checked once per kind)."""
    if group <= 0:
        raise DeployError(path, f"group size {group} is not positive")
    if config.dim % group:
        raise DeployError(path, f"group size {group} does not divide dim {config.dim}")
    for name, count, _ in quantized_kinds(config):
        if count % group:
            raise DeployError(path, f"group size {group} does not divide the {count} elements of {name}")


def pack_header(header):
    config, mark = header.config, ENDIAN[header.byteorder]
    vocab = config.vocab_size
    fields = (config.dim, config.hidden_dim, config.n_layers, config.n_heads, config.n_kv_heads)
    if header.version == 0:
        return struct.pack(mark + "7i", *fields, vocab if config.shared_classifier else -vocab, config.seq_len)
    raw = bytearray(V1_HEADER_BYTES)
    struct.pack_into(mark + "Ii7iB", raw, 0, MAGIC, header.version, *fields, vocab, config.seq_len,
                     int(config.shared_classifier))
    if header.version == 2:
        struct.pack_into(mark + "i", raw, 37, header.group_size)
    return bytes(raw)


def read_header(path):
    """Header of a checkpoint file, checked against the file's size."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(V1_HEADER_BYTES)
    except OSError as error:
        raise file_error(path, error) from None
    header = parse_header(raw, path)
    actual, expected = os.path.getsize(path), expected_size(header)
    if actual < expected:
        raise DeployError(path, f"truncated: {actual} bytes, the v{header.version} header promises {expected}")
    if actual > expected:
        raise DeployError(path, f"{actual - expected} trailing bytes after the {expected} the v{header.version} "
                                f"header describes")
    return header


# ---------------------------------------------------------------------------------------------------------------------
# whole models in memory


@dataclasses.dataclass
class Model:
    """A checkpoint's weights as fp32 arrays in canonical shapes (see Config.shapes)."""

    config: Config
    weights: dict

    @property
    def classifier(self):
        return self.weights["tok_embeddings"] if self.config.shared_classifier else self.weights["wcls"]


def _regions(path, header):
    """{segment name: array view of its bytes} in the file's byte order."""
    mark = ENDIAN[header.byteorder]
    raw = np.memmap(path, dtype=np.uint8, mode="r", offset=header.size)
    regions, offset = {}, 0
    for segment in segments(header):
        dtype = {"f4": np.dtype(mark + "f4"), "i1": np.int8, "u1": np.uint8}[segment.dtype]
        regions[segment.name] = raw[offset:offset + segment.nbytes].view(dtype)
        offset += segment.nbytes
    return regions


def read_model(path):
    """Read any version into fp32 (int8 and ternary weights are dequantized)."""
    header = read_header(path)
    config = header.config
    regions = _regions(path, header)
    shapes = config.shapes()
    weights = {}
    if header.version == TERNARY:
        ternary = read_ternary_regions(path, config, regions)
        weights = {name: dequantize_layers(*ternary[name]) for name in LAYER_MATRICES}
    for name, shape in shapes.items():
        if name in weights:
            continue
        if header.quantized and name not in NORMS:
            weights[name] = _dequantize_tensor(regions, name, shape, config, header.group_size)
        else:
            weights[name] = regions[name].astype(np.float32).reshape(shape)
    return Model(config, weights)


def read_quantized(path):
    """A v2 checkpoint's int8 tensors as they are stored: {name: (q int8 (rows, cols), scales float32)}, layers
    stacked for the per-layer kinds, plus the fp32 norms and the header."""
    header = read_header(path)
    if not header.quantized:
        raise DeployError(path, f"is a v{header.version} (fp32) checkpoint, not int8")
    config = header.config
    regions = _regions(path, header)
    shapes = config.shapes()
    tensors = {name: regions[name].astype(np.float32).reshape(shapes[name]) for name in NORMS}
    group = header.group_size
    for name in ["tok_embeddings", *LAYER_MATRICES, *([] if config.shared_classifier else ["wcls"])]:
        shape = shapes[name]
        if name in LAYER_MATRICES:
            q = np.stack([regions[f"{name}.{i}.q"] for i in range(config.n_layers)]).reshape(shape)
            s = np.stack([regions[f"{name}.{i}.s"] for i in range(config.n_layers)]).reshape(*shape[:-1], -1)
        else:
            q, s = regions[f"{name}.q"].reshape(shape), regions[f"{name}.s"].reshape(shape[0], -1)
        if shape[-1] % group:
            raise DeployError(path, f"group size {group} does not divide the rows of {name} ({shape[-1]})")
        tensors[name] = (q, s)
    return header, tensors


def read_ternary(path):
    """A v3 checkpoint as the ports hold it: (header, {kind: (int8 trits (layers, rows, cols), fp32 scales
    (layers,))} plus the fp32 norms, embeddings and unshared classifier in canonical shapes)."""
    header = read_header(path)
    if header.version != TERNARY:
        raise DeployError(path, f"is a v{header.version} checkpoint, not ternary (v{TERNARY})")
    regions = _regions(path, header)
    tensors = read_ternary_regions(path, header.config, regions)
    for name, shape in header.config.shapes().items():
        if name not in tensors:
            tensors[name] = regions[name].astype(np.float32).reshape(shape)
    return header, tensors


def read_ternary_regions(path, config, regions):
    """{kind: (trits, scales)} of a v3 file's layer matrices; a 2-bit code 11 (no trit) or a scale that is not a
    finite non-negative number is refused, naming the tensor."""
    found = {}
    for kind in LAYER_MATRICES:
        layers, rows, cols = config.shapes()[kind]
        trits, scales = [], []
        for layer in range(layers):
            packed = regions[f"{kind}.{layer}.t"].reshape(rows, -1)
            bad = invalid_codes(packed)
            if bad:
                raise DeployError(path, f"{kind} of layer {layer} holds {bad} invalid ternary codes (binary 11); "
                                        f"the file is damaged: convert it again")
            scale = float(regions[f"{kind}.{layer}.s"][0])
            if not np.isfinite(scale) or scale < 0:
                raise DeployError(path, f"{kind} of layer {layer} has scale {scale}, expected a finite number >= 0")
            trits.append(unpack(packed, cols))
            scales.append(scale)
        found[kind] = (np.stack(trits), np.asarray(scales, np.float32))
    return found


def _dequantize_tensor(regions, name, shape, config, group):
    from deploy.quantize import dequantize

    if name in LAYER_MATRICES:
        layers = [dequantize(regions[f"{name}.{i}.q"], regions[f"{name}.{i}.s"], group)
                  for i in range(config.n_layers)]
        return np.stack(layers).reshape(shape)
    return dequantize(regions[f"{name}.q"], regions[f"{name}.s"], group).reshape(shape)


ROPE_ROWS_PER_BLOCK = 4096
ROPE_FUNCTIONS = {"freq_cis_real": np.cos, "freq_cis_imag": np.sin}


def _write_rope(out, config, function, mark):
    """One of the freq_cis tables a v0 file carries (run.c recomputes them, but the layout needs them), a block of
    rows at a time: a long seq_len costs file space, not memory."""
    half = config.head_size // 2
    freqs = 1.0 / (10000.0 ** (np.arange(0, config.head_size, 2)[:half] / config.head_size))
    for start in range(0, config.seq_len, ROPE_ROWS_PER_BLOCK):
        angles = np.outer(np.arange(start, min(start + ROPE_ROWS_PER_BLOCK, config.seq_len)), freqs)
        out.write(function(angles).astype(np.float32).astype(mark + "f4").tobytes())


def write_model(model, path, version=0, byteorder="little", group_size=None):
    """Write `model` as a checkpoint of `version` and byte order; v2 quantizes with `group_size`, which must divide
    dim and hidden_dim (by default the largest power of two up to 64 that does)."""
    from deploy.quantize import quantize

    check_version(version, path)
    check_byteorder(byteorder, path)
    config = model.config
    for name, shape in config.shapes().items():
        tensor = model.weights.get(name)
        if tensor is None or np.shape(tensor) != shape:
            raise DeployError(path, f"tensor {name} has shape {np.shape(tensor)}, the config needs {shape}")
    group = 0
    if version == 2:
        group = choose_group_size(config, group_size, path)
        check_group_size(config, group, path)
    header = Header(version, byteorder, config, group)
    mark = ENDIAN[byteorder]
    with atomic_writer(path) as out:
        out.write(pack_header(header))
        scales = None
        for segment in segments(header):
            if segment.dtype == "u1":
                kind, layer = segment.name[:-2].split(".")
                trits, scale = quantize_ternary(model.weights[kind][int(layer)])
                out.write(pack(trits).tobytes())
                scales = np.asarray([scale], np.float32)
            elif segment.dtype == "i1":
                kind, _, layer = segment.name[:-2].partition(".")
                tensor = model.weights[kind][int(layer)] if layer else model.weights[kind]
                q, scales = quantize(np.asarray(tensor, np.float32).ravel(), group)
                out.write(q.tobytes())
            elif segment.name.endswith(".s"):
                out.write(scales.astype(mark + "f4").tobytes())
            elif segment.name in ROPE_FUNCTIONS:
                _write_rope(out, config, ROPE_FUNCTIONS[segment.name], mark)
            else:
                out.write(np.asarray(model.weights[segment.name], dtype=mark + "f4").tobytes())
    return header
