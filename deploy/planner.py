"""`invoke plan`: does a model fit a target, what would fit instead, and how fast should it run?

Speeds come from the machine model (deploy/machine_model.py): per-token counts of the project's builds and of the
published ports, costed per CPU, checked against every published figure.
"""

import dataclasses

from deploy import machine_model
from deploy.checkpoint import Header, default_group_size, expected_size
from deploy.fit import MB, check_fit
from deploy.stream import DEFAULT_STEPS, predict_streaming, readahead, steps_that_fit

LLAMA2_TOKENIZER_BYTES = 433_869  # a catalog model's tokenizer before it is downloaded
PROGRAM_BYTES = 150_000  # the program's size, for the disk check


@dataclasses.dataclass
class Prediction:
    tok_s: float
    how: str


@dataclasses.dataclass
class Alternative:
    what: str
    model_bytes: int
    memory_bytes: int
    fits: bool
    note: str = ""


def predict(target, model_name, version, counts=None):
    """The machine model's tok/s for the project's build of `target` on a catalog model, or None."""
    tok_s = machine_model.prediction_for(target, model_name, version, counts)
    if tok_s is None:
        return None
    return Prediction(tok_s, f"machine model ({machine_model.MACHINES[machine_model.TARGET_MACHINE[target]].name})")


def int8_is_faster(profile, model_name, config, counts=None):
    """(offer int8?, why): int8 only where the machine model predicts it faster than fp32; without counts, only with
    a group size of at least 16 (at group size 4 each group's scale costs more than the smaller file saves)."""
    fp32, int8 = (machine_model.prediction_for(profile.name, model_name, v, counts) for v in (0, 2))
    if fp32 and int8:
        return int8 > fp32, f"machine model: int8 {int8:.3g} vs fp32 {fp32:.3g} tok/s"
    group = default_group_size(config)
    return group >= 16, f"not counted; group size {group}"


def ternary_speed(profile, model_name, counts=None):
    """What the machine model predicts for a ternary (v3) build, or why it cannot say."""
    tok_s = machine_model.prediction_for(profile.name, model_name, 3, counts) if model_name else None
    return f"machine model: {tok_s:.3g} tok/s" if tok_s else "speed not counted for this target and shape"


def _files(profile, model_bytes, tokenizer_bytes, program_bytes):
    files = profile["files"]
    return {files["program"]: program_bytes, files["model"]: model_bytes, files["tokenizer"]: tokenizer_bytes}


def alternatives(profile, header, tokenizer_bytes, program_bytes=150_000, model_name=None, counts=None):
    """What would fit when `header`'s model does not: int8 weights (where faster), ternary weights, a shorter
    context, a smaller model; each in the header's own format (an int8 model's alternatives are int8)."""
    from deploy.models import CATALOG

    found, config = [], header.config

    def same_format(shape):
        if header.version == 2:
            return Header(2, header.byteorder, shape, default_group_size(shape))
        return Header(3 if header.version == 3 else 0, header.byteorder, shape)

    def option(what, candidate, note=""):
        size = expected_size(candidate)
        fit = check_fit(profile, candidate, _files(profile, size, tokenizer_bytes, program_bytes))
        found.append(Alternative(what, size, fit.memory_bytes, fit.ok, note))

    if header.version not in (2, 3):
        int8 = Header(2, header.byteorder, config, default_group_size(config))
        faster, why = int8_is_faster(profile, model_name, config, counts)
        if faster:
            option(f"int8 (v2, group size {int8.group_size}): invoke convert --version 2", int8, why)
        else:
            found.append(Alternative(f"int8 (v2, group size {int8.group_size}): not offered, slower than fp32",
                                     expected_size(int8), 0, False, why))
    ternary = Header(3, header.byteorder, config)
    if header.version != 3:
        option("ternary (v3): train for it (training/train_ternary.py); invoke convert --version 3 alone loses the "
               "model", ternary, ternary_speed(profile, model_name, counts))
    kind = {2: "int8", 3: "ternary"}.get(header.version, "fp32")
    for seq_len in (256, 128):
        if seq_len < config.seq_len:
            option(f"seq_len {seq_len} (a smaller KV cache, {kind})",
                   same_format(dataclasses.replace(config, seq_len=seq_len)))
    for entry in CATALOG.values():
        if entry.version == 0 and entry.shape.parameter_count() < config.parameter_count():
            option(f"{entry.name} instead ({kind})", same_format(entry.shape))
    streamed = [streaming_alternative(profile, candidate, tokenizer_bytes, program_bytes, model_name, counts, what)
                for candidate, what in streamed_candidates(header)]
    return found + [option for option in streamed if option]


def streamed_candidates(header):
    """(header, label) of what the planner offers to stream: the model as it is and, unless it is ternary already,
    its ternary (v3) form, whose layers read 16 times fewer bytes than fp32's."""
    found = [(header, "stream from disk")]
    if header.version != 3:
        found.append((Header(3, header.byteorder, header.config), "ternary (v3) streamed from disk"))
    return found


def streamed_fit(profile, header, tokenizer_bytes, program_bytes, model_name=None, counts=None):
    """(compute tok/s or None, StreamPrediction, Fit) of the model streamed from disk (deploy/stream.py), or None
    when the profile gives no disk bandwidth. A run of -n 256 positions (the program's default) unless its KV
    cache does not fit the budget: then the most positions that do."""
    compute = machine_model.prediction_for(profile.name, model_name, header.version, counts) if model_name else None
    streamed = predict_streaming(profile, header, compute, tokenizer_bytes=tokenizer_bytes)
    if streamed is None:
        return None
    if not streamed.plan.fits:
        steps = steps_that_fit(header, streamed.plan.budget_bytes, readahead(profile), tokenizer_bytes)
        if steps:
            streamed = predict_streaming(profile, header, compute, tokenizer_bytes=tokenizer_bytes, steps=steps)
    files = _files(profile, expected_size(header), tokenizer_bytes, program_bytes)
    return compute, streamed, check_fit(profile, header, files, streaming=streamed.plan)


def streaming_alternative(profile, header, tokenizer_bytes, program_bytes, model_name=None, counts=None,
                          what="stream from disk"):
    """The model (in `header`'s format) streamed from disk: its least memory, tok/s against the disk's physical
    limit, and what does not fit (the disk, say)."""
    found = streamed_fit(profile, header, tokenizer_bytes, program_bytes, model_name, counts)
    if found is None:
        return None
    _, streamed, fit = found
    steps = f"; -n {streamed.plan.steps}" if streamed.plan.steps != DEFAULT_STEPS else ""
    return Alternative(f"{what} (deploy --stream; -b {streamed.plan.budget_bytes // MB} MB{steps}): "
                       f"predicted {streamed.tok_s:.3g} tok/s", expected_size(header), streamed.plan.least_bytes,
                       fit.ok, "; ".join([*fit.problems(), streamed.describe()]))


def plan_model(target, model, tokenizer=None):
    """Everything `invoke plan` shows: (profile, model name, header, fit, prediction, alternatives, published)."""
    from pathlib import Path

    from deploy.checkpoint import read_header
    from deploy.models import CATALOG, resolve
    from deploy.profile import load_profile

    profile = load_profile(target)
    entry = CATALOG.get(str(model))
    if entry is not None:
        header = Header(entry.version, "little", entry.shape)
        model_bytes = entry.size
        try:
            tokenizer_bytes = resolve(model, tokenizer)[1].stat().st_size
        except Exception:  # a catalog model not downloaded yet: plan with the Llama 2 tokenizer's size
            tokenizer_bytes = LLAMA2_TOKENIZER_BYTES
    else:
        model_path, tokenizer_path = resolve(model, tokenizer)
        header, model_bytes = read_header(model_path), Path(model_path).stat().st_size
        tokenizer_bytes = Path(tokenizer_path).stat().st_size
    program_bytes = PROGRAM_BYTES
    fit = check_fit(profile, header, _files(profile, model_bytes, tokenizer_bytes, program_bytes))
    counts = machine_model.load_counts()
    name = machine_model.counted_model(header.config)
    prediction = predict(profile.name, name, header.version, counts) if name else None
    options = alternatives(profile, header, tokenizer_bytes, program_bytes, name, counts) if not fit.ok else []
    speeds = machine_model.rows([profile.name], counts)[0] if profile.name in machine_model.TARGET_MACHINE else []
    return profile, str(model), header, fit, prediction, options, speeds


def streaming_json(profile, model_name, header, fit):
    """`invoke plan --json`'s streaming rows when the weights do not fit (the model as it is, and ternary):
    predicted tok/s and the disk's limit, the file's size and what does not fit."""
    from deploy.models import CATALOG

    if fit.ok:
        return []
    rows, name = [], machine_model.counted_model(header.config)
    for candidate, _ in streamed_candidates(header):
        found = streamed_fit(profile, candidate, LLAMA2_TOKENIZER_BYTES, PROGRAM_BYTES, name,
                             machine_model.load_counts())
        if found is None:
            continue
        compute, streamed, streamed_fits = found
        rows.append({"target": profile.name, "model": CATALOG[model_name].name if model_name in CATALOG
                     else model_name, "version": candidate.version, "streaming": True,
                     "predicted_tok_s": streamed.tok_s, "disk_limit_tok_s": streamed.limit_tok_s,
                     "compute_tok_s": compute, "bytes_per_token": streamed.plan.bytes_per_token,
                     "disk_read_mb_s": streamed.disk_mb_s, "budget_mb": streamed.plan.budget_bytes // MB,
                     "least_memory_mb": streamed.plan.least_bytes / MB, "steps": streamed.plan.steps,
                     "model_bytes": expected_size(candidate), "disk_mb": (profile.get("disk") or {}).get("size_mb"),
                     "fits": streamed_fits.ok, "problems": streamed_fits.problems()})
    return rows
