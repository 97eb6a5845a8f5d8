"""Target profiles: targets/<name>.yaml, validated against a schema, with `extends:` for shared parts.

A profile is the one source of truth for a target's facts (CPU, byte order, memory, toolchains, port branches);
everything downstream reads them from here.
"""

import dataclasses
from pathlib import Path

import yaml

from deploy.errors import DeployError

ROOT = Path(__file__).resolve().parent.parent
TARGETS_DIR = ROOT / "targets"

KERNELS = ["scalar", "rows4", "sse", "neon", "altivec"]
KERNEL_FEATURE = {"sse": "sse", "neon": "neon", "altivec": "altivec"}

# A schema value is a type, a tuple of types, a list of allowed values, a dict (nested mapping) or [schema] (a list).
TOOLCHAIN = {
    "name": str, "kind": ["native", "cross", "bundle"], "cc": str, "packages": [str], "pip": [str],
    "flags": [str], "exact_flags": [str], "libs": [str],
    # a bundle is built on the target: a script with this command line, and how to check its source here
    "script": str, "line_ends": ["lf", "crlf"], "command": [str], "check": [str], "port": dict,
    "runs_here": bool,  # the bundle's compiler also runs on this machine (bcc32 under Wine, say)
}
SCHEMA = {
    "name": str,
    "description": str,
    "extends": str,
    "cpu": {"arch": ["x86_64", "i686", "powerpc", "aarch64", "armv6", "armv7"], "model": str, "features": [str],
            "endianness": ["little", "big"], "word_bits": [32, 64], "cores": int, "clock_mhz": int},
    "memory": {"ram_mb": int, "bandwidth_mb_s": int, "mflops": int, "source": str},
    # a whole emulated machine of this target (deploy/vm.py): the emulator, the host packages it needs, and the
    # Debian packages, kernel modules and FTP client its image is built from (deploy/vmimage.py)
    "machine": {"command": [str], "packages": [str], "guest_packages": [str], "modules": [str], "ftp_client": str,
                "free_mb": int, "source": str},
    "disk": {"size_mb": int, "filesystem": str, "max_file_bytes": int, "names": ["posix", "8.3"]},
    "os": ["linux", "windows98", "macosx", "android"],
    "port": {"dialect": ["c89", "gnu89", "gnu99"], "kernel": KERNELS, "loader": ["fread", "mmap"],
             "timer": ["clock_gettime", "gettickcount", "mach", "clock"], "threads": ["none", "openmp"],
             "math": ["libm", "portable"],
             "allocator": ["malloc", "virtualalloc"], "memory_cap_mb": int, "read_chunk": int},
    "files": {"program": str, "model": str, "tokenizer": str},
    "toolchains": [TOOLCHAIN],
    "emulator": [str],
    "emulator_packages": [str],
    "emulator_env": dict,
    "emulator_init": [str],
    "transport": ["local", "ftp-serve", "ftp-push", "sftp", "adb", "manual"],
    "published": [{"model": str, "tok_s": (int, float), "source": str, "note": str}],
}
REQUIRED = ["name", "cpu", "os", "port", "files", "toolchains"]


@dataclasses.dataclass(frozen=True)
class Profile:
    name: str
    data: dict
    path: Path

    def __getitem__(self, key):
        return self.data[key]

    def get(self, key, default=None):
        return self.data.get(key, default)

    @property
    def endianness(self):
        return self.data["cpu"]["endianness"]

    @property
    def port(self):
        return self.data["port"]

    @property
    def toolchains(self):
        return self.data["toolchains"]

    @property
    def emulator(self):
        return self.data.get("emulator") or []

    @property
    def memory_cap_mb(self):
        """The port's memory cap, lowered to the memory its machine has free after booting when that was measured
        (machine.free_mb): what the planner checks a model against and the program refuses beyond."""
        caps = [self.port.get("memory_cap_mb"), (self.data.get("machine") or {}).get("free_mb")]
        return min([cap for cap in caps if cap], default=None)


def known_targets():
    return sorted(path.stem for path in TARGETS_DIR.glob("*.yaml"))


def load_profile(name, targets_dir=None):
    """The validated profile `name` (a target name or a path to a YAML file)."""
    directory = Path(targets_dir) if targets_dir else TARGETS_DIR
    path = Path(name) if str(name).endswith((".yaml", ".yml")) else directory / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in directory.glob("*.yaml")))
        raise DeployError(f"unknown target '{name}' (known: {known})")
    data = _merged(path, directory, seen=())
    _check(data, SCHEMA, path, "")
    for key in REQUIRED:
        if key not in data:
            raise DeployError(path, f"missing required key '{key}'")
    _check_combinations(data, path)
    return Profile(data["name"], data, path)


def read_yaml(path, what="a profile"):
    """A YAML mapping from `path`, or one line saying where and why it is not one."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise DeployError(path, f"{what} not found") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise DeployError(path, f"not valid YAML{where}: {getattr(error, 'problem', error)}") from None
    if not isinstance(data, dict):
        raise DeployError(path, f"{what} must be a mapping of keys to values")
    return data


def _merged(path, directory, seen):
    data = read_yaml(path)
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if parent in seen:
        raise DeployError(path, f"'extends: {parent}' makes a cycle")
    parent_path = directory / f"{parent}.yaml"
    if not parent_path.is_file():
        raise DeployError(path, f"extends unknown target '{parent}'")
    return _deep_merge(_merged(parent_path, directory, (*seen, path.stem)), data)


def _deep_merge(base, override):
    merged = dict(base)
    for key, value in override.items():
        merged[key] = _deep_merge(base[key], value) if isinstance(value, dict) and isinstance(
            base.get(key), dict) else value
    return merged


def _describe(schema):
    if isinstance(schema, list) and len(schema) == 1 and isinstance(schema[0], (list, dict, type, tuple)):
        return f"a list of {_describe(schema[0])}"
    if isinstance(schema, list):
        return "one of " + ", ".join(str(v) for v in schema)
    if isinstance(schema, dict):
        return "a mapping with keys " + ", ".join(schema)
    if isinstance(schema, tuple):
        return " or ".join(t.__name__ for t in schema)
    return {"str": "text", "int": "an integer"}.get(schema.__name__, schema.__name__)


def _check(value, schema, path, key):
    where = key or "top level"
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            raise DeployError(path, f"'{where}' must be {_describe(schema)}")
        for child, child_value in value.items():
            if child not in schema:
                raise DeployError(path, f"unknown key '{_join(key, child)}' (allowed: {', '.join(schema)})")
            _check(child_value, schema[child], path, _join(key, child))
    elif isinstance(schema, list) and len(schema) == 1 and isinstance(schema[0], (list, dict, type, tuple)):
        if not isinstance(value, list):
            raise DeployError(path, f"'{where}' must be {_describe(schema)}")
        for index, item in enumerate(value):
            _check(item, schema[0], path, f"{where}[{index}]")
    elif isinstance(schema, list):
        if value not in schema:
            raise DeployError(path, f"'{where}' is {value!r}; allowed: {', '.join(str(v) for v in schema)}")
    elif value is not None and (not isinstance(value, schema) or isinstance(value, bool) and schema is not bool):
        raise DeployError(path, f"'{where}' is {value!r}, expected {_describe(schema)}")


def _join(key, child):
    return f"{key}.{child}" if key else child


def _check_combinations(data, path):
    cpu, port = data["cpu"], data["port"]
    feature = KERNEL_FEATURE.get(port.get("kernel"))
    if feature and feature not in cpu.get("features", []):
        raise DeployError(path, f"'port.kernel' is {port['kernel']}, but cpu.features lacks {feature} "
                                f"(has: {', '.join(cpu.get('features', [])) or 'none'})")
    if cpu.get("word_bits") == 64 and cpu["arch"] in ("i686", "powerpc", "armv6", "armv7"):
        raise DeployError(path, f"'cpu.word_bits' is 64, but {cpu['arch']} is a 32-bit CPU")
    if port.get("threads") == "openmp" and cpu.get("cores", 1) < 2:
        raise DeployError(path, "'port.threads' is openmp, but cpu.cores is 1")
    if port.get("timer") == "gettickcount" and data["os"] != "windows98":
        raise DeployError(path, "'port.timer' gettickcount needs a Windows os")
