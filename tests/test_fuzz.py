"""The fuzzer: every kept regression case replayed, a seeded run of fresh cases, and the worst cases against the
Windows 98 RUN.EXE under Wine. Each regression case crashed, hung or drew a sanitizer report from the program (or a
traceback from the Python readers) before issue 9's fixes."""

import dataclasses
import shutil
import subprocess
from pathlib import Path

import pytest

from deploy import fuzz
from deploy.build import build
from deploy.plan import make_plan
from deploy.profile import load_profile
from deploy.runner import prepare_emulator, run_command, run_env

REGRESSIONS = Path(__file__).resolve().parent / "fuzz_regressions"
CASES = fuzz.load_cases(REGRESSIONS)
PROGRAM_CASES = [(name, case) for name, found_by, case in CASES if found_by != "python"]
READER_CASES = [(name, case) for name, found_by, case in CASES if found_by == "python"]


@pytest.fixture(scope="session")
def sanitized(build_dir):
    built = {}

    def command(name):
        if shutil.which(fuzz.BUILDS[name].compiler) is None:
            pytest.skip(f"{fuzz.BUILDS[name].compiler} not installed (scripts/setup installs it)")
        if name not in built:
            built[name] = [str(fuzz.build_sanitized(name, build_dir))]
        return built[name]

    return command


def test_regression_cases_are_kept():
    assert len(PROGRAM_CASES) >= 10 and READER_CASES


@pytest.mark.parametrize("name, case", PROGRAM_CASES, ids=[name for name, _ in PROGRAM_CASES])
@pytest.mark.parametrize("build_name", list(fuzz.BUILDS))
def test_program_regression(sanitized, build_name, name, case, tmp_path):
    outcome = fuzz.run_case(sanitized(build_name), case, tmp_path, fuzz.program_env(build_name))
    assert not outcome.failed, f"{case.note}: {outcome}"


@pytest.mark.parametrize("name, case", READER_CASES, ids=[name for name, _ in READER_CASES])
def test_reader_regression(name, case, tmp_path):
    worker = fuzz.ReaderWorker()
    try:
        outcome = worker.run(case, tmp_path)
    finally:
        worker.close()
    assert not outcome.failed, f"{case.note}: {outcome}"


def test_seeded_fuzz_run(sanitized, build_dir):
    builds = [name for name, spec in fuzz.BUILDS.items() if shutil.which(spec.compiler)]
    for name in builds:
        sanitized(name)
    counts, failures = fuzz.fuzz([*builds, "python"], 400, seed=20261122, build_dir=build_dir)
    assert not failures, "\n".join(f"{b} case {i} ({c.note}): {o}" for b, i, c, o in failures)
    for name, tally in counts.items():  # the cases reach past the checks: some runs generate text
        assert tally.get("ok", 0) >= 20, (name, tally)


def test_classifier_sees_reports_crashes_and_hangs(tmp_path):
    """The fuzzer can fail: a program with a real overflow, a segfault and a hang is caught each time."""
    source = tmp_path / "bad.c"
    source.write_text("#include <stdlib.h>\n#include <string.h>\n#include <signal.h>\n#include <unistd.h>\n"
                      "int main(int argc, char **argv) { char *p = malloc(4); const char *m = argv[argc - 1];\n"
                      "  if (!strcmp(m, \"overflow\")) p[4] = 1;\n  if (!strcmp(m, \"segv\")) raise(SIGSEGV);\n"
                      "  if (!strcmp(m, \"hang\")) sleep(30);\n  free(p); return 0; }\n")
    binary = tmp_path / "bad"
    subprocess.run(["gcc", *fuzz.SANITIZER_FLAGS, "-o", str(binary), str(source)], check=True)
    env = fuzz.program_env("x86_64")
    work = tmp_path / "work"
    work.mkdir()
    verdicts = {mode: fuzz.run_case([str(binary)], fuzz.Case(b"", b"", [mode]), work, env, timeout=3).verdict
                for mode in ("overflow", "segv", "hang", "fine")}
    assert verdicts == {"overflow": "sanitizer", "segv": "sanitizer", "hang": "hang", "fine": "ok"}


def test_worst_cases_on_run_exe_under_wine(build_dir, tmp_path):
    profile = load_profile("win98-p2")
    if not shutil.which(profile.toolchains[0]["cc"]) or not shutil.which("wine"):
        pytest.skip("mingw or wine not installed (scripts/setup installs them)")
    plan = make_plan(profile, build_dir=build_dir)
    build(plan)
    prepare_emulator(plan)
    command, env = run_command(plan, []), run_env(plan)
    # a Windows command line holds at most 32767 characters: the 100 KB prompt cannot reach RUN.EXE
    worst = [(name, case) for name, case in PROGRAM_CASES
             if case.note.startswith("issue 9") and sum(len(fuzz.expand(arg)) for arg in case.args) < 30000]
    assert len(worst) >= 5
    for name, case in worst:
        case = dataclasses.replace(case, args=[*case.args, "-z", "{dir}/tokenizer.bin"])  # RUN.EXE's is TOK.BIN
        outcome = fuzz.run_case(command, case, tmp_path, env, timeout=120)
        assert not outcome.failed, f"{name} ({case.note}): {outcome}"
