"""`invoke deploy`: for each host, profile -> plan (fit) -> render -> build -> convert -> stage -> deliver -> run.

Each step says whether it did work or found its inputs unchanged (content hashes); with dry=True every step only says
what it would do. Several hosts deploy in parallel; each ends in one HostResult for the summary table.
"""

import dataclasses
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from deploy.build import build
from deploy.checkpoint import read_header
from deploy.convert import model_for_target
from deploy.errors import DeployError
from deploy.fit import check_fit
from deploy.plan import make_plan
from deploy.profile import load_profile
from deploy.runner import tokens_per_second
from deploy.stage import STAGE_DIR, stage_files


@dataclasses.dataclass
class HostResult:
    host: str
    target: str
    connection: str
    steps: list = dataclasses.field(default_factory=list)  # (step, what happened)
    tok_s: float = None
    text: str = ""
    error: str = None
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


class Reporter:
    """Prints each step as `host  step  what` from any thread."""

    def __init__(self, console):
        self.console, self.lock = console, threading.Lock()

    def __call__(self, result, step, what):
        result.steps.append((step, what))
        with self.lock:
            self.console.print(f"[bold]{result.host:<18}[/] [cyan]{step:<8}[/] {what}", soft_wrap=True,
                               highlight=False)


def deploy_host(host, options, report):
    result = HostResult(host.name, host.target, host.connection)
    start = time.monotonic()
    try:
        _deploy(host, options, report, result)
    except DeployError as error:
        result.error = str(error)
        report(result, "failed", f"[red]{error}[/]")
    result.seconds = time.monotonic() - start
    return result


def _deploy(host, options, report, result):
    from deploy import deliver

    profile = load_profile(host.target)
    toolchain = (host.get("ssh") or {}).get("build") if host.connection == "sftp" else None
    plan = make_plan(profile, exact=options.exact, toolchain=toolchain, build_dir=options.build_dir)
    header = read_header(options.model)
    files = profile["files"]
    sizes = {files["model"]: _size(options.model), files["tokenizer"]: _size(options.tokenizer),
             files["program"]: 0}
    fit = check_fit(profile, header, sizes)
    if not fit.ok:
        raise DeployError(f"{host.name}: {options.model} does not fit {profile.name}: " + "; ".join(fit.problems()))
    report(result, "plan", f"fits {profile.name}: " + ", ".join(f"{c.what} {c.need} of {c.limit}" for c in fit.checks))
    if options.dry:
        report(result, "render", f"would write {plan.source}")
        report(result, "build", "would run " + " ".join(plan.compile_command()))
        if header.byteorder != profile.endianness:
            report(result, "convert", f"would convert {options.model} to {profile.endianness}-endian")
        report(result, "stage", f"would stage {', '.join(files.values())} in {(options.stage_root or STAGE_DIR)}"
                                f"/{host.name}")
        for line in deliver.describe(host, profile, plan):
            report(result, "deliver", f"would {line}")
        if options.run:
            report(result, "run", "would run " + " ".join(deliver.run_line(host, profile, plan, options.run_args)))
        return
    built = build(plan)
    report(result, "build", f"{built.output.name} unchanged" if built.skipped else
           f"{built.output.name} built in {built.seconds:.1f} s" + (f" ({len(built.warnings)} warnings)"
                                                                     if built.warnings else ""))
    model, tokenizer = model_for_target(profile, options.model, options.tokenizer, plan.out_dir / "model")
    report(result, "convert", "already in the target's byte order" if str(model) == str(options.model) else
           f"{profile.endianness}-endian copies in {model.parent}")
    sources = {files["model"]: model, files["tokenizer"]: tokenizer}
    if built.ran:
        sources = {files["program"]: plan.program, **sources}
    else:
        sources = {path.name: path for path in sorted(plan.out_dir.iterdir())
                   if path.is_file() and not path.name.startswith(".")} | sources
    stage = stage_files(host.name, sources, options.stage_root,
                        extra={"target": profile.name, "exact": options.exact, "build": " ".join(built.command)})
    report(result, "stage", ("unchanged: " if stage.reused else "") + f"{len(stage.files)} files in {stage.directory}")
    deliver.deliver(host, profile, plan, stage, options, lambda what: report(result, "deliver", what))
    if options.run:
        done = deliver.run(host, profile, plan, stage, options)
        result.text = done.stdout
        result.tok_s = tokens_per_second(done.stderr)
        report(result, "run", f"{result.tok_s:.2f} tok/s" if result.tok_s is not None else "no tok/s in the output")


def _size(path):
    from pathlib import Path

    try:
        return Path(path).stat().st_size
    except OSError as error:
        raise DeployError(path, error.strerror) from None


def deploy_hosts(hosts, options, console, parallel=4):
    report = Reporter(console)
    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(hosts)))) as pool:
        return list(pool.map(lambda host: deploy_host(host, options, report), hosts))
