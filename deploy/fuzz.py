"""A seeded mutation fuzzer for the rendered inference program and the Python readers.

It mutates small valid v0, v1, v2 and v3 (ternary) checkpoints (both byte orders), tokenizers and command lines, runs the program
built with AddressSanitizer and UndefinedBehaviorSanitizer (64-bit host and i686, whose size_t is 32 bits), and the
Python readers under a memory limit. A run may end normally or with a one-line error; a crash, a sanitizer report, a
hang or a Python traceback is a failure, and every failing input can be kept as a regression case.

    python -m deploy.fuzz --cases 10000 --seed 1 --save tests/fuzz_regressions   (every build and the readers)
"""

import argparse
import dataclasses
import json
import os
import random
import re
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from deploy.atomic import write_atomic
from deploy.checkpoint import Config, write_model
from deploy.errors import DeployError
from deploy.plan import BUILD_DIR, ORACLE_FLAGS, make_plan
from deploy.profile import load_profile
from deploy.render import environment, render_run_c
from deploy.synth import random_model, synthetic_tokenizer
from deploy.tokenizer import Tokenizer, write_tokenizer

SANITIZER_FLAGS = ["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined",
                   "-fno-sanitize-recover=undefined", *ORACLE_FLAGS]


@dataclasses.dataclass(frozen=True)
class SanitizedBuild:
    target: str  # the profile whose template branches are rendered
    compiler: str
    flags: tuple
    env: dict = dataclasses.field(default_factory=dict)  # for running it
    variant: dict = dataclasses.field(default_factory=dict)  # port branches overridden


I686_RUNTIME = {"LD_LIBRARY_PATH": "/usr/i686-linux-gnu/lib"}  # the cross ASan runtime, run natively
BUILDS = {
    "x86_64": SanitizedBuild("host", "gcc", ("-std=gnu99",)),
    "i686": SanitizedBuild("p2-linux", "i686-linux-gnu-gcc", ("-std=c89", "-march=pentium2"), I686_RUNTIME),
    # a 32-bit size_t with no memory cap in front of it, as on the G4 and the Pi Zero
    "i686-uncapped": SanitizedBuild("p2-linux", "i686-linux-gnu-gcc", ("-std=c89", "-march=pentium2"), I686_RUNTIME,
                                    {"memory_cap_mb": 0}),
}
# Sanitizers exit with their own status, apart from the program's 1; huge requests return NULL (the program's own
# "out of memory" line) instead of taking the machine's memory.
SANITIZER_ENV = {
    "ASAN_OPTIONS": "exitcode=86:detect_leaks=0:allocator_may_return_null=1:max_allocation_size_mb=1024"
                    ":handle_abort=1:print_summary=1",
    "UBSAN_OPTIONS": "exitcode=87:halt_on_error=1:print_stacktrace=1",
}
# (a "WARNING: AddressSanitizer failed to allocate" is a refused request the program then reports itself)
SANITIZER_MARKS = (b"ERROR: AddressSanitizer", b"ERROR: LeakSanitizer", b"Sanitizer:DEADLYSIGNAL", b"runtime error:")
PROGRAM_TIMEOUT = 20.0
READER_TIMEOUT = 20.0
READER_MEMORY = 1 << 30  # bytes of address space for the Python readers

INTERESTING = [0, 1, 2, 3, -1, -2, 4, 7, 8, 16, 255, 256, 258, 259, 4096, 65535, 65536, 65537, 1 << 20, 1 << 24,
               (1 << 31) - 1, -(1 << 31), 654311429, 0x616B3432, 1 << 30, -(1 << 30), 46341, 2000000]
FLOAT_BITS = [0x7FC00000, 0x7F800000, 0xFF800000, 0x7F7FFFFF, 0x00000001, 0x80000000, 0xCE6E6B28]
PROMPTS = ["", "the sea", "a", "hello there", "Once upon a time", "<0x41>", "\u00e9t\u00e9", "\U0001F600 x",
           "  ", "\t\n", "ab" * 40, "zzz"]
NUMBERS = ["0", "1", "-1", "0.5", "nan", "NaN", "inf", "-inf", "1e30", "1e-30", "1e309", "-0", "0x1p3", "", "abc",
           "1x", " 1", "3.4028236e38", "2", "0.001", "0.999999", "1e-45", "2147483647", "-2147483648",
           "99999999999999999999", "4294967297"]


@dataclasses.dataclass
class Case:
    """One input: the files (None: absent) and the program's arguments after the checkpoint. In arguments, {dir}
    stands for the folder the case runs in; the model is {dir}/model.bin, the tokenizer {dir}/tokenizer.bin."""

    model: bytes  # None: the checkpoint path is a folder
    tokenizer: bytes
    args: list
    vocab_size: int = 0  # the vocabulary the tokenizer belongs to (for the Python reader)
    note: str = ""


@dataclasses.dataclass
class Outcome:
    verdict: str  # "ok", "error" (a one-line refusal), "crash", "sanitizer", "hang", "traceback"
    detail: str = ""

    @property
    def failed(self):
        return self.verdict not in ("ok", "error")


# ---------------------------------------------------------------------------------------------------------------------
# seeds


def tiny_tokenizer(vocab_size):
    """A tokenizer too small for byte tokens: <unk>, BOS, EOS, then letters."""
    pieces = [b"<unk>", b"\n<s>\n", b"\n</s>\n", b"a", b" ", b"b", b"ab"][:vocab_size]
    return Tokenizer(pieces, [0.0] * len(pieces), 6)


def seed_corpus(folder):
    """[(name, model bytes, tokenizer bytes, vocab_size)] of small valid inputs, every version and byte order."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    shapes = [("shared", Config(16, 24, 2, 2, 1, 300, 32)),
              ("unshared", Config(16, 24, 1, 4, 2, 300, 24, shared_classifier=False)),
              ("vocab5", Config(8, 16, 1, 2, 2, 5, 16)),
              ("vocab2", Config(8, 16, 1, 2, 2, 2, 16))]
    corpus = []
    for name, config in shapes:
        model = random_model(config, seed=len(corpus))
        tokenizer = synthetic_tokenizer(config.vocab_size) if config.vocab_size >= 259 else \
            tiny_tokenizer(config.vocab_size)
        write_tokenizer(tokenizer, folder / "t.bin")
        for version in (0, 1, 2, 3):
            for order in ("little", "big") if name == "shared" else ("little",):
                write_model(model, folder / "m.bin", version, order, group_size=8)
                corpus.append((f"{name}-v{version}-{order}", (folder / "m.bin").read_bytes(),
                               (folder / "t.bin").read_bytes(), config.vocab_size))
    return corpus


# ---------------------------------------------------------------------------------------------------------------------
# mutations


def _put_int(data, rng, at=None):
    at = rng.randrange(0, max(1, min(len(data), 48) - 3)) if at is None else at
    value = rng.choice(INTERESTING) if rng.random() < 0.8 else rng.randrange(-(1 << 31), 1 << 31)
    order = rng.choice("<>")
    data[at:at + 4] = struct.pack(order + "i", value)


def mutate_checkpoint(raw, rng):
    data = bytearray(raw)
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        op = rng.randrange(10)
        if op <= 2:  # a header field (aligned, or v2's unaligned group size)
            _put_int(data, rng, rng.choice([*range(0, 40, 4), 37]) if rng.random() < 0.7 else None)
        elif op == 3 and data:
            for _ in range(rng.randint(1, 4)):
                bit = rng.randrange(len(data) * 8)
                data[bit // 8] ^= 1 << (bit % 8)
        elif op == 4:  # truncate, often inside the header
            del data[rng.choice([rng.randrange(0, 64), rng.randrange(0, len(data) + 1)]):]
        elif op == 5:
            data += bytes(rng.randrange(256) for _ in range(rng.choice([1, 3, 4, 100])))
        elif op == 6 and len(data) > 300:  # a weight becomes NaN, inf or huge
            at = rng.randrange(256, len(data) - 4) & ~3
            data[at:at + 4] = struct.pack("<I", rng.choice(FLOAT_BITS))
        elif op == 7:  # the shared-classifier flag
            if len(data) > 36:
                data[36] = rng.choice([0, 1, 2, 255])
        elif op == 8 and len(data) >= 28:  # the other byte order for the header
            for at in range(0, 28, 4):
                data[at:at + 4] = data[at:at + 4][::-1]
        else:
            start = rng.randrange(len(data) + 1)
            del data[start:start + rng.choice([1, 4, 16, 1000])]
    return bytes(data)


def _entry_offsets(raw):
    offsets, at = [], 4
    while at + 8 <= len(raw) and len(offsets) < 1000:
        offsets.append(at)
        length = struct.unpack_from("<i", raw, at + 4)[0]
        if length < 0:
            break
        at += 8 + length
    return offsets


def mutate_tokenizer(raw, rng):
    data = bytearray(raw)
    offsets = _entry_offsets(raw)
    for _ in range(rng.choice([1, 1, 2])):
        op = rng.randrange(7)
        if op == 0 and len(data) >= 4:
            _put_int(data, rng, 0)
        elif op == 1 and offsets:  # an entry's length
            _put_int(data, rng, rng.choice(offsets) + 4)
        elif op == 2 and offsets:  # an entry's score
            at = rng.choice(offsets)
            data[at:at + 4] = struct.pack("<I", rng.choice(FLOAT_BITS))
        elif op == 3:
            del data[rng.randrange(len(data) + 1):]
        elif op == 4:
            data += bytes(rng.randrange(256) for _ in range(rng.choice([1, 4, 9])))
        elif op == 5 and offsets:  # a piece's bytes
            at = rng.choice(offsets) + 8
            if at < len(data):
                data[at] = rng.randrange(256)
        elif len(data) > 0:
            bit = rng.randrange(len(data) * 8)
            data[bit // 8] ^= 1 << (bit % 8)
    return bytes(data)


def random_prompt(rng):
    choice = rng.randrange(6)
    if choice == 0:
        return rng.choice(PROMPTS)
    if choice == 1:  # raw bytes (no NUL), often broken UTF-8
        return bytes(rng.randrange(1, 256) for _ in range(rng.randrange(1, 40))).decode("latin-1")
    if choice == 2:
        piece = rng.choice(["a", "ab", " the", "\u00e9", "\xff"])  # up to 100 KB (Linux allows 128 KB per argument)
        return piece * (rng.choice([100, 1000, 20000, 100000]) // len(piece.encode()))
    if choice == 3:
        return "".join(chr(rng.randrange(0x20, 0x7F)) for _ in range(rng.randrange(1, 60)))
    return rng.choice(PROMPTS) + rng.choice(PROMPTS)


def normal_args(rng):
    args = ["-n", str(rng.choice([1, 4, 8])), "-s", str(rng.randint(1, 10000)), "-i", rng.choice(PROMPTS)]
    if rng.random() < 0.3:
        args += ["-t", rng.choice(["0", "0.8", "1.0"])]
    if rng.random() < 0.2:
        args += ["-z", "{dir}/tokenizer.bin"]
    return args


def mutated_args(rng):
    args = []
    for _ in range(rng.randint(1, 5)):
        flag = rng.choice("tpsnimyzlt")
        if flag in "tpsn":
            value = rng.choice(NUMBERS)
        elif flag == "i" or flag == "y":
            value = random_prompt(rng)
        elif flag == "m":
            value = rng.choice(["generate", "chat", "chat", "gen", ""])
        elif flag == "z":
            value = rng.choice(["{dir}/tokenizer.bin", "{dir}", "{dir}/missing.bin", "{dir}/model.bin"])
        else:
            value = rng.choice(["/dev/full", "{dir}/logits.f32", "{dir}", "/nonexistent/x"])
        args += [f"-{flag}", value]
    if rng.random() < 0.05:
        args.append(rng.choice(["-n", "-x", "n", "--", "-tt"]))
    if "-n" not in args or rng.random() < 0.5:
        args += ["-n", str(rng.choice([0, 2, 8]))]
    return args


def make_case(corpus, seed, index):
    """Case `index` of the run seeded `seed`: the same pair always gives the same case."""
    rng = random.Random(f"{seed}:{index}")
    name, model, tokenizer, vocab = rng.choice(corpus)
    roll = rng.random()
    if roll < 0.5:
        return Case(mutate_checkpoint(model, rng), tokenizer, normal_args(rng), vocab, f"{name}: checkpoint")
    if roll < 0.7:
        return Case(model, mutate_tokenizer(tokenizer, rng), normal_args(rng), vocab, f"{name}: tokenizer")
    if roll < 0.95:
        return Case(model, tokenizer, mutated_args(rng), vocab, f"{name}: command line")
    special = rng.choice(["directory", "empty", "both"])
    if special == "directory":
        return Case(None, tokenizer, normal_args(rng), vocab, f"{name}: checkpoint is a folder")
    if special == "empty":
        return Case(b"", tokenizer, normal_args(rng), vocab, f"{name}: empty checkpoint")
    return Case(mutate_checkpoint(model, rng), mutate_tokenizer(tokenizer, rng), mutated_args(rng), vocab,
                f"{name}: everything")


# ---------------------------------------------------------------------------------------------------------------------
# running


def build_sanitized(name, build_dir=None, template=None):
    """The rendered program for build `name` (see BUILDS), compiled with ASan and UBSan; its path. `template`: another
    run.c.j2 to render (an older one, to check that the fuzzer finds what was fixed)."""
    spec = BUILDS[name]
    if shutil.which(spec.compiler) is None:
        raise DeployError(f"fuzz {name}", f"{spec.compiler} not found; run scripts/setup")
    folder = Path(build_dir or BUILD_DIR) / (f"fuzz-{name}" + ("-template" if template else ""))
    folder.mkdir(parents=True, exist_ok=True)
    plan = make_plan(load_profile(spec.target), build_dir=folder.parent, variant=spec.variant)
    source = environment().from_string(Path(template).read_text()).render(**plan.template_context()) if template \
        else render_run_c(plan)
    binary = folder / "run"
    stamp = folder / ".source"
    command = [spec.compiler, *SANITIZER_FLAGS, *spec.flags, "-o", str(binary), str(folder / "run.c"), "-lm"]
    fingerprint = source + "\n" + " ".join(command)
    if binary.exists() and stamp.exists() and stamp.read_text() == fingerprint:
        return binary
    write_atomic(folder / "run.c", source.encode())
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise DeployError(folder / "run.c", f"{spec.compiler} failed: {done.stderr.strip()[:300]}")
    stamp.write_text(fingerprint)
    return binary


def program_env(name):
    return {**os.environ, **SANITIZER_ENV, **BUILDS[name].env}


def lay_out(case, folder):
    """Write a case's files into `folder`; the program's command line after the binary."""
    folder = Path(folder)
    for stale in ("model.bin", "tokenizer.bin", "logits.f32"):
        path = folder / stale
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    if case.model is None:
        (folder / "model.bin").mkdir()
    else:
        (folder / "model.bin").write_bytes(case.model)
    (folder / "tokenizer.bin").write_bytes(case.tokenizer)
    return [str(folder / "model.bin"), *[expand(arg).replace("{dir}", str(folder)) for arg in case.args]]


def expand(arg):
    """An argument as kept in case.json: text, or {"repeat": text, "times": n} for a long repetitive one."""
    return arg["repeat"] * arg["times"] if isinstance(arg, dict) else arg


def compress(arg):
    for width in range(1, 17):
        if len(arg) > 256 and len(arg) % width == 0 and arg[:width] * (len(arg) // width) == arg:
            return {"repeat": arg[:width], "times": len(arg) // width}
    return arg


def classify(returncode, stderr, timed_out):
    if timed_out:
        return Outcome("hang", "timed out")
    if any(mark in stderr for mark in SANITIZER_MARKS):
        return Outcome("sanitizer", _signature(stderr))
    if returncode == 0:
        return Outcome("ok")
    if returncode == 1 and stderr.strip():
        return Outcome("error", stderr.decode("utf-8", "replace").strip().splitlines()[-1][:200])
    return Outcome("crash", f"exit status {returncode}: {stderr[-300:].decode('utf-8', 'replace')}")


def _signature(stderr):
    """The kind of report and where: "heap-buffer-overflow in sample_topp", "runtime error: negation of ..."."""
    text = stderr.decode("utf-8", "replace")
    ubsan = re.search(r"runtime error: (.*)", text)
    if ubsan:
        return "runtime error: " + re.sub(r"-?\d+", "N", ubsan.group(1))[:120]
    kind = re.search(r"(?:ERROR: \w+Sanitizer: |(\w+Sanitizer:DEADLYSIGNAL))([\w-]*)", text)
    frames = [name for name in re.findall(r"#\d+ 0x[0-9a-f]+ in (\w+)", text)
              if not name.startswith(("__", "_IO", "mem", "str", "f", "v")) or name in ("forward", "free_weights")]
    what = (kind.group(2) or kind.group(1)) if kind else "report"
    return f"{what} in {frames[0] if frames else '?'}"


def run_case(command, case, folder, env, timeout=PROGRAM_TIMEOUT):
    """Run `command` (the program, maybe under an emulator) on `case` in `folder`."""
    argv = [*command, *lay_out(case, folder)]
    try:
        done = subprocess.run(argv, cwd=folder, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, timeout=timeout)
    except subprocess.TimeoutExpired:
        return classify(None, b"", True)
    return classify(done.returncode, done.stderr, False)


# ---------------------------------------------------------------------------------------------------------------------
# the Python readers, in a worker process with limited memory

READER_WORKER = r"""
import json, resource, sys, traceback
resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[1]), int(sys.argv[1])))
from deploy.checkpoint import read_header, read_model
from deploy.errors import DeployError
from deploy.tokenizer import read_tokenizer
print("ready", flush=True)
for line in sys.stdin:
    job = json.loads(line)
    try:
        if job["what"] == "model":
            read_header(job["path"])
            read_model(job["path"])
        else:
            read_tokenizer(job["path"], job["vocab_size"] or None)
        answer = {"verdict": "ok"}
    except DeployError as error:
        answer = {"verdict": "error", "detail": str(error)[:200]}
    except BaseException as error:
        answer = {"verdict": "traceback", "detail": "".join(traceback.format_exception_only(type(error), error))[-300:]}
    print(json.dumps(answer), flush=True)
"""


class ReaderWorker:
    """deploy.checkpoint.read_header/read_model and deploy.tokenizer.read_tokenizer in a subprocess whose address
    space is limited; restarted after a crash or a hang."""

    def __init__(self, memory=READER_MEMORY, timeout=READER_TIMEOUT):
        self.memory, self.timeout, self.process = memory, timeout, None

    def _start(self):
        root = str(Path(__file__).resolve().parent.parent)
        env = {**os.environ, "PYTHONPATH": root, "OPENBLAS_NUM_THREADS": "1"}
        self.process = subprocess.Popen([sys.executable, "-c", READER_WORKER, str(self.memory)], cwd=root, env=env,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                        text=True)
        if self.process.stdout.readline().strip() != "ready":
            raise DeployError("fuzz", "the Python reader worker did not start")

    def check(self, what, path, vocab_size=0):
        if self.process is None or self.process.poll() is not None:
            self._start()
        self.process.stdin.write(json.dumps({"what": what, "path": str(path), "vocab_size": vocab_size}) + "\n")
        self.process.stdin.flush()
        ready, _, _ = select.select([self.process.stdout], [], [], self.timeout)
        if not ready:
            self.close()
            return Outcome("hang", f"{what} reader timed out")
        line = self.process.stdout.readline()
        if not line:
            status = self.process.wait()
            self.process = None
            return Outcome("crash", f"{what} reader died with status {status}")
        return Outcome(**json.loads(line))

    def run(self, case, folder):
        lay_out(case, folder)
        folder = Path(folder)
        outcomes = [self.check("model", folder / "model.bin"),
                    self.check("tokenizer", folder / "tokenizer.bin", case.vocab_size)]
        return next((o for o in outcomes if o.failed), next((o for o in outcomes if o.verdict != "ok"), outcomes[0]))

    def close(self):
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


# ---------------------------------------------------------------------------------------------------------------------
# regression cases


def save_case(case, outcome, build, folder):
    """Keep a failing case as folder/<build>-<n>/ with its files and case.json; returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    number = len(list(folder.glob(f"{build}-*")))
    where = folder / f"{build}-{number:03d}"
    where.mkdir()
    if case.model is not None:
        (where / "model.bin").write_bytes(case.model)
    (where / "tokenizer.bin").write_bytes(case.tokenizer)
    meta = {"build": build, "args": [compress(arg) for arg in case.args], "vocab_size": case.vocab_size,
            "note": case.note,
            "found": f"{outcome.verdict}: {outcome.detail}"}
    (where / "case.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n")
    return where


def load_cases(folder):
    """[(name, build, Case)] of every kept regression case."""
    found = []
    for meta_path in sorted(Path(folder).glob("*/case.json")):
        meta = json.loads(meta_path.read_text())
        where = meta_path.parent
        model = where / "model.bin"  # absent: the case passes a folder as the checkpoint
        case = Case(model.read_bytes() if model.exists() else None, (where / "tokenizer.bin").read_bytes(),
                    meta["args"], meta.get("vocab_size", 0), meta.get("note", ""))
        found.append((where.name, meta["build"], case))
    return found


def shrink(case, still_fails):
    """A smaller case that still fails: long arguments halved while the failure holds."""
    args = list(case.args)
    for index, arg in enumerate(args):
        while len(args[index]) > 64 and not isinstance(compress(args[index]), dict):
            trial = args[:index] + [args[index][:len(args[index]) // 2]] + args[index + 1:]
            if not still_fails(dataclasses.replace(case, args=trial)):
                break
            args = trial
    return dataclasses.replace(case, args=args)


# ---------------------------------------------------------------------------------------------------------------------
# a whole run


def fuzz(builds, cases, seed=1, save=None, progress=None, build_dir=None, template=None):
    """Run `cases` fuzzed cases against each build (a name of BUILDS, or "python"); {build: {verdict: count}} and the
    failures [(build, index, Case, Outcome)]. With `save`, the first case of each kind of failure is kept there."""
    counts, failures, kept = {}, [], set()
    with tempfile.TemporaryDirectory(prefix="fuzz-") as work:
        corpus = seed_corpus(Path(work) / "seeds")
        folder = Path(work) / "case"
        folder.mkdir()
        for build in builds:
            runner = _runner(build, build_dir, template)
            tally = counts.setdefault(build, {})
            start = time.monotonic()
            try:
                for index in range(cases):
                    case = make_case(corpus, seed, index)
                    outcome = runner(case, folder)
                    tally[outcome.verdict] = tally.get(outcome.verdict, 0) + 1
                    if outcome.failed:
                        if save and (build, outcome.verdict, outcome.detail) not in kept:
                            kept.add((build, outcome.verdict, outcome.detail))
                            case = shrink(case, lambda trial: runner(trial, folder).failed)
                            save_case(case, outcome, build, save)
                        failures.append((build, index, case, outcome))
                    if progress and (index + 1) % 500 == 0:
                        progress(f"{build}: {index + 1} cases, {tally}, {time.monotonic() - start:.0f} s")
            finally:
                runner.close()
    return counts, failures


def _runner(build, build_dir=None, template=None):
    if build == "python":
        worker = ReaderWorker()
        return _Closable(worker.run, worker.close)
    command, env = [str(build_sanitized(build, build_dir, template))], program_env(build)
    return _Closable(lambda case, folder: run_case(command, case, folder, env), lambda: None)


@dataclasses.dataclass
class _Closable:
    call: object
    close: object

    def __call__(self, *args):
        return self.call(*args)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m deploy.fuzz", description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=2000, help="cases per build")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--builds", default=",".join([*BUILDS, "python"]))
    parser.add_argument("--save", help="folder to keep failing cases in (tests/fuzz_regressions)")
    parser.add_argument("--template", help="render this run.c.j2 instead of ports/run.c.j2")
    options = parser.parse_args(argv)
    try:
        counts, failures = fuzz(options.builds.split(","), options.cases, options.seed, options.save,
                                progress=lambda line: print(line, file=sys.stderr, flush=True),
                                template=options.template)
    except DeployError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for build, tally in counts.items():
        print(f"{build}: {sum(tally.values())} cases: " + ", ".join(f"{k} {v}" for k, v in sorted(tally.items())))
    for build, index, case, outcome in failures[:50]:
        print(f"FAIL {build} case {index} ({case.note}): {outcome.verdict}: {outcome.detail}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
