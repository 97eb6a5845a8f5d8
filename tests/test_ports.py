"""Every port built with its real cross toolchain and run under its emulator (qemu-user, Wine).

Exact builds (scalar kernel, portable math) print the same bytes as the host's exact build and as the NumPy reference
in portable mode; fast (default) builds are checked in test_fast_mode.py.
"""

import shutil
import subprocess

import numpy as np
import pytest

from deploy.build import build
from deploy.checkpoint import Config, read_model, write_model
from deploy.convert import model_for_target
from deploy.plan import make_plan, toolchain_present
from deploy.profile import load_profile
from deploy.reference import generate
from deploy.runner import normalise_line_ends, run_program
from deploy.synth import random_model
from deploy.tokenizer import read_tokenizer

TARGETS = ["win98-p2", "p2-linux", "powerbook-g4", "rpi4", "rpi-zero", "pixel6"]
CASES = [["-t", 0, "-n", 64], ["-t", 0.9, "-p", 0.9, "-s", 21, "-n", 64, "-i", "the sea"]]


def _plan(target, exact, build_dir):
    profile = load_profile(target)
    entry = profile.toolchains[0]
    missing = [c for c in [*profile.emulator[:1]] if shutil.which(c) is None]
    if not toolchain_present(entry) or missing:
        pytest.skip(f"{target}: toolchain or emulator not installed (scripts/setup installs them)")
    plan = make_plan(profile, exact=exact, build_dir=build_dir)
    build(plan)
    return plan


@pytest.fixture(scope="session", params=TARGETS)
def target(request):
    return request.param


@pytest.fixture(scope="session")
def exact_plans(build_dir):
    return {}


def plan_for(target, exact, build_dir, cache):
    key = (target, exact)
    if key not in cache:
        cache[key] = _plan(target, exact, build_dir)
    return cache[key]


def run_on_target(plan, model, tokenizer, work, args, logits_name):
    """Convert for the target, run under its emulator; (stdout with LF line ends, logits as float32)."""
    model_path, tokenizer_path = model_for_target(plan.profile, model, tokenizer, work / plan.out_dir.name)
    logits_file = work / logits_name
    done = run_program(plan, [model_path, "-z", tokenizer_path, "-l", logits_file, *args], capture=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert b"achieved tok/s:" in done.stderr
    order = ">" if plan.profile.endianness == "big" else "<"
    return normalise_line_ends(done.stdout), np.fromfile(logits_file, dtype=order + "f4").astype(np.float32)


@pytest.fixture(scope="session")
def int8_tiny(tiny_files, tmp_path_factory):
    from deploy.convert import convert_checkpoint

    path = tmp_path_factory.mktemp("int8") / "q.bin"
    convert_checkpoint(tiny_files[0], path, version=2)
    return path, tiny_files[1]


@pytest.mark.parametrize("args, int8", [(CASES[0], False), (CASES[1], False), (CASES[1], True)],
                         ids=["greedy", "sampled", "int8-sampled"])
def test_exact_build_prints_what_the_host_prints(target, args, int8, host_exact_plan, tiny_files, int8_tiny,
                                                 build_dir, exact_plans, tmp_path):
    plan = plan_for(target, True, build_dir, exact_plans)
    files = int8_tiny if int8 else tiny_files
    host_text, host_logits = run_on_target(host_exact_plan, *files, tmp_path, args, "host.f32")
    text, logits = run_on_target(plan, *files, tmp_path, args, "target.f32")
    assert text == host_text
    np.testing.assert_array_equal(logits, host_logits)


def test_exact_builds_match_the_portable_reference(host_exact_plan, tiny_files, tmp_path):
    model, tokenizer = tiny_files
    text, logits = run_on_target(host_exact_plan, model, tokenizer, tmp_path, CASES[1], "host.f32")
    expected = generate(read_model(model), read_tokenizer(tokenizer), "the sea", 64, 0.9, 0.9, 21, math="portable")
    assert text == expected.text
    np.testing.assert_array_equal(logits, np.concatenate(expected.logits))


def test_win98_build_imports_only_kernel32_and_msvcrt(build_dir, exact_plans):
    plan = plan_for("win98-p2", False, build_dir, exact_plans)
    dump = subprocess.run(["i686-w64-mingw32-objdump", "-p", str(plan.program)], capture_output=True, text=True)
    dlls = sorted(line.split()[-1].lower() for line in dump.stdout.splitlines() if "DLL Name" in line)
    assert dlls == ["kernel32.dll", "msvcrt.dll"]
    assert plan.program.name == "RUN.EXE"


def test_memory_cap_refuses_a_model_too_big(build_dir, exact_plans, tmp_path):
    plan = plan_for("p2-linux", False, build_dir, exact_plans)
    # small weights but a KV cache of 2 x 5 x 100000 x 32 floats = 128 MB, over the win98 port's 96 MB cap, which
    # p2-linux lowers to its machine's free memory after boot less its kernel's reserve (machine.free_mb,
    # kernel_reserve_mb)
    config = Config(64, 172, 5, 8, 4, 300, 100000)
    write_model(random_model(config), tmp_path / "long.bin", version=1)
    from deploy.synth import synthetic_tokenizer
    from deploy.tokenizer import write_tokenizer

    write_tokenizer(synthetic_tokenizer(300), tmp_path / "tok.bin")
    done = run_program(plan, [tmp_path / "long.bin", "-z", tmp_path / "tok.bin", "-n", 4], capture=True, timeout=120)
    assert done.returncode == 1
    assert plan.profile.memory_cap_mb == 84
    assert b"more than this build's 84 MB memory cap" in done.stderr


def test_borland_bundle(build_dir):
    plan = make_plan(load_profile("win98-p2"), toolchain="borland", build_dir=build_dir)
    result = build(plan)
    names = sorted(path.name for path in plan.out_dir.iterdir() if not path.name.startswith("."))
    assert names == ["BUILD.BAT", "README.TXT", "RUN.C"]
    script = (plan.out_dir / "BUILD.BAT").read_bytes()
    assert b"bcc32 -WC -O2 -5 -eRUN.EXE RUN.C\r\n" in script and b"\n" not in script.replace(b"\r\n", b"")
    source = (plan.out_dir / "RUN.C").read_bytes()
    assert source.count(b"\r\n") == source.count(b"\n") and b"DWORDLONG" in source
    assert b'"TOK.BIN"' in source and b"GetTickCount" in source and b"VirtualAlloc" in source
    if shutil.which("i686-w64-mingw32-gcc"):
        assert result.warnings == []  # strict C89 check of the bundle's source ran clean


def test_macosx_bundle_compiles_in_gnu89(build_dir):
    if not shutil.which("powerpc-linux-gnu-gcc"):
        pytest.skip("powerpc-linux-gnu-gcc not installed")
    plan = make_plan(load_profile("powerbook-g4"), toolchain="macosx-gcc", build_dir=build_dir)
    result = build(plan, force=True)
    assert plan.port["dialect"] == "gnu89" and result.warnings == []
    assert "-faltivec" in (plan.out_dir / "build.sh").read_text()
    assert b"mach_absolute_time" in (plan.out_dir / "run.c").read_bytes()
