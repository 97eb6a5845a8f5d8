"""Per-file manifests: size, sha256, format, version, byte order, shape, written beside each converted output."""

import hashlib
import json
from pathlib import Path

from deploy.atomic import write_atomic
from deploy.errors import DeployError

CHUNK = 4 << 20


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def manifest_path(path):
    path = Path(path)
    return path.with_name(path.name + ".manifest.json")


def describe_checkpoint(header):
    config = header.config
    entry = {"format": "llama2c-checkpoint", "version": header.version, "byteorder": header.byteorder,
             "shape": {name: getattr(config, name) for name in
                       ("dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len")},
             "shared_classifier": config.shared_classifier}
    if header.quantized:
        entry["group_size"] = header.group_size
    return entry


def describe_tokenizer(tokenizer, byteorder):
    return {"format": "llama2c-tokenizer", "byteorder": byteorder, "vocab_size": tokenizer.vocab_size,
            "max_token_length": tokenizer.max_token_length}


def write_manifest(path, description, sha256=None):
    """Write `<path>.manifest.json` describing the finished file at `path`."""
    path = Path(path)
    entry = {"file": path.name, "size": path.stat().st_size, "sha256": sha256 or sha256_file(path), **description}
    write_atomic(manifest_path(path), json.dumps(entry, indent=2) + "\n")
    return entry


def read_manifest(path):
    """The manifest written beside `path`, or None when there is none."""
    try:
        return json.loads(manifest_path(path).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise DeployError(manifest_path(path), f"unreadable ({getattr(error, 'strerror', None) or error}); delete it "
                                               f"and convert again") from None
