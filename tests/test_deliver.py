"""deploy.deliver's transports on this machine: what arrives is checked against the stage manifest before it takes
its final name, and credentials are checked before any connection."""

import shutil

import pytest

from deploy import deliver
from deploy.errors import DeployError
from deploy.inventory import Host
from deploy.pipeline import Options
from deploy.profile import load_profile
from deploy.stage import Stage, StagedFile, stage_files
from tests.test_ftp import Target


@pytest.fixture
def files(tmp_path):
    folder = tmp_path / "built"
    folder.mkdir()
    contents = {"RUN.EXE": b"MZ program", "MODEL.BIN": bytes(range(256)) * 64, "TOK.BIN": b"\n tokens \r\n" * 10}
    for name, data in contents.items():
        (folder / name).write_bytes(data)
    return {name: folder / name for name in contents}


def lying(stage, name):
    """The stage with the manifest entry of `name` promising other bytes than the file holds."""
    return Stage(stage.host, stage.directory, [StagedFile(f.name, f.path, f.size, "0" * 64) if f.name == name else f
                                               for f in stage.files], reused=False)


@pytest.mark.parametrize("how", ["copy", "ftp"])
def test_emulated_host_gets_nothing_that_differs_from_the_manifest(tmp_path, files, how):
    if how == "ftp" and not any(shutil.which(c) for c in deliver.FTP_CLIENTS):
        pytest.skip("needs a command-line FTP client (inetutils-ftp)")
    host = Host("box", (), {"target": "win98-p2", "connection": "emulator",
                            **({"fetch": "ftp"} if how == "ftp" else {})})
    profile = load_profile("win98-p2")
    stage = stage_files("box", files, tmp_path / "stage")
    options = Options("m", "t")
    said = []
    disk = deliver.machine_dir(host, stage)
    disk.mkdir(parents=True)
    (disk / "MODEL.BIN").write_bytes(b"the model that works")
    with pytest.raises(DeployError) as error:
        deliver.deliver(host, profile, None, lying(stage, "MODEL.BIN"), options, said.append)
    assert str(error.value).startswith(f"{disk / 'MODEL.BIN'}: arrived corrupted: sha256 ")
    assert "the stage manifest says " + "0" * 64 in str(error.value)
    assert (disk / "MODEL.BIN").read_bytes() == b"the model that works"  # nothing renamed over it
    deliver.deliver(host, profile, None, stage, options, said.append)
    assert sorted(p.name for p in disk.iterdir()) == sorted(files)  # and no temporary folder left
    assert all((disk / name).read_bytes() == path.read_bytes() for name, path in files.items())


def test_ftp_push_with_an_unset_password_variable_never_connects(tmp_path, files, monkeypatch):
    root = tmp_path / "remote"
    root.mkdir()
    target = Target(root)
    connections = []
    target.server.handler.on_connect = lambda self: connections.append(self.remote_ip)
    try:
        host = Host("dosbox", (), {"target": "win98-p2", "connection": "ftp-push", "address": "127.0.0.1",
                                   "ftp": {"port": target.address[1], "user": "old",
                                           "password_env": "RETRO_TEST_FTP_PASSWORD"}})
        stage = stage_files("dosbox", files, tmp_path / "stage")
        monkeypatch.delenv("RETRO_TEST_FTP_PASSWORD", raising=False)
        with pytest.raises(DeployError) as error:
            deliver.deliver(host, load_profile("win98-p2"), None, stage, Options("m", "t"), print)
        assert str(error.value) == ("dosbox: $RETRO_TEST_FTP_PASSWORD is not set: it must hold the FTP password for "
                                    "old on 127.0.0.1 (its ftp: password_env)")
        assert connections == [] and list(root.iterdir()) == []

        monkeypatch.setenv("RETRO_TEST_FTP_PASSWORD", "machine")
        said = []
        deliver.deliver(host, load_profile("win98-p2"), None, stage, Options("m", "t"), said.append)
    finally:
        target.stop()
    assert connections == ["127.0.0.1"]
    assert sorted(p.name for p in root.iterdir()) == sorted(files)
    assert all("sha256 checked by reading it back" in line for line in said)
