"""Streaming the weights from disk: the build's choices (ports/loaders/stream.c.j2) and the planner's prediction.

A streaming build keeps the run state, the norms and one layer's weights (two with read-ahead) in a fixed budget and
reads every layer, the token's embedding row and the classifier (unless it fits the budget whole) from disk each
token; see docs/streaming.md.
"""

import dataclasses

from deploy.checkpoint import LAYER_MATRICES, TERNARY
from deploy.fit import MB, memory_limit, memory_needed, weight_bytes
from deploy.ternary import row_bytes as ternary_row_bytes

ROWS_PER_TASK = 16  # the classifier's least chunk: ports/run.c.j2's ROWS_PER_TASK
DEFAULT_STEPS = 256  # the program's -n default, as llama2.c's


def stream_port(profile, stream):
    """The template's streaming branch: on or off, the default budget (the profile's memory limit in MB, 0: this
    machine's physical memory), and a reader thread where the target has threads and POSIX threads (not Windows 98)."""
    if not stream:
        return {"stream": False, "readahead": False, "stream_budget_mb": 0}
    return {"stream": True, "readahead": readahead(profile), "stream_budget_mb": int(memory_limit(profile)[0] or 0)}


def readahead(profile):
    """A reader thread fills the next layer's buffer where the target has threads (POSIX threads: not Windows 98)."""
    return profile.port["threads"] != "none" and profile["os"] != "windows98"


def _aligned(n):
    return (n + 15) & ~15


def layer_bytes(header):
    """One layer's seven matrices as the streaming build buffers them (each part 16-byte aligned): fp32, int8 values
    and their scales, or ternary codes and their one scale."""
    shapes, total = header.config.shapes(), 0
    for kind in LAYER_MATRICES:
        _, rows, cols = shapes[kind]
        count = rows * cols
        if header.version == TERNARY:
            total += _aligned(rows * ternary_row_bytes(cols)) + _aligned(4)
        elif header.quantized:
            total += _aligned(count) + _aligned(4 * (count // header.group_size))
        else:
            total += _aligned(4 * count)
    return total


def row_bytes(header):
    """One embedding or classifier row in the file (fp32 but in v2: ternary files keep them fp32)."""
    dim = header.config.dim
    return dim + 4 * (dim // header.group_size) if header.quantized else 4 * dim


@dataclasses.dataclass
class StreamPlan:
    budget_bytes: int
    buffers: int            # layer buffers: 2 with read-ahead
    fixed_bytes: int        # run state, KV cache, norms, tables, layer buffers, program
    least_bytes: int        # fixed plus the least classifier chunk: a smaller budget is refused
    classifier_resident: bool
    bytes_per_token: int    # read from disk for each token
    steps: int              # positions the KV cache holds (the run's -n)

    @property
    def fits(self):
        return self.least_bytes <= self.budget_bytes


def stream_plan(header, budget_bytes, readahead, tokenizer_bytes=0, steps=DEFAULT_STEPS):
    """What a streaming build holds and reads under `budget_bytes` (the C program's own plan, approximately), its
    KV cache holding the `steps` positions of a run (-n; None: the whole seq_len)."""
    c = header.config
    positions = min(steps or c.seq_len, c.seq_len)
    run = dataclasses.replace(header, config=dataclasses.replace(c, seq_len=positions))
    weights_free = memory_needed(run, tokenizer_bytes=tokenizer_bytes) - weight_bytes(header)
    buffers = 2 if readahead else 1
    norms = 4 * (2 * c.n_layers * c.dim + c.dim)
    layer = layer_bytes(header)
    fixed = weights_free + norms + buffers * layer + row_bytes(header)
    classifier = c.vocab_size * row_bytes(header)
    resident = fixed + classifier <= budget_bytes
    per_token = c.n_layers * layer + row_bytes(header) + (0 if resident else classifier)
    return StreamPlan(budget_bytes, buffers, fixed, fixed + ROWS_PER_TASK * row_bytes(header), resident, per_token,
                      positions)


def steps_that_fit(header, budget_bytes, readahead, tokenizer_bytes=0, most=DEFAULT_STEPS):
    """The most positions (-n, at most `most`) whose KV cache still lets the model stream under `budget_bytes`, or
    None when not even one does (a layer buffer alone is too big)."""
    def fits(steps):
        return stream_plan(header, budget_bytes, readahead, tokenizer_bytes, steps).fits

    if not fits(1):
        return None
    low, high = 1, most  # fits(low); the answer is in [low, high]
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if fits(middle) else (low, middle - 1)
    return low


@dataclasses.dataclass
class StreamPrediction:
    plan: StreamPlan
    disk_mb_s: float        # the profile's disk.read_mb_s (MB = 10^6 bytes, as disk figures are given)
    limit_tok_s: float      # the disk's physical limit: read bandwidth / bytes read per token
    compute_tok_s: float    # the machine model's in-memory prediction, or None where nothing is counted
    tok_s: float

    def describe(self):
        text = (f"disk {self.disk_mb_s:g} MB/s / {self.plan.bytes_per_token / 1e6:,.1f} MB read per token = "
                f"physical limit {self.limit_tok_s:.3g} tok/s")
        if self.compute_tok_s:
            overlap = "overlapped (read-ahead)" if self.plan.buffers == 2 else "in turn (no threads)"
            text += f"; compute {self.compute_tok_s:.3g} tok/s (machine model), {overlap}"
        return text


def predict_streaming(profile, header, compute_tok_s=None, budget_mb=None, tokenizer_bytes=0, steps=DEFAULT_STEPS):
    """Predicted tok/s of the streaming build for a run of `steps` positions: the disk read of every token (bytes /
    disk.read_mb_s), plus the compute the machine model predicts where it has counts (overlapped with read-ahead,
    else added); None when the profile gives no disk bandwidth."""
    disk = (profile.get("disk") or {}).get("read_mb_s")
    if not disk:
        return None
    budget = (budget_mb or memory_limit(profile)[0] or 0) * MB
    plan = stream_plan(header, budget, readahead(profile), tokenizer_bytes, steps)
    read_s = plan.bytes_per_token / (disk * 1e6)
    seconds = read_s
    if compute_tok_s:
        seconds = max(read_s, 1 / compute_tok_s) if plan.buffers == 2 else read_s + 1 / compute_tok_s
    return StreamPrediction(plan, disk, 1 / read_s, compute_tok_s, 1 / seconds)


def streaming_needed(profile, model, tokenizer):
    """Does the model not fit the target's memory, while a streamed run of at least one step would (so that deploy
    streams it; the fit check then weighs the run's own length)?"""
    from pathlib import Path

    from deploy.checkpoint import read_header

    limit = memory_limit(profile)[0]
    if not (limit and model and tokenizer and Path(model).is_file() and Path(tokenizer).is_file()):
        return False  # nothing to stream, or the fit check names the missing file
    tokenizer_bytes = Path(tokenizer).stat().st_size
    header = read_header(model)
    if memory_needed(header, tokenizer_bytes=tokenizer_bytes) <= limit * MB:
        return False
    return stream_plan(header, limit * MB, readahead(profile), tokenizer_bytes, steps=1).fits


def streaming_plan(profile, header, plan, tokenizer_bytes=0, steps=DEFAULT_STEPS):
    """The StreamPlan of a streaming build plan under its default budget for a run of `steps` positions, or None for
    an in-memory build."""
    if not plan.port["stream"]:
        return None
    return stream_plan(header, plan.port["stream_budget_mb"] * MB, plan.port["readahead"], tokenizer_bytes, steps)


def shorter_run_hint(header, streaming, tokenizer_bytes=0):
    """What to say when a streamed run's KV cache is what does not fit: the longest run that does, or ''."""
    if streaming is None or streaming.fits:
        return ""
    steps = steps_that_fit(header, streaming.budget_bytes, streaming.buffers == 2, tokenizer_bytes,
                           most=streaming.steps)
    if steps is None or steps >= streaming.steps:
        return ""
    return f"; streamed, a run of --steps {steps} or fewer fits (the KV cache grows with every step)"


def run_steps(run_args):
    """The positions a run of the program with `run_args` goes through (its -n; 0 is the model's seq_len: None)."""
    args = list(run_args)
    for flag, value in zip(args, args[1:]):
        if flag == "-n" and value.isdigit():
            return int(value) or None
    return DEFAULT_STEPS
