"""`invoke deploy`: for each host, profile -> plan (fit) -> render -> build -> convert -> stage -> deliver -> run.

Each step says whether it did work or found its inputs unchanged (content hashes); with dry=True every step only says
what it would do. Several hosts deploy in parallel; each ends in one HostResult for the summary table.
"""

import dataclasses
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait

from deploy.build import build
from deploy.checkpoint import read_header
from deploy.convert import model_for_target
from deploy.errors import DeployError
from deploy.fit import check_fit
from deploy.parts import model_files
from deploy.plan import make_plan
from deploy.profile import load_profile
from deploy.results import emulator_of, how_label, how_measured
from deploy.runner import tokens_per_second
from deploy.stage import STAGE_DIR, stage_files
from deploy.stream import run_steps, shorter_run_hint, streaming_needed, streaming_plan


@dataclasses.dataclass
class HostResult:
    host: str
    target: str
    connection: str
    steps: list = dataclasses.field(default_factory=list)  # (step, what happened)
    tok_s: float = None
    how: str = ""  # how tok/s was obtained (results.how_measured)
    text: str = ""
    error: str = None
    waiting: str = None  # delivered; the program still has to be started on the machine with this line
    seconds: float = 0.0


@dataclasses.dataclass
class Options:
    model: str
    tokenizer: str
    exact: bool = False
    dry: bool = False
    run: bool = False
    run_args: tuple = ("-n", "128", "-s", "42", "-i", "Once upon a time")
    stay: bool = False
    timeout: float = None  # ftp-serve: give up when the host has not fetched everything within this many seconds
    stage_root: object = None
    build_dir: object = None
    results: object = None  # the results file runs are recorded in (default results/bench.jsonl)
    stream: bool = False  # stream the weights from disk even where they fit (chosen anyway where they do not)


class Reporter:
    """Prints each step as `host  step  what` from any thread."""

    def __init__(self, console):
        self.console, self.lock = console, threading.Lock()

    def __call__(self, result, step, what):
        result.steps.append((step, what))
        with self.lock:
            self.console.print(f"[bold]{result.host:<18}[/] [cyan]{step:<8}[/] {what}", soft_wrap=True,
                               highlight=False)


@dataclasses.dataclass
class Prepared:
    """A host's profile, plan and fit, checked before anything is built."""
    host: object
    profile: object
    plan: object
    header: object
    result: HostResult


@dataclasses.dataclass
class Built:
    """One build of one plan (shared by every host whose plan it is) and the model files for its target."""
    build: object
    model: object
    tokenizer: object


def _fail(result, report, error):
    result.error = str(error)
    report(result, "failed", f"[red]{error}[/]")


def host_plan(host, options):
    """The host's profile and build plan: an SSH host may build a bundle on the machine itself (ssh.build)."""
    profile = load_profile(host.target)
    toolchain = (host.get("ssh") or {}).get("build") if host.connection == "sftp" else None
    stream = options.stream or streaming_needed(profile, options.model, options.tokenizer)
    return profile, make_plan(profile, exact=options.exact, toolchain=toolchain, build_dir=options.build_dir,
                              stream=stream)


def run_delivered(host, options, echo=None):
    """Run the program an earlier deploy delivered to `host`, with options.run_args; a CompletedProcess (text)."""
    from deploy import deliver
    from deploy.stage import load_stage

    profile, plan = host_plan(host, options)
    return deliver.run(host, profile, plan, load_stage(host.name, options.stage_root), options, echo=echo)


def check_ran(host, done):
    """A program that failed is a failed host, with the last line it printed."""
    if done.returncode != 0:
        raise DeployError(host.name, f"the program failed (exit status {done.returncode}): "
                                     + last_line(done.stderr or done.stdout))


def prepare_host(host, options, report):
    """profile -> plan -> fit, or a HostResult that says why not."""
    result = HostResult(host.name, host.target, host.connection)
    try:
        profile, plan = host_plan(host, options)
        header = read_header(options.model)
        files = profile["files"]
        sizes = {files["model"]: _size(options.model), files["tokenizer"]: _size(options.tokenizer),
                 files["program"]: 0}
        tokenizer_bytes = sizes[files["tokenizer"]]
        streaming = streaming_plan(profile, header, plan, tokenizer_bytes, run_steps(options.run_args))
        fit = check_fit(profile, header, sizes, streaming=streaming)
        if not fit.ok:
            raise DeployError(f"{host.name}: {options.model} does not fit {profile.name}: "
                              + "; ".join(fit.problems()) + shorter_run_hint(header, streaming, tokenizer_bytes))
        report(result, "plan", f"fits {profile.name}: " + ", ".join(f"{c.what} {c.need} of {c.limit}"
                                                                    for c in fit.checks))
        return Prepared(host, profile, plan, header, result)
    except DeployError as error:
        _fail(result, report, error)
        return result


def build_plan(prepared, options, report):
    """render -> build -> convert, once for every host that shares the plan; reported on each of them."""
    plan, profile = prepared[0].plan, prepared[0].profile
    for item in prepared:
        report(item.result, "build", f"building {plan.out_dir.name} with {plan.toolchain['name']}"
               + (" (a first zig build also builds its C library: a minute or two)"
                  if "zig" in plan.toolchain.get("cc", "") and not plan.program.exists() else "") + " ...")
    built = build(plan)
    what = f"{built.output.name} unchanged" if built.skipped else (
        f"{built.output.name} built in {built.seconds:.1f} s"
        + (f" ({len(built.warnings)} warnings)" if built.warnings else ""))
    model, tokenizer = model_for_target(profile, options.model, options.tokenizer, plan.out_dir / "model")
    converted = "already in the target's byte order" if str(model) == str(options.model) else \
        f"{profile.endianness}-endian copies in {model.parent}"
    for item in prepared:
        report(item.result, "build", what)
        report(item.result, "convert", converted)
    return Built(built, model, tokenizer)


def _dry_run(item, options, report):
    from deploy import deliver

    host, profile, plan, result = item.host, item.profile, item.plan, item.result
    files = profile["files"]
    report(result, "render", f"would write {plan.source}")
    report(result, "build", "would run " + " ".join(plan.compile_command()))
    if item.header.byteorder != profile.endianness:
        report(result, "convert", f"would convert {options.model} to {profile.endianness}-endian")
    report(result, "stage", f"would stage {', '.join(files.values())} in {(options.stage_root or STAGE_DIR)}"
                            f"/{host.name}")
    for line in deliver.describe(host, profile, plan):
        report(result, "deliver", f"would {line}")
    if options.run:
        report(result, "run", "would run " + deliver.command_line(profile, options.run_args))


def deliver_host(item, built, options, report):
    """stage -> deliver -> run -> record for one host."""
    from deploy import deliver

    host, profile, plan, result = item.host, item.profile, item.plan, item.result
    files = profile["files"]
    sources = {**model_files(profile, files["model"], built.model), files["tokenizer"]: built.tokenizer}
    if built.build.ran:
        sources = {files["program"]: plan.program, **sources}
    else:
        sources = {path.name: path for path in sorted(plan.out_dir.iterdir())
                   if path.is_file() and not path.name.startswith(".")} | sources
    stage = stage_files(host.name, sources, options.stage_root,
                        extra={"target": profile.name, "exact": options.exact,
                               "build": " ".join(built.build.command)})
    report(result, "stage", ("unchanged: " if stage.reused else "") + f"{len(stage.files)} files in {stage.directory}")
    deliver.deliver(host, profile, plan, stage, options, lambda what: report(result, "deliver", what))
    if not options.run:
        return
    if not deliver.can_run(host):
        result.waiting = deliver.command_line(profile, options.run_args)
        report(result, "run", f"delivered; on {host.name}, type: {result.waiting}")
        return
    done = deliver.run(host, profile, plan, stage, options)
    result.text = done.stdout
    check_ran(host, done)
    result.tok_s = tokens_per_second(done.stderr)
    if result.tok_s is None:
        raise DeployError(host.name, "the program printed no tok/s: " + last_line(done.stderr))
    how = how_measured(host, profile)
    result.how = how_label(how, emulator_of(host, profile))
    record_run(host, profile, plan, options, result, how)
    report(result, "run", f"{result.tok_s:.2f} tok/s ({result.how})")


def last_line(text):
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1][:200] if lines else "no output"


def record_run(host, profile, plan, options, result, how):
    from deploy.manifest import sha256_file
    from deploy.results import Result, now, record, this_machine

    machine = this_machine() if host.connection in ("emulator", "vm") else host.get("description", host.name)
    record(Result(now(), host.name, profile.name, machine, how, plan.toolchain["name"],
                  " ".join(plan.cflags), str(options.model), sha256_file(options.model), result.tok_s,
                  options.exact), options.results)


def _size(path):
    from pathlib import Path

    try:
        return Path(path).stat().st_size
    except OSError as error:
        raise DeployError(path, error.strerror) from None


def deploy_hosts(hosts, options, console, parallel=4):
    """Every host's plan and fit first; then each distinct build once (however many hosts share it); then the hosts
    in parallel: stage, deliver, run."""
    report = Reporter(console)
    start = time.monotonic()
    prepared = [prepare_host(host, options, report) for host in hosts]
    ready = [item for item in prepared if isinstance(item, Prepared)]
    if options.dry:
        for item in ready:
            _dry_run(item, options, report)
    else:
        by_plan = {}
        for item in ready:
            by_plan.setdefault(item.plan.out_dir, []).append(item)
        builds = {}
        for out_dir, items in by_plan.items():
            try:
                builds[out_dir] = build_plan(items, options, report)
            except DeployError as error:
                for item in items:
                    _fail(item.result, report, error)

        def go(item):
            try:
                deliver_host(item, builds[item.plan.out_dir], options, report)
            except DeployError as error:
                _fail(item.result, report, error)
            item.result.seconds = time.monotonic() - start

        todo = [item for item in ready if item.plan.out_dir in builds]
        if todo:
            pool = ThreadPoolExecutor(max_workers=max(1, min(parallel, len(todo))))
            try:
                pending = [pool.submit(go, item) for item in todo]
                # Wait in short steps: Ctrl-C may be delivered to a worker thread, and the main thread only notices
                # it between waits.
                while pending:
                    _, pending = wait(pending, timeout=0.2)
            finally:
                pool.shutdown(wait=False, cancel_futures=True)  # on Ctrl-C, the caller stops the workers' children
    return [item.result if isinstance(item, Prepared) else item for item in prepared]
