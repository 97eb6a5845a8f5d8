import struct

import numpy as np
import pytest

from deploy.checkpoint import (Config, expected_size, read_header, read_model, segments, write_model)
from deploy.atomic import atomic_writer
from deploy.convert import convert_checkpoint
from deploy.errors import DeployError
from deploy.manifest import read_manifest, sha256_file
from deploy.byteorder import convert_checkpoint_byteorder
from deploy.synth import random_model
from tests.conftest import shared

SMALL = Config(dim=32, hidden_dim=48, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=300, seq_len=16)
UNSHARED = Config(32, 48, 2, 4, 4, 300, 16, shared_classifier=False)


@pytest.mark.parametrize("config", [SMALL, UNSHARED])
@pytest.mark.parametrize("version", [0, 1])
@pytest.mark.parametrize("byteorder", ["little", "big"])
def test_fp32_round_trip(tmp_path, config, version, byteorder):
    model = random_model(config, seed=1)
    path = tmp_path / "m.bin"
    write_model(model, path, version, byteorder)
    header = read_header(path)
    assert (header.version, header.byteorder, header.config) == (version, byteorder, config)
    assert path.stat().st_size == expected_size(header)
    back = read_model(path)
    for name, tensor in model.weights.items():
        np.testing.assert_array_equal(back.weights[name], tensor)


def test_v0_header_matches_llama2c_layout(tmp_path):
    path = tmp_path / "m.bin"
    write_model(random_model(UNSHARED), path, version=0)
    assert struct.unpack("<7i", path.read_bytes()[:28]) == (32, 48, 2, 4, 4, -300, 16)


def test_v1_header_fields(tmp_path):
    path = tmp_path / "m.bin"
    write_model(random_model(SMALL), path, version=1)
    raw = path.read_bytes()
    assert raw[:4] == b"\x32\x34\x6b\x61"
    assert struct.unpack_from("<i7i", raw, 4) == (1, 32, 48, 2, 4, 2, 300, 16)
    assert raw[36] == 1 and raw[37:256] == bytes(219)


def test_int8_round_trip_and_group_size(tmp_path):
    model = random_model(SMALL, seed=2)
    path = tmp_path / "q.bin"
    header = write_model(model, path, version=2)
    assert header.group_size == 16  # the default 64 halved until it divides dim 32 and hidden_dim 48
    assert struct.unpack_from("<i", path.read_bytes(), 37)[0] == 16
    back = read_model(path)
    for name, tensor in model.weights.items():
        bound = 0.5 * np.abs(tensor).max() / 127 + 1e-7
        assert np.abs(back.weights[name] - tensor).max() <= bound, name
    np.testing.assert_array_equal(back.weights["rms_att"], model.weights["rms_att"])


def test_version_conversion_chain(tmp_path):
    model = random_model(SMALL, seed=4)
    write_model(model, tmp_path / "v0.bin", 0)
    convert_checkpoint(tmp_path / "v0.bin", tmp_path / "v1.bin", version=1)
    convert_checkpoint(tmp_path / "v1.bin", tmp_path / "v2.bin", version=2, group_size=16)
    convert_checkpoint(tmp_path / "v2.bin", tmp_path / "back.bin", version=0)
    assert read_header(tmp_path / "v2.bin").group_size == 16
    back = read_model(tmp_path / "back.bin")
    assert np.abs(back.weights["w2"] - model.weights["w2"]).max() < 0.01
    manifest = read_manifest(tmp_path / "v2.bin")
    assert manifest["version"] == 2 and manifest["group_size"] == 16
    assert manifest["sha256"] == sha256_file(tmp_path / "v2.bin")


@pytest.mark.parametrize("version", [0, 1, 2])
def test_byteorder_stream_round_trip_with_tiny_chunks(tmp_path, version):
    src = tmp_path / "le.bin"
    write_model(random_model(UNSHARED, seed=5), src, version, group_size=16)
    entry = convert_checkpoint_byteorder(src, tmp_path / "be.bin", "big", chunk_bytes=100)
    assert entry["byteorder"] == "big" and entry["size"] == src.stat().st_size
    assert entry["sha256"] == sha256_file(tmp_path / "be.bin")
    assert read_header(tmp_path / "be.bin").byteorder == "big"
    convert_checkpoint_byteorder(tmp_path / "be.bin", tmp_path / "le2.bin", "little", chunk_bytes=64)
    assert (tmp_path / "le2.bin").read_bytes() == src.read_bytes()
    np.testing.assert_array_equal(read_model(tmp_path / "be.bin").weights["wq"], read_model(src).weights["wq"])


def test_big_endian_words_are_swapped(tmp_path):
    src = tmp_path / "le.bin"
    write_model(random_model(SMALL, seed=6), src, 0)
    convert_checkpoint_byteorder(src, tmp_path / "be.bin", "big")
    le, be = src.read_bytes(), (tmp_path / "be.bin").read_bytes()
    assert be[:4] == le[3::-1] and be[28:32] == le[31:27:-1]


def test_shared_sample_checkpoint():
    header = read_header(shared("s260-format-sample.bin"))
    assert header.config == Config(64, 172, 5, 8, 4, 512, 512)
    assert [s.name for s in segments(header)][-2:] == ["freq_cis_real", "freq_cis_imag"]


# --- bad input: one clear error naming the file ---------------------------------------------------------------------

def _write(tmp_path, data):
    path = tmp_path / "bad.bin"
    path.write_bytes(data)
    return path


def _good(tmp_path, version=1):
    path = tmp_path / "good.bin"
    write_model(random_model(SMALL), path, version)
    return path.read_bytes()


@pytest.mark.parametrize("mutate, message", [
    (lambda raw: b"XXXX" + raw[4:], "no 'ak42' magic"),
    (lambda raw: raw[:4] + struct.pack("<i", 7) + raw[8:], "unsupported checkpoint version 7"),
    (lambda raw: raw[:-10], "truncated"),
    (lambda raw: raw + b"\0" * 12, "12 trailing bytes"),
    (lambda raw: raw[:8] + struct.pack("<i", 30) + raw[12:], "not a multiple of n_heads"),
    (lambda raw: raw[:20] + struct.pack("<i", 3) + raw[24:], "not a multiple of n_kv_heads"),
    (lambda raw: raw[:12] + struct.pack("<i", 0) + raw[16:], "hidden_dim = 0 is not positive"),
    (lambda raw: raw[:36] + b"\x07" + raw[37:], "shared-classifier flag"),
    (lambda raw: raw[:10], "too short"),
])
def test_bad_checkpoints(tmp_path, mutate, message):
    path = _write(tmp_path, mutate(_good(tmp_path)))
    with pytest.raises(DeployError) as caught:
        read_header(path)
    assert str(path) in str(caught.value) and message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_bad_group_size(tmp_path):
    path = tmp_path / "q.bin"
    write_model(random_model(SMALL), path, version=2, group_size=16)
    raw = bytearray(path.read_bytes())
    raw[37:41] = struct.pack("<i", 24)
    bad = _write(tmp_path, bytes(raw))
    with pytest.raises(DeployError, match="group size 24 does not divide dim 32"):
        read_header(bad)


def test_v0_truncated(tmp_path):
    path = _write(tmp_path, _good(tmp_path, version=0)[:-4])
    with pytest.raises(DeployError, match="truncated"):
        read_header(path)


def test_wrong_tensor_shape_is_refused(tmp_path):
    model = random_model(SMALL)
    model.weights["w3"] = model.weights["w3"][:, :10]
    with pytest.raises(DeployError, match="tensor w3 has shape"):
        write_model(model, tmp_path / "out.bin")
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_writer(tmp_path / "out.bin") as out:
            out.write(b"half")
            raise RuntimeError("disk gone")
    assert list(tmp_path.iterdir()) == []
