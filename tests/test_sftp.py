"""deploy.sftp against real OpenSSH servers on 127.0.0.1: one modern, one standing in for Mac OS X 10.4's sshd.

The servers run on this machine as the current user, so a "remote" path is also a local path the tests can read.
"""

import hashlib
import os
import random
import signal
import subprocess
import time

import paramiko
import pytest

from deploy import known_hosts
from deploy.errors import DeployError
from deploy.sftp import READ_BACK, connect, fetch_host_key, parse_digest, trust_host, trust_inventory_host
from tests.sshd import keygen, legacy, modern, public_line, sshd, sshd_available

pytestmark = pytest.mark.skipif(not sshd_available(), reason="/usr/sbin/sshd is absent: the SSH tests need the "
                                                             "Debian package openssh-server")

SIZE = 3 << 20
TIMEOUT = 10


class TookTooLong(Exception):
    pass


@pytest.fixture(autouse=True)
def bounded():
    """Every test here gets 30 s; a hang fails the test instead of the run."""
    def expire(*_):
        raise TookTooLong("test took longer than 30 s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(30)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keys")
    return {name: keygen(folder / name, kind) for name, kind in
            (("ed25519", "ed25519"), ("rsa", "rsa"), ("stranger", "ed25519"), ("host_ed25519", "ed25519"),
             ("host_rsa", "rsa"), ("other_host", "ed25519"))}


@pytest.fixture(scope="module")
def modern_server(tmp_path_factory, keys):
    with modern(tmp_path_factory.mktemp("modern"), keys["host_ed25519"]) as server:
        server.authorize(keys["ed25519"])
        server.authorize(keys["rsa"])
        yield server


@pytest.fixture(scope="module")
def legacy_server(tmp_path_factory, keys):
    with legacy(tmp_path_factory.mktemp("legacy"), keys["host_rsa"]) as server:
        server.authorize(keys["rsa"])
        yield server


@pytest.fixture
def trusted(tmp_path, modern_server, legacy_server):
    """A known_hosts file holding both servers' keys, recorded the way `invoke hosts.trust` does."""
    path = tmp_path / "known_hosts"
    for server, is_legacy in ((modern_server, False), (legacy_server, True)):
        _, _, key = fetch_host_key(server.host, server.port, legacy=is_legacy)
        trust_host("test", server.host, server.port, key, path, show=False)
    return path


@pytest.fixture
def payload(tmp_path):
    path = tmp_path / "local" / "model.bin"  # the tests' remote paths are elsewhere in tmp_path
    path.parent.mkdir()
    path.write_bytes(random.Random(7).randbytes(SIZE))
    return path


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def open_modern(server, known, keys, **options):
    options = {"key_file": keys["ed25519"], "use_agent": False, "timeout": TIMEOUT, **options}
    return connect(server.host, server.port, server.user, known_hosts_path=known, **options)


def open_legacy(server, known, keys, **options):
    options = {"key_file": keys["rsa"], "use_agent": False, "timeout": TIMEOUT, "legacy": True, **options}
    return connect(server.host, server.port, server.user, known_hosts_path=known, **options)


def one_line(error):
    text = str(error.value)
    assert "\n" not in text and "Traceback" not in text
    return text


# Host keys


def test_fingerprint_is_what_ssh_keygen_prints(modern_server, keys):
    key_type, fingerprint, key = fetch_host_key(modern_server.host, modern_server.port)
    listed = subprocess.run(["ssh-keygen", "-l", "-f", f"{keys['host_ed25519']}.pub"], capture_output=True,
                            text=True, check=True, timeout=TIMEOUT).stdout.split()
    assert (key_type, fingerprint) == ("ssh-ed25519", listed[1])
    md5 = subprocess.run(["ssh-keygen", "-l", "-E", "md5", "-f", f"{keys['host_ed25519']}.pub"], capture_output=True,
                         text=True, check=True, timeout=TIMEOUT).stdout.split()[1]
    assert known_hosts.md5_fingerprint(key) == md5


def test_unknown_host_is_refused_until_trusted(tmp_path, modern_server, keys):
    known = tmp_path / "known_hosts"
    with pytest.raises(DeployError) as error:
        open_modern(modern_server, known, keys)
    assert f"`invoke hosts.trust 127.0.0.1:{modern_server.port}`" in one_line(error)
    with pytest.raises(DeployError) as error:
        open_modern(modern_server, known, keys, name="pbook")
    assert one_line(error).startswith("pbook: unknown host key ssh-ed25519 SHA256:")
    assert "`invoke hosts.trust pbook`" in one_line(error)
    assert not known.exists()

    _, fingerprint, key = fetch_host_key(modern_server.host, modern_server.port)
    record = trust_host("pbook", modern_server.host, modern_server.port, key, known, show=False)
    assert (record.entry, record.fingerprint) == (f"[127.0.0.1]:{modern_server.port}", fingerprint)
    assert known.read_text().startswith(f"[127.0.0.1]:{modern_server.port} ssh-ed25519 AAAA")
    # OpenSSH reads the file too.
    found = subprocess.run(["ssh-keygen", "-F", f"[127.0.0.1]:{modern_server.port}", "-f", str(known)],
                           capture_output=True, timeout=TIMEOUT)
    assert found.returncode == 0
    with open_modern(modern_server, known, keys, name="pbook") as session:
        assert session.run("echo ok").stdout == "ok\n"


def test_changed_host_key_is_refused(tmp_path, modern_server, keys):
    known = tmp_path / "known_hosts"
    impostor = keys["other_host"]
    other = known_hosts.fingerprint(paramiko.PKey.from_path(str(impostor)))
    key_type, key_text = public_line(impostor).split()[:2]
    known.write_text(f"# recorded earlier\n[127.0.0.1]:{modern_server.port} {key_type} {key_text}\n")
    _, fingerprint, key = fetch_host_key(modern_server.host, modern_server.port)
    with pytest.raises(DeployError) as error:
        open_modern(modern_server, known, keys, name="rpi4")
    text = one_line(error)
    assert text.startswith("rpi4: HOST KEY CHANGED") and "man-in-the-middle" in text
    assert fingerprint in text and other in text

    record = trust_host("rpi4", modern_server.host, modern_server.port, key, known, show=False)
    assert record.replaced == [f"ssh-ed25519 {other}"]
    assert known.read_text().startswith("# recorded earlier\n")
    with open_modern(modern_server, known, keys, name="rpi4"):
        pass


def test_the_key_type_on_record_is_asked_for(tmp_path, keys):
    """A host with several keys, of which known_hosts holds only the RSA one (as ssh may have recorded it)."""
    with sshd(tmp_path / "sshd", [keys["host_ed25519"], keys["host_rsa"]]) as server:
        server.authorize(keys["ed25519"])
        known = tmp_path / "known_hosts"
        key_type, key_text = public_line(keys["host_rsa"]).split()[:2]
        known.write_text(f"[127.0.0.1]:{server.port} {key_type} {key_text}\n")
        with open_modern(server, known, keys) as session:
            assert session.algorithms["host_key"] == "rsa-sha2-512"


def test_trust_checks_an_expected_fingerprint(tmp_path, modern_server):
    _, fingerprint, key = fetch_host_key(modern_server.host, modern_server.port)
    known = tmp_path / "known_hosts"
    with pytest.raises(DeployError) as error:
        trust_host("pi", modern_server.host, modern_server.port, key, known, expected_fingerprint="SHA256:nope",
                   show=False)
    assert "nothing recorded" in one_line(error) and not known.exists()
    trust_host("pi", modern_server.host, modern_server.port, key, known, expected_fingerprint=fingerprint, show=False)
    assert known.exists()


# Algorithms


def test_legacy_server_needs_legacy(trusted, legacy_server, keys):
    with pytest.raises(DeployError) as error:
        open_legacy(legacy_server, trusted, keys, legacy=False, name="powerbook")
    text = one_line(error)
    assert text.startswith("powerbook: no kex algorithm in common") and "legacy=True" in text
    with open_legacy(legacy_server, trusted, keys) as session:
        assert session.algorithms == {"kex": "diffie-hellman-group14-sha1", "host_key": "ssh-rsa",
                                      "cipher": "aes128-cbc", "mac": "hmac-sha1"}


@pytest.mark.parametrize("option, value, refused", [
    ("KexAlgorithms", "diffie-hellman-group1-sha1", "kex algorithm"),
    ("KexAlgorithms", "diffie-hellman-group14-sha1", "kex algorithm"),
    ("HostKeyAlgorithms", "ssh-rsa", "host key"),
    ("Ciphers", "aes128-cbc", "ciphers"),
    ("MACs", "hmac-sha1", "macs"),
])
def test_each_old_algorithm_only_with_legacy(tmp_path, keys, option, value, refused):
    """A server that offers one old algorithm and otherwise defaults: refused by default, fine with legacy."""
    with sshd(tmp_path, keys["host_rsa"], {option: value}) as server:
        with pytest.raises(DeployError) as error:
            fetch_host_key(server.host, server.port, timeout=TIMEOUT)
        assert f"no {refused} in common" in one_line(error)
        key_type, _, key = fetch_host_key(server.host, server.port, legacy=True, timeout=TIMEOUT)
        assert key_type == "ssh-rsa"
        known = tmp_path / "known_hosts"
        trust_host("old", server.host, server.port, key, known, show=False)
        # An ed25519 user key: with legacy=True an RSA key signs with ssh-rsa, which OpenSSH 8.8+ refuses by default.
        server.authorize(keys["ed25519"])
        with open_legacy(server, known, keys, key_file=keys["ed25519"]) as session:
            assert value in session.algorithms.values()


def test_modern_server_gets_modern_algorithms(trusted, modern_server, keys):
    with open_modern(modern_server, trusted, keys) as session:
        chosen = session.algorithms
    assert chosen["host_key"] == "ssh-ed25519" and "sha1" not in chosen["kex"]
    assert not chosen["cipher"].endswith("-cbc") and chosen["mac"] != "hmac-sha1"


# Credentials


def test_wrong_key_is_one_line(trusted, modern_server, keys):
    with pytest.raises(DeployError) as error:
        open_modern(modern_server, trusted, keys, key_file=keys["stranger"], name="rpi4")
    assert one_line(error) == f"rpi4: authentication failed for user {modern_server.user} with key {keys['stranger']}"


def test_no_key_and_no_agent_is_one_line(trusted, modern_server, keys, monkeypatch):
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    with pytest.raises(DeployError) as error:
        open_modern(modern_server, trusted, keys, key_file=None, use_agent=True, name="rpi4")
    assert one_line(error) == "rpi4: no credentials: no key file given and no ssh-agent (SSH_AUTH_SOCK is not set)"
    with pytest.raises(DeployError) as error:
        open_modern(modern_server, trusted, keys, key_file=None, use_agent=False, name="rpi4")
    assert "no credentials" in one_line(error)


def test_unreadable_keys_are_one_line(tmp_path, trusted, modern_server, keys):
    locked = tmp_path / "locked"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "a passphrase", "-f", str(locked)], check=True,
                   capture_output=True, timeout=TIMEOUT)
    with pytest.raises(DeployError) as error:
        open_modern(modern_server, trusted, keys, key_file=locked)
    assert one_line(error).startswith(f"{locked}: the key is protected by a passphrase") and "ssh-add" in str(error)
    with pytest.raises(DeployError) as error:
        open_modern(modern_server, trusted, keys, key_file=tmp_path / "missing")
    assert one_line(error) == f"{tmp_path / 'missing'}: key file not found"


@pytest.fixture
def agent(tmp_path, monkeypatch):
    """A real ssh-agent on a socket of our own; yields a function that adds keys to it."""
    sock = tmp_path / "agent.sock"
    process = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if sock.exists():
                break
            time.sleep(0.05)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        yield lambda key: subprocess.run(["ssh-add", "-q", str(key)], check=True, capture_output=True,
                                         timeout=TIMEOUT)
    finally:
        process.terminate()
        process.wait(timeout=5)


def test_agent_keys_work_with_legacy_server(trusted, legacy_server, keys, agent):
    with pytest.raises(DeployError) as error:
        open_legacy(legacy_server, trusted, keys, key_file=None, use_agent=True)
    assert "has no keys" in one_line(error)
    agent(keys["stranger"])
    with pytest.raises(DeployError) as error:
        open_legacy(legacy_server, trusted, keys, key_file=None, use_agent=True)
    assert one_line(error).endswith(f"authentication failed for user {legacy_server.user} with the 1 ssh-agent key(s)")
    agent(keys["rsa"])
    with open_legacy(legacy_server, trusted, keys, key_file=None, use_agent=True) as session:
        assert session.run("echo agent").stdout == "agent\n"


def test_nothing_listening_is_one_line():
    with pytest.raises(DeployError) as error:
        fetch_host_key("127.0.0.1", 1, timeout=TIMEOUT)
    assert one_line(error).startswith("127.0.0.1:1: cannot connect to 127.0.0.1:1: ")


# Uploads


@pytest.mark.parametrize("which", ["modern", "legacy"])
def test_upload_arrives_identical_and_hash_verified(tmp_path, trusted, modern_server, legacy_server, keys, payload,
                                                     which):
    target = tmp_path / "remote" / "model.bin"
    target.parent.mkdir()
    target.write_bytes(b"an older model")  # replaced in one step (the legacy server has no posix-rename)
    calls = []
    opener = open_modern if which == "modern" else open_legacy
    with opener(modern_server if which == "modern" else legacy_server, trusted, keys) as session:
        record = session.upload(payload, str(target), on_progress=lambda done, total: calls.append((done, total)))
    assert target.read_bytes() == payload.read_bytes()
    assert not (tmp_path / "remote" / "model.bin.part").exists()
    assert (record.size, record.bytes_sent, record.resumed_from) == (SIZE, SIZE, 0)
    assert record.verified_by == "sha256sum" and record.seconds > 0
    assert calls[0] == (0, SIZE) and calls[-1] == (SIZE, SIZE)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


def test_upload_resumes_a_partial_file(tmp_path, trusted, modern_server, keys, payload):
    target = tmp_path / "model.bin"
    half = SIZE // 2 + 12345
    (tmp_path / "model.bin.part").write_bytes(payload.read_bytes()[:half])
    (tmp_path / "model.bin.part.src").write_text(f"{sha256(payload)} {SIZE}\n")  # what an upload leaves there
    calls = []
    with open_modern(modern_server, trusted, keys) as session:
        record = session.upload(payload, str(target), on_progress=lambda done, total: calls.append(done))
    assert (record.resumed_from, record.bytes_sent, record.verified_by) == (half, SIZE - half, "sha256sum")
    assert calls[0] == half
    assert target.read_bytes() == payload.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["known_hosts", "local", "model.bin"]


@pytest.mark.parametrize("sidecar", [None, "another file", "same sha256, other size"])
def test_a_partial_not_proven_to_be_of_this_file_is_not_continued(tmp_path, trusted, modern_server, keys, payload,
                                                                  sidecar):
    """A true prefix without a sidecar, or a partial of another file (model A cut, then model B): sent afresh."""
    target = tmp_path / "model.bin"
    other = random.Random(8).randbytes(SIZE)
    partial = other if sidecar == "another file" else payload.read_bytes()
    (tmp_path / "model.bin.part").write_bytes(partial[:SIZE // 3])
    if sidecar == "another file":
        (tmp_path / "model.bin.part.src").write_text(f"{hashlib.sha256(other).hexdigest()} {SIZE}\n")
    elif sidecar:
        (tmp_path / "model.bin.part.src").write_text(f"{sha256(payload)} {SIZE + 1}\n")
    with open_modern(modern_server, trusted, keys) as session:
        record = session.upload(payload, str(target))
    assert (record.resumed_from, record.bytes_sent) == (0, SIZE)
    assert target.read_bytes() == payload.read_bytes()


class Unplugged(Exception):
    pass


def test_interrupted_upload_never_shows_under_the_final_name(tmp_path, trusted, modern_server, keys, payload):
    target, part = tmp_path / "model.bin", tmp_path / "model.bin.part"
    target.write_bytes(b"the model that works")
    seen = []

    def unplug(done, total):
        # The old file stays whole under its name for the whole upload.
        assert target.read_bytes() == b"the model that works"
        if done >= total * 0.4:
            seen.append(done)
            raise Unplugged

    with open_modern(modern_server, trusted, keys) as session:
        with pytest.raises(Unplugged):
            session.upload(payload, str(target), on_progress=unplug)
    assert target.read_bytes() == b"the model that works"
    assert part.stat().st_size == seen[0] and 0 < seen[0] < SIZE

    with open_modern(modern_server, trusted, keys) as session:
        record = session.upload(payload, str(target), on_progress=lambda done, total: seen.append(done))
    assert record.resumed_from == seen[0] and record.bytes_sent == SIZE - seen[0]
    assert target.read_bytes() == payload.read_bytes() and not part.exists()


def test_failed_verification_leaves_the_final_name_alone(tmp_path, trusted, modern_server, keys, payload):
    """A partial whose sidecar says it is ours, but whose bytes were damaged on the host: the check against the
    manifest catches it before the rename."""
    target, part = tmp_path / "model.bin", tmp_path / "model.bin.part"
    target.write_bytes(b"the model that works")
    corrupt = bytearray(payload.read_bytes()[:SIZE // 2])
    corrupt[100] ^= 0xFF
    part.write_bytes(bytes(corrupt))
    (tmp_path / "model.bin.part.src").write_text(f"{sha256(payload)} {SIZE}\n")
    with open_modern(modern_server, trusted, keys, name="rpi4") as session:
        with pytest.raises(DeployError) as error:
            session.upload(payload, str(target))
        assert one_line(error).startswith(f"rpi4: {part}: arrived corrupted: sha256 ")
        assert f"the stage manifest says {sha256(payload)}" in one_line(error)
        assert target.read_bytes() == b"the model that works" and not part.exists()
        record = session.upload(payload, str(target))
    assert record.resumed_from == 0 and target.read_bytes() == payload.read_bytes()


def test_upload_is_checked_against_the_manifest_not_the_local_file(tmp_path, trusted, modern_server, keys, payload):
    """The staged file changed after staging: what arrives is not what the manifest promises, so no rename."""
    from deploy.stage import StagedFile

    target = tmp_path / "model.bin"
    target.write_bytes(b"the model that works")
    claimed = StagedFile("model.bin", payload, SIZE, "0" * 64)
    with open_modern(modern_server, trusted, keys, name="rpi4") as session:
        with pytest.raises(DeployError) as error:
            session.upload(payload, str(target), expected=claimed)
    assert f"sha256 {sha256(payload)} (by sha256sum), the stage manifest says {'0' * 64}" in one_line(error)
    assert target.read_bytes() == b"the model that works"
    assert not (tmp_path / "model.bin.part").exists() and not (tmp_path / "model.bin.part.src").exists()


def test_without_a_sha256_tool_the_file_is_read_back(tmp_path, trusted, legacy_server, keys, payload):
    """As on Mac OS X 10.4 (md5 only): the sha256 is taken here, of the bytes read back from the host."""
    with open_legacy(legacy_server, trusted, keys) as session:
        session.hash_tools = (("nosuchsum", "nosuchsum {path}"),)
        record = session.upload(payload, str(tmp_path / "b.bin"))
    assert record.verified_by == READ_BACK
    assert (tmp_path / "b.bin").read_bytes() == payload.read_bytes()


def test_parse_digest_reads_each_tools_format():
    sha = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    md5 = "d41d8cd98f00b204e9800998ecf8427e"
    assert parse_digest(f"{sha}  model.bin\n") == sha
    assert parse_digest(f"\\{sha}  odd\\nname.bin\n") == sha  # GNU escapes odd names
    assert parse_digest(f"{sha.upper()} *model.bin\n") == sha
    assert parse_digest(f"SHA256 (model.bin) = {sha}\n") == sha  # BSD sha256
    assert parse_digest(f"welcome to the machine\n{sha}  model.bin\n") == sha
    assert parse_digest(f"{md5}  model.bin\n") is None
    assert parse_digest("shasum: model.bin: No such file or directory\n") is None


def test_upload_of_a_missing_file_is_one_line(tmp_path, trusted, modern_server, keys):
    with open_modern(modern_server, trusted, keys) as session:
        with pytest.raises(DeployError) as error:
            session.upload(tmp_path / "nothing.bin", str(tmp_path / "x"))
    assert one_line(error).startswith(str(tmp_path / "nothing.bin"))


# Commands


def test_run_returns_status_and_output(trusted, legacy_server, keys):
    with open_legacy(legacy_server, trusted, keys) as session:
        assert session.run("echo out; echo err >&2; exit 3") == (3, "out\n", "err\n")
        # More than a channel window on both streams at once must not stall.
        status, out, err = session.run("head -c 3000000 /dev/zero | tr '\\0' a; "
                                       "head -c 3000000 /dev/zero | tr '\\0' b >&2", timeout=20)
        assert (status, len(out), set(out), len(err), set(err)) == (0, 3000000, {"a"}, 3000000, {"b"})
        with pytest.raises(DeployError) as error:
            session.run("sleep 20", timeout=1)
        assert "still running after 1 s" in one_line(error)


def test_trust_an_inventory_host_or_say_it_has_no_ssh(tmp_path, modern_server):
    from deploy.inventory import Host

    known = tmp_path / "known_hosts"
    pi = Host("rpi4", ("pis",), {"target": "rpi4", "connection": "sftp", "address": modern_server.host,
                                 "port": modern_server.port, "ssh": {"user": "pi"}})
    with pytest.raises(DeployError) as error:
        trust_inventory_host(pi, "SHA256:nope", known, show=False)
    assert "nothing recorded" in one_line(error) and not known.exists()
    record = trust_inventory_host(pi, None, known, show=False)
    assert record.entry == f"[127.0.0.1]:{modern_server.port}" and known.exists()
    for name, connection in (("pixel6", "adb"), ("win98-p2-emu", "emulator"), ("win98", "ftp-serve")):
        host = Host(name, (), {"target": "pixel6", "connection": connection})
        with pytest.raises(DeployError) as error:
            trust_inventory_host(host, None, known, show=False)
        assert one_line(error).startswith(f"{name}: host {name} connects by ") and "it has no SSH" in str(error.value)
    with pytest.raises(DeployError, match="^pixel6: host pixel6 connects by adb; it has no SSH"):
        trust_inventory_host(Host("pixel6", (), {"connection": "adb"}), show=False)
