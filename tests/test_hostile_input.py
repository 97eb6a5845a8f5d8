"""The host build under hostile input (issue 9): every bad file or command line ends in one line naming the problem
and exit status 1, before any large allocation; every run that is allowed ends normally."""

import struct
import subprocess
import time

import numpy as np
import pytest

from deploy.checkpoint import Config, write_model
from deploy.synth import random_model, synthetic_tokenizer
from deploy.tokenizer import Tokenizer, write_tokenizer
from tests.conftest import run_binary


def _patched(source, target, at, fmt, value):
    raw = bytearray(source.read_bytes())
    struct.pack_into(fmt, raw, at, value)
    target.write_bytes(bytes(raw))
    return target


def _refused(plan, *args):
    done = run_binary(plan.program, *args)
    assert done.returncode == 1, done
    return done.stderr.decode()


def test_header_promise_is_checked_before_allocating(host_plan, tiny_files, tmp_path):
    model, tok = tiny_files
    huge = tmp_path / "huge.bin"
    huge.write_bytes(struct.pack("<7i", 65536, 65536, 5, 8, 4, 65536, 512) + model.read_bytes()[28:])
    started = time.monotonic()
    message = _refused(host_plan, huge, "-z", tok, "-n", 4)
    assert time.monotonic() - started < 5
    size = huge.stat().st_size
    assert message.startswith(f"{huge}: truncated: {size} bytes, the v0 header promises ")


def test_memory_plan_is_refused_up_front_with_its_numbers(host_plan, tmp_path):
    config = Config(16, 24, 2, 2, 1, 300, 32)
    write_model(random_model(config), tmp_path / "m.bin", version=1)
    long = _patched(tmp_path / "m.bin", tmp_path / "long.bin", 32, "<i", 2**31 - 1)  # seq_len: a KV cache of 256 GiB
    write_tokenizer(synthetic_tokenizer(300), tmp_path / "t.bin")
    message = _refused(host_plan, long, "-z", tmp_path / "t.bin")
    # the rest: the attention scores, n_heads x seq_len floats
    assert "needs 278528.0 MB (weights 0.0, KV cache 262144.0, the rest 16384.0), more than this machine's " in message


@pytest.mark.parametrize("option, value", [("-t", "nan"), ("-t", "-1"), ("-t", "inf"), ("-t", "1e39"), ("-p", "nan"),
                                           ("-p", "1.5"), ("-p", "-0.1"), ("-n", "ten"), ("-s", "1.5"),
                                           ("-s", "99999999999"), ("-m", "talk")])
def test_bad_option_values_are_refused(host_plan, tiny_files, option, value):
    model, tok = tiny_files
    message = _refused(host_plan, model, "-z", tok, option, value)
    assert message.startswith(f"{option}: expected ") and f"got '{value}'" in message
    assert "Usage:" in message


@pytest.mark.parametrize("args", [["-t", "1e30", "-p", "0.001"], ["-t", "1e-30"], ["-p", "0"], ["-p", "1"]])
def test_extreme_sampling_settings_still_run(host_plan, tiny_files, args):
    model, tok = tiny_files
    done = run_binary(host_plan.program, model, "-z", tok, "-n", 16, "-s", 3, *args)
    assert done.returncode == 0, done.stderr


def test_nan_weights_sample_a_valid_token(host_plan, tmp_path):
    model = random_model(Config(16, 24, 2, 2, 1, 300, 32))
    model.weights["rms_final"][...] = np.nan
    write_model(model, tmp_path / "nan.bin", version=1)
    write_tokenizer(synthetic_tokenizer(300), tmp_path / "t.bin")
    done = run_binary(host_plan.program, tmp_path / "nan.bin", "-z", tmp_path / "t.bin", "-n", 8, "-s", 1)
    assert done.returncode == 0 and done.stdout.startswith(b"<unk>"), done  # the most probable: the first of equals


def test_token_ids_past_a_small_vocabulary_are_refused(host_plan, tmp_path):
    write_model(random_model(Config(8, 16, 1, 2, 2, 5, 16)), tmp_path / "m.bin", version=1)
    write_tokenizer(Tokenizer([b"<unk>", b"\n<s>\n", b"\n</s>\n", b"a", b" "], [0.0] * 5, 6), tmp_path / "t.bin")
    message = _refused(host_plan, tmp_path / "m.bin", "-z", tmp_path / "t.bin", "-i", "ab")
    assert message == "prompt: needs token 101 (a byte token), past the model's vocabulary of 5\n"


def test_long_prompt_is_refused_quickly(host_plan, tiny_files):
    model, tok = tiny_files
    started = time.monotonic()
    message = _refused(host_plan, model, "-z", tok, "-n", 4, "-i", "the sea " * 12000)
    assert time.monotonic() - started < 5
    assert message.startswith("prompt: is ") and "more than the model's seq_len of 512" in message


def test_write_errors_end_with_status_1(host_plan, tiny_files, tmp_path):
    model, tok = tiny_files
    assert "/dev/full: cannot write logits: No space left on device" in _refused(
        host_plan, model, "-z", tok, "-n", 4, "-l", "/dev/full")
    with open("/dev/full", "wb") as full:
        done = subprocess.run([host_plan.program, model, "-z", tok, "-n", "8", "-t", "0"], stdout=full,
                              stderr=subprocess.PIPE, timeout=60)
    assert done.returncode == 1 and b"stdout: cannot write: No space left on device" in done.stderr


def test_directories_and_int_min_vocabulary(host_plan, tiny_files, tmp_path):
    model, tok = tiny_files
    assert _refused(host_plan, tmp_path, "-z", tok) == f"{tmp_path}: cannot read: Is a directory\n"
    assert _refused(host_plan, model, "-z", tmp_path) == f"{tmp_path}: cannot read: Is a directory\n"
    int_min = _patched(model, tmp_path / "int_min.bin", 20, "<i", -2**31)
    assert "non-positive dimension" in _refused(host_plan, int_min, "-z", tok)
