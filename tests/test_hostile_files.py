"""Hostile and wrong inputs to the Python readers and converters: one-line errors, in bounded time and memory."""

import os
import resource
import struct
import subprocess
import sys
import textwrap

import pytest

from deploy.byteorder import convert_checkpoint_byteorder, convert_tokenizer_byteorder
from deploy.checkpoint import MAGIC, Config, Header, expected_size, read_header, segments, write_model
from deploy.convert import convert_checkpoint
from deploy.errors import DeployError
from deploy.models import resolve
from deploy.profile import ROOT
from deploy.synth import random_model, synthetic_tokenizer, write_random_model
from deploy.tokenizer import write_tokenizer

SMALL = Config(dim=32, hidden_dim=48, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=300, seq_len=16)
MEMORY_LIMIT = 768 << 20  # address space for Python, NumPy and the work: far below what the headers promise
TIME_LIMIT = 20


def limited(code):
    """Run `code` (with deploy importable) in a fresh interpreter under MEMORY_LIMIT and TIME_LIMIT; returns the
    CompletedProcess. Its DeployError is printed as the last line of stdout."""
    script = "from deploy.errors import DeployError\ntry:\n" + textwrap.indent(textwrap.dedent(code), "    ") + \
             "\nexcept DeployError as error:\n    print(error)\n"

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))

    return subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                          timeout=TIME_LIMIT, preexec_fn=cap,
                          env={"PYTHONPATH": str(ROOT), "OPENBLAS_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})


def v1_header(version, dim, hidden, layers, heads, kv_heads, vocab, seq, group=64):
    raw = bytearray(256)
    struct.pack_into("<Ii7iB", raw, 0, MAGIC, version, dim, hidden, layers, heads, kv_heads, vocab, seq, 1)
    if version == 2:
        struct.pack_into("<i", raw, 37, group)
    return bytes(raw)


@pytest.mark.parametrize("raw, promised", [
    # issue 9: 221 s and 7 GB in models.inspect before
    (v1_header(2, 64, 192, 2_000_000, 8, 8, 512, 512), expected_size(Header(2, "little", Config(
        64, 192, 2_000_000, 8, 8, 512, 512), 64))),
    (v1_header(1, 65536, 65536, 2**31 - 1, 1, 1, 65536, 2**31 - 1), None),
    (v1_header(2, 2**31 - 2, 2**31 - 2, 2**31 - 1, 1, 1, 2**31 - 1, 2**31 - 1, 2**30 - 1), None),
    (struct.pack("<7i", 65536, 65536, 1024, 256, 256, 65536, 1 << 20) + bytes(1000), None),
])
def test_huge_headers_are_truncated_files_in_constant_memory(tmp_path, raw, promised):
    path = tmp_path / "hostile.bin"
    path.write_bytes(raw)
    done = limited(f"from deploy.checkpoint import read_header\nread_header({str(path)!r})")
    assert done.returncode == 0, done.stderr[-2000:]
    message = done.stdout.strip()
    assert message.startswith(f"{path}: truncated: {len(raw)} bytes, the v") and "\n" not in message, message
    if promised:
        assert message.endswith(f"header promises {promised}")


def test_huge_header_through_the_inspect_task(tmp_path):
    path = tmp_path / "hostile.bin"
    path.write_bytes(v1_header(2, 64, 192, 2_000_000, 8, 8, 512, 512))
    done = limited(f"import sys; sys.argv = ['invoke', 'models.inspect', '--model', {str(path)!r}]\n"
                   "from invoke.main import program\nprogram.run()")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "truncated: 256 bytes, the v2 header promises" in done.stdout + done.stderr
    assert "Traceback" not in done.stderr


def test_a_tokenizer_of_millions_of_empty_entries(tmp_path):
    path = tmp_path / "tok.bin"
    path.write_bytes(struct.pack("<I", 8) + struct.pack("<fi", 0.0, 0) * 4_000_000)
    done = limited(f"from deploy.tokenizer import read_tokenizer\nread_tokenizer({str(path)!r}, 512)")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == f"{path}: has more tokens than the model's vocabulary of 512 (31995904 bytes " \
                                  f"follow entry 511)"


def test_a_broken_manifest(tmp_path):
    from deploy.manifest import manifest_path, read_manifest

    manifest_path(tmp_path / "m.bin").write_text("{not json")
    with pytest.raises(DeployError, match="m.bin.manifest.json: unreadable .*; delete it and convert again"):
        read_manifest(tmp_path / "m.bin")


def test_v1_to_v2_with_a_huge_seq_len_builds_no_rope_table(tmp_path):
    """v2 stores no RoPE table: a seq_len of 2^31-1 (a 16 GiB table) must cost nothing."""
    config = Config(32, 48, 2, 4, 2, 300, 2**31 - 1)
    source = tmp_path / "long.bin"
    write_model(random_model(config, seed=1), source, version=1)
    out = tmp_path / "long-q.bin"
    done = limited(f"from deploy.convert import convert_checkpoint\n"
                   f"print(convert_checkpoint({str(source)!r}, {str(out)!r}, version=2)['size'])")
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.strip()) == out.stat().st_size
    assert read_header(out).config == config


@pytest.mark.parametrize("version", [0, 1, 2])
@pytest.mark.parametrize("config", [SMALL, Config(32, 96, 3, 4, 4, 259, 7, shared_classifier=False)])
def test_constant_time_size_matches_the_layout(config, version):
    header = Header(version, "little", config, 16 if version == 2 else 0)
    assert expected_size(header) == header.size + sum(segment.nbytes for segment in segments(header))


def test_v0_rope_written_in_blocks_matches_one_table(tmp_path, monkeypatch):
    from deploy import checkpoint

    config = Config(32, 48, 1, 4, 4, 300, 10)
    write_model(random_model(config), tmp_path / "one.bin")
    monkeypatch.setattr(checkpoint, "ROPE_ROWS_PER_BLOCK", 3)
    write_model(random_model(config), tmp_path / "blocks.bin")
    assert (tmp_path / "one.bin").read_bytes() == (tmp_path / "blocks.bin").read_bytes()


# --- convert: group size, version and byte order ---------------------------------------------------------------------

@pytest.fixture
def v1(tmp_path):
    path = tmp_path / "v1.bin"
    write_model(random_model(SMALL, seed=3), path, version=1)
    return path


@pytest.mark.parametrize("group", [7, 0, -16, 64, 1.5, "abc"])
def test_group_size_must_divide_dim_and_hidden_dim(v1, tmp_path, group):
    """Before: 7 silently made group size 1 and 0 made 4."""
    with pytest.raises(DeployError) as caught:
        convert_checkpoint(v1, tmp_path / "q.bin", version=2, group_size=group)
    assert str(caught.value) == (f"{tmp_path / 'q.bin'}: group size {group!r} must divide both dim 32 and "
                                 f"hidden_dim 48; sizes that do: 1, 2, 4, 8, 16")
    assert not (tmp_path / "q.bin").exists()


def test_group_size_that_divides_is_used(v1, tmp_path):
    convert_checkpoint(v1, tmp_path / "q.bin", version=2, group_size=8)
    assert read_header(tmp_path / "q.bin").group_size == 8


def test_group_size_only_for_int8(v1, tmp_path):
    with pytest.raises(DeployError, match="a group size applies to int8 \\(version 2\\) output only"):
        convert_checkpoint(v1, tmp_path / "out.bin", version=0, group_size=16)


@pytest.mark.parametrize("call", [
    lambda src, out: convert_checkpoint(src, out, byteorder="middle"),
    lambda src, out: convert_checkpoint(src, out, version=2, byteorder="middle"),
    lambda src, out: convert_checkpoint_byteorder(src, out, "middle"),
    lambda src, out: write_random_model(out, SMALL, byteorder="middle"),
    lambda src, out: write_tokenizer(synthetic_tokenizer(300), out, "middle"),
])
def test_unknown_byte_order_is_refused(v1, tmp_path, call):
    out = tmp_path / "out.bin"
    with pytest.raises(DeployError, match=f"^{out}: unknown byte order 'middle' \\(known: little, big\\)$"):
        call(v1, out)
    assert not out.exists()


def test_tokenizer_byte_order_is_checked(tmp_path):
    write_tokenizer(synthetic_tokenizer(300), tmp_path / "t.bin")
    with pytest.raises(DeployError, match="unknown byte order 'middle'"):
        convert_tokenizer_byteorder(tmp_path / "t.bin", tmp_path / "out.bin", "middle")


@pytest.mark.parametrize("version", [4, -1, "abc", True, 2.5])
def test_unknown_version_is_refused(v1, tmp_path, version):
    with pytest.raises(DeployError, match=r"unknown checkpoint version .* \(known: 0, 1, 2, 3\)"):
        convert_checkpoint(v1, tmp_path / "out.bin", version=version)
    with pytest.raises(DeployError, match=r"unknown checkpoint version"):
        write_random_model(tmp_path / "out.bin", SMALL, version=version)


@pytest.mark.parametrize("seed", [-1, "x", 1.5])
def test_synth_seed_is_checked(tmp_path, seed):
    with pytest.raises(DeployError, match="seed .* must be a whole number, 0 or more"):
        write_random_model(tmp_path / "out.bin", SMALL, seed=seed)


# --- output paths ------------------------------------------------------------------------------------------------------

def test_out_naming_a_folder(v1, tmp_path):
    (tmp_path / "folder").mkdir()
    with pytest.raises(DeployError, match=f"^{tmp_path / 'folder'}: is a folder; name a file to write instead$"):
        convert_checkpoint(v1, tmp_path / "folder", version=0)
    assert list((tmp_path / "folder").iterdir()) == []


@pytest.mark.parametrize("version", [None, 0])
def test_out_under_a_regular_file(v1, tmp_path, version):
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / "sub" / "m.bin"
    with pytest.raises(DeployError, match=f"^{out}: cannot be written: {tmp_path / 'file'} is a file, not a folder$"):
        convert_checkpoint(v1, out, version=version)


def test_unwritable_folder(v1, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if os.access(locked, os.W_OK):
        pytest.skip("running as a user who can write anywhere")
    with pytest.raises(DeployError, match="cannot be written: Permission denied"):
        convert_checkpoint(v1, locked / "m.bin", version=0)


@pytest.mark.parametrize("what", ["folder", "missing"])
def test_reading_a_folder_or_a_missing_file(tmp_path, what):
    path = tmp_path / "x"
    if what == "folder":
        path.mkdir()
    with pytest.raises(DeployError, match=f"^{path}: (Is a directory|No such file or directory)$"):
        read_header(path)


# --- catalog names ------------------------------------------------------------------------------------------------------

def test_catalog_name_as_tokenizer():
    model, tokenizer = resolve("tiny260k", "tiny260k")
    assert (model.name, tokenizer.name) == ("tiny260k.bin", "tiny260k-tok.bin")
    assert resolve(str(model), "tiny260k")[1] == tokenizer


@pytest.mark.parametrize("model, tokenizer, message", [
    ("stories15m", None, "unknown model 'stories15m'; did you mean stories15M?"),
    ("TINY260K", None, "unknown model 'TINY260K'; did you mean tiny260k?"),
    ("tiny260k", "tiny260K", "unknown tokenizer 'tiny260K'; did you mean tiny260k?"),
    ("nothing.bin", None, "nothing.bin: No such file or directory, and not a catalog name (known: tiny260k, "),
])
def test_unknown_names(model, tokenizer, message):
    with pytest.raises(DeployError) as caught:
        resolve(model, tokenizer)
    assert str(caught.value).startswith(message)
