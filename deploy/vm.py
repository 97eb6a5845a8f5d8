"""The `vm` connection: a whole emulated machine (qemu-system, the profile's `machine` block) on a private link.

deliver: make its FAT32 disk once, make the link (deploy/netns.py: a namespace with a tap, this side at the link
address), serve the stage there with the built-in FTP server in a child process, and boot the machine: its init
fetches FETCH.TXT as a person would the first time, runs it with a real FTP client (active mode, after `binary`)
into a folder on the disk, checks each file's sha256 against the stage manifest, moves them into place and powers off.
run: boot it again without a network, run the program from the disk, power off; its output comes back framed in
base64 on the serial console.

Each boot gets its job as a second cpio archive appended to the image's initramfs (the kernel unpacks both).
"""

import base64
import dataclasses
import ipaddress
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

from deploy import processes
from deploy.atomic import partial_name, write_atomic
from deploy.errors import DeployError
from deploy.profile import ROOT
from deploy.vmimage import build_image, cpio, machine_spec

GUEST_INTERFACE = "eth0"
DISK_LABEL = "LLAMA"
PARTITION_START = 2048  # sectors: where partitioning tools put the first partition
INCOMING = "NEW"  # the folder on the machine's disk files arrive in before they are checked and moved into place
BOOT_SECONDS = 240  # a boot under TCG on a busy 2-core machine stays well below this
FETCH_BYTES_PER_SECOND = 1 << 20  # the slowest the emulated e1000 link moves files, for the time limit


@dataclasses.dataclass
class Boot:
    console: str  # everything the machine printed, CR removed
    seconds: float  # wall time from starting qemu to its exit
    booted: float  # the guest's uptime when init started the job
    memory: dict  # MemTotal, MemFree, MemAvailable after boot, in kB
    blocks: dict  # name -> bytes the job printed framed
    marks: list  # the job's "@@ word ..." lines, split


def _parse(console):
    booted, memory, blocks, marks, current = None, {}, {}, [], None
    for line in console.splitlines():
        if current is not None:
            if line == f"@@ end {current[0]}":
                blocks[current[0]] = base64.b64decode("".join(current[1]))
                current = None
            elif re.fullmatch(r"[A-Za-z0-9+/=]+", line):
                current[1].append(line)
            continue
        if not line.startswith("@@ "):
            continue
        words = line[3:].split()
        if words[:1] == ["begin"]:
            current = (words[1], [])
        elif words[:1] == ["booted"]:
            booted = float(words[1])
        elif words and words[0].endswith(":") and len(words) > 1 and words[1].isdigit():
            memory[words[0][:-1]] = int(words[1])
        else:
            marks.append(words)
    return booted, memory, blocks, marks


def _frame(name, path):
    """Shell lines printing a file framed in base64 (the serial line then carries any byte)."""
    return f'echo "@@ begin {name}"; base64 {path}; echo "@@ end {name}"\n'


def make_disk(path, size_mb):
    """A raw disk of `size_mb` (sparse) with one FAT32 partition, as a Windows 98 box's: an MBR partition table with
    one partition of type 0x0C (FAT32, LBA) from sector 2048, formatted by mkfs.vfat. Kept when it exists."""
    path = Path(path)
    if path.exists():
        return path
    sectors = size_mb * 2048
    if sectors <= PARTITION_START + 66 * 2048:
        raise DeployError(path, f"{size_mb} MB is too small for FAT32 (at least 67 MB)")
    tmp = partial_name(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(tmp, "wb") as disk:
        disk.truncate(sectors * 512)
        entry = bytes([0x00, 0xFE, 0xFF, 0xFF, 0x0C, 0xFE, 0xFF, 0xFF]) + \
            (PARTITION_START).to_bytes(4, "little") + (sectors - PARTITION_START).to_bytes(4, "little")
        disk.seek(446)
        disk.write(entry)
        disk.seek(510)
        disk.write(b"\x55\xaa")
    done = processes.run(["mkfs.vfat", "-F", "32", "-n", DISK_LABEL, "--offset", str(PARTITION_START), str(tmp),
                          str((sectors - PARTITION_START) // 2)], text=True, timeout=300)
    if done.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise DeployError(tmp, f"mkfs.vfat failed: {(done.stderr or done.stdout).strip()[-200:]}")
    os.replace(tmp, path)
    return path


def boot(profile, image, disk, job, link=None, timeout=BOOT_SECONDS):
    """Boot the machine with `job` (shell lines its init sources), wait until it powers off; a Boot. With `link`
    (a netns.Link), the machine's e1000 is on the link's tap, inside its namespace."""
    machine = machine_spec(profile)
    initrd = Path(disk).with_name(".initrd-with-job")
    write_atomic(initrd, image.initramfs.read_bytes() + cpio({"job.sh": (job.encode(), 0o644)}))
    command = [*machine["command"], "-m", str(profile["memory"]["ram_mb"]), "-nodefaults", "-display", "none",
               "-serial", "stdio", "-no-reboot", "-kernel", str(image.kernel), "-initrd", str(initrd),
               "-append", "console=ttyS0 quiet panic=-1",
               "-drive", f"file={disk},format=raw,if=ide,index=0,media=disk"]
    if link is not None:
        # romfile= : no iPXE option ROM (the kernel drives the card; Debian ships the ROM only as a recommendation)
        command += ["-netdev", f"tap,id=link,ifname={link.tap},script=no,downscript=no",
                    "-device", "e1000,netdev=link,romfile="]
        command = link.command(command)
    start = time.monotonic()
    try:
        done = processes.run(command, input=b"", timeout=timeout)
    except subprocess.TimeoutExpired as expired:
        console = (expired.stdout or b"").decode("utf-8", "replace").replace("\r", "")
        raise DeployError(f"{profile.name} machine", f"did not power off within {timeout:.0f} s; it printed last: "
                          + _tail(console)) from None
    finally:
        initrd.unlink(missing_ok=True)
    console = done.stdout.decode("utf-8", "replace").replace("\r", "")
    if done.returncode != 0:
        raise DeployError(machine["command"][0], f"failed (exit status {done.returncode}): "
                          + _tail(done.stderr.decode("utf-8", "replace") or console))
    booted, memory, blocks, marks = _parse(console)
    if booted is None:
        raise DeployError(f"{profile.name} machine", "did not reach its init: " + _tail(console))
    return Boot(console, time.monotonic() - start, booted, memory, blocks, marks)


def _tail(text):
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " / ".join(lines[-3:])[:300] if lines else "nothing"


def fetch_job(client_address, prefix, server, port, script_commands, files):
    """The guest's shell lines: address the card, mount the disk, fetch FETCH.TXT by hand, run it, check, move."""
    first = "\n".join(script_commands)
    named = server if port == 21 else ""  # on another port, the commands open it (as FETCH.TXT does)
    checks = "".join(f"check {shlex.quote(item.name)} {item.sha256}\n" for item in files)
    moves = "".join(f"mv -f {shlex.quote(item.name)} /c/{shlex.quote(item.name)}\n" for item in files)
    return f"""ip link set {GUEST_INTERFACE} up
ip addr add {client_address}/{prefix} dev {GUEST_INTERFACE}
mount -t vfat /dev/sda1 /c || echo "@@ failed: cannot mount the FAT32 disk"
mkdir -p /c/{INCOMING} && cd /c/{INCOMING} && rm -f ./*
tries=0
until ping -c 1 -W 1 {server} >/dev/null 2>&1 || [ $tries -ge 60 ]; do tries=$((tries + 1)); done
cat > /tmp/first.txt <<'EOF'
{first}
EOF
ftp -n -v {named} < /tmp/first.txt > /tmp/ftp.log 2>&1
tr -d '\\r' < FETCH.TXT > /tmp/fetch.txt
ftp -n -v {named} < /tmp/fetch.txt >> /tmp/ftp.log 2>&1
{_frame("ftp", "/tmp/ftp.log")}ok=1
check() {{
    set -- "$1" "$2" "$(sha256sum "$1" 2>/dev/null | cut -d' ' -f1)" "$(stat -c %s "$1" 2>/dev/null)"
    echo "@@ sha256 $1 ${{3:-none}} ${{4:-0}}"
    [ "$2" = "$3" ] || ok=0
}}
{checks}if [ $ok = 1 ]; then
{moves}mv -f FETCH.TXT /c/FETCH.TXT && cd /c && rmdir {INCOMING} && sync && echo "@@ fetched"
fi
"""


def run_job(argv):
    return f"""mount -t vfat /dev/sda1 /c || echo "@@ failed: cannot mount the FAT32 disk"
cd /c
{shlex.join(argv)} > /tmp/out 2> /tmp/err
echo "@@ status $?"
{_frame("stdout", "/tmp/out")}{_frame("stderr", "/tmp/err")}"""


def _record_path(disk):
    return Path(disk).with_name("disk.json")


def deliver(host, profile, stage, folder, say):
    """Put the stage on the machine's disk through the link; the machine fetches it with its FTP client."""
    from deploy.ftpserve import SCRIPT, fetch_commands
    from deploy.netns import Link

    link, ftp = host["link"], host.get("ftp") or {}  # the inventory checked both addresses
    guest = host["address"]
    prefix = _prefix(link)
    if profile["disk"].get("filesystem") != "FAT32":
        raise DeployError(profile.path, f"disk.filesystem is {profile['disk'].get('filesystem')}: a whole machine's "
                                        "disk is made FAT32 (mkfs.vfat), as the Windows 98 box's was")
    disk = make_disk(Path(folder) / "disk.img", profile["disk"]["size_mb"])
    wanted = {item.name: item.sha256 for item in stage.files}
    record = _record_path(disk)
    if record.exists() and json.loads(record.read_text()) == wanted:
        say(f"unchanged: the machine's disk ({disk}) already holds every file")
        return
    image = build_image(profile, say=say)
    port = ftp.get("port", 21)
    total = sum(item.size for item in stage.files)
    with Link(f"{link['address']}/{prefix}", prefix=host.name[:6]) as net:
        server = _start_server(net, stage, link["address"], port)
        try:
            say(f"serving {len(stage.files)} files on {link['address']}:{port} inside network namespace {net.name}; "
                f"booting the machine ({guest}) to fetch them")
            result = boot(profile, image, disk, fetch_job(guest, prefix, link["address"], port,
                                                         fetch_commands((link["address"], port), [SCRIPT]),
                                                         stage.files),
                          link=net, timeout=BOOT_SECONDS + total / FETCH_BYTES_PER_SECOND)
            got = {words[1]: words[2] for words in result.marks if words[0] == "sha256"}
            bad = [name for name, digest in wanted.items() if got.get(name) != digest]
            if bad or ["fetched"] not in result.marks:
                transcript = result.blocks.get("ftp", b"").decode("utf-8", "replace")
                raise DeployError(host.name, f"the machine did not fetch {', '.join(bad)} intact: "
                                  + _tail(transcript or result.console) if bad else
                                  "the machine fetched every file but could not move them into place: "
                                  + _tail(result.console))
            summary = _stop_server(server)
        finally:
            processes.stop(server)
    write_atomic(record, json.dumps(wanted, indent=2) + "\n")
    sent = ", ".join(f"{t['file']} {t['bytes']:,} B in {t['seconds']:.2f} s" for t in summary["transfers"])
    data = "active (PORT)" if "PORT" in summary["commands"] else "passive"
    say(f"booted in {result.booted:.1f} s (guest), {result.memory.get('MemAvailable', 0) // 1024} MB available; "
        f"fetched in {data} mode: {sent}; sha256 checked on the machine, then moved into place "
        f"({result.seconds:.1f} s in all)")


def _prefix(link):
    return ipaddress.ip_network(f"0.0.0.0/{link.get('netmask', '255.255.255.0')}").prefixlen


def run(host, profile, folder, argv, timeout=3600):
    """Boot the machine without a network, run argv on its disk; a CompletedProcess with text out and err."""
    disk = Path(folder) / "disk.img"
    if not disk.exists():
        raise DeployError(host.name, f"the machine has no disk yet ({disk}): deploy to it first")
    result = boot(profile, build_image(profile), disk, run_job(argv), timeout=timeout)
    status = next((int(words[1]) for words in result.marks if words[0] == "status"), None)
    if status is None:
        raise DeployError(host.name, "the program did not finish on the machine: " + _tail(result.console))
    text = {name: result.blocks.get(name, b"").decode("utf-8", "replace") for name in ("stdout", "stderr")}
    return subprocess.CompletedProcess(argv, status, text["stdout"], text["stderr"])


# --- the FTP server inside the namespace: this module run as a program, in a child under `ip netns exec`

def _start_server(net, stage, address, port):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    child = processes.popen(net.command([sys.executable, "-m", "deploy.vm", str(stage.directory), address, str(port),
                                         *stage.names()]),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    line = child.stdout.readline()
    if not line.startswith("listening"):
        processes.stop(child)
        raise DeployError(f"ftp://{address}:{port}", "the server in the link's namespace did not start: "
                          + (line.strip() or child.stderr.read().strip()[-300:]))
    return child


def _stop_server(child, timeout=60):
    """The server ends once every file went out; its summary is one JSON line."""
    try:
        out, err = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise DeployError("ftp server", f"did not finish within {timeout} s after the machine powered off") from None
    if child.returncode != 0:
        raise DeployError("ftp server", err.strip()[-300:] or f"exit status {child.returncode}")
    return json.loads(out.strip().splitlines()[-1])


def _serve(stage_dir, address, port, names):
    import logging

    from deploy.ftpserve import StageServer

    commands = []

    class Commands(logging.Handler):  # pyftpdlib logs each command received at DEBUG as "<- WORD args"
        def emit(self, record):
            found = re.search(r"<- (\S+)", record.getMessage())
            if found:
                commands.append(found.group(1).upper())

    logger = logging.getLogger("pyftpdlib")
    logger.addHandler(Commands())
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    server = StageServer(stage_dir, names, bind=(address, int(port)))
    print("listening", *server.address, flush=True)
    summary = server.serve_until_complete(timeout=3600)
    print(json.dumps({"transfers": [dataclasses.asdict(t) for t in summary], "commands": commands}), flush=True)


if __name__ == "__main__":
    try:
        _serve(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:])
    except DeployError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
