"""The invoke tasks as a user runs them: real processes, one-line errors, output passed through."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.synth import SHAPES, synthetic_tokenizer, write_random_model
from deploy.tokenizer import write_tokenizer

ROOT = Path(__file__).resolve().parent.parent
INVOKE = [sys.executable, "-m", "invoke"]


def invoke(*args, cwd=ROOT):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([*INVOKE, *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    write_random_model(folder / "m.bin", SHAPES["stories260K"], seed=9)
    write_tokenizer(synthetic_tokenizer(512), folder / "t.bin")
    return folder


def test_build_prints_the_binary_path():
    done = invoke("build", "--target", "host")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1].startswith(str(ROOT / "build" / "host" / "run"))


def test_run_passes_output_through(files):
    done = invoke("run", "--model", str(files / "m.bin"), "--tokenizer", str(files / "t.bin"), "--",
                  "-t", "0", "-n", "12", "-i", "the sea")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("the sea")
    assert "achieved tok/s:" in done.stderr


@pytest.mark.parametrize("args, message", [
    (["build", "--target", "amiga"], "unknown target 'amiga' (known: host"),
    (["run", "--model", "MISSING", "--tokenizer", "t.bin"], "MISSING: No such file or directory"),
    (["models.inspect", "--model", "{tok}"], "not a llama2.c checkpoint"),
    (["models.inspect", "--model", "{model}", "--tokenizer", "{short}"], "runs"),
])
def test_errors_are_one_line(files, args, message):
    (files / "short.bin").write_bytes((files / "t.bin").read_bytes()[:-1])
    args = [a.format(tok=files / "t.bin", model=files / "m.bin", short=files / "short.bin") for a in args]
    done = invoke(*args)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr


def test_convert_and_synth(files, tmp_path):
    assert invoke("models.synth", "--out", str(tmp_path / "s.bin"), "--version", "1").returncode == 0
    done = invoke("convert", "--model", str(tmp_path / "s.bin"), "--out", str(tmp_path / "q.bin"), "--version", "2")
    assert done.returncode == 0, done.stderr
    assert "q.bin" in done.stdout and (tmp_path / "q.bin.manifest.json").exists()


def test_wrong_byte_order_is_refused_with_the_convert_command(files):
    done = invoke("run", "--target", "powerbook-g4", "--no-convert", "--model", str(files / "m.bin"),
                  "--tokenizer", str(files / "t.bin"))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    line = done.stderr.strip()
    assert "is little-endian but powerbook-g4 reads big-endian files" in line
    assert "invoke convert --target powerbook-g4" in line and "\n" not in line


def test_convert_for_a_target_uses_its_names_and_byte_order(files, tmp_path):
    done = invoke("convert", "--target", "win98-p2", "--model", str(files / "m.bin"), "--tokenizer",
                  str(files / "t.bin"), "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["MODEL.BIN", "MODEL.BIN.manifest.json", "TOK.BIN", "TOK.BIN.manifest.json"]
    done = invoke("convert", "--target", "powerbook-g4", "--model", str(files / "m.bin"), "--tokenizer",
                  str(files / "t.bin"), "--out", str(tmp_path / "g4"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "g4" / "model.bin").read_bytes()[:4] == (files / "m.bin").read_bytes()[3::-1]
    assert (tmp_path / "g4" / "tokenizer.bin").read_bytes()[:4] == (files / "t.bin").read_bytes()[3::-1]


def test_doctor_lists_every_target():
    done = invoke("doctor")
    assert done.returncode == 0, done.stderr
    for target in ("win98-p2", "powerbook-g4", "rpi4", "rpi-zero", "pixel6", "p2-linux"):
        assert target in done.stdout
