"""The headline command and the tasks as a new user meets them: shared builds, the Windows 98 line to type, failed
programs, Ctrl-C, and figures that say how they were obtained."""

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from deploy.deliver import command_line
from deploy.inventory import load_inventory
from deploy.pipeline import Options, deploy_hosts
from deploy.profile import load_profile
from deploy.results import BY_HAND, EMULATED, load, record_by_hand
from tests.test_deploy import Quiet

ROOT = Path(__file__).resolve().parent.parent


def inventory(tmp_path, text):
    path = tmp_path / "inventory.yaml"
    path.write_text(text)
    return load_inventory(path)


def options(tmp_path, tiny_files, **extra):
    return Options(str(tiny_files[0]), str(tiny_files[1]), stage_root=tmp_path / "stage",
                   build_dir=tmp_path / "build", results=tmp_path / "results.jsonl", **extra)


def need(*tools):
    missing = [tool for tool in tools if not shutil.which(tool)]
    if missing:
        pytest.skip(f"needs {', '.join(missing)}")


def test_hosts_of_one_target_share_one_build_and_go_on_after_it(tmp_path, tiny_files):
    """`--target` picks the real host and its emulated twin: one build, then each host on its own (the real one
    ends in a one-line error)."""
    need("i686-linux-gnu-gcc", "qemu-i386")
    inv = inventory(tmp_path, """
all:
  hosts:
    box: {target: p2-linux, connection: sftp, address: 127.0.0.1, port: 1, ssh: {user: nobody}}
    twin-a: {target: p2-linux, connection: emulator}
    twin-b: {target: p2-linux, connection: emulator}
""")
    console = Quiet()
    results = {r.host: r for r in deploy_hosts(inv.select(), options(tmp_path, tiny_files, run=True,
                                                                       run_args=("-n", "8", "-t", "0")), console)}
    assert results["twin-a"].error is None and results["twin-b"].error is None
    assert results["twin-a"].text == results["twin-b"].text != ""
    assert results["box"].error.startswith("box: ") and "\n" not in results["box"].error
    built = [line for line in console.lines if "run built in" in line]
    assert len(built) == 3 and len({line.split("build")[-1] for line in built}) == 1  # one build, told to each host
    assert [p.name for p in (tmp_path / "build").iterdir() if p.name.startswith("p2-linux")] == ["p2-linux"]


def test_deploy_run_records_each_run_with_how_it_was_obtained(tmp_path, tiny_files):
    need("i686-linux-gnu-gcc", "qemu-i386")
    inv = inventory(tmp_path, "all:\n  hosts:\n    emu: {target: p2-linux, connection: emulator}\n")
    result = deploy_hosts(inv.select(), options(tmp_path, tiny_files, run=True, run_args=("-n", "8")), Quiet())[0]
    assert result.error is None and result.how == "emulated: qemu-i386 on this PC"
    recorded = load(tmp_path / "results.jsonl")
    assert [(r.host, r.target, r.how) for r in recorded] == [("emu", "p2-linux", EMULATED)]
    assert recorded[0].tok_s == result.tok_s


def test_a_program_that_fails_fails_its_host_with_its_last_line(tmp_path, tiny_files):
    need("i686-linux-gnu-gcc", "qemu-i386")
    inv = inventory(tmp_path, "all:\n  hosts:\n    emu: {target: p2-linux, connection: emulator}\n")
    result = deploy_hosts(inv.select(), options(tmp_path, tiny_files, run=True, run_args=("-q", "1")), Quiet())[0]
    assert result.error and "exit status 1" in result.error and result.tok_s is None
    assert not load(tmp_path / "results.jsonl")


def test_a_program_that_cannot_run_over_ssh_fails_the_host(tmp_path, tiny_files):
    """A PowerPC binary on an x86 sshd: the shell says "Exec format error" and exits 126."""
    from tests import sshd

    need("powerpc-linux-gnu-gcc")
    if not sshd.sshd_available():
        pytest.skip("needs /usr/sbin/sshd (openssh-server)")
    from deploy.sftp import fetch_host_key, trust_host

    key = sshd.keygen(tmp_path / "id_ed25519", "ed25519")
    with sshd.modern(tmp_path / "sshd") as server:
        server.authorize(key)
        known = tmp_path / "known_hosts"
        trust_host("g4", "127.0.0.1", server.port, fetch_host_key("127.0.0.1", server.port)[2], known, show=False)
        inv = inventory(tmp_path, f"""
all:
  hosts:
    g4:
      target: powerbook-g4
      connection: sftp
      address: 127.0.0.1
      port: {server.port}
      path: {tmp_path / 'remote'}
      ssh: {{user: {server.user}, key_file: {key}, known_hosts: {known}}}
""")
        result = deploy_hosts(inv.select(), options(tmp_path, tiny_files, run=True, run_args=("-n", "4")),
                              Quiet())[0]
    assert result.error and "exit status 126" in result.error, result.error
    assert result.how == "" and result.tok_s is None


def test_a_machine_nobody_has_run_yet_is_delivered_with_the_line_to_type(tmp_path, tiny_files):
    need("i686-w64-mingw32-gcc")
    inv = inventory(tmp_path, "all:\n  hosts:\n    oldbox: {target: win98-p2, connection: manual}\n")
    result = deploy_hosts(inv.select(), options(tmp_path, tiny_files, run=True,
                                                run_args=("-n", "64", "-i", "Once upon a time")), Quiet())[0]
    assert result.error is None
    assert result.waiting == 'RUN.EXE MODEL.BIN -z TOK.BIN -n 64 -i "Once upon a time"'


@pytest.mark.parametrize("words, line", [
    (["-i", "Once upon a time"], 'RUN.EXE MODEL.BIN -z TOK.BIN -i "Once upon a time"'),
    (["-i", 'she said "hi"'], r'RUN.EXE MODEL.BIN -z TOK.BIN -i "she said \"hi\""'),
    (["-i", ""], 'RUN.EXE MODEL.BIN -z TOK.BIN -i ""'),
    (["-i", "a|b"], 'RUN.EXE MODEL.BIN -z TOK.BIN -i "a|b"'),
    (["-n", "5"], "RUN.EXE MODEL.BIN -z TOK.BIN -n 5"),
])
def test_the_windows_98_line_keeps_its_quotes(words, line):
    assert command_line(load_profile("win98-p2"), words) == line


def test_the_posix_line_is_shell_quoted():
    assert command_line(load_profile("rpi4"), ["-i", "it's"]) == "./run model.bin -z tokenizer.bin -i 'it'\"'\"'s'"


def test_a_figure_measured_by_hand_is_reported_beside_the_published_ones(tmp_path):
    from deploy.report import report_rows

    path = tmp_path / "results.jsonl"
    record_by_hand("win98-p2", "stories15M", "achieved tok/s: 2.712329", note="PII-350, 128 MB", path=path)
    recorded = load(path)
    assert recorded[0].how == BY_HAND and recorded[0].tok_s == pytest.approx(2.712329)
    rows = [row for row in report_rows(recorded) if row[:2] == ("win98-p2", "stories15M")]
    assert rows == [("win98-p2", "stories15M", BY_HAND, pytest.approx(2.712329), 1, 1.03, rows[0][6])]


def test_emulated_figures_are_never_set_beside_published_ones(tmp_path):
    from deploy.report import report_rows
    from deploy.results import Result, now, record

    path = tmp_path / "results.jsonl"
    record(Result(now(), "w", "win98-p2", "pc", EMULATED, "mingw", "", "models/tiny260k.bin", "", 900.0), path)
    rows = [row for row in report_rows(load(path)) if row[:2] == ("win98-p2", "tiny260k")]
    emulated = next(row for row in rows if row[2] == EMULATED)
    assert emulated[3] == 900.0 and emulated[5] is None and emulated[6] is None
    assert any(row[2] == "" and row[5] == 39.31 for row in rows)


# --- Ctrl-C, against the real command line

def _invoke(*args, marker):
    """`invoke ARGS` as a user's terminal starts it: Ctrl-C (SIGINT) delivered, whatever the suite was started with (a
    shell's background job ignores SIGINT, and its children inherit that)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), RETRO_TEST_MARK=marker)
    return subprocess.Popen([sys.executable, "-m", "invoke", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_sigint_as_in_a_terminal)


def _sigint_as_in_a_terminal():
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _marked(marker):
    """Processes still alive that carry the marker in their environment."""
    alive = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and f"RETRO_TEST_MARK={marker}".encode() in (proc / "environ").read_bytes():
                status = (proc / "status").read_text()
                if "State:\tZ" not in status:
                    alive.append(proc.name)
        except OSError:
            continue
    return alive


def _interrupt(child, marker):
    start = time.monotonic()
    child.send_signal(signal.SIGINT)
    try:
        out, err = child.communicate(timeout=10)
    finally:
        child.kill()
    elapsed = time.monotonic() - start
    time.sleep(0.3)
    return elapsed, out, err, _marked(marker)


def test_ctrl_c_stops_a_deploy_waiting_for_the_windows_box(tmp_path):
    need("i686-w64-mingw32-gcc")
    marker, name = uuid.uuid4().hex, f"ctrl-c-{uuid.uuid4().hex[:8]}"
    path = tmp_path / "inventory.yaml"
    path.write_text(f"all:\n  hosts:\n    {name}: {{target: win98-p2, connection: ftp-serve, address: 127.0.0.1, "
                    f"link: {{address: 127.0.0.1}}, ftp: {{port: 0}}}}\n")
    child = _invoke("deploy", "--inventory", str(path), "--model", "tiny260k", marker=marker)
    fetch = ROOT / "stage" / name / "FETCH.TXT"
    try:
        deadline = time.monotonic() + 120
        while not fetch.exists() and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.1)
        assert fetch.exists(), child.communicate()
        time.sleep(0.5)
        elapsed, out, err, left = _interrupt(child, marker)
    finally:
        shutil.rmtree(ROOT / "stage" / name, ignore_errors=True)
    assert elapsed < 2.0 and child.returncode == 130
    assert "interrupted" in err and "Traceback" not in err and not left


def test_ctrl_c_stops_an_emulated_run_and_its_emulator(tmp_path):
    need("i686-linux-gnu-gcc", "qemu-i386")
    marker = uuid.uuid4().hex
    child = _invoke("run", "--target", "p2-linux", "--", "-n", "0", "-i", "Once upon a time", marker=marker)
    deadline = time.monotonic() + 120
    while not any(pid for pid in _marked(marker) if "qemu" in Path(f"/proc/{pid}/cmdline").read_text(
            errors="replace")) and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.1)
    time.sleep(1.0)
    assert child.poll() is None, child.communicate()
    elapsed, out, err, left = _interrupt(child, marker)
    assert elapsed < 2.0 and child.returncode == 130
    assert "interrupted" in err and "Traceback" not in err and not left


def test_deploy_with_no_model_anywhere_says_which_option_is_needed(tmp_path):
    path = tmp_path / "inventory.yaml"
    path.write_text("all:\n  hosts:\n    emu: {target: p2-linux, connection: emulator}\n")
    done = subprocess.run([sys.executable, "-m", "invoke", "deploy", "--inventory", str(path)], cwd=ROOT,
                          capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=60)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip() == "error: --model is needed (the inventory names no model for these hosts)"
