"""Convert checkpoints between versions and byte orders, and prepare a model for a target's byte order and names."""

import dataclasses
from pathlib import Path

from deploy.byteorder import convert_checkpoint_byteorder, convert_tokenizer_byteorder, detect_tokenizer_byteorder
from deploy.checkpoint import check_byteorder, check_version, choose_group_size, read_header, read_model, write_model
from deploy.errors import DeployError
from deploy.manifest import describe_checkpoint, write_manifest
from deploy.tokenizer import read_tokenizer


def convert_checkpoint(source, dest, version=None, byteorder=None, group_size=None):
    """Write `source` as `dest` in another version and/or byte order; returns the new manifest entry.

    A byte-order-only change streams in constant memory; a version change goes through fp32 in memory.
    """
    header = read_header(source)
    version = header.version if version is None else check_version(version, dest)
    byteorder = header.byteorder if byteorder is None else check_byteorder(byteorder, dest)
    if group_size is not None:
        if version != 2:
            raise DeployError(dest, f"a group size applies to int8 (version 2) output only, not version {version}")
        choose_group_size(header.config, group_size, dest)
    if Path(source).resolve() == Path(dest).resolve():
        raise DeployError(dest, "is the source file; choose another output")
    if version == header.version and (version != 2 or group_size in (None, header.group_size)):
        return convert_checkpoint_byteorder(source, dest, byteorder)
    written = write_model(read_model(source), dest, version, byteorder, group_size)
    return write_manifest(dest, describe_checkpoint(written))


@dataclasses.dataclass
class TargetFiles:
    model: Path
    tokenizer: Path
    manifests: list


def convert_for_target(profile, model, tokenizer, out_dir, version=None):
    """The model and tokenizer in the target's byte order and file names, each with a manifest."""
    out_dir = Path(out_dir)
    header = read_header(model)
    files = profile["files"]
    model_out, tokenizer_out = out_dir / files["model"], out_dir / files["tokenizer"]
    entry = convert_checkpoint(model, model_out, version=version, byteorder=profile.endianness)
    tok_entry = convert_tokenizer_byteorder(tokenizer, tokenizer_out, profile.endianness,
                                            detect_tokenizer_byteorder(tokenizer), header.config.vocab_size)
    return TargetFiles(model_out, tokenizer_out, [entry, tok_entry])


def _source_stamp(*paths):
    return "\n".join(f"{Path(p).resolve()} {Path(p).stat().st_size} {Path(p).stat().st_mtime_ns}" for p in paths)


def model_for_target(profile, model, tokenizer, work_dir, convert=True):
    """Paths of the model and tokenizer as the target reads them: the inputs themselves when their byte order is
    already the target's, otherwise converted copies under `work_dir` (reused while the inputs are unchanged).
    With convert=False, inputs in the wrong byte order are refused with the command that converts them."""
    header = read_header(model)
    tokenizer_order = detect_tokenizer_byteorder(tokenizer)
    read_tokenizer(tokenizer, header.config.vocab_size, tokenizer_order)
    if header.byteorder == tokenizer_order == profile.endianness:
        return Path(model), Path(tokenizer)
    if not convert:
        wrong, order = (model, header.byteorder) if header.byteorder != profile.endianness else (tokenizer,
                                                                                              tokenizer_order)
        raise DeployError(wrong, f"is {order}-endian but {profile.name} reads {profile.endianness}-endian files; "
                                 f"convert first: invoke convert --target {profile.name} --model {model} "
                                 f"--tokenizer {tokenizer} --out DIR")
    work_dir = Path(work_dir)
    stamp, files = work_dir / ".source", profile["files"]
    if stamp.exists() and stamp.read_text() == _source_stamp(model, tokenizer):
        return work_dir / files["model"], work_dir / files["tokenizer"]
    converted = convert_for_target(profile, model, tokenizer, work_dir)
    stamp.write_text(_source_stamp(model, tokenizer))
    return converted.model, converted.tokenizer
