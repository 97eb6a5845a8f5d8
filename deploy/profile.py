"""Target profiles: targets/<name>.yaml, validated against a schema, with `extends:` for shared parts.

A profile is the one source of truth for a target's facts (CPU, byte order, memory, toolchains, port branches);
everything downstream reads them from here.
"""

import dataclasses
import math
from pathlib import Path

import yaml

from deploy.errors import DeployError

ROOT = Path(__file__).resolve().parent.parent
TARGETS_DIR = ROOT / "targets"

KERNELS = ["scalar", "x87", "sse", "avx2", "neon", "altivec", "armv6"]  # ports/kernels/<name>.c.j2
KERNEL_FEATURE = {"x87": "x87", "sse": "sse2", "avx2": "sse2", "neon": "neon", "altivec": "altivec", "armv6": "vfpv2"}
MIN_READ_CHUNK = 4096  # bytes the loader reads at a time; ports/run.c.j2 refuses less too

@dataclasses.dataclass(frozen=True)
class Number:
    """An int (or any of `kinds`), finite, from `low` (or above `above`) up to `high`."""
    kinds: tuple = (int,)
    low: float = None
    high: float = None
    above: float = None


@dataclasses.dataclass(frozen=True)
class Text:
    """Text; empty only when `empty` is set."""
    empty: bool = False


@dataclasses.dataclass(frozen=True)
class FileName:
    """A name that becomes one file or folder: no path separators, not `.` or `..`, not empty."""


@dataclasses.dataclass(frozen=True)
class ListOf:
    item: object
    at_least: int = 0


@dataclasses.dataclass(frozen=True)
class MapOf:
    """A mapping of text keys to values of one schema."""
    value: object


@dataclasses.dataclass(frozen=True)
class OrNone:
    """The schema, or null (`key:` with no value): "not known"."""
    schema: object


@dataclasses.dataclass(frozen=True)
class Required:
    """A key of a mapping that must be present."""
    schema: object


def optional(mapping):
    """The schema of `mapping` with no key required (for overrides of a part of it)."""
    return {key: value.schema if isinstance(value, Required) else value for key, value in mapping.items()}


POSITIVE = Number(low=1)
# A schema value is a type (str means non-empty text), one of the classes above, a list of allowed values, a dict
# (a mapping with these keys) or [schema] (a list, possibly empty).
PORT = {"dialect": Required(["c89", "gnu89", "gnu99"]), "kernel": Required(KERNELS),
        "loader": Required(["fread", "mmap"]), "timer": Required(["clock_gettime", "gettickcount", "mach", "clock"]),
        "threads": Required(["none", "pthreads"]), "math": ["libm", "portable"],
        "allocator": Required(["malloc", "virtualalloc"]), "memory_cap_mb": POSITIVE,
        "read_chunk": Number(low=MIN_READ_CHUNK)}
TOOLCHAIN = {
    "name": Required(str), "kind": Required(["native", "cross", "bundle"]), "cc": Required(str), "packages": [str],
    "pip": [str], "flags": [str], "exact_flags": [str], "libs": [str],
    # a bundle is built on the target: a script with this command line, and how to check its source here
    "script": FileName(), "line_ends": ["lf", "crlf"], "command": ListOf(str, 1), "check": ListOf(str, 1),
    "port": optional(PORT),
    "runs_here": bool,  # the bundle's compiler also runs on this machine (bcc32 under Wine, say)
}
SCHEMA = {
    "name": Required(FileName()),
    "description": str,
    "extends": str,
    "cpu": Required({"arch": Required(["x86_64", "i686", "powerpc", "aarch64", "armv6", "armv7"]), "model": str,
                     "features": [str], "endianness": Required(["little", "big"]), "word_bits": [32, 64],
                     "cores": POSITIVE, "clock_mhz": POSITIVE}),
    "memory": {"ram_mb": POSITIVE, "os_mb": Number(low=0), "bandwidth_mb_s": POSITIVE, "mflops": POSITIVE,
               "source": str},
    # a whole emulated machine of this target (deploy/vm.py): the emulator, the host packages it needs, the Debian
    # packages, kernel modules and FTP client its image is built from (deploy/vmimage.py), its free memory after boot
    # and the part of it its kernel keeps using while a program runs (page cache for the program's reads, its code)
    "machine": {"command": Required(ListOf(str, 1)), "packages": [str], "guest_packages": Required(ListOf(str, 1)),
                "modules": Required([str]), "ftp_client": Required(str), "free_mb": POSITIVE,
                "kernel_reserve_mb": Number(low=0), "source": str},
    # read_mb_s: sustained sequential read (MB = 10^6 bytes), what a streaming build's speed is bound by
    "disk": {"size_mb": POSITIVE, "filesystem": str, "max_file_bytes": POSITIVE, "names": ["posix", "8.3"],
             "read_mb_s": Number((int, float), above=0), "source": str},
    "os": Required(["linux", "windows98", "macosx", "android"]),
    "port": Required(PORT),
    "files": Required({"program": Required(FileName()), "model": Required(FileName()),
                       "tokenizer": Required(FileName())}),
    "toolchains": Required(ListOf(TOOLCHAIN, 1)),
    "emulator": [str],
    "emulator_packages": [str],
    "emulator_env": MapOf(Text(empty=True)),
    "emulator_init": [str],
    "transport": ["local", "ftp-serve", "ftp-push", "sftp", "adb", "manual"],
    "published": [{"model": Required(str), "tok_s": Required(OrNone(Number((int, float), above=0))),
                   "source": Required(str), "note": str}],
}


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
        (machine.free_mb) less what the machine's kernel keeps using while the program runs (kernel_reserve_mb):
        what the planner checks a model against, the streaming build's default budget and what the program refuses
        beyond."""
        machine = self.data.get("machine") or {}
        free = machine.get("free_mb")
        caps = [self.port.get("memory_cap_mb"), free and free - machine.get("kernel_reserve_mb", 0)]
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
    check(data, SCHEMA, path)
    _check_combinations(data, path)
    return Profile(data["name"], data, path)


def read_yaml(path, what="a profile"):
    """A YAML mapping from `path`, or one line saying where and why it is not one."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise DeployError(path, f"{what} not found") from None
    except OSError as error:
        raise DeployError(path, f"cannot read {what}: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise DeployError(path, f"not UTF-8 text (byte {error.start}): {what} is a YAML file") from None
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
    if not isinstance(parent, str) or not parent:
        raise DeployError(path, f"'extends' is {parent!r}, expected the name of a target")
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


def check(value, schema, path, key=""):
    """Raise a one-line DeployError naming `path`, the key, what is wrong and what is allowed, unless `value` fits
    `schema` (see SCHEMA)."""
    where = key or "top level"
    if isinstance(schema, Required):
        schema = schema.schema
    if isinstance(schema, OrNone):
        if value is None:
            return
        schema = schema.schema
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            raise DeployError(path, f"'{where}' must be {_describe(schema)}")
        for child, child_value in value.items():
            if child not in schema:
                raise DeployError(path, f"unknown key '{_join(key, child)}' (allowed: {', '.join(schema)})")
            check(child_value, schema[child], path, _join(key, child))
        for child, child_schema in schema.items():
            if isinstance(child_schema, Required) and child not in value:
                raise DeployError(path, f"missing required key '{_join(key, child)}' ({_describe(child_schema)})")
        return
    if value is None:
        raise DeployError(path, f"'{where}' is empty, expected {_describe(schema)}")
    if isinstance(schema, list) and len(schema) == 1 and _is_schema(schema[0]):
        schema = ListOf(schema[0])
    if isinstance(schema, ListOf):
        if not isinstance(value, list) or len(value) < schema.at_least:
            raise DeployError(path, f"'{where}' is {value!r}, expected {_describe(schema)}")
        for index, item in enumerate(value):
            check(item, schema.item, path, f"{where}[{index}]")
    elif isinstance(schema, MapOf):
        if not isinstance(value, dict):
            raise DeployError(path, f"'{where}' must be {_describe(schema)}")
        for child, child_value in value.items():
            check(child, str, path, f"{_join(key, str(child))} (the key)")
            check(child_value, schema.value, path, _join(key, child))
    elif isinstance(schema, list):
        if isinstance(value, (dict, list, bool)) or value not in schema:
            raise DeployError(path, f"'{where}' is {value!r}; allowed: {', '.join(str(v) for v in schema)}")
    elif not _fits(value, schema):
        raise DeployError(path, f"'{where}' is {value!r}, expected {_describe(schema)}")


def _is_schema(item):
    return isinstance(item, (list, dict, type, tuple, Number, Text, FileName, ListOf, MapOf))


def _fits(value, schema):
    if schema is str:
        schema = Text()
    if isinstance(schema, Text):
        return isinstance(value, str) and (schema.empty or value.strip() != "")
    if isinstance(schema, FileName):
        return isinstance(value, str) and value.strip() == value and value not in ("", ".", "..") and not any(
            mark in value for mark in "/\\:\0")
    if isinstance(schema, Number):
        return not isinstance(value, bool) and isinstance(value, schema.kinds) and math.isfinite(value) and (
            schema.low is None or value >= schema.low) and (schema.high is None or value <= schema.high) and (
            schema.above is None or value > schema.above)
    return isinstance(value, schema) and (schema is bool or not isinstance(value, bool))


def _describe(schema):
    if isinstance(schema, Required):
        return _describe(schema.schema)
    if isinstance(schema, OrNone):
        return f"{_describe(schema.schema)}, or nothing"
    if isinstance(schema, list) and len(schema) == 1 and _is_schema(schema[0]):
        return f"a list of {_describe(schema[0])}"
    if isinstance(schema, ListOf):
        return ("a non-empty list of " if schema.at_least else "a list of ") + _describe(schema.item)
    if isinstance(schema, MapOf):
        return f"a mapping of names to {_describe(schema.value)}"
    if isinstance(schema, list):
        return "one of " + ", ".join(str(v) for v in schema)
    if isinstance(schema, dict):
        return "a mapping with keys " + ", ".join(schema)
    if isinstance(schema, tuple):
        return " or ".join(_describe(kind) for kind in schema)
    if isinstance(schema, Number):
        what = " or ".join({"int": "an integer", "float": "a number"}[kind.__name__] for kind in schema.kinds)
        bounds = [f"from {schema.low}"] if schema.low is not None else []
        bounds += [f"above {schema.above}"] if schema.above is not None else []
        bounds += [f"up to {schema.high}"] if schema.high is not None else []
        return " ".join([what, *bounds])
    if isinstance(schema, Text):
        return "text" if schema.empty else "non-empty text"
    if isinstance(schema, FileName):
        return "a file name (no /, \\ or :, not . or ..)"
    names = {"str": "non-empty text", "int": "an integer", "bool": "true or false", "dict": "a mapping"}
    return names.get(schema.__name__, schema.__name__)


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
    if port.get("threads") == "pthreads" and cpu.get("cores", 1) < 2:
        raise DeployError(path, "'port.threads' is pthreads, but cpu.cores is 1")
    if port.get("timer") == "gettickcount" and data["os"] != "windows98":
        raise DeployError(path, "'port.timer' gettickcount needs a Windows os")
    machine = data.get("machine") or {}
    if machine.get("kernel_reserve_mb", 0) >= machine.get("free_mb", math.inf):
        raise DeployError(path, f"'machine.kernel_reserve_mb' ({machine['kernel_reserve_mb']}) leaves nothing of "
                                f"machine.free_mb ({machine['free_mb']}) to a program; it must be less")
    _check_file_names(data, path)
    for index, toolchain in enumerate(data["toolchains"]):
        for key in ("script", "command"):
            if toolchain["kind"] == "bundle" and key not in toolchain:
                raise DeployError(path, f"missing required key 'toolchains[{index}].{key}' (a bundle toolchain "
                                        f"writes a build script for the target)")


def _check_file_names(data, path):
    """The delivered files' names: distinct (a FAT disk ignores case), and 8.3 where the disk needs it."""
    from deploy.fit import NAME_83

    seen = {}
    for key, name in data["files"].items():
        if name.lower() in seen:
            raise DeployError(path, f"'files.{key}' is {name!r}, the same name as 'files.{seen[name.lower()]}'; "
                                    f"give each file its own name")
        seen[name.lower()] = key
        if (data.get("disk") or {}).get("names") == "8.3" and not NAME_83.match(name):
            raise DeployError(path, f"'files.{key}' is {name!r}, not an 8.3 name as disk.names says (up to 8 "
                                    f"upper-case letters, digits or _-~, a dot and up to 3 more: MODEL.BIN)")
