import subprocess
from pathlib import Path

import pytest

from deploy.build import build
from deploy.plan import make_plan
from deploy.profile import load_profile
from deploy.synth import SHAPES, synthetic_tokenizer, write_random_model
from deploy.tokenizer import write_tokenizer

ROOT = Path(__file__).resolve().parent.parent
SHARED_MODELS = ROOT.parent / "shared" / "models"


def shared(name):
    path = SHARED_MODELS / name
    if not path.exists():
        pytest.skip(f"{path} is not present")
    return path


@pytest.fixture(scope="session")
def build_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("build")


@pytest.fixture(scope="session")
def host_plan(build_dir):
    """The upstream build: prints what upstream llama2.c prints, equal to the reference to the last bit."""
    plan = make_plan(load_profile("host"), mode="upstream", build_dir=build_dir)
    build(plan)
    return plan


@pytest.fixture(scope="session")
def host_fast_plan(build_dir):
    plan = make_plan(load_profile("host"), build_dir=build_dir)
    build(plan)
    return plan


@pytest.fixture(scope="session")
def host_exact_plan(build_dir):
    plan = make_plan(load_profile("host"), exact=True, build_dir=build_dir)
    build(plan)
    return plan


@pytest.fixture(scope="session")
def tiny_files(tmp_path_factory):
    """A random stories260K-shaped v0 model and a matching synthetic tokenizer."""
    folder = tmp_path_factory.mktemp("tiny")
    write_random_model(folder / "model.bin", SHAPES["stories260K"], seed=3)
    write_tokenizer(synthetic_tokenizer(512), folder / "tok.bin")
    return folder / "model.bin", folder / "tok.bin"


def run_binary(binary, *args, prefix=()):
    return subprocess.run([*prefix, str(binary), *[str(a) for a in args]], capture_output=True, timeout=300)
