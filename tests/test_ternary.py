"""Ternary (v3, BitNet b1.58) checkpoints: the format, its readers and converter, the bundled ternary model, and every
port's build against the NumPy reference (exact builds to the last bit, fast builds within the fast tolerance)."""

import re
import struct

import numpy as np
import pytest

from deploy.checkpoint import Config, expected_size, read_header, read_model, read_ternary, write_model
from deploy.convert import convert_checkpoint
from deploy.errors import DeployError
from deploy.reference import generate
from deploy.synth import random_model, synthetic_tokenizer
from deploy.ternary import invalid_codes, pack, quantize, unpack
from deploy.tokenizer import read_tokenizer, write_tokenizer
from tests.conftest import ROOT, run_binary
from tests.test_ports import TARGETS, plan_for, run_on_target

# rows of 4202 weights: a byte tail after the SIMD steps, and more than one 16-bit span in the MMX and AVX2 kernels
AWKWARD = Config(dim=64, hidden_dim=4202, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=512, seq_len=128)
BUNDLED = ROOT / "models" / "tiny260k-ternary.bin", ROOT / "models" / "tiny260k-tok.bin"
# A fast build's float rounding (fused multiply-adds, reordered sums) can move an activation across a rounding edge of
# its int8 quantization, which moves a ternary row by one activation step: a looser bound than fp32's 1e-4 (measured:
# 1.4e-3 on the host, with logits up to about 4).
FAST_TOLERANCE = 1e-2
ARGS = ["-t", 0.9, "-p", 0.9, "-s", 3, "-n", 40, "-i", "the sea"]
PLANS = {}


@pytest.fixture(scope="module")
def ternary_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ternary")
    write_model(random_model(AWKWARD, seed=5), folder / "t.bin", version=3)
    write_tokenizer(synthetic_tokenizer(512), folder / "tok.bin")
    return folder / "t.bin", folder / "tok.bin"


@pytest.fixture(scope="module")
def expected(ternary_files):
    model, tokenizer = read_ternary(ternary_files[0]), read_tokenizer(ternary_files[1])
    return {math: generate(model, tokenizer, "the sea", 40, 0.9, 0.9, 3, math=math) for math in ("portable", "libm")}


def test_packing_layout_and_round_trip():
    assert pack(np.array([[1, -1, 0, 1, -1]], np.int8)).tolist() == [[0b01_00_10_01, 0b10]]
    trits = np.random.default_rng(1).integers(-1, 2, (7, 13)).astype(np.int8)
    assert (unpack(pack(trits), 13) == trits).all()
    assert invalid_codes(np.array([0b11_01_10_00, 0b11_11_00_00], np.uint8)) == 3
    trits, scale = quantize(np.array([[0.1, -0.3, 0.02], [0.0, 0.5, -0.08]], np.float32))
    assert np.isclose(scale, 1.0 / 6) and trits.tolist() == [[1, -1, 0], [0, 1, 0]]


def test_file_size_header_byte_orders_and_conversions(ternary_files, tmp_path):
    source = ternary_files[0]
    header = read_header(source)
    assert header.version == 3 and source.stat().st_size == expected_size(header)
    assert struct.unpack_from("<Ii", source.read_bytes(), 0) == (0x616B3432, 3)
    convert_checkpoint(source, tmp_path / "big.bin", byteorder="big")
    assert struct.unpack_from(">Ii", (tmp_path / "big.bin").read_bytes(), 0) == (0x616B3432, 3)
    (_, little), (_, big) = read_ternary(source), read_ternary(tmp_path / "big.bin")
    for name, value in little.items():
        for a, b in zip(*((value, big[name]) if isinstance(value, tuple) else ((value,), (big[name],)))):
            np.testing.assert_array_equal(a, b)
    fp32 = read_model(source)
    trits, scales = little["w2"]
    np.testing.assert_array_equal(fp32.weights["w2"], trits * scales[:, None, None])
    convert_checkpoint(tmp_path / "big.bin", tmp_path / "v1.bin", version=1, byteorder="little")
    convert_checkpoint(tmp_path / "v1.bin", tmp_path / "again.bin", version=3)
    again = read_ternary(tmp_path / "again.bin")[1]
    for name in ("wq", "w2"):  # the trits survive; the absmean of trits * scale is a smaller scale
        np.testing.assert_array_equal(again[name][0], little[name][0])


def _damaged(source, tmp_path, offset_from_end, raw):
    data = bytearray(source.read_bytes())
    data[len(data) - offset_from_end:len(data) - offset_from_end + len(raw)] = raw
    path = tmp_path / "damaged.bin"
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("offset, raw, message", [(10, b"\xff", "invalid ternary code"),
                                                  (4, struct.pack("<f", float("nan")), "scale")],
                         ids=["code-11", "nan-scale"])
def test_damaged_ternary_files_are_refused(host_exact_plan, ternary_files, tmp_path, offset, raw, message):
    """The last tensor (w3 of the last layer) ends with its packed codes, then its scale."""
    path = _damaged(ternary_files[0], tmp_path, offset, raw)
    with pytest.raises(DeployError, match=message):
        read_ternary(path)
    done = run_binary(host_exact_plan.program, path, "-z", ternary_files[1], "-n", 4)
    assert done.returncode == 1 and message.encode() in done.stderr and done.stderr.count(b"\n") == 1, done.stderr


@pytest.mark.parametrize("target", ["host", *TARGETS])
def test_exact_build_prints_the_reference_bit_for_bit(target, host_exact_plan, ternary_files, expected, build_dir,
                                                      tmp_path):
    plan = host_exact_plan if target == "host" else plan_for(target, True, build_dir, PLANS)
    text, logits = run_on_target(plan, *ternary_files, tmp_path, ARGS, "exact.f32")
    assert text == expected["portable"].text
    np.testing.assert_array_equal(logits, np.concatenate(expected["portable"].logits))


@pytest.fixture(scope="module")
def greedy(ternary_files):
    model, tokenizer = read_ternary(ternary_files[0]), read_tokenizer(ternary_files[1])
    return generate(model, tokenizer, "the sea", 40, 0.0, math="libm")


@pytest.mark.parametrize("target", ["host", *TARGETS])
def test_fast_ternary_kernels_agree_with_the_reference(target, host_fast_plan, ternary_files, greedy, build_dir,
                                                       tmp_path):
    """Step by step within the tolerance while the greedy tokens agree; on a random model a fast build may part from
    the reference only at a near tie (top two logits closer than twice the tolerance). On the bundled, trained model
    it prints what the reference prints."""
    plan = host_fast_plan if target == "host" else plan_for(target, False, build_dir, PLANS)
    _, logits = run_on_target(plan, *ternary_files, tmp_path, ["-t", 0, "-n", 40, "-i", "the sea"], "fast.f32")
    want = np.stack(greedy.logits)
    got = logits.reshape(want.shape)
    for step in range(len(want)):
        bound = FAST_TOLERANCE * max(1.0, float(np.abs(want[step]).max()))
        assert np.abs(got[step] - want[step]).max() <= bound, f"step {step}: {np.abs(got[step] - want[step]).max():.3g}"
        if got[step].argmax() != want[step].argmax():
            top_two = np.sort(want[step])[-2:]
            assert top_two[1] - top_two[0] <= 2 * bound, f"step {step}: a different token with no near tie"
            break
    model, tokenizer = BUNDLED
    text, _ = run_on_target(plan, model, tokenizer, tmp_path, ["-t", 0, "-n", 64, "-i", "Once upon a time"], "b.f32")
    reference = generate(read_ternary(model), read_tokenizer(tokenizer, 512), "Once upon a time", 64, 0.0, math="libm")
    assert text == reference.text


def test_bundled_ternary_model_writes_corpus_english(host_exact_plan, tmp_path):
    """Greedy, from several openings until 200 tokens are generated: at least 90% of the words are the corpus's."""
    from training.corpus import vocabulary, words

    model, tokenizer = BUNDLED
    assert read_header(model).version == 3 and model.stat().st_size < 200_000
    texts, tokens = [], 0
    for opening in ("Once upon a time", "There was once", "One morning", "Long ago", "Ben"):
        generation = generate(read_ternary(model), read_tokenizer(tokenizer, 512), opening, 256, 0.0, math="portable")
        done = run_binary(host_exact_plan.program, model, "-z", tokenizer, "-t", 0, "-n", 256, "-i", opening)
        assert done.stdout == generation.text
        texts.append(generation.text.decode())
        tokens += len(generation.tokens) - len(read_tokenizer(tokenizer, 512).encode(opening, bos=True))
        if tokens >= 200:
            break
    generated = words(" ".join(texts))
    known = sum(word in vocabulary() for word in generated)
    print(texts)
    assert tokens >= 200 and known / len(generated) >= 0.9, texts
    # not a loop of one known word (the fp32 model converted after training prints "time time time ..."): sentences
    assert len(set(generated)) >= 30 and len(re.findall(r"[A-Z][a-z]*(?: [A-Za-z',]+){2,}\.", texts[0])) >= 3, texts


def test_planner_offers_ternary_with_its_size_and_predicted_speed():
    from deploy.checkpoint import Header
    from deploy.models import LLAMA2_7B
    from deploy.planner import plan_model

    *_, fit, _, options, _ = plan_model("win98-p2", "llama2-7b")
    ternary = next(option for option in options if option.what.startswith("ternary (v3)"))
    assert ternary.model_bytes == expected_size(Header(3, "little", LLAMA2_7B)) < 2.7e9 and not ternary.fits
    _, _, header, fit, prediction, _, speeds = plan_model("win98-p2", "tiny260k-ternary")
    assert header.version == 3 and fit.ok
    assert prediction.tok_s > max(row.predicted_tok_s for row in speeds if row.model == "stories260K")
