"""Streaming builds (ports/loaders/stream.c.j2): the weights read from disk under a memory budget print and write
exactly what the in-memory build does, on the host and under the emulators, for v0, v1, v2 and v3 (ternary) files,
whole or in numbered parts; a budget too small for one layer is refused in one line."""

import re
import shutil

import numpy as np
import pytest

from deploy.build import build
from deploy.checkpoint import Config, read_header, segments
from deploy.convert import convert_checkpoint, model_for_target
from deploy.parts import part_name, split_into_parts
from deploy.plan import make_plan, toolchain_present
from deploy.profile import load_profile
from deploy.runner import normalise_line_ends, run_program
from deploy.synth import SHAPES, synthetic_tokenizer, write_random_model
from deploy.tokenizer import write_tokenizer

ROOT_MODELS = __import__("pathlib").Path(__file__).resolve().parent.parent / "models"
ARGS = ["-t", 0.9, "-p", 0.9, "-s", 21, "-n", 24, "-i", "the sea"]
NEEDS = re.compile(rb"less than the ([0-9.]+) MB streaming this model needs")

_plans = {}


def plan_for(target, build_dir, stream, mode="exact"):
    key = (target, stream, mode)
    if key not in _plans:
        profile = load_profile(target)
        if not toolchain_present(profile.toolchains[0]) or any(shutil.which(c) is None for c in profile.emulator[:1]):
            pytest.skip(f"{target}: toolchain or emulator not installed")
        plan = make_plan(profile, mode=mode, build_dir=build_dir, stream=stream)
        build(plan)
        _plans[key] = plan
    return _plans[key]


def run(plan, model, tokenizer, work, *extra):
    """(returncode, stdout with LF line ends, stderr, logits). A model in parts (no file of its own name) runs as
    it is: little-endian targets only."""
    model_path, tokenizer_path = model, tokenizer
    if model.exists():
        model_path, tokenizer_path = model_for_target(plan.profile, model, tokenizer, work / plan.out_dir.name)
    logits = work / f"{plan.out_dir.name}.f32"
    logits.unlink(missing_ok=True)
    done = run_program(plan, [model_path, "-z", tokenizer_path, "-l", logits, *ARGS, *extra], capture=True,
                       timeout=600)
    order = ">" if plan.profile.endianness == "big" else "<"
    values = np.fromfile(logits, dtype=order + "f4") if logits.exists() else None
    return done.returncode, normalise_line_ends(done.stdout), done.stderr, values


def smallest_budget(plan, model, tokenizer, work):
    """The budget the program names as the least it streams this model in (from its refusal of -b 0.01)."""
    code, _, stderr, _ = run(plan, model, tokenizer, work, "-b", "0.01")
    assert code == 1 and stderr.count(b"\n") == 1, stderr
    assert stderr.startswith(b"-b: a budget of 0.01 MB is less than the "), stderr
    return float(NEEDS.search(stderr).group(1))


@pytest.fixture(scope="module")
def formats(tmp_path_factory):
    """The bundled model (v0, shared classifier) as v0, v1 and v2; a v1 model with its own classifier; the bundled
    ternary model (v3); a random v3 model with its own classifier and rows of 4202 weights (a byte tail after the
    SIMD steps)."""
    folder = tmp_path_factory.mktemp("formats")
    model, tokenizer = ROOT_MODELS / "tiny260k.bin", ROOT_MODELS / "tiny260k-tok.bin"
    convert_checkpoint(model, folder / "v1.bin", version=1)
    convert_checkpoint(model, folder / "v2.bin", version=2)
    config = SHAPES["stories260K"]
    from dataclasses import replace

    write_random_model(folder / "unshared.bin", replace(config, shared_classifier=False), version=1, seed=5)
    write_tokenizer(synthetic_tokenizer(config.vocab_size), folder / "tok.bin")
    awkward = Config(64, 4202, 2, 4, 2, 512, 128, shared_classifier=False)
    write_random_model(folder / "v3-random.bin", awkward, version=3, seed=8)
    write_tokenizer(synthetic_tokenizer(awkward.vocab_size), folder / "tok512.bin")
    return {"v0": (model, tokenizer), "v1": (folder / "v1.bin", tokenizer), "v2": (folder / "v2.bin", tokenizer),
            "v1-unshared": (folder / "unshared.bin", folder / "tok.bin"),
            "v3": (ROOT_MODELS / "tiny260k-ternary.bin", tokenizer),
            "v3-random": (folder / "v3-random.bin", folder / "tok512.bin")}


def check_streams_as_in_memory(target, files, build_dir, work, mode="exact"):
    """The streaming build under the least budget (classifier in chunks) and a roomy one (classifier read once)
    prints and writes what the in-memory build does."""
    memory = plan_for(target, build_dir, False, mode)
    streaming = plan_for(target, build_dir, True, mode)
    code, text, stderr, logits = run(memory, *files, work)
    assert code == 0, stderr
    least = smallest_budget(streaming, *files, work)
    for budget in (least + 0.01, 64):
        code, streamed, stderr, streamed_logits = run(streaming, *files, work, "-b", budget)
        assert code == 0, stderr
        assert b"achieved tok/s:" in stderr
        assert streamed == text
        np.testing.assert_array_equal(streamed_logits, logits)


@pytest.mark.parametrize("version", ["v0", "v1", "v2", "v1-unshared", "v3", "v3-random"])
def test_host_streams_every_version_as_in_memory(version, formats, build_dir, tmp_path):
    check_streams_as_in_memory("host", formats[version], build_dir, tmp_path)


@pytest.mark.parametrize("version", ["v2", "v3-random"])
def test_host_fast_build_streams_as_in_memory(version, formats, build_dir, tmp_path):
    check_streams_as_in_memory("host", formats[version], build_dir, tmp_path, mode="fast")


@pytest.mark.parametrize("target, version", [("powerbook-g4", "v0"), ("powerbook-g4", "v2"), ("win98-p2", "v2"),
                                             ("win98-p2", "v3"), ("win98-p2", "v3-random"), ("powerbook-g4", "v3")])
def test_emulated_targets_stream_as_in_memory(target, version, formats, build_dir, tmp_path):
    check_streams_as_in_memory(target, formats[version], build_dir, tmp_path)


def test_stories15m_shape_streams_as_in_memory(build_dir, tmp_path):
    write_random_model(tmp_path / "m15.bin", SHAPES["stories15M"], version=2, seed=1)
    write_tokenizer(synthetic_tokenizer(32000), tmp_path / "tok.bin")
    check_streams_as_in_memory("host", (tmp_path / "m15.bin", tmp_path / "tok.bin"), build_dir, tmp_path)


@pytest.mark.parametrize("target", ["host", "win98-p2"])
def test_parts_read_as_one_file(target, formats, build_dir, tmp_path):
    plan = plan_for(target, build_dir, True)
    model, tokenizer = formats["v2"]
    _, whole_text, _, whole_logits = run(plan, model, tokenizer, tmp_path, "-b", 8)
    folder = tmp_path / "parts"
    name = plan.profile["files"]["model"]
    parts = split_into_parts(model, folder, name, 100_000)
    assert list(parts) == [part_name(name, i) for i in range(len(parts))] and len(parts) > 3
    code, text, stderr, logits = run(plan, folder / name, tokenizer, tmp_path, "-b", 8)
    assert code == 0, stderr
    assert text == whole_text
    np.testing.assert_array_equal(logits, whole_logits)
    parts[part_name(name, len(parts) - 1)].unlink()
    code, _, stderr, _ = run(plan, folder / name, tokenizer, tmp_path, "-b", 8)
    assert code == 1 and b"truncated" in stderr and stderr.count(b"\n") == 1, stderr


@pytest.mark.parametrize("target", ["host", "win98-p2"])
def test_damaged_ternary_layer_is_refused_as_it_is_read(target, formats, build_dir, tmp_path):
    """An invalid code (binary 11) in the last layer is found when that layer is streamed in: one line naming it."""
    model, tokenizer = formats["v3-random"]
    offset = read_header(model).size
    for segment in segments(read_header(model)):
        if segment.name == "w2.1.t":
            break
        offset += segment.nbytes
    damaged = bytearray(model.read_bytes())
    damaged[offset + 100] = 0xFF
    (tmp_path / "damaged.bin").write_bytes(damaged)
    code, _, stderr, _ = run(plan_for(target, build_dir, True), tmp_path / "damaged.bin", tokenizer, tmp_path)
    assert code == 1 and stderr.count(b"\n") == 1, stderr
    assert b"w2 holds an invalid ternary code (binary 11) at byte 100; the file is damaged" in stderr, stderr


def test_bad_budgets_are_one_line(formats, build_dir, tmp_path):
    plan = plan_for("win98-p2", build_dir, True)
    for budget, problem in [("0.1", b"less than the"), ("200", b"more than this build's 96 MB memory cap"),
                            ("lots", b"expected a memory budget in MB")]:
        code, _, stderr, _ = run(plan, *formats["v0"], tmp_path, "-b", budget)
        assert code == 1 and problem in stderr, stderr
        assert stderr.splitlines()[0].startswith(b"-b: "), stderr


def test_the_kv_cache_holds_the_steps_of_the_run(build_dir, tmp_path):
    """A 100,000-token context needs 128 MB of KV cache, over the Pentium II's 84 MB: streamed, the cache holds the
    -n positions the run takes, and the run prints what the host's in-memory build prints."""
    from deploy.checkpoint import Config, write_model
    from deploy.synth import random_model

    config = Config(64, 172, 5, 8, 4, 300, 100000)
    write_model(random_model(config, seed=2), tmp_path / "long.bin", version=1)
    write_tokenizer(synthetic_tokenizer(300), tmp_path / "tok.bin")
    files = (tmp_path / "long.bin", tmp_path / "tok.bin")
    code, text, stderr, logits = run(plan_for("host", build_dir, False), *files, tmp_path)
    assert code == 0, stderr
    code, streamed, stderr, streamed_logits = run(plan_for("p2-linux", build_dir, True), *files, tmp_path)
    assert code == 0, stderr
    assert streamed == text
    np.testing.assert_array_equal(streamed_logits, logits)
