"""`invoke deploy` end to end on this machine: inventories, the fit check, dry runs, emulated hosts, and the ftp-serve
connection with a real FTP client playing the Windows 98 machine on loopback."""

import shutil
import subprocess
import threading
import time

import pytest

from deploy.errors import DeployError
from deploy.inventory import load_inventory
from deploy.pipeline import Options, deploy_hosts
from deploy.planner import plan_model
from deploy.profile import ROOT


class Quiet:
    def __init__(self):
        self.lines = []

    def print(self, text, **_):
        self.lines.append(str(text))


def write_inventory(tmp_path, text):
    path = tmp_path / "inventory.yaml"
    path.write_text(text)
    return path


EMULATED = """
all:
  children:
    lab:
      vars: {link: {address: 127.0.0.1}}
      hosts:
        g4: {target: powerbook-g4, connection: emulator}
        zero: {target: rpi-zero, connection: emulator}
"""


def test_shipped_inventory_has_every_host():
    inventory = load_inventory()
    assert {"win98", "powerbook", "rpi4", "rpi-zero", "pixel6", "pixel6-termux"} <= set(inventory.hosts)
    assert {f"{t}-emu" for t in ("win98-p2", "powerbook-g4", "rpi4", "rpi-zero", "pixel6")} <= set(inventory.hosts)
    win98 = inventory.hosts["win98"]
    assert win98["link"]["address"] == "192.168.1.1" and win98["address"] == "192.168.1.2"
    assert inventory.hosts["pixel6-termux"]["port"] == 8022
    assert [h.name for h in inventory.select("pis")] == ["rpi4", "rpi-zero"]


@pytest.mark.parametrize("text, message", [
    ("all:\n  hosts:\n    a: {target: amiga, connection: emulator}\n", "'a.target' is 'amiga'; allowed: host, p2-linux"),
    ("all:\n  hosts:\n    a: {target: rpi4, connection: telnet}\n", "'a.connection' is 'telnet'; allowed: ftp-serve"),
    ("all:\n  hosts:\n    a: {target: rpi4, connection: sftp, address: x, ssh: {password: hunter2}}\n",
     "no passwords in the inventory"),
    ("all:\n  hosts:\n    a: {target: win98-p2, connection: ftp-serve, address: 10.0.0.2}\n", "needs link.address"),
    ("all:\n  hosts:\n    a: {target: rpi4, connection: emulator, colour: red}\n", "unknown key 'a.colour' (allowed: target"),
])
def test_bad_inventories(tmp_path, text, message):
    path = write_inventory(tmp_path, text)
    with pytest.raises(DeployError) as caught:
        load_inventory(path)
    assert str(path) in str(caught.value) and message in str(caught.value)


def test_unknown_limit_lists_the_known_names():
    with pytest.raises(DeployError, match="no host or group 'nope' .*win98"):
        load_inventory().select("nope")


def test_plan_refuses_stories110m_on_win98_and_offers_what_fits():
    profile, name, header, fit, prediction, options, published = plan_model("win98-p2", "stories110M")
    assert not fit.ok and "memory" in fit.problems()[0]
    assert any(o.what.startswith("int8") and o.model_bytes < 120e6 for o in options)
    assert any(o.what.startswith("stories15M instead") and o.fits for o in options)
    assert prediction is None  # no count: it cannot run within the port's 96 MB cap
    assert any(row.model == "stories260K" and row.published_tok_s == 39.31 for row in published)


def test_dry_run_does_nothing(tmp_path, tiny_files):
    path = write_inventory(tmp_path, EMULATED)
    options = Options(str(tiny_files[0]), str(tiny_files[1]), dry=True, stage_root=tmp_path / "stage",
                      build_dir=tmp_path / "build")
    results = deploy_hosts(load_inventory(path).select(), options, Quiet())
    assert all(r.error is None for r in results)
    steps = {step for r in results for step, _ in r.steps}
    assert {"plan", "render", "build", "stage", "deliver"} <= steps
    assert not (tmp_path / "stage").exists() and not (tmp_path / "build").exists()
    g4 = next(r for r in results if r.host == "g4")
    assert any(step == "convert" and "big-endian" in what for step, what in g4.steps)


def test_emulated_hosts_deploy_run_and_skip_unchanged_steps(tmp_path, tiny_files):
    if not (shutil.which("qemu-ppc") and shutil.which("powerpc-linux-gnu-gcc")):
        pytest.skip("qemu-ppc or powerpc-linux-gnu-gcc not installed")
    path = write_inventory(tmp_path, EMULATED)
    hosts = [h for h in load_inventory(path).select() if h.name == "g4"]
    options = Options(str(tiny_files[0]), str(tiny_files[1]), run=True, stage_root=tmp_path / "stage",
                      build_dir=tmp_path / "build", run_args=("-n", "32", "-t", "0", "-i", "the"))
    first = deploy_hosts(hosts, options, Quiet())[0]
    assert first.error is None, first.error
    assert first.tok_s and first.tok_s > 0 and first.text.startswith("the")
    staged = tmp_path / "stage" / "g4"
    assert (staged / "model.bin").read_bytes()[:4] == tiny_files[0].read_bytes()[3::-1]  # big-endian weights
    second = deploy_hosts(hosts, options, Quiet())[0]
    said = dict(second.steps)
    assert "unchanged" in said["build"] and said["stage"].startswith("unchanged")
    assert said["deliver"].startswith("unchanged") and second.text == first.text


def test_a_model_that_does_not_fit_is_refused_before_any_work(tmp_path):
    from deploy.checkpoint import Config, write_model
    from deploy.synth import random_model, synthetic_tokenizer
    from deploy.tokenizer import write_tokenizer

    # 2 x 5 x 200000 x 32 floats of KV cache for a run through all 200000 positions (-n 0): 256 MB, over the
    # win98-p2 port's 96 MB cap even with the weights streamed
    write_model(random_model(Config(64, 172, 5, 8, 4, 300, 200000)), tmp_path / "long.bin", version=1)
    write_tokenizer(synthetic_tokenizer(300), tmp_path / "tok.bin")
    path = write_inventory(tmp_path, "all:\n  hosts:\n    w: {target: win98-p2, connection: emulator}\n")
    options = Options(str(tmp_path / "long.bin"), str(tmp_path / "tok.bin"), stage_root=tmp_path / "stage",
                      build_dir=tmp_path / "build", run_args=("-n", "0"))
    result = deploy_hosts(load_inventory(path).select(), options, Quiet())[0]
    assert "does not fit win98-p2" in result.error and "96 MB" in result.error
    assert "streamed, a run of --steps" in result.error
    assert not (tmp_path / "build").exists()


def _listening(port):
    import socket

    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _ftp_client():
    return next((shutil.which(c) for c in ("inetutils-ftp", "tnftp", "ftp") if shutil.which(c)), None)


def test_ftp_serve_to_a_machine_that_pulls(tmp_path, tiny_files):
    """The real flow for a Windows 98 box: our server on the link address, the old machine's ftp client runs
    FETCH.TXT; here the link is loopback and the client is Debian's."""
    client = _ftp_client()
    if client is None or not shutil.which("i686-w64-mingw32-gcc"):
        pytest.skip("needs an FTP client and mingw-w64")
    port = 20000 + int(time.time() * 1000) % 20000
    path = write_inventory(tmp_path, f"""
all:
  hosts:
    oldbox:
      target: win98-p2
      connection: ftp-serve
      address: 127.0.0.1
      link: {{address: 127.0.0.1}}
      ftp: {{port: {port}}}
""")
    machine = tmp_path / "machine"
    machine.mkdir()
    options = Options(str(tiny_files[0]), str(tiny_files[1]), stage_root=tmp_path / "stage",
                      build_dir=tmp_path / "build")
    outcome = {}
    deployer = threading.Thread(target=lambda: outcome.update(result=deploy_hosts(
        load_inventory(path).select(), options, Quiet())[0]))
    deployer.start()
    fetch = tmp_path / "stage" / "oldbox" / "FETCH.TXT"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (fetch.exists() and _listening(port)):
        time.sleep(0.1)
    script = fetch.read_bytes().decode("ascii").replace("\r\n", "\n")
    done = subprocess.run([client, "-n"], input=script, text=True, capture_output=True, cwd=machine, timeout=60)
    deployer.join(timeout=120)
    result = outcome["result"]
    assert result.error is None, result.error + done.stderr
    for name in ("RUN.EXE", "MODEL.BIN", "TOK.BIN"):
        assert (machine / name).read_bytes() == (tmp_path / "stage" / "oldbox" / name).read_bytes()
    assert any("sent MODEL.BIN" in what for _, what in result.steps)


def test_main_job_script_exists_and_is_the_readme_first_command():
    readme = (ROOT / "README.md").read_text()
    assert "scripts/main" in readme and "scripts/test" in readme


@pytest.mark.parametrize("kind", ["modern", "legacy"])
def test_sftp_deploy_to_a_real_sshd(tmp_path, tiny_files, kind):
    from tests import sshd

    if not sshd.sshd_available() or not shutil.which("aarch64-linux-gnu-gcc"):
        pytest.skip("needs /usr/sbin/sshd (openssh-server) and aarch64-linux-gnu-gcc")
    from deploy.sftp import fetch_host_key, trust_host

    user_key = sshd.keygen(tmp_path / ("id_rsa" if kind == "legacy" else "id_ed25519"),
                           "rsa" if kind == "legacy" else "ed25519")
    with getattr(sshd, kind)(tmp_path / "sshd") as server:
        server.authorize(user_key)
        known = tmp_path / "known_hosts"
        remote = tmp_path / "remote"
        path = write_inventory(tmp_path, f"""
all:
  hosts:
    box:
      target: rpi4
      connection: sftp
      address: 127.0.0.1
      port: {server.port}
      path: {remote}
      ssh: {{user: {server.user}, key_file: {user_key}, legacy: {str(kind == 'legacy').lower()},
             known_hosts: {known}}}
""")
        options = Options(str(tiny_files[0]), str(tiny_files[1]), stage_root=tmp_path / "stage",
                          build_dir=tmp_path / "build")
        hosts = load_inventory(path).select()
        refused = deploy_hosts(hosts, options, Quiet())[0]
        assert "invoke hosts.trust box" in refused.error  # an unknown host key is refused
        trust_host("box", "127.0.0.1", server.port, fetch_host_key("127.0.0.1", server.port,
                                                                    legacy=kind == "legacy")[2], known, show=False)
        result = deploy_hosts(hosts, options, Quiet())[0]
        assert result.error is None, result.error
        for name in ("run", "model.bin", "tokenizer.bin"):
            assert (remote / name).read_bytes() == (tmp_path / "stage" / "box" / name).read_bytes()
        assert (remote / "run").stat().st_mode & 0o111
        assert not list(remote.glob("*.part"))


def test_int8_makes_stories42m_fit_win98():
    *_, fit, prediction, options, published = plan_model("win98-p2", "stories42M")
    assert not fit.ok
    int8 = next(o for o in options if o.what.startswith("int8"))
    assert int8.fits and int8.model_bytes < 50e6


def test_ftp_serve_gives_up_after_the_timeout(tmp_path, tiny_files):
    if not shutil.which("i686-w64-mingw32-gcc"):
        pytest.skip("needs mingw-w64")
    path = write_inventory(tmp_path, """
all:
  hosts:
    nobody:
      target: win98-p2
      connection: ftp-serve
      address: 127.0.0.1
      link: {address: 127.0.0.1}
      ftp: {port: 0}
""")
    options = Options(str(tiny_files[0]), str(tiny_files[1]), stage_root=tmp_path / "stage",
                      build_dir=tmp_path / "build", timeout=1.0)
    start = time.monotonic()
    result = deploy_hosts(load_inventory(path).select(), options, Quiet())[0]
    assert "timed out after 1 s; not fetched completely: RUN.EXE, MODEL.BIN, TOK.BIN" in result.error
    assert time.monotonic() - start < 60
