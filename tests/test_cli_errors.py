"""Every task, given wrong types, out-of-range numbers, missing files, folders and unknown names for its options,
ends in exactly one line on stderr and a non-zero status: never a traceback."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from invoke import Program

import tasks

MISSING = "/nonexistent/model.bin"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    folder = tmp_path_factory.mktemp("places")
    (folder / "a-file").write_text("not a folder")
    (folder / "empty.bin").write_bytes(b"")
    return folder


def run_task(argv, capsys):
    """Run `invoke ARGV` in this process; (exit status, stdout, stderr)."""
    program = Program(namespace=tasks.namespace, version="test")
    try:
        program.run(["invoke", *argv], exit=True)
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


CASES = [
    # (argv with {dir}, {file} and {empty} standing for a folder, a text file and an empty file; expected words)
    (["build", "--target", "amiga"], "unknown target 'amiga'"),
    (["build", "--target", "win98-p2", "--toolchain", "watcom"], "no toolchain 'watcom'"),
    (["run", "--model", MISSING], "model.bin"),
    (["run", "--model", "{dir}"], "{dir}"),
    (["run", "--model", "{empty}"], "empty.bin"),
    (["run", "--model", "tiny260k", "--tokenizer", MISSING], "model.bin"),
    (["run", "--target", "amiga"], "unknown target"),
    (["run", "--host", "nope"], "no host or group 'nope'"),
    (["run", "--host", "emulated", "--inventory", "{dir}"], "{dir}"),
    (["convert", "--model", "tiny260k"], "--out is required"),
    (["convert", "--model", "tiny260k", "--out", "{dir}"], "is a folder"),
    (["convert", "--model", "tiny260k", "--out", "{file}/x.bin"], "is a file"),
    (["convert", "--model", "tiny260k", "--out", "x.bin", "--version", "abc"], "not a whole number"),
    (["convert", "--model", "tiny260k", "--out", "x.bin", "--version", "7"], "not one of 0, 1, 2"),
    (["convert", "--model", "tiny260k", "--out", "x.bin", "--group-size", "abc"], "not a whole number"),
    (["convert", "--model", "tiny260k", "--out", "x.bin", "--group-size", "0"], "out of range"),
    (["convert", "--model", "tiny260k", "--out", "x.bin", "--byteorder", "middle"], "not one of little, big"),
    (["convert", "--model", MISSING, "--out", "x.bin"], "model.bin"),
    (["convert", "--model", "tiny260k", "--out", "{dir}/o", "--target", "amiga"], "unknown target"),
    (["convert", "--model", "tiny260k", "--out", "{file}", "--target", "host"], "is a file"),
    (["models.synth", "--out", "x.bin", "--shape", "stories1B"], "not one of stories260K"),
    (["models.synth", "--out", "x.bin", "--shape", "stories15m"], "did you mean stories15M"),
    (["models.synth", "--out", "x.bin", "--version", "abc"], "not a whole number"),
    (["models.synth", "--out", "x.bin", "--seed", "-1"], "out of range"),
    (["models.synth", "--out", "x.bin", "--byteorder", "middle"], "not one of little, big"),
    (["models.synth", "--out", "{dir}"], "is a folder"),
    (["models.inspect"], "--model is required"),
    (["models.inspect", "--model", MISSING], "model.bin"),
    (["models.inspect", "--model", "{dir}"], "{dir}"),
    (["models.inspect", "--model", "tiny260k", "--tokenizer", "{empty}"], "empty.bin"),
    (["models.fetch", "--name", "nope"], "nope"),
    (["doctor", "--target", "amiga"], "unknown target"),
    (["setup", "--target", "amiga"], "unknown target"),
    (["inventory", "--inventory", MISSING], "not found"),
    (["inventory", "--inventory", "{dir}"], "{dir}"),
    (["inventory", "--limit", "nope"], "no host or group 'nope'"),
    (["deploy", "--host", "nope"], "no host or group 'nope'"),
    (["deploy", "--target", "amiga"], "unknown target"),
    (["deploy", "--host", "win98", "--limit", "pis"], "not both"),
    (["deploy", "--limit", "emulated", "--steps", "abc"], "not a whole number"),
    (["deploy", "--limit", "emulated", "--steps", "-5"], "out of range"),
    (["deploy", "--limit", "emulated", "--seed", "x"], "not a whole number"),
    (["deploy", "--limit", "emulated", "--timeout", "nan"], "not a finite number"),
    (["deploy", "--limit", "emulated", "--timeout", "soon"], "not a number"),
    (["deploy", "--limit", "emulated", "--model", MISSING], "model.bin"),
    (["deploy", "--inventory", "{dir}"], "{dir}"),
    (["serve"], "host"),
    (["serve", "--host", "nope"], "no host or group 'nope'"),
    (["serve", "--host", "rpi4"], "ftp-serve"),
    (["serve", "--host", "win98", "--inventory", MISSING], "not found"),
    (["hosts.trust", "--host", "pixel6"], "no SSH"),
    (["hosts.trust", "--host", "win98-p2-emu"], "no SSH"),
    (["hosts.trust", "--host", "nope"], "no host or group 'nope'"),
    (["hosts.trust", "--host", "rpi4", "--inventory", "{dir}"], "{dir}"),
    (["plan", "--target", "amiga"], "unknown target"),
    (["plan", "--target", "win98-p2", "--model", MISSING], "model.bin"),
    (["plan", "--target", "win98-p2", "--model", "{dir}"], "{dir}"),
    (["bench"], "--target or --host"),
    (["bench", "--target", "host", "--runs", "abc"], "not a whole number"),
    (["bench", "--target", "host", "--runs", "0"], "out of range"),
    (["bench", "--target", "amiga"], "unknown target"),
    (["bench", "--host", "nope"], "no host or group 'nope'"),
    (["bench", "--host", "win98"], "by hand"),
    (["record", "--target", "amiga", "--model", "stories15M", "--tok-s", "1"], "unknown target"),
    (["record", "--target", "win98-p2", "--model", "stories15M"], "--output"),
    (["record", "--target", "win98-p2", "--model", "stories15M", "--tok-s", "fast"], "not a number"),
    (["record", "--target", "win98-p2", "--model", "stories15M", "--tok-s", "-1"], "out of range"),
    (["record", "--target", "win98-p2", "--model", "stories15M", "--output", "hello"], "holds no"),
    (["report", "--out", "{file}"], "is a file"),
]


@pytest.mark.parametrize("argv, expected", CASES, ids=[" ".join(argv) for argv, _ in CASES])
def test_bad_option_is_one_line(argv, expected, places, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # anything a task might write lands here
    fill = {"dir": str(places), "file": str(places / "a-file"), "empty": str(places / "empty.bin")}
    code, out, err = run_task([arg.format(**fill) for arg in argv], capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code not in (0, None), (out, err)
    assert "Traceback" not in err + out
    assert len(lines) == 1, err
    assert expected.format(**fill) in lines[0]


def test_every_task_has_long_options_only_and_shows_defaults():
    # in a fresh process: invoke hands each option's help text out once per process
    for name in ("deploy", "bench", "run", "convert", "models.synth"):
        done = subprocess.run([sys.executable, "-m", "invoke", name, "--help"], cwd=ROOT, capture_output=True,
                              text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=60)
        assert done.returncode == 0 and "--" in done.stdout
        options = done.stdout.split("Options:")[1].splitlines()
        assert not any(line.lstrip().startswith("-") and not line.lstrip().startswith("--") for line in options)
        if name == "bench":
            assert "(default: 5)" in done.stdout and "(default: tiny260k)" in done.stdout
