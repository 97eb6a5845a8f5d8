"""Does a model fit a target? Memory (weights, KV cache, activations, program), disk, file size and file names, each
checked against the profile."""

import dataclasses
import re

from deploy.checkpoint import expected_size

MB = 1 << 20
NAME_83 = re.compile(r"^[A-Z0-9_~!#$%&'()@^`{}-]{1,8}(\.[A-Z0-9_~!#$%&'()@^`{}-]{1,3})?$")
# what the C program allocates besides the weights: its code and C library (a static binary), stack, heap slack
PROGRAM_OVERHEAD_BYTES = 2 * MB


@dataclasses.dataclass
class Check:
    what: str
    need: str
    limit: str
    ok: bool


@dataclasses.dataclass
class Fit:
    target: str
    checks: list
    memory_bytes: int
    disk_bytes: int

    @property
    def ok(self):
        return all(check.ok for check in self.checks)

    def problems(self):
        return [f"{c.what}: needs {c.need}, the limit is {c.limit}" for c in self.checks if not c.ok]


def memory_needed(header, program_bytes=0, tokenizer_bytes=0):
    """Bytes the program holds while running: the weights (fp32, or int8 with a scale per group), KV cache,
    activations, the tokenizer's pieces and the program itself."""
    c = header.config
    weights = weight_bytes(header)
    kv_cache = 2 * 4 * c.n_layers * c.seq_len * c.kv_dim
    activations = 4 * (4 * c.dim + 2 * c.hidden_dim + c.n_heads * c.seq_len + 2 * c.vocab_size)
    return weights + kv_cache + activations + 2 * tokenizer_bytes + program_bytes + PROGRAM_OVERHEAD_BYTES


def weight_bytes(header):
    """The weights in memory: fp32, int8 with one fp32 scale per group, or ternary as its file holds them."""
    if header.version == 3:  # packed codes, fp32 norms and embeddings: the file less its header
        return expected_size(header) - header.size
    count = header.config.parameter_count()
    return count * (1 + 4 / header.group_size) if header.version == 2 else 4 * count


def check_fit(profile, header, files, program_bytes=0, streaming=None):
    """`files`: {name on the target: size in bytes} of everything delivered (program, model, tokenizer). With
    `streaming` (a deploy.stream.StreamPlan) the memory is the streaming build's least, and a model file past the
    file system's limit is staged in parts (deploy/parts.py)."""
    tokenizer_bytes = files.get(profile["files"]["tokenizer"], 0)
    memory = memory_needed(header, program_bytes, tokenizer_bytes) if streaming is None else streaming.least_bytes
    limit, label = memory_limit(profile)
    checks = []
    if limit:
        what = f"memory ({label}{', streaming' if streaming else ''})"
        checks.append(Check(what, _mb(memory), f"{limit} MB", memory <= limit * MB))
    disk = profile.get("disk") or {}
    total = sum(files.values())
    if disk.get("size_mb"):
        checks.append(Check("disk", _mb(total), f"{disk['size_mb']} MB", total <= disk["size_mb"] * MB))
    if disk.get("max_file_bytes"):
        biggest_name, biggest = max(files.items(), key=lambda item: item[1])
        if streaming is not None and biggest_name == profile["files"]["model"]:
            biggest_name, biggest = "in parts", min(biggest, disk["max_file_bytes"])
        checks.append(Check(f"largest file ({biggest_name}, {disk.get('filesystem', 'file system')})", _mb(biggest),
                            _mb(disk["max_file_bytes"]), biggest <= disk["max_file_bytes"]))
    if disk.get("names") == "8.3":
        bad = [name for name in files if not NAME_83.match(name)]
        checks.append(Check("8.3 file names", ", ".join(files), "8.3 upper case", not bad))
    return Fit(profile.name, checks, memory, total)


def memory_limit(profile):
    """(MB the program may use, what limits it): RAM less the operating system's share (memory.os_mb), or the
    port's own cap when that is lower; (None, "") when the profile gives neither."""
    memory = profile.get("memory") or {}
    cap, ram, os_mb = profile.memory_cap_mb, memory.get("ram_mb"), memory.get("os_mb") or 0
    limits = []
    if ram:
        limits.append((ram - os_mb, f"RAM {ram} MB less {os_mb} MB for the OS" if os_mb else "RAM"))
    if cap:
        limits.append((cap, "the port's memory cap"))
    return min(limits) if limits else (None, "")


def _mb(size):
    return f"{size / MB:,.1f} MB"
