"""A bootable Pentium II image from Debian packages alone: the i386 kernel, busybox, the kernel modules for the NIC,
the IDE disk and FAT32, and a real FTP client with its shared libraries, in an initramfs with our own init.

The packages are fetched with `apt-get download` and unpacked with `dpkg-deb -x` under build/, never installed on
this machine. The image is cached and built again when its inputs change: the packages' versions, the init script,
the module list and this builder's format.
"""

import contextlib
import dataclasses
import gzip
import hashlib
import io
import json
import re
import shutil
import struct
from pathlib import Path

from deploy import processes
from deploy.atomic import write_atomic
from deploy.errors import DeployError
from deploy.profile import ROOT

MACHINE_DIR = ROOT / "build" / "p2-machine"
FORMAT = 2  # bump when the image's layout changes
LIBRARY_DIRS = ["lib/i386-linux-gnu", "usr/lib/i386-linux-gnu", "lib", "usr/lib"]

INIT = r"""#!/bin/busybox sh
# The machine's init: mount the kernel's file systems, load the drivers, report, run the job, power off.
/bin/busybox mkdir -p /proc /sys /dev /tmp /c /root
/bin/busybox --install -s /bin
export PATH=/bin:/usr/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for module in $(cat /etc/modules.load); do insmod "/lib/modules/$module" || echo "@@ insmod $module failed"; done
echo "@@ booted $(cut -d' ' -f1 /proc/uptime) s"
grep -E '^(MemTotal|MemFree|MemAvailable):' /proc/meminfo | sed 's/^/@@ /'
[ -f /job.sh ] && . /job.sh
echo "@@ job ended"
cd /
sync
umount /c 2>/dev/null
reboot -f
"""


@dataclasses.dataclass
class Image:
    kernel: Path
    initramfs: Path
    key: str  # hash of the inputs
    packages: dict  # name -> version
    built: bool  # False when the cached image was reused


def machine_spec(profile):
    machine = profile.get("machine")
    if not machine:
        raise DeployError(profile.path, "has no 'machine' block: it cannot be booted as a whole machine")
    return machine


def build_image(profile, directory=None, say=lambda what: None):
    """The kernel and initramfs of the profile's machine, built under `directory` when its inputs changed."""
    machine = machine_spec(profile)
    directory = Path(directory or MACHINE_DIR)
    packages = resolve_packages(machine["guest_packages"], directory)
    key = image_key(machine, packages)
    image_dir = directory / key
    kernel, initramfs = image_dir / "vmlinuz", image_dir / "initramfs.cpio.gz"
    if kernel.exists() and initramfs.exists():
        return Image(kernel, initramfs, key, packages, built=False)
    say(f"building the machine image from {len(packages)} Debian packages (once; cached in {image_dir})")
    root = unpack(packages, directory / "debs", directory / "root" / key)
    kernel_version = _kernel_version(root)
    files = {"init": (INIT.encode(), 0o755), "bin/busybox": (_read(root, "bin/busybox"), 0o755),
             "etc/services": (b"ftp 21/tcp\n", 0o644),
             "etc/passwd": (b"root:x:0:0:root:/root:/bin/sh\n", 0o644),
             "etc/group": (b"root:x:0:\n", 0o644)}
    loads = []
    for path in module_load_order(root / "lib" / "modules" / kernel_version, machine["modules"]):
        files[f"lib/modules/{path.name}"] = (path.read_bytes(), 0o644)
        loads.append(path.name)
    files["etc/modules.load"] = ("\n".join(loads) + "\n").encode(), 0o644
    client = root / machine["ftp_client"]
    files["usr/bin/ftp"] = (client.read_bytes(), 0o755)
    for name, path in shared_libraries(root, client).items():
        files[name] = (path.read_bytes(), 0o755)
    image_dir.mkdir(parents=True, exist_ok=True)
    packed = gzip.compress(cpio(files), compresslevel=6, mtime=0)
    # padded to 4 bytes: the kernel reads a cpio appended after it (the job, deploy/vm.py) only at such an offset
    write_atomic(initramfs, packed + b"\0" * (-len(packed) % 4))
    shutil.copyfile(root / "boot" / f"vmlinuz-{kernel_version}", image_dir / ".vmlinuz.part")
    (image_dir / ".vmlinuz.part").replace(kernel)
    write_atomic(image_dir / "packages.json", json.dumps({"kernel": kernel_version, "packages": packages,
                                                          "modules": loads}, indent=2) + "\n")
    shutil.rmtree(directory / "root" / key, ignore_errors=True)
    return Image(kernel, initramfs, key, packages, built=True)


def image_key(machine, packages, init=INIT):
    """What the image is made of, hashed: it is built again when any of it changes."""
    return hashlib.sha256(json.dumps({"format": FORMAT, "packages": packages, "init": init,
                                      "modules": machine["modules"], "ftp": machine["ftp_client"]},
                                     sort_keys=True).encode()).hexdigest()[:16]


# --- packages

def _apt_show(names):
    """{name: fields} of each package's candidate version, in one `apt-cache show` (names it lacks are left out)."""
    done = processes.run(["apt-cache", "show", "--no-all-versions", *names], text=True, timeout=300)
    found = {}
    for paragraph in done.stdout.split("\n\n"):
        fields, last = {}, None
        for line in paragraph.splitlines():
            if line[:1] in (" ", "\t") and last:
                continue
            key, _, value = line.partition(":")
            fields[key], last = value.strip(), key
        if "Package" in fields:
            found[f"{fields['Package']}:{fields.get('Architecture')}"] = fields
    return found


def _depends(fields):
    """(name, relation) of the first alternative of each dependency."""
    for alternative in filter(None, (part.strip() for part in fields.get("Depends", "").split(","))):
        match = re.match(r"([a-z0-9][a-z0-9+.-]*)(?::any)?\s*(\((=|>=|<=|>>|<<)\s*[^)]*\))?",
                         alternative.split("|")[0].strip())
        yield match.group(1), match.group(3)


def resolve_packages(names, cache_dir=None):
    """{package: candidate version} for `names` and what they need: a dependency pinned to one version (a kernel
    metapackage's image) and the libraries (Section libs) they depend on. Cached until the package lists change."""
    lists = Path("/var/lib/apt/lists")
    stamp = [sorted(names), lists.stat().st_mtime_ns if lists.exists() else 0]
    cache = Path(cache_dir or MACHINE_DIR) / "resolved.json"
    with contextlib.suppress(OSError, ValueError, KeyError):
        saved = json.loads(cache.read_text())
        if saved["stamp"] == stamp:
            return saved["packages"]
    resolved, level = {}, [name if ":" in name else f"{name}:i386" for name in names]
    while level:
        shown = _apt_show(level)
        missing = [name for name in level if name not in shown]
        if missing:
            raise DeployError(missing[0], "no such Debian package here (is the i386 architecture added? "
                                          "dpkg --add-architecture i386 && apt-get update)")
        candidates = {}
        for name in level:
            resolved[name] = shown[name]["Version"]
            arch = name.partition(":")[2]
            for dep, relation in _depends(shown[name]):
                candidates.setdefault(f"{dep}:{arch}", relation == "=")
        # an Architecture: all dependency has no :i386 entry; it is never a library we need
        sections = _apt_show([name for name, pinned in candidates.items() if not pinned and name not in resolved])
        level = [name for name, pinned in candidates.items() if name not in resolved and (
            pinned or sections.get(name, {}).get("Section") == "libs")]
    resolved = dict(sorted(resolved.items()))
    cache.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(cache, json.dumps({"stamp": stamp, "packages": resolved}, indent=2) + "\n")
    return resolved


def unpack(packages, debs, root):
    """Download each package's .deb (kept in `debs`) and unpack them all into `root`, installing nothing."""
    debs.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    for name, version in packages.items():
        bare, arch = name.split(":")
        deb = debs / f"{bare}_{version.replace(':', '%3a')}_{arch}.deb"
        if not deb.exists():
            done = processes.run(["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", f"{name}={version}"],
                                 cwd=debs, text=True, timeout=600)
            if done.returncode != 0 or not deb.exists():
                raise DeployError(name, f"apt-get download failed: {(done.stderr or done.stdout).strip()[-200:]}")
        done = processes.run(["dpkg-deb", "-x", str(deb), str(root)], text=True, timeout=600)
        if done.returncode != 0:
            raise DeployError(deb, f"dpkg-deb -x failed: {done.stderr.strip()[-200:]}")
    return root


def _kernel_version(root):
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise DeployError(root, "no kernel unpacked (boot/vmlinuz-*): the machine's packages need a linux-image")
    return kernels[-1].name.removeprefix("vmlinuz-")


def _read(root, name):
    path = root / name
    if not path.is_file():
        raise DeployError(path, "not in the unpacked packages")
    return path.read_bytes()


# --- kernel modules

def module_load_order(modules_dir, wanted):
    """Paths of `wanted` modules and everything they depend on (from each module's .modinfo `depends=`), each after
    its dependencies: what `modprobe --show-depends` gives, without a modules.dep (depmod runs on installing)."""
    index = {path.name.split(".ko")[0].replace("-", "_"): path for path in modules_dir.rglob("*.ko")}
    order = []

    def visit(name, chain):
        key = name.replace("-", "_")
        if key not in index:
            raise DeployError(modules_dir, f"no module '{name}'" + (f" (needed by {chain[-1]})" if chain else ""))
        path = index[key]
        if path in order or key in chain:
            return
        for dep in modinfo(path).get("depends", "").split(","):
            if dep:
                visit(dep, (*chain, key))
        order.append(path)

    for name in wanted:
        visit(name, ())
    return order


def modinfo(path):
    """A kernel module's .modinfo section as {key: value} (the last value of a repeated key)."""
    section = elf_section(path.read_bytes(), ".modinfo")
    return dict(entry.split("=", 1) for entry in section.decode("latin-1").split("\0") if "=" in entry)


# --- ELF (32- and 64-bit, little-endian): just enough to read a section and the shared libraries a program needs

def _elf_header(data, path="ELF file"):
    if data[:4] != b"\x7fELF" or data[5] != 1:
        raise DeployError(path, "not a little-endian ELF file")
    wide = data[4] == 2
    fmt = "<16xHHIQQQIHHHHHH" if wide else "<16xHHIIIIIHHHHHH"
    (_, _, _, _, phoff, shoff, _, _, phentsize, phnum, shentsize, shnum, shstrndx) = struct.unpack_from(fmt, data)
    return wide, phoff, phentsize, phnum, shoff, shentsize, shnum, shstrndx


def elf_section(data, wanted):
    wide, _, _, _, shoff, shentsize, shnum, shstrndx = _elf_header(data)
    fmt = "<IIQQQQIIQQ" if wide else "<IIIIIIIIII"

    def section(index):
        fields = struct.unpack_from(fmt, data, shoff + index * shentsize)
        return fields[0], fields[4], fields[5]  # name offset, file offset, size

    _, names_at, _ = section(shstrndx)
    for index in range(shnum):
        name_at, offset, size = section(index)
        if data[names_at + name_at:data.index(b"\0", names_at + name_at)].decode() == wanted:
            return data[offset:offset + size]
    return b""


def _needed(data):
    """(interpreter, [DT_NEEDED names]) of a 32-bit ELF program or library."""
    wide, phoff, phentsize, phnum, *_ = _elf_header(data)
    if wide:
        raise DeployError("ftp client", "is a 64-bit program: the machine is a 32-bit Pentium II")
    interpreter, dynamic, loads = None, None, []
    for index in range(phnum):
        kind, offset, vaddr, _, filesz, _, _, _ = struct.unpack_from("<IIIIIIII", data, phoff + index * phentsize)
        if kind == 3:
            interpreter = data[offset:offset + filesz].rstrip(b"\0").decode()
        elif kind == 2:
            dynamic = (offset, filesz)
        elif kind == 1:
            loads.append((vaddr, offset, filesz))
    if dynamic is None:
        return interpreter, []
    entries = [struct.unpack_from("<iI", data, dynamic[0] + at) for at in range(0, dynamic[1], 8)]
    strtab = next(value for tag, value in entries if tag == 5)
    strtab = next(offset + strtab - vaddr for vaddr, offset, size in loads if vaddr <= strtab < vaddr + size)
    names = [data[strtab + value:data.index(b"\0", strtab + value)].decode() for tag, value in entries if tag == 1]
    return interpreter, names


def shared_libraries(root, program):
    """{path in the image: unpacked file} of the loader and every library `program` needs, found in the unpacked
    i386 packages (symbolic links followed, so each lands under the name the loader asks for)."""
    found = {}
    interpreter, todo = _needed(program.read_bytes())
    if interpreter:
        found[interpreter.lstrip("/")] = _resolve(root, interpreter.lstrip("/"))
    while todo:
        name = todo.pop()
        if any(key.endswith("/" + name) for key in found):
            continue
        for folder in LIBRARY_DIRS:
            path = root / folder / name
            if path.exists() or path.is_symlink():
                real = _resolve(root, f"{folder}/{name}")
                found[f"{folder}/{name}"] = real
                todo += _needed(real.read_bytes())[1]
                break
        else:
            raise DeployError(program, f"needs {name}, which none of the machine's packages holds")
    return found


def _resolve(root, relative):
    """Follow symbolic links inside the unpacked tree (absolute targets are relative to it)."""
    path = root / relative
    for _ in range(20):
        if not path.is_symlink():
            if not path.is_file():
                raise DeployError(path, "missing from the unpacked packages")
            return path
        target = Path(path.readlink())
        path = root / str(target).lstrip("/") if target.is_absolute() else path.parent / target
    raise DeployError(root / relative, "too many symbolic links")


# --- initramfs

def cpio(files, extra_dirs=()):
    """A newc cpio archive of {path: (bytes, mode)} with the directories they need (the kernel unpacks it)."""
    out, inode = io.BytesIO(), [0]

    def entry(name, mode, data=b""):
        inode[0] += 1
        fields = [inode[0], mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0]
        out.write(b"070701" + b"".join(b"%08X" % value for value in fields) + name.encode() + b"\0")
        out.write(b"\0" * (-out.tell() % 4))
        out.write(data)
        out.write(b"\0" * (-out.tell() % 4))

    dirs = set(extra_dirs)
    for name in files:
        parts = name.split("/")[:-1]
        dirs.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
    for name in sorted(dirs):
        entry(name, 0o040755)
    for name, (data, mode) in files.items():
        entry(name, 0o100000 | mode, data)
    entry("TRAILER!!!", 0)
    return out.getvalue()
