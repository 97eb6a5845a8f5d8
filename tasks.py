"""Command-line tasks (invoke). Each task parses its options and calls into the deploy package, where the work is."""

import shlex
from json import dumps
import sys
from pathlib import Path

from invoke import Collection, task

from deploy.console import console, main_guard


def _build(target, exact, toolchain=None, force=False):
    from deploy.build import build
    from deploy.plan import make_plan
    from deploy.profile import load_profile

    return build(make_plan(load_profile(target), exact=exact, toolchain=toolchain), force=force)


@task(help={"target": "target profile name (see targets/), or all", "exact": "scalar kernel and portable math: "
            "the same bytes on every target", "toolchain": "use this toolchain of the profile (e.g. borland)",
            "force": "rebuild even when nothing changed"})
def build(c, target="host", exact=False, toolchain=None, force=False):
    """Render the port for a target and compile it (or write its bundle); prints the output's path."""
    from deploy.profile import known_targets

    if target != "all":
        result = main_guard(_build, target, exact, toolchain, force)
        state = "unchanged" if result.skipped else f"built in {result.seconds:.1f} s"
        if not result.ran:
            state = f"bundle to build on the target with {result.plan.toolchain['script']}"
        console.print(f"[dim]{' '.join(result.command)}[/]", soft_wrap=True)
        console.print(f"{result.output} ({state})")
        return
    from deploy.report import build_table

    from deploy.plan import toolchain_present
    from deploy.profile import load_profile

    results = []
    for name in known_targets():
        for entry in main_guard(load_profile, name).toolchains:
            if entry.get("kind") == "bundle" or toolchain_present(entry):
                with console.status(f"building {name} with {entry['name']}"):
                    results.append(main_guard(_build, name, exact, entry["name"], force))
    console.print(build_table(results))


def _passthrough(c):
    """The arguments after `--`, with their original quoting (invoke's remainder is one space-joined string)."""
    if "--" in sys.argv:
        return sys.argv[sys.argv.index("--") + 1:]
    return shlex.split(c.remainder)


def _run(target, model, tokenizer, exact, convert, args):
    from deploy.convert import model_for_target
    from deploy.models import resolve
    from deploy.runner import run_program

    model, tokenizer = resolve(model, tokenizer)
    result = _build(target, exact)
    model_path, tokenizer_path = model_for_target(result.plan.profile, model, tokenizer,
                                                  result.plan.out_dir / "model", convert)
    return run_program(result.plan, [model_path, "-z", tokenizer_path, *args])


@task(help={"target": "target profile name", "model": "catalog name (models.list) or checkpoint file",
            "tokenizer": "tokenizer.bin (a catalog model brings its own)",
            "exact": "use the exact build (the same bytes on every target)",
            "convert": "convert the files to the target's byte order when needed (--no-convert refuses instead)"})
def run(c, model="tiny260k", tokenizer=None, target="host", exact=False, convert=True):
    """Build if needed and run the program (under the target's emulator); arguments after `--` go to the program."""
    done = main_guard(_run, target, model, tokenizer, exact, convert, _passthrough(c))
    raise SystemExit(done.returncode)


@task(help={"model": "source checkpoint (catalog name or path)", "out": "output file (or folder with --target)",
            "tokenizer": "tokenizer.bin to convert too (with --target; a catalog model brings its own)", "target": "convert for this target profile",
            "version": "checkpoint version to write: 0, 1 or 2 (int8)", "byteorder": "little or big",
            "group_size": "int8 group size (v2)"})
def convert(c, model, out, tokenizer=None, target=None, version=None, byteorder=None, group_size=None):
    """Convert a checkpoint's version or byte order, or prepare model and tokenizer for a target."""
    from deploy import convert as conv
    from deploy.models import model_path, resolve
    from deploy.profile import load_profile

    def work():
        if target:
            source, source_tokenizer = resolve(model, tokenizer)
            files = conv.convert_for_target(load_profile(target), source, source_tokenizer, out,
                                            None if version is None else int(version))
            return files.manifests
        return [conv.convert_checkpoint(model_path(model), out, None if version is None else int(version),
                                        byteorder, None if group_size is None else int(group_size))]

    for entry in main_guard(work):
        console.print(f"{entry['file']}: {entry['size']:,} bytes, {entry['byteorder']}-endian, sha256 "
                      f"{entry['sha256'][:16]}…")


def raise_missing(message):
    from deploy.errors import DeployError

    raise DeployError(message)


@task(help={"out": "checkpoint to write", "shape": "stories260K, stories15M, stories42M or stories110M",
            "version": "0, 1 or 2", "seed": "random seed", "byteorder": "little or big"})
def synth(c, out, shape="stories260K", version=0, seed=0, byteorder="little"):
    """Write a random-weights checkpoint of a known shape (for tests and benchmarks)."""
    from deploy.errors import DeployError
    from deploy.synth import SHAPES, write_random_model

    def work():
        if shape not in SHAPES:
            raise DeployError(f"unknown shape '{shape}' (known: {', '.join(SHAPES)})")
        return write_random_model(out, SHAPES[shape], int(version), int(seed), byteorder)

    header = main_guard(work)
    console.print(f"{out}: v{header.version} {shape} ({Path(out).stat().st_size:,} bytes)")


@task(help={"model": "checkpoint file", "tokenizer": "optional tokenizer.bin to check against it"})
def inspect(c, model, tokenizer=None):
    """Show and validate a checkpoint's header (and a tokenizer against it)."""
    from rich.table import Table

    from deploy.byteorder import detect_tokenizer_byteorder
    from deploy.checkpoint import read_header
    from deploy.tokenizer import read_tokenizer

    def work():
        header = read_header(model)
        tok = tokenizer and read_tokenizer(tokenizer, header.config.vocab_size, detect_tokenizer_byteorder(tokenizer))
        return header, tok

    header, tok = main_guard(work)
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


@task(help={"target": "only this target"})
def doctor(c, target=None):
    """List each target's compilers and emulators: present (with version) or the command that installs them."""
    from deploy.doctor import install_commands, missing
    from deploy.report import doctor_table

    targets = [target] if target else None
    console.print(main_guard(doctor_table, targets))
    commands = install_commands(*missing(targets))
    if commands:
        console.print("missing; install with (as root), or run `invoke setup`:")
        for command in commands:
            console.print(f"  {command}", soft_wrap=True)
    else:
        console.print("everything is installed")


@task(help={"target": "only this target"})
def setup(c, target=None):
    """Install every missing compiler and emulator (apt as root, PyPI into this Python)."""
    from deploy.doctor import install, missing

    status = install(*missing([target] if target else None))
    raise SystemExit(status)


@task(help={"limit": "hosts or groups, comma-separated", "inventory": "inventory file (default inventory.yaml)"})
def inventory(c, limit=None, inventory=None):
    """Draw the inventory: groups, hosts, their targets and connections."""
    from deploy.inventory import load_inventory
    from deploy.report import inventory_tree

    inv = main_guard(load_inventory, inventory)
    chosen = {host.name for host in main_guard(inv.select, limit)}
    console.print(inventory_tree(inv, chosen))


@task(help={"target": "deploy to every host of this target (with --limit: those of them)",
            "host": "one host of the inventory", "limit": "hosts or groups, comma-separated",
            "model": "checkpoint (default: the inventory's model)", "tokenizer": "tokenizer.bin",
            "exact": "deploy the exact build", "dry": "print every step, command and transfer without doing it",
            "run": "run the program once delivered and report tok/s", "stay": "ftp-serve: keep serving",
            "timeout": "ftp-serve: stop waiting for the host after this many seconds",
            "inventory": "inventory file (default inventory.yaml)"})
def deploy(c, target=None, host=None, limit=None, model=None, tokenizer=None, exact=False, dry=False, run=False,
           stay=False, timeout=None, inventory=None):
    """Plan, build, convert, stage and deliver to hosts (in parallel), optionally run; ends in a summary table."""
    from deploy.inventory import load_inventory
    from deploy.pipeline import Options, deploy_hosts
    from deploy.report import deploy_table

    def choose():
        inv = load_inventory(inventory)
        hosts = inv.select(host or limit)
        if target:
            hosts = [h for h in hosts if h.target == target]
            if not hosts:
                raise_missing(f"{inv.path}: no host of target '{target}'" + (f" in '{host or limit}'" if
                                                                            host or limit else ""))
        return hosts

    from deploy.models import resolve

    hosts = main_guard(choose)
    chosen_model, chosen_tokenizer = main_guard(resolve, model or _inventory_default(hosts, "model"),
                                                tokenizer or _inventory_default(hosts, "tokenizer", required=False))
    options = Options(str(chosen_model), str(chosen_tokenizer), exact=exact, dry=dry, run=run, stay=stay,
                      timeout=float(timeout) if timeout else None)
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
        raise_missing(f"--{key} is needed (the inventory names " + ("no" if not values else "more than one")
                      + f" {key} for these hosts)")
    return values.pop()


@task(help={"host": "a host whose stage an earlier deploy left", "bind": "ADDR:PORT to listen on (default: the "
            "host's link address, port 21)", "stay": "keep serving after every file was sent"})
def serve(c, host, bind=None, stay=False):
    """Serve an existing stage with the built-in FTP server (for the old machine to pull)."""
    from deploy.inventory import load_inventory
    from deploy.serve import serve_stage

    def work():
        entry = load_inventory().select(host)[0]
        return serve_stage(entry, bind, stay, console)

    main_guard(work)


@task(help={"host": "inventory host to trust",
            "fingerprint": "the SHA256:... (or MD5:...) fingerprint read on the machine itself, to compare"})
def trust(c, host, fingerprint=None):
    """Show a host's SSH key fingerprint and record it in the project's known_hosts."""
    from deploy.inventory import load_inventory
    from deploy.sftp import fetch_host_key, trust_host

    def work():
        entry = load_inventory().select(host)[0]
        port, legacy = entry.get("port", 22), bool((entry.get("ssh") or {}).get("legacy"))
        key = fetch_host_key(entry["address"], port, legacy=legacy)[2]
        trust_host(entry.name, entry["address"], port, key, expected_fingerprint=fingerprint)

    main_guard(work)


@task(help={"target": "target profile", "model": "catalog name or checkpoint path",
            "tokenizer": "tokenizer.bin (a catalog model brings its own)",
            "json": "print the machine model's rows as JSON (one object per target, model and version)"})
def plan(c, target, model="tiny260k", tokenizer=None, json=False):
    """Does the model fit the target (memory, disk, file size, names)? What would fit instead? How fast should it be?"""
    from deploy.planner import plan_model
    from deploy.report import plan_tables

    report = main_guard(plan_model, target, model, tokenizer)
    if json:
        from deploy.report import speed_json

        print(dumps(speed_json(report[-1]), indent=1))
    else:
        for table in plan_tables(*report):
            console.print(table)
    if not report[3].ok:
        raise SystemExit(1)


@task(help={"target": "target profile (runs on its <target>-emu host unless --host or --native)",
            "host": "inventory host to run on (device or emulated)", "model": "catalog name or path",
            "tokenizer": "tokenizer.bin", "runs": "how many runs", "native": "run the build directly here",
            "exact": "the exact build"})
def bench(c, target=None, host=None, model="tiny260k", tokenizer=None, runs=5, native=False, exact=False):
    """Run a model on a target several times and record each tok/s in results/bench.jsonl."""
    from deploy import benchmark
    from deploy.inventory import load_inventory
    from deploy.models import resolve

    def work():
        model_path, tokenizer_path = resolve(model, tokenizer)
        if native:
            return benchmark.bench_native(target or "host", model_path, tokenizer_path, int(runs), exact)[0]
        entry = load_inventory().select(host or f"{target}-emu")[0]
        return benchmark.bench_host(entry, model_path, tokenizer_path, int(runs), exact, console=console)

    speeds = main_guard(work)
    console.print(f"tok/s: {' '.join(f'{v:.2f}' for v in speeds)}; median {benchmark.median(speeds):.2f} "
                  f"(recorded in results/bench.jsonl)")


@task(help={"out": "folder for the chart (PNG and SVG)",
            "json": "print the machine model's rows as JSON (one object per target, model and version)"})
def report(c, out="results", json=False):
    """Measured vs published vs predicted, per target and model, as a table and a chart."""
    from deploy.report import machine_model_rows, results_report, speed_json, speed_table

    if json:
        print(dumps(speed_json(main_guard(machine_model_rows)), indent=1))
        return
    table, charts = main_guard(results_report, out)
    console.print(table)
    console.print(speed_table(main_guard(machine_model_rows)))
    for chart in charts:
        console.print(f"chart: {chart}")


@task(help={"name": "catalog name (see models.list)"})
def fetch(c, name):
    """Download a catalog model and its tokenizer, with progress, resume and a size check."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    from deploy.models import fetch as fetch_model

    with Progress("{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(), console=console) as bar:
        tasks = {}

        def progress(name_, done, total):
            if name_ not in tasks:
                tasks[name_] = bar.add_task(name_, total=total)
            bar.update(tasks[name_], completed=done)

        path = main_guard(fetch_model, name, progress)
    console.print(f"{path}")


@task(name="list")
def list_models(c):
    """The model catalog: shape, size, format, source, and whether it is here."""
    from deploy.report import catalog_table

    console.print(catalog_table())


models = Collection("models", synth, inspect, fetch, list_models)
hosts = Collection("hosts", trust)
namespace = Collection(build, run, convert, plan, doctor, setup, inventory, deploy, serve, bench, report, models,
                       hosts)
