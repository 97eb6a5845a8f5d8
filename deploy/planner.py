"""`invoke plan`: does a model fit a target, what would fit instead, and how fast should it run?

The speed model is deliberately simple: a token streams every weight once and reads the KV cache; it costs
2 FLOPs per weight plus the attention. The profile gives memory bandwidth and a FLOP rate; whichever takes longer
bounds the token rate.
"""

import dataclasses

from deploy.checkpoint import Header, default_group_size, expected_size
from deploy.fit import check_fit

GENERATED_TOKENS = 256  # predictions average the attention cost over a 256-token generation


@dataclasses.dataclass
class Prediction:
    tok_s: float
    bound: str  # "memory" or "compute"
    megabytes_per_token: float
    mflop_per_token: float


@dataclasses.dataclass
class Alternative:
    what: str
    model_bytes: int
    memory_bytes: int
    fits: bool
    note: str = ""


def predict(profile, config, version=0):
    memory = profile.get("memory") or {}
    bandwidth, mflops = memory.get("bandwidth_mb_s"), memory.get("mflops")
    params = config.parameter_count()
    weight_bytes = params * (1 + 4 / default_group_size(config)) if version == 2 else 4 * params
    pos = min(config.seq_len, GENERATED_TOKENS) / 2
    kv_bytes = 2 * 4 * config.n_layers * pos * config.kv_dim
    flops = 2 * params + 4 * config.n_layers * pos * config.dim
    times = {}
    if bandwidth:
        times["memory"] = (weight_bytes + kv_bytes) / (bandwidth * 1e6)
    if mflops:
        times["compute"] = flops / (mflops * 1e6)
    if not times:
        return None
    bound = max(times, key=times.get)
    return Prediction(1.0 / times[bound], bound, (weight_bytes + kv_bytes) / 1e6, flops / 1e6)


def _files(profile, model_bytes, tokenizer_bytes, program_bytes):
    files = profile["files"]
    return {files["program"]: program_bytes, files["model"]: model_bytes, files["tokenizer"]: tokenizer_bytes}


def alternatives(profile, header, tokenizer_bytes, program_bytes=150_000):
    """What would fit when `header`'s model does not: int8 weights, a shorter context, a smaller model."""
    from deploy.models import CATALOG

    found, config = [], header.config
    if header.version != 2:
        int8 = Header(2, header.byteorder, config, default_group_size(config))
        fit = check_fit(profile, int8, _files(profile, expected_size(int8), tokenizer_bytes, program_bytes))
        found.append(Alternative(f"int8 (v2, group size {int8.group_size}): invoke convert --version 2",
                                 expected_size(int8), fit.memory_bytes, fit.ok))
    for seq_len in (256, 128):
        if seq_len < config.seq_len:
            shorter = Header(0, header.byteorder, dataclasses.replace(config, seq_len=seq_len))
            fit = check_fit(profile, shorter, _files(profile, expected_size(shorter), tokenizer_bytes, program_bytes))
            found.append(Alternative(f"seq_len {seq_len} (a smaller KV cache)", expected_size(shorter),
                                     fit.memory_bytes, fit.ok))
    for entry in CATALOG.values():
        if entry.shape.parameter_count() < config.parameter_count():
            smaller = Header(0, "little", entry.shape)
            fit = check_fit(profile, smaller, _files(profile, entry.size, tokenizer_bytes, program_bytes))
            found.append(Alternative(f"{entry.name} instead", entry.size, fit.memory_bytes, fit.ok))
    return found


def published_comparison(profile):
    """(published figure, predicted tok/s for that model, ratio) for each published figure of the profile."""
    from deploy.models import CATALOG

    rows = []
    for figure in profile.get("published") or []:
        entry = CATALOG.get(figure["model"])
        prediction = predict(profile, entry.shape) if entry else None
        ratio = prediction.tok_s / figure["tok_s"] if prediction and figure.get("tok_s") else None
        rows.append((figure, prediction, ratio))
    return rows


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
            tokenizer_bytes = 433_869
    else:
        model_path, tokenizer_path = resolve(model, tokenizer)
        header, model_bytes = read_header(model_path), Path(model_path).stat().st_size
        tokenizer_bytes = Path(tokenizer_path).stat().st_size
    program_bytes = 150_000
    fit = check_fit(profile, header, _files(profile, model_bytes, tokenizer_bytes, program_bytes))
    prediction = predict(profile, header.config, header.version)
    options = alternatives(profile, header, tokenizer_bytes, program_bytes) if not fit.ok else []
    return profile, str(model), header, fit, prediction, options, published_comparison(profile)
