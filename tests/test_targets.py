"""Target profiles, and ports built for other CPUs run under their emulators against the host build."""

import shutil
import subprocess

import numpy as np
import pytest

from deploy.build import build
from deploy.convert import model_for_target
from deploy.errors import DeployError
from deploy.plan import make_plan
from deploy.profile import load_profile
from deploy.render import render_run_c
from deploy.runner import run_command
from tests.conftest import run_binary

HOST_YAML = (load_profile("host").path).read_text()


def _profile(tmp_path, text, name="t"):
    (tmp_path / "host.yaml").write_text(HOST_YAML)
    (tmp_path / f"{name}.yaml").write_text(text)
    return lambda: load_profile(name, targets_dir=tmp_path)


@pytest.mark.parametrize("text, message", [
    ("extends: host\nname: t\ncpu: {endianess: big}\n", "unknown key 'cpu.endianess' (allowed: arch, model"),
    ("extends: host\nname: t\ncpu: {cores: two}\n", "'cpu.cores' is 'two', expected an integer"),
    ("extends: host\nname: t\nport: {kernel: mmx}\n",
     "'port.kernel' is 'mmx'; allowed: scalar, x87, sse, avx2, neon, altivec, armv6"),
    ("extends: host\nname: t\nport: {kernel: altivec}\n", "'port.kernel' is altivec, but cpu.features lacks altivec"),
    ("extends: host\nname: t\ncpu: {arch: powerpc, features: []}\nport: {kernel: scalar}\n",
     "'cpu.word_bits' is 64, but powerpc is a 32-bit CPU"),
    ("extends: host\nname: t\nport: {read_chunk: 3}\n", "'port.read_chunk' is 3, expected an integer from 4096"),
    ("extends: nothing\nname: t\n", "extends unknown target 'nothing'"),
    ("name: t\ncpu: [\n", "not valid YAML"),
])
def test_bad_profiles_name_file_and_key(tmp_path, text, message):
    with pytest.raises(DeployError) as caught:
        _profile(tmp_path, text)()
    assert str(tmp_path / "t.yaml") in str(caught.value) and message in str(caught.value)


def test_extends_merges_nested_keys(tmp_path):
    profile = _profile(tmp_path, "extends: host\nname: t\nport: {kernel: scalar}\n")()
    assert profile.port["kernel"] == "scalar" and profile.port["loader"] == "fread"
    assert profile.endianness == "little"


def test_unknown_target_lists_known_ones():
    with pytest.raises(DeployError, match=r"unknown target 'amiga' \(known: .*host.*powerbook-g4"):
        load_profile("amiga")


def test_scalar_port_is_strict_c89(tmp_path):
    source = tmp_path / "run.c"
    plan = make_plan(load_profile("host"), exact=True)
    source.write_text(render_run_c(plan))
    done = subprocess.run(["gcc", "-std=c89", "-pedantic-errors", "-Wdeclaration-after-statement",
                           "-Werror=implicit-function-declaration", "-Wall", "-Werror", "-c", "-o",
                           str(tmp_path / "run.o"), str(source)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def _needs(*commands):
    missing = [c for c in commands if shutil.which(c) is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (scripts/setup installs them)")


@pytest.fixture(scope="module")
def g4_plans(tmp_path_factory):
    _needs("powerpc-linux-gnu-gcc", "qemu-ppc")
    folder = tmp_path_factory.mktemp("g4")
    plans = [make_plan(load_profile("powerbook-g4"), exact=exact, build_dir=folder) for exact in (False, True)]
    for plan in plans:
        build(plan)
    return plans


@pytest.mark.parametrize("args", [["-t", 0, "-n", 80], ["-t", 0.9, "-s", 11, "-n", 120, "-i", "the sea"]])
def test_g4_builds_match_host_on_big_endian_weights(g4_plans, host_plan, tiny_files, tmp_path, args):
    model, tok = tiny_files
    expected = run_binary(host_plan.program, model, "-z", tok, "-l", tmp_path / "host.f32", *args)
    for plan in g4_plans:
        be_model, be_tok = model_for_target(plan.profile, model, tok, tmp_path / plan.out_dir.name)
        assert be_model.read_bytes()[:4] == model.read_bytes()[3::-1]  # converted to big-endian
        command = run_command(plan, [be_model, "-z", be_tok, "-l", tmp_path / "g4.f32", *args])
        done = subprocess.run(command, capture_output=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert done.stdout == expected.stdout
        got = np.fromfile(tmp_path / "g4.f32", dtype=">f4")
        np.testing.assert_allclose(got, np.fromfile(tmp_path / "host.f32", dtype="<f4"), rtol=1e-4, atol=1e-5)


def test_g4_build_refuses_little_endian_weights(g4_plans, tiny_files):
    model, tok = tiny_files
    done = subprocess.run(run_command(g4_plans[0], [model, "-z", tok]), capture_output=True, timeout=120)
    assert done.returncode == 1 and b"wrong byte order" in done.stderr


def test_altivec_build_needs_altivec(g4_plans, tiny_files, tmp_path):
    model, tok = model_for_target(g4_plans[0].profile, *tiny_files, tmp_path)
    done = subprocess.run(["qemu-ppc", "-cpu", "g3", str(g4_plans[0].program), str(model), "-z", str(tok)],
                          capture_output=True, timeout=120)
    assert done.returncode != 0  # a G3 has no AltiVec: the kernel's first vector instruction is illegal there
