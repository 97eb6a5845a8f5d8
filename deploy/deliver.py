"""Deliver a stage to a host over its connection, and run the program there.

ftp-serve: our built-in FTP server on the link address; the old machine pulls with its own ftp client.
ftp-push:  we upload to an FTP server on the machine.      sftp: we upload over SSH (and build there for a bundle).
adb:       Android's adb push to /data/local/tmp.             manual: a folder to carry over by hand.
emulator:  this machine plays the host: the files go to a folder standing in for its disk (for Windows 98 by a real
           FTP client following FETCH.TXT against the built-in server on loopback) and the program runs under the
           profile's emulator.
vm:        a whole emulated machine (deploy/vm.py) on a private link: it boots, fetches the stage from the built-in
           FTP server with its own FTP client onto its FAT32 disk, and runs the program there.
"""

import os
import shlex
import shutil
import subprocess
from pathlib import Path

from deploy import processes
from deploy.errors import DeployError
from deploy.manifest import sha256_file
from deploy.runner import prepare_emulator, run_env
from deploy.stream import run_steps
from deploy.verify import check_file

FTP_CLIENTS = ["inetutils-ftp", "tnftp", "ftp"]  # Debian clients that take commands on stdin, like ftp.exe


def machine_dir(host, stage):
    """The folder that stands in for an emulated host's disk."""
    return stage.directory.parent / ".machines" / host.name


def remote_dir(host):
    return host.get("path") or "llama"


def describe(host, profile, plan):
    """What delivery will do, for --dry."""
    link = (host.get("link") or {}).get("address")
    connection = host.connection
    if connection == "ftp-serve":
        return [f"serve the stage read-only by FTP on {link}:{(host.get('ftp') or {}).get('port', 21)}, "
                f"write FETCH.TXT and GET.BAT, and wait until {host.get('address')} has fetched every file"]
    if connection == "ftp-push":
        return [f"upload by FTP to {host.get('address')}:{(host.get('ftp') or {}).get('port', 21)} "
                f"{remote_dir(host)}, each file under a temporary name, its size and sha256 checked against the "
                f"manifest (HASH, or read back), then renamed"]
    if connection == "sftp":
        ssh = host.get("ssh") or {}
        lines = [f"upload over SFTP to {ssh.get('user')}@{host.get('address')}:{host.get('port', 22)}"
                 f":{remote_dir(host)}, its size and sha256 checked against the manifest, then renamed"]
        if plan.is_bundle:
            lines.append("build there: " + " ".join(plan.compile_command()))
        return lines
    if connection == "adb":
        return [f"adb push to {remote_dir(host)} and chmod the program"]
    if connection == "manual":
        return ["leave the stage folder to carry over by hand"]
    if connection == "vm":
        from deploy.vmimage import machine_spec

        link = host.get("link") or {}
        return [f"boot {' '.join(machine_spec(profile)['command'])} with {profile['memory']['ram_mb']} MB and a FAT32 "
                f"disk; in a network namespace of its own, serve the stage by FTP on {link.get('address')} and let "
                f"the machine ({host.get('address')}) fetch it with its FTP client; run there, then power off"]
    how = "fetch with a real FTP client from the built-in server on 127.0.0.1" if host.get("fetch") == "ftp" and \
        profile["os"] == "windows98" else "copy"
    return [f"{how} into the emulated host's folder, run under {' '.join(profile.emulator) or 'this machine'}"]


def run_line(profile, args):
    """The program's command line on the host, as a list."""
    files = profile["files"]
    program = files["program"] if profile["os"] == "windows98" else f"./{files['program']}"
    return [program, files["model"], "-z", files["tokenizer"], *args]


def command_line(profile, args):
    """The line to type on the host: quoted for COMMAND.COM on Windows 98, for a POSIX shell elsewhere."""
    words = run_line(profile, args)
    return windows_join(words) if profile["os"] == "windows98" else shlex.join(words)


def windows_join(words):
    """Join words the way the C runtime's argument parser splits them (and COMMAND.COM leaves them alone): a word
    with a blank, a quote, a redirection or pipe character, or nothing, goes in double quotes, with its own double
    quotes (and the backslashes before them) escaped."""
    def quote(word):
        if word and not any(ch in word for ch in ' \t"<>|&'):
            return word
        escaped, backslashes = [], 0
        for ch in word:
            if ch == "\\":
                backslashes += 1
                continue
            if ch == '"':
                escaped.append("\\" * (2 * backslashes + 1) + '"')
            else:
                escaped.append("\\" * backslashes + ch)
            backslashes = 0
        escaped.append("\\" * (2 * backslashes))
        return '"' + "".join(escaped) + '"'

    return " ".join(quote(word) for word in words)


def can_run(host):
    """Whether we can start the program on the host ourselves (otherwise a person types the line there)."""
    return host.connection in ("emulator", "vm", "sftp", "adb")


def deliver(host, profile, plan, stage, options, say):
    handler = {"emulator": _to_emulator, "ftp-serve": _ftp_serve, "ftp-push": _ftp_push, "sftp": _sftp,
               "adb": _adb, "manual": _manual, "vm": _vm}[host.connection]
    handler(host, profile, plan, stage, options, say)


def _manual(host, profile, plan, stage, options, say):
    say(f"copy every file of {stage.directory} to the machine (binary mode) and run: "
        + command_line(profile, options.run_args))


def _to_emulator(host, profile, plan, stage, options, say):
    disk = machine_dir(host, stage)
    disk.mkdir(parents=True, exist_ok=True)
    pending = [f for f in stage.files if not ((disk / f.name).exists() and sha256_file(disk / f.name) == f.sha256)]
    if not pending:
        say(f"unchanged: {disk} already holds every file")
        return
    incoming = disk / ".incoming"  # beside the final names, on the same file system, so the rename is atomic
    shutil.rmtree(incoming, ignore_errors=True)
    incoming.mkdir()
    if host.get("fetch") == "ftp" and profile["os"] == "windows98":
        _fetch_like_windows98(host, stage, incoming, say)
    else:
        for item in pending:
            shutil.copyfile(item.path, incoming / item.name)
        say(f"copied {len(pending)} files to {disk}")
    for item in pending:
        check_file(disk / item.name, incoming / item.name, item)
    for item in pending:
        if item.name == profile["files"]["program"]:
            (incoming / item.name).chmod(0o755)
        os.replace(incoming / item.name, disk / item.name)
    shutil.rmtree(incoming, ignore_errors=True)


def _vm(host, profile, plan, stage, options, say):
    from deploy import vm

    vm.deliver(host, profile, stage, machine_dir(host, stage), say)


def _fetch_like_windows98(host, stage, folder, say):
    """Serve the stage on loopback and let a real command-line FTP client follow FETCH.TXT into `folder`, in active
    mode (the clients listed default to it, as Windows 98's ftp.exe does)."""
    from deploy.ftpserve import StageServer

    client = next((shutil.which(name) for name in FTP_CLIENTS if shutil.which(name)), None)
    if client is None:
        raise DeployError(host.name, f"no command-line FTP client; install one with: apt-get install {FTP_CLIENTS[0]}")
    with StageServer(stage.directory, stage.names(), bind=("127.0.0.1", 0)) as server:
        say(f"serving {len(stage.files)} files on {server.address[0]}:{server.address[1]}; {Path(client).name} "
            f"follows {server.fetch_script.name}")
        script = server.fetch_script.read_bytes().decode("ascii").replace("\r\n", "\n")
        done = processes.run([client, "-n"], input=script, text=True, cwd=folder, timeout=600)
        if done.returncode != 0:
            raise DeployError(host.name, f"{Path(client).name} failed: {done.stderr.strip()[:200]}")
        summary = server.wait_complete(timeout=60)
    sent = ", ".join(f"{record.file} {record.bytes:,} B in {record.seconds:.2f} s" for record in summary)
    say(f"fetched: {sent}")


def _ftp_serve(host, profile, plan, stage, options, say):
    from deploy.ftpserve import RichProgress, StageServer, check_link_address, client_command, typed_session

    link, ftp = host.get("link") or {}, host.get("ftp") or {}
    check_link_address(link["address"], link.get("netmask"), link.get("interface"))
    with RichProgress({item.name: item.size for item in stage.files}) as progress:
        server = StageServer(stage.directory, stage.names(), bind=(link["address"], ftp.get("port", 21)),
                             user=ftp.get("user"), password_env=ftp.get("password_env"), stay=options.stay,
                             on_progress=progress)
        say(f"first time on {host.name} ({host.get('address')}), type: " + " / ".join(
            typed_session(server.address, stage.names(), ftp.get("user"))))
        say(f"afterwards: GET (or {client_command(server.address)})")
        summary = server.serve_until_complete(options.timeout)
    for record in summary:
        say(f"sent {record.file}: {record.bytes:,} bytes in {record.seconds:.1f} s to {record.client}")


def _ftp_push(host, profile, plan, stage, options, say):
    from deploy.ftppush import push_files

    ftp = host.get("ftp") or {}
    password = None
    if ftp.get("password_env"):
        password = os.environ.get(ftp["password_env"])
        if not password:
            raise DeployError(host.name, f"${ftp['password_env']} is not set: it must hold the FTP password for "
                                         f"{ftp.get('user', 'anonymous')} on {host['address']} (its ftp: password_env)")
    pushed = push_files(host["address"], ftp.get("port", 21), stage.files, remote_dir=host.get("path"),
                        user=ftp.get("user", "anonymous"), password=password)
    for record in pushed:
        say(f"{record.file}: {record.bytes:,} bytes sent, sha256 checked by {record.verified_by}")


def _ssh_session(host):
    from deploy import sftp

    ssh = host.get("ssh") or {}
    key = ssh.get("key_file")
    known = ssh.get("known_hosts")
    return sftp.connect(host["address"], host.get("port", 22), ssh.get("user"),
                        key_file=os.path.expanduser(key) if key else None, use_agent=ssh.get("agent", not key),
                        legacy=bool(ssh.get("legacy")), name=host.name,
                        known_hosts_path=os.path.expanduser(known) if known else sftp.DEFAULT_KNOWN_HOSTS)


def _sftp(host, profile, plan, stage, options, say):
    folder = remote_dir(host)
    with _ssh_session(host) as session:
        _remote(session, host, f"mkdir -p {shlex.quote(folder)}")
        for item in stage.files:
            record = session.upload(item.path, f"{folder}/{item.name}", expected=item)
            say(f"{item.name}: {item.size:,} bytes, sha256 checked by {record.verified_by}")
        if plan.is_bundle:
            _remote(session, host, f"cd {shlex.quote(folder)} && " + " ".join(plan.compile_command()))
            say("built on the host: " + " ".join(plan.compile_command()))
        _remote(session, host, f"chmod 755 {shlex.quote(folder)}/{profile['files']['program']}")


def _remote(session, host, command):
    status, out, err = session.run(command)
    if status != 0:
        raise DeployError(host.name, f"`{command}` failed: {(err or out).strip()[:200]}")
    return out


def _adb(host, profile, plan, stage, options, say):
    from deploy.adb import Adb

    device = Adb((host.get("adb") or {}).get("serial"))
    for item in stage.files:
        device.push(item.path, remote_dir(host), item.name, item.sha256,
                    executable=item.name == profile["files"]["program"])
    say(f"pushed {len(stage.files)} files to {remote_dir(host)}")


def run_time_limit(profile, stage, run_args):
    """Seconds an emulated run may take before it counts as hung: an hour, or for big models a second per MB of model
    per step (the whole emulated Pentium II streams its FAT32 disk at about 13 MB/s; the user-mode emulators run
    in-memory models far faster), so that a slow, long run of a large model is not cut short."""
    model_bytes = sum(f.size for f in stage.files
                      if f.name not in (profile["files"]["program"], profile["files"]["tokenizer"]))
    return max(3600.0, (run_steps(run_args) or 1024) * model_bytes / 1e6)


def run(host, profile, plan, stage, options, echo=None):
    """Run the delivered program on the host; returns a CompletedProcess with text stdout and stderr.
    `echo(data, is_stderr)` sees the output as it comes (for `invoke run --host`)."""
    args = run_line(profile, options.run_args)
    limit = run_time_limit(profile, stage, options.run_args)
    if host.connection == "emulator":
        disk = machine_dir(host, stage)
        prepare_emulator(plan)
        command = [*profile.emulator, str(disk / profile["files"]["program"]), *args[1:]]
        try:
            if echo is None:
                done = processes.run(command, cwd=disk, env=run_env(plan), timeout=limit)
            else:
                done = processes.run_echoing(command, echo, cwd=disk, env=run_env(plan))
        except subprocess.TimeoutExpired:
            under = f" under {profile.emulator[0]}" if profile.emulator else ""
            raise DeployError(host.name, f"the program did not finish within {limit:.0f} s{under}; stopped") from None
        return subprocess.CompletedProcess(command, done.returncode, _text(done.stdout), _text(done.stderr))
    if host.connection == "vm":
        from deploy import vm

        done = vm.run(host, profile, machine_dir(host, stage), args, timeout=limit)
        if echo is not None:
            echo(done.stdout.encode(), False)
            echo(done.stderr.encode(), True)
        return done
    if host.connection == "sftp":
        with _ssh_session(host) as session:
            status, out, err = session.run(f"cd {shlex.quote(remote_dir(host))} && " + shlex.join(args), echo=echo)
        return subprocess.CompletedProcess(args, status, out, err)
    if host.connection == "adb":
        from deploy.adb import Adb

        status, out, err = Adb((host.get("adb") or {}).get("serial")).run(
            f"cd {shlex.quote(remote_dir(host))} && " + shlex.join(args), echo=echo)
        return subprocess.CompletedProcess(args, status, out, err)
    raise DeployError(host.name, f"cannot run the program over {host.connection}: on the machine, type: "
                                 + command_line(profile, options.run_args))


def _text(data):
    return data.decode("utf-8", "replace").replace("\r\n", "\n")
