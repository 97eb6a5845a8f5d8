"""The three build modes. fast (the default: each target's own kernel, sums reordered, fused multiply-adds, threads)
agrees with the NumPy reference within a stated tolerance and prints the exact build's greedy text on every target
under its emulator; upstream prints byte for byte what upstream llama2.c's run.c and runq.c print."""

import shutil
import subprocess

import numpy as np
import pytest

from deploy.build import build
from deploy.checkpoint import Config, read_model, read_quantized, write_model
from deploy.plan import make_plan
from deploy.profile import load_profile
from deploy.reference import generate
from deploy.synth import random_model, synthetic_tokenizer
from deploy.tokenizer import read_tokenizer, write_tokenizer
from tests.conftest import ROOT, run_binary
from tests.test_ports import TARGETS, plan_for, run_on_target

# A fast build's logits may differ from the reference's by this much times max(1, the step's largest |logit|):
# reordered float sums and fused multiply-adds move the last bits (measured: about 5e-7 on every target).
LOGIT_TOLERANCE = 1e-4
STEPS = 64
BUNDLED = ROOT / "models" / "tiny260k.bin", ROOT / "models" / "tiny260k-tok.bin"
PEERS = ROOT.parent / "shared" / "peers" / "llama2.c"
FAST_PLANS = {}  # target -> built plan, shared by the tests of this module


@pytest.fixture(scope="module")
def int8_simd(tmp_path_factory):
    """An int8 model whose group size (32) takes every SIMD int8 path (the bundled model's only group size is 4)."""
    folder = tmp_path_factory.mktemp("int8-simd")
    config = Config(dim=64, hidden_dim=192, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=512, seq_len=128)
    write_model(random_model(config, seed=5), folder / "q.bin", version=2, group_size=32)
    write_tokenizer(synthetic_tokenizer(512), folder / "tok.bin")
    return folder / "q.bin", folder / "tok.bin"


def assert_close_to_reference(logits, expected):
    want = np.stack(expected.logits)
    got = logits.reshape(-1, want.shape[1])
    assert got.shape == want.shape
    bound = LOGIT_TOLERANCE * np.maximum(1.0, np.abs(want).max(axis=1, keepdims=True))
    assert (np.abs(got - want) <= bound).all(), f"largest difference {np.abs(got - want).max():.3g}"


@pytest.mark.parametrize("target", ["host", *TARGETS])
@pytest.mark.parametrize("model", ["bundled", "int8"])
def test_fast_build_agrees_with_the_reference_and_prints_the_exact_text(target, model, int8_simd, host_exact_plan,
                                                                       build_dir, tmp_path):
    files = BUNDLED if model == "bundled" else int8_simd
    plan = plan_for(target, False, build_dir, FAST_PLANS)
    assert plan.mode == "fast" and plan.port["kernel"] == load_profile(target).port["kernel"]
    args = ["-t", 0, "-n", STEPS]
    text, logits = run_on_target(plan, *files, tmp_path, args, "fast.f32")
    exact_text, _ = run_on_target(host_exact_plan, *files, tmp_path, args, "exact.f32")
    assert text == exact_text
    reader = read_model if model == "bundled" else read_quantized
    expected = generate(reader(files[0]), read_tokenizer(files[1]), "", STEPS, 0.0)
    assert_close_to_reference(logits, expected)



def test_modes_choose_kernel_threads_flags_and_folder(tmp_path):
    profile = load_profile("rpi4")
    fast, exact, upstream = (make_plan(profile, mode=mode, build_dir=tmp_path) for mode in ("fast", "exact",
                                                                                             "upstream"))
    assert (fast.port["kernel"], fast.port["threads"]) == ("neon", "pthreads")
    assert "-ffp-contract=off" not in fast.cflags and "-pthread" in fast.cflags
    assert (exact.port["kernel"], exact.port["math"], exact.out_dir.name) == ("scalar", "portable", "rpi4-exact")
    assert (upstream.port["kernel"], upstream.port["math"], upstream.port["threads"]) == ("scalar", "libm", "none")
    assert "-ffp-contract=off" in upstream.cflags and upstream.out_dir.name == "rpi4-upstream"
    assert make_plan(profile, exact=True, build_dir=tmp_path).mode == "exact"


def _upstream_program(name, folder):
    if not (PEERS / name).exists():
        pytest.skip(f"{PEERS / name} is not present")
    program = folder / name.removesuffix(".c")
    done = subprocess.run(["gcc", "-O3", "-o", str(program), str(PEERS / name), "-lm"], capture_output=True)
    assert done.returncode == 0, done.stderr
    return program


@pytest.mark.parametrize("args", [["-t", 0, "-n", 80], ["-t", 0.9, "-s", 11, "-n", 120, "-i", "Once upon"],
                                  ["-t", 1.0, "-p", 0.5, "-s", 3, "-n", 100, "-i", "The cat"]],
                         ids=["greedy", "sampled", "top-p"])
def test_upstream_build_prints_what_upstream_llama2c_prints(host_plan, args, tmp_path_factory, tmp_path):
    if not shutil.which("gcc"):
        pytest.skip("gcc not installed")
    folder = tmp_path_factory.getbasetemp() / "upstream-peers"
    folder.mkdir(exist_ok=True)
    from deploy.convert import convert_checkpoint

    int8 = tmp_path / "q.bin"
    convert_checkpoint(BUNDLED[0], int8, version=2)
    assert host_plan.mode == "upstream" and host_plan.out_dir.name == "host-upstream"
    for peer, model in (("run.c", BUNDLED[0]), ("runq.c", int8)):
        program = _upstream_program(peer, folder)
        theirs = run_binary(program, model, "-z", BUNDLED[1], *args)
        ours = run_binary(host_plan.program, model, "-z", BUNDLED[1], *args)
        assert theirs.returncode == 0 and ours.returncode == 0
        assert ours.stdout == theirs.stdout, peer
