"""The host build against the NumPy reference, and its handling of bad files."""

import numpy as np
import pytest

from deploy.checkpoint import Config, read_model, write_model
from deploy.reference import generate
from deploy.synth import random_model, synthetic_tokenizer
from deploy.tokenizer import read_tokenizer, write_tokenizer
from tests.conftest import run_binary, shared

CASES = [  # (prompt, steps, temperature, topp, seed)
    ("", 48, 0.0, 0.9, 1),
    ("the sea", 48, 1.0, 0.9, 7),
    ("a", 40, 0.8, 1.0, 12345),
    ("hello there", 40, 1.2, 0.5, 99),
]


def compare_with_reference(plan, model_path, tokenizer_path, tmp_path, prompt, steps, temperature, topp, seed):
    model = read_model(model_path)
    tokenizer = read_tokenizer(tokenizer_path, model.config.vocab_size)
    expected = generate(model, tokenizer, prompt, steps, temperature, topp, seed)
    logits_file = tmp_path / "logits.f32"
    done = run_binary(plan.program, model_path, "-z", tokenizer_path, "-n", steps, "-t", temperature, "-p", topp,
                      "-s", seed, "-i", prompt, "-l", logits_file)
    assert done.returncode == 0, done.stderr
    assert done.stdout == expected.text
    got = np.fromfile(logits_file, dtype=np.float32).reshape(-1, model.config.vocab_size)
    want = np.stack(expected.logits)
    # same summation order and this machine's libm on both sides: equal to the last bit
    np.testing.assert_array_equal(got, want)
    assert b"achieved tok/s: " in done.stderr


@pytest.mark.parametrize("case", CASES)
def test_synthetic_model_matches_reference(host_plan, tiny_files, tmp_path, case):
    compare_with_reference(host_plan, *tiny_files, tmp_path, *case)


@pytest.mark.parametrize("case", CASES[:2])
def test_shared_sample_matches_reference(host_plan, tmp_path, case):
    compare_with_reference(host_plan, shared("s260-format-sample.bin"), shared("tok512.bin"), tmp_path, *case)


@pytest.mark.parametrize("version", [0, 1])
def test_unshared_classifier_and_odd_sizes(host_plan, tmp_path, version):
    # n % 4 != 0 and d % 4 != 0 exercise the kernel's tails; an unshared classifier takes the wcls path
    config = Config(dim=44, hidden_dim=70, n_layers=2, n_heads=11, n_kv_heads=1, vocab_size=301, seq_len=40,
                    shared_classifier=False)
    write_model(random_model(config, seed=8), tmp_path / "m.bin", version)
    write_tokenizer(synthetic_tokenizer(301), tmp_path / "t.bin")
    compare_with_reference(host_plan, tmp_path / "m.bin", tmp_path / "t.bin", tmp_path, "the", 30, 0.9, 0.9, 5)


def test_exact_and_upstream_builds_print_the_same(host_plan, host_exact_plan, tiny_files):
    args = [*tiny_files[:1], "-z", tiny_files[1], "-n", 100, "-t", 0.9, "-s", 4]
    assert run_binary(host_plan.program, *args).stdout == run_binary(host_exact_plan.program, *args).stdout


def test_steps_zero_runs_to_seq_len_and_chat_mode(host_plan, tiny_files):
    model, tok = tiny_files
    done = run_binary(host_plan.program, model, "-z", tok, "-n", 0, "-t", 0, "-i", "the")
    expected = generate(read_model(model), read_tokenizer(tok), "the", 0, 0.0, 0.9, 1)
    assert done.stdout == expected.text
    chat = run_binary(host_plan.program, model, "-z", tok, "-m", "chat", "-i", "hi", "-y", "sys", "-n", 30, "-s", 2)
    assert chat.returncode == 0 and chat.stdout.startswith(b"Assistant: ")


# --- bad files: a message and a non-zero status, never a crash -------------------------------------------------------

def _expect_failure(plan, model, tok, message):
    done = run_binary(plan.program, model, "-z", tok, "-n", 4)
    assert done.returncode == 1, done
    assert message.encode() in done.stderr
    return done


def test_truncated_checkpoint(host_plan, tiny_files, tmp_path):
    model, tok = tiny_files
    cut = tmp_path / "cut.bin"
    cut.write_bytes(model.read_bytes()[:500_000])
    done = _expect_failure(host_plan, cut, tok, "truncated: 500000 bytes, the v0 header promises 1056540")
    assert str(cut).encode() in done.stderr


def test_trailing_bytes_and_bad_header(host_plan, tiny_files, tmp_path):
    model, tok = tiny_files
    long = tmp_path / "long.bin"
    long.write_bytes(model.read_bytes() + b"\0" * 8)
    _expect_failure(host_plan, long, tok, "trailing bytes")
    swapped = tmp_path / "swapped.bin"
    raw = bytearray(model.read_bytes())
    for at in range(0, 28, 4):
        raw[at:at + 4] = raw[at:at + 4][::-1]
    swapped.write_bytes(bytes(raw))
    _expect_failure(host_plan, swapped, tok, "wrong byte order")


def test_bad_tokenizers(host_plan, tiny_files, tmp_path):
    model, tok = tiny_files
    raw = tok.read_bytes()
    short = tmp_path / "short.bin"
    short.write_bytes(raw[:-1])
    _expect_failure(host_plan, model, short, "runs past the end")
    big = tmp_path / "big.bin"
    big.write_bytes(raw[:4] + b"\0\0\0\0" + b"\xff\xff\x00\x00" + raw[12:])
    _expect_failure(host_plan, model, big, "has length 65535")
    _expect_failure(host_plan, model, shared("llama2-tokenizer.bin"), "more tokens than the model's vocabulary")


# --- int8 (v2) checkpoints ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def int8_files(tiny_files, tmp_path_factory):
    from deploy.convert import convert_checkpoint

    folder = tmp_path_factory.mktemp("int8")
    convert_checkpoint(tiny_files[0], folder / "q.bin", version=2)
    return folder / "q.bin", tiny_files[1]


@pytest.mark.parametrize("case", CASES[:2])
def test_int8_checkpoint_matches_the_int8_reference(host_plan, int8_files, tmp_path, case):
    from deploy.checkpoint import read_quantized

    model, tokenizer = int8_files
    prompt, steps, temperature, topp, seed = case
    expected = generate(read_quantized(model), read_tokenizer(tokenizer, 512), prompt, steps, temperature, topp, seed)
    logits_file = tmp_path / "logits.f32"
    done = run_binary(host_plan.program, model, "-z", tokenizer, "-n", steps, "-t", temperature, "-p", topp,
                      "-s", seed, "-i", prompt, "-l", logits_file)
    assert done.returncode == 0, done.stderr
    assert done.stdout == expected.text
    np.testing.assert_array_equal(np.fromfile(logits_file, dtype=np.float32), np.concatenate(expected.logits))


def test_int8_unshared_classifier(host_plan, tmp_path):
    from deploy.checkpoint import read_quantized

    config = Config(dim=32, hidden_dim=96, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=300, seq_len=40,
                    shared_classifier=False)
    write_model(random_model(config, seed=12), tmp_path / "q.bin", version=2, group_size=32)
    write_tokenizer(synthetic_tokenizer(300), tmp_path / "t.bin")
    expected = generate(read_quantized(tmp_path / "q.bin"), read_tokenizer(tmp_path / "t.bin"), "the", 30, 0.0)
    done = run_binary(host_plan.program, tmp_path / "q.bin", "-z", tmp_path / "t.bin", "-n", 30, "-t", 0, "-i", "the")
    assert done.stdout == expected.text


def test_int8_group_size_must_divide_the_rows(host_plan, int8_files, tmp_path):
    raw = bytearray(int8_files[0].read_bytes())
    raw[37:41] = (64).to_bytes(4, "little")  # llama2.c's exporter checks only dim: 64 does not divide hidden 172
    bad = tmp_path / "bad.bin"
    bad.write_bytes(bytes(raw))
    done = run_binary(host_plan.program, bad, "-z", int8_files[1], "-n", 4)
    assert done.returncode == 1
    assert b"int8 group size 64 must divide dim 64 and hidden_dim 172" in done.stderr
