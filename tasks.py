"""Command-line tasks (invoke). Each task checks its options and calls into the deploy package, where the work is.

Every task runs under one guard: a bad input is one line on stderr (exit 1), Ctrl-C stops the task and every process
it started (exit 130). Long options only: a short flag would mean different things in different tasks.
"""

import inspect
import shlex
import sys
from json import dumps
from pathlib import Path

import invoke
from invoke import Collection

from deploy import args as check
from deploy.checkpoint import VERSIONS
from deploy.console import console, main_guard


def task(help, positional=()):
    """invoke's @task with long options only, each option's default in its help, and the whole body guarded;
    `positional` options may also be given by place (`invoke hosts.trust rpi4`)."""
    def decorate(function):
        texts = dict(help)
        for name, parameter in inspect.signature(function).parameters.items():
            default = parameter.default
            if name in texts and default not in (inspect.Parameter.empty, None, False, ""):
                texts[name] += f" (default: {default})"

        def guarded(c, *args, **kwargs):
            return main_guard(function, c, *args, **kwargs)

        guarded.__signature__ = inspect.signature(function)
        guarded.__name__, guarded.__doc__ = function.__name__, function.__doc__
        return invoke.task(guarded, help=texts, auto_shortflags=False, positional=list(positional))

    return decorate


def _raise(message):
    from deploy.errors import DeployError

    raise DeployError(message)


def _load_inventory(path):
    from deploy.inventory import load_inventory

    return load_inventory(path)


def _one_host(inventory, name):
    hosts = _load_inventory(inventory).select(name)
    if len(hosts) != 1:
        _raise(f"--host {name}: names a group of {len(hosts)} hosts ({', '.join(h.name for h in hosts)}); "
               "name one host")
    return hosts[0]


def _target(name):
    from deploy.profile import load_profile

    return load_profile(name)


def _build(target, exact, toolchain=None, force=False, upstream=False, stream=False):
    from deploy.build import build
    from deploy.plan import make_plan

    mode = "upstream" if upstream else None
    return build(make_plan(_target(target), exact=exact, toolchain=toolchain, mode=mode, stream=stream), force=force)


@task(help={"target": "target profile name (see targets/), or all", "exact": "scalar kernel and portable math: "
            "the same bytes on every target", "toolchain": "use this toolchain of the profile (e.g. borland)",
            "force": "rebuild even when nothing changed",
            "upstream": "scalar kernel and libm: prints what upstream llama2.c run.c/runq.c print",
            "stream": "stream the weights from disk under a memory budget (the program's -b MB; docs/streaming.md)"})
def build(c, target="host", exact=False, toolchain=None, force=False, upstream=False, stream=False):
    """Render the port for a target and compile it (or write its bundle); prints the output's path."""
    from deploy.profile import known_targets

    if target != "all":
        with console.status(f"building {target}"):
            result = _build(target, exact, toolchain, force, upstream, stream)
        state = "unchanged" if result.skipped else f"built in {result.seconds:.1f} s"
        if not result.ran:
            state = f"bundle to build on the target with {result.plan.toolchain['script']}"
        console.print(f"[dim]{' '.join(result.command)}[/]", soft_wrap=True)
        console.print(f"{result.output} ({state})")
        return
    from deploy.plan import toolchain_present
    from deploy.report import build_table

    results = []
    for name in known_targets():
        for entry in _target(name).toolchains:
            if entry.get("kind") == "bundle" or toolchain_present(entry):
                with console.status(f"building {name} with {entry['name']}"):
                    results.append(_build(name, exact, entry["name"], force, upstream, stream))
    console.print(build_table(results))


def _passthrough(c):
    """The arguments after `--`, with their original quoting (invoke's remainder is one space-joined string)."""
    if "--" in sys.argv:
        return sys.argv[sys.argv.index("--") + 1:]
    return shlex.split(c.remainder)


def _echo(data, is_stderr):
    stream = sys.stderr.buffer if is_stderr else sys.stdout.buffer
    stream.write(data)
    stream.flush()


@task(help={"target": "target profile name (runs here, under its emulator)", "model": "catalog name (models.list) "
            "or checkpoint file", "tokenizer": "catalog name or tokenizer.bin (a catalog model brings its own)",
            "host": "run on this inventory host instead (deploys first; SSH, adb or emulated)",
            "inventory": "inventory file (default inventory.yaml)",
            "exact": "use the exact build (the same bytes on every target)",
            "convert": "convert the files to the target's byte order when needed (--no-convert refuses instead)",
            "upstream": "use the upstream build (prints what upstream llama2.c prints)",
            "stream": "use the streaming build (weights read from disk; pass -b MB after --)"})
def run(c, model="tiny260k", tokenizer=None, target="host", host=None, inventory=None, exact=False, convert=True,
        upstream=False, stream=False):
    """Build if needed and run the program (under the target's emulator, or on --host); arguments after `--` go to
    the program."""
    from deploy.models import resolve

    model, tokenizer = resolve(model, tokenizer)
    if host:
        raise SystemExit(_run_on_host(_one_host(inventory, host), model, tokenizer, exact, _passthrough(c), stream))
    from deploy.convert import model_for_target
    from deploy.runner import run_program

    result = _build(target, exact, upstream=upstream, stream=stream)
    model_path, tokenizer_path = model_for_target(result.plan.profile, model, tokenizer,
                                                  result.plan.out_dir / "model", convert)
    raise SystemExit(run_program(result.plan, [model_path, "-z", tokenizer_path, *_passthrough(c)],
                                 capture=False).returncode)


def _run_on_host(host, model, tokenizer, exact, args, stream=False):
    from deploy import deliver
    from deploy.pipeline import Options, deploy_hosts, run_delivered

    options = Options(str(model), str(tokenizer), exact=exact, run_args=tuple(args), stream=stream)
    outcome = deploy_hosts([host], options, console)[0]
    if outcome.error:
        raise SystemExit(1)
    if not deliver.can_run(host):
        _raise(f"{host.name} connects by {host.connection}: start the program there; type: "
               + deliver.command_line(_target(host.target), options.run_args))
    return run_delivered(host, options, echo=_echo).returncode


@task(help={"model": "source checkpoint (catalog name or path)", "out": "output file (or folder with --target)",
            "tokenizer": "catalog name or tokenizer.bin to convert too (with --target; a catalog model brings its "
                         "own)", "target": "convert for this target profile",
            "version": "checkpoint version to write: 0, 1, 2 (int8) or 3 (ternary)", "byteorder": "little or big",
            "group_size": "int8 group size (v2); must divide dim and hidden_dim"})
def convert(c, model=None, out=None, tokenizer=None, target=None, version=None, byteorder=None, group_size=None):
    """Convert a checkpoint's version or byte order, or prepare model and tokenizer for a target."""
    from deploy import convert as conv
    from deploy.models import model_path, resolve

    model, out = check.required("model", model), check.required("out", out)
    version = check.choice("version", check.integer("version", version), list(VERSIONS))
    byteorder = check.choice("byteorder", byteorder, ["little", "big"])
    group_size = check.integer("group-size", group_size, minimum=1)
    if target:
        profile = _target(target)
        source, source_tokenizer = resolve(model, tokenizer)
        entries = conv.convert_for_target(profile, source, source_tokenizer, check.output_folder("out", out),
                                          version).manifests
    else:
        entries = [conv.convert_checkpoint(model_path(model), out, version, byteorder,
                                           group_size)]
    for entry in entries:
        console.print(f"{entry['file']}: {entry['size']:,} bytes, {entry['byteorder']}-endian, sha256 "
                      f"{entry['sha256'][:16]}…")


@task(help={"out": "checkpoint to write", "shape": "stories260K, stories15M, stories42M or stories110M",
            "version": "0, 1, 2 (int8) or 3 (ternary)", "seed": "random seed", "byteorder": "little or big"})
def synth(c, out=None, shape="stories260K", version="0", seed="0", byteorder="little"):
    """Write a random-weights checkpoint of a known shape (for tests and benchmarks)."""
    from deploy.synth import SHAPES, write_random_model

    out = check.required("out", out)
    shape = check.choice("shape", shape, list(SHAPES))
    version = check.choice("version", check.integer("version", version), list(VERSIONS))
    seed = check.integer("seed", seed, minimum=0, maximum=2**32 - 1)
    byteorder = check.choice("byteorder", byteorder, ["little", "big"])
    header = write_random_model(out, SHAPES[shape], version, seed, byteorder)
    console.print(f"{out}: v{header.version} {shape} ({Path(out).stat().st_size:,} bytes)")


@task(help={"model": "catalog name or checkpoint file", "tokenizer": "catalog name or tokenizer.bin to check "
            "against it"})
def inspect_model(c, model=None, tokenizer=None):
    """Show and validate a checkpoint's header (and a tokenizer against it)."""
    from rich.table import Table

    from deploy.byteorder import detect_tokenizer_byteorder
    from deploy.checkpoint import read_header
    from deploy.models import model_path, resolve
    from deploy.tokenizer import read_tokenizer

    model = check.required("model", model)
    header = read_header(model_path(model))
    tok = None
    if tokenizer:
        tokenizer = resolve(model, tokenizer)[1]
        tok = read_tokenizer(tokenizer, header.config.vocab_size, detect_tokenizer_byteorder(tokenizer))
    table = Table(title=str(model))
    table.add_column("field")
    table.add_column("value", justify="right")
    table.add_row("version", str(header.version))
    table.add_row("byte order", header.byteorder)
    if header.quantized:
        table.add_row("group size", str(header.group_size))
    for name, value in vars(header.config).items():
        table.add_row(name, str(value))
    table.add_row("parameters", f"{header.config.parameter_count():,}")
    if tok:
        table.add_row("tokenizer", f"{tok.vocab_size} tokens, max length {tok.max_token_length}")
    console.print(table)


def _targets_or_all(target):
    return [_target(target).name] if target else None


@task(help={"target": "only this target"})
def doctor(c, target=None):
    """List each target's compilers and emulators: present (with version) or the command that installs them."""
    from deploy.doctor import install_commands, missing
    from deploy.report import doctor_table

    targets = _targets_or_all(target)
    console.print(doctor_table(targets))
    commands = install_commands(*missing(targets))
    if commands:
        console.print("missing; install with (as root), or run `invoke setup`:")
        for command in commands:
            console.print(f"  {command}", soft_wrap=True)
    else:
        console.print("everything is installed")


@task(help={"target": "only this target"})
def setup(c, target=None):
    """Install every missing compiler and emulator (apt as root, PyPI into this Python), and build the image of each
    whole emulated machine (its Debian packages are downloaded and unpacked under build/, not installed)."""
    from deploy.doctor import install, missing, prepare_machines

    targets = _targets_or_all(target)
    status = install(*missing(targets))
    if status == 0:
        prepare_machines(targets, say=console.print)
    raise SystemExit(status)


@task(help={"limit": "hosts or groups, comma-separated", "inventory": "inventory file (default inventory.yaml)"})
def inventory(c, limit=None, inventory=None):
    """Draw the inventory: groups, hosts, their targets and connections."""
    from deploy.report import inventory_tree

    inv = _load_inventory(inventory)
    chosen = {host.name for host in inv.select(limit)}
    console.print(inventory_tree(inv, chosen))


@task(help={"target": "deploy to every host of this target (with --limit: those of them)",
            "host": "one host of the inventory", "limit": "hosts or groups, comma-separated",
            "model": "catalog name or checkpoint (default: the inventory's model)",
            "tokenizer": "catalog name or tokenizer.bin", "exact": "deploy the exact build",
            "dry": "print every step, command and transfer without doing it",
            "run": "run the program once delivered and report tok/s (recorded in results/bench.jsonl)",
            "prompt": "with --run: the prompt", "steps": "with --run: how many tokens", "seed": "with --run: the "
            "sampling seed", "stay": "ftp-serve: keep serving until Ctrl-C",
            "timeout": "ftp-serve: stop waiting for the host after this many seconds",
            "inventory": "inventory file (default inventory.yaml)",
            "stream": "stream the weights from disk even where they fit (chosen anyway where they do not)"})
def deploy(c, target=None, host=None, limit=None, model=None, tokenizer=None, exact=False, dry=False, run=False,
           prompt="Once upon a time", steps="128", seed="42", stay=False, timeout=None, inventory=None, stream=False):
    """Plan, build, convert, stage and deliver to hosts (in parallel), optionally run; ends in a summary table."""
    from deploy.models import resolve
    from deploy.pipeline import Options, deploy_hosts
    from deploy.report import deploy_table

    steps = check.integer("steps", steps, minimum=0)
    seed = check.integer("seed", seed, minimum=0)
    timeout = check.real("timeout", timeout, minimum=0)
    inv = _load_inventory(inventory)
    if host and limit:
        _raise("give --host or --limit, not both")
    hosts = inv.select(host or limit)
    if target:
        _target(target)
        hosts = [h for h in hosts if h.target == target]
        if not hosts:
            _raise(f"{inv.path}: no host of target '{target}'" + (f" in '{host or limit}'" if host or limit else ""))
    chosen_model, chosen_tokenizer = resolve(model or _inventory_default(hosts, "model"),
                                             tokenizer or _inventory_default(hosts, "tokenizer", required=False))
    options = Options(str(chosen_model), str(chosen_tokenizer), exact=exact, dry=dry, run=run, stay=stay,
                      timeout=timeout, stream=stream, run_args=("-n", str(steps), "-s", str(seed), "-i", prompt))
    results = deploy_hosts(hosts, options, console)
    console.print(deploy_table(results))
    texts = {}
    for result in results:
        if result.text:
            texts.setdefault(result.text.strip(), []).append(result.host)
    for text, names in texts.items():
        console.print(f"\n[bold]{', '.join(names)}[/] printed:\n{text[:800]}")
    if any(result.error for result in results):
        raise SystemExit(1)


def _inventory_default(hosts, key, required=True):
    values = {h.get(key) for h in hosts if h.get(key)}
    if not values and not required:
        return None
    if len(values) != 1:
        _raise(f"--{key} is needed (the inventory names " + ("no" if not values else "more than one")
               + f" {key} for these hosts)")
    return values.pop()


@task(help={"host": "an ftp-serve host whose stage an earlier deploy left", "bind": "ADDR:PORT to listen on "
            "(default: the host's link address and FTP port)", "stay": "keep serving until Ctrl-C",
            "inventory": "inventory file (default inventory.yaml)"}, positional=["host"])
def serve(c, host=None, bind=None, stay=False, inventory=None):
    """Serve an existing stage with the built-in FTP server (for the old machine to pull)."""
    from deploy.serve import serve_stage

    host = check.required("host", host)
    serve_stage(_one_host(inventory, host), bind, stay, console)


@task(help={"host": "inventory host to trust",
            "fingerprint": "the SHA256:... (or MD5:...) fingerprint read on the machine itself, to compare",
            "inventory": "inventory file (default inventory.yaml)"}, positional=["host"])
def trust(c, host=None, fingerprint=None, inventory=None):
    """Show a host's SSH key fingerprint and record it in the project's known_hosts."""
    from deploy.sftp import trust_inventory_host

    host = check.required("host", host)
    trust_inventory_host(_one_host(inventory, host), fingerprint)


@task(help={"target": "target profile", "model": "catalog name or checkpoint path",
            "tokenizer": "catalog name or tokenizer.bin (a catalog model brings its own)",
            "json": "print the machine model's rows as JSON (one object per target, model and version)"})
def plan(c, target=None, model="tiny260k", tokenizer=None, json=False):
    """Does the model fit the target (memory, disk, file size, names)? What would fit instead? How fast should it be?"""
    from deploy.planner import plan_model
    from deploy.report import plan_tables

    target = check.required("target", target)
    report = plan_model(target, model, tokenizer)
    if json:
        from deploy.report import speed_json

        from deploy.planner import streaming_json

        print(dumps(speed_json(report[-1]) + streaming_json(*report[:4]), indent=1))
    else:
        for table in plan_tables(*report):
            console.print(table)
    if not report[3].ok:
        raise SystemExit(1)


@task(help={"target": "target profile (runs on its <target>-emu host unless --host or --native)",
            "host": "inventory host to run on (device or emulated)", "model": "catalog name or path",
            "tokenizer": "catalog name or tokenizer.bin", "runs": "how many runs",
            "native": "run the build directly here", "exact": "the exact build",
            "inventory": "inventory file (default inventory.yaml)"})
def bench(c, target=None, host=None, model="tiny260k", tokenizer=None, runs="5", native=False, exact=False,
          inventory=None):
    """Run a model on a target several times and record each tok/s in results/bench.jsonl."""
    from deploy import benchmark
    from deploy.models import resolve

    runs = check.integer("runs", runs, minimum=1, maximum=1000)
    if not (target or host):
        _raise("give --target or --host")
    if target:
        _target(target)
    model_path, tokenizer_path = resolve(model, tokenizer)
    if native:
        speeds = benchmark.bench_native(target or "host", model_path, tokenizer_path, runs, exact)[0]
        how = "native, this PC"
    else:
        entry = _one_host(inventory, host or f"{target}-emu")
        speeds = benchmark.bench_host(entry, model_path, tokenizer_path, runs, exact, console=console)
        how = "emulated on this PC" if entry.connection in ("emulator", "vm") else f"on {entry.name}"
    console.print(f"tok/s ({how}): {' '.join(f'{v:.2f}' for v in speeds)}; median {benchmark.median(speeds):.2f} "
                  f"(recorded in results/bench.jsonl)")


@task(help={"target": "the target profile of the machine", "model": "the model it ran (catalog name or file name)",
            "output": "the program's own last line, as on the machine's screen (e.g. 'achieved tok/s: 38.9')",
            "tok_s": "the figure, when --output does not hold it", "note": "anything worth keeping: machine, "
            "build, conditions", "host": "the inventory host it ran on (a name to keep)"})
def record(c, target=None, model=None, output="", tok_s=None, note="", host=None):
    """Record a figure measured by hand on a real machine; `invoke report` sets it beside the published ones."""
    from deploy.results import record_by_hand

    target, model = check.required("target", target), check.required("model", model)
    result = record_by_hand(_target(target).name, model, output, check.real("tok-s", tok_s, minimum=0), note,
                            host)
    console.print(f"recorded {result.tok_s:g} tok/s for {result.model} on {result.target} (measured on the machine)")


@task(help={"out": "folder for the chart (PNG and SVG)",
            "json": "print the machine model's rows as JSON (one object per target, model and version)"})
def report(c, out="results", json=False):
    """Measured vs published vs predicted, per target and model, as a table and a chart."""
    from deploy.report import machine_model_rows, results_report, speed_json, speed_table

    if json:
        print(dumps(speed_json(machine_model_rows()), indent=1))
        return
    table, charts = results_report(check.output_folder("out", out))
    console.print(table)
    console.print(speed_table(machine_model_rows()))
    for chart in charts:
        console.print(f"chart: {chart}")


@task(help={"results": "also delete the recorded results (results/)"})
def clean(c, results=False):
    """Delete what the tasks made: builds (build/), stages (stage/) and, with --results, results/."""
    from deploy.clean import clean as remove

    for path, size in remove(results):
        console.print(f"removed {path} ({size / 2**20:,.1f} MB)")


@task(help={"name": "catalog name (see models.list)"}, positional=["name"])
def fetch(c, name=None):
    """Download a catalog model and its tokenizer, with progress, resume and a size check."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    from deploy.models import fetch as fetch_model

    name = check.required("name", name)
    with Progress("{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(), console=console) as bar:
        tasks = {}

        def progress(name_, done, total):
            if name_ not in tasks:
                tasks[name_] = bar.add_task(name_, total=total)
            bar.update(tasks[name_], completed=done)

        path = fetch_model(name, progress)
    console.print(f"{path}")


@task(help={})
def list_models(c):
    """The model catalog: shape, size, format, source, and whether it is here."""
    from deploy.report import catalog_table

    console.print(catalog_table())


models = Collection("models", synth, fetch)
models.add_task(inspect_model, "inspect")
models.add_task(list_models, "list")
hosts = Collection("hosts", trust)
namespace = Collection(build, run, convert, plan, doctor, setup, inventory, deploy, serve, bench, record, report,
                       clean, models, hosts)
