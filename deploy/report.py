"""Tables for the terminal (rich): builds, tools."""

from rich.table import Table

KINDS = {0: "fp32", 1: "fp32", 2: "int8", 3: "ternary"}  # what each checkpoint version holds


def build_table(results):
    table = Table(title="builds")
    for column in ("target", "toolchain", "flags", "output", "size", "warnings", "seconds"):
        table.add_column(column, justify="right" if column in ("size", "warnings", "seconds") else "left")
    for result in results:
        plan = result.plan
        output = result.output
        size = f"{output.stat().st_size:,}" if result.ran and output.exists() else "bundle"
        seconds = "cached" if result.skipped else f"{result.seconds:.1f}"
        flags = " ".join(plan.cflags) if not plan.is_bundle else " ".join(plan.compile_command()[1:])
        table.add_row(plan.target + (" (exact)" if plan.exact else ""), plan.toolchain["name"], flags, output.name,
                      size, str(len(result.warnings)), seconds)
    return table


def doctor_table(targets=None):
    from deploy.doctor import install_commands, tools, version_of

    table = Table(title="toolchains and emulators")
    for column in ("target", "role", "command", "status"):
        table.add_column(column)
    for tool in tools(targets):
        if tool.present:
            status = f"[green]{version_of(tool.command) or 'present'}[/]"
        else:
            status = "[red]missing[/]: " + "; ".join(install_commands(tool.packages, tool.pip)[-1:])
        table.add_row(tool.target, tool.role, " ".join(tool.command[-1:] if tool.pip else tool.command), status)
    return table


def inventory_tree(inventory, chosen):
    from rich.tree import Tree

    def add(branch, name, node):
        for host_name in node["hosts"]:
            host = inventory.hosts[host_name]
            where = host.get("address") or "this machine"
            branch.add(f"[bold]{host_name}[/] {host.target} via {host.connection} ({where})",
                       style="" if host_name in chosen else "dim")
        for child, child_node in node["children"].items():
            add(branch.add(f"[cyan]{child}[/]"), child, child_node)

    root = Tree(f"[cyan]all[/] ({inventory.path.name})")
    add(root, "all", inventory.tree)
    return root


def deploy_table(results):
    table = Table(title="deploy")
    for column in ("host", "target", "connection", "steps", "tok/s", "how obtained", "seconds", "result"):
        table.add_column(column, justify="right" if column in ("tok/s", "seconds") else "left")
    for result in results:
        steps = " ".join(dict.fromkeys(step for step, _ in result.steps if step != "failed"))
        if result.error:
            outcome = f"[red]{result.error}[/]"
        elif result.waiting:
            outcome = f"[yellow]delivered[/]: type {result.waiting}"
        else:
            outcome = "[green]ok[/]"
        table.add_row(result.host, result.target, result.connection, steps,
                      f"{result.tok_s:.2f}" if result.tok_s is not None else "", result.how,
                      f"{result.seconds:.1f}", outcome)
    return table


def plan_tables(profile, model_name, header, fit, prediction, alternatives, speeds):
    """The tables `invoke plan` prints: the fit checks, alternatives when it does not fit, the machine model."""
    kind = f"int8, group size {header.group_size}" if header.version == 2 else KINDS[header.version]
    fit_table = Table(title=f"{model_name} ({kind}) on {profile.name}")
    for column in ("check", "needs", "limit", "result"):
        fit_table.add_column(column)
    for check in fit.checks:
        fit_table.add_row(check.what, check.need, check.limit, "[green]fits[/]" if check.ok else "[red]too big[/]")
    tables = [fit_table]
    if not fit.ok:
        alt = Table(title="what would fit instead")
        for column in ("alternative", "file", "memory", "fits"):
            alt.add_column(column)
        for option in alternatives:
            memory = f"{option.memory_bytes / 2**20:,.1f} MB" if option.memory_bytes else ""
            alt.add_row(option.what, f"{option.model_bytes / 2**20:,.1f} MB", memory,
                        ("[green]yes[/]" if option.fits else "[red]no[/]") + (f" ({option.note})" if option.note
                                                                             else ""))
        tables.append(alt)
    if prediction:
        fit_table.caption = f"expected on the real machine: {prediction.tok_s:.3g} tok/s ({prediction.how})"
    tables.append(speed_table(speeds, f"expected speed on the real {profile.name} (machine model)"))
    return tables


def speed_table(rows, title="machine model: predicted vs published (tok/s on the real machines)"):
    """Per target and model: the published figure and its port, the model's prediction for that port, its error,
    and the prediction for the project's build in fp32 and int8."""
    table = Table(title=title, caption="error = predicted / published - 1. Counts: deploy/data/counts.json "
                                       "(scripts/count_machines.py); method: docs/machine-model.md")
    for column in ("target", "model", "published", "published port", "predicted (that port)", "error",
                   "ours fp32", "ours int8", "ours ternary", "note"):
        table.add_column(column, justify="right" if column in ("published", "predicted (that port)", "error",
                                                               "ours fp32", "ours int8", "ours ternary") else "left")

    def show(value):
        return f"{value:.3g}" if value else ""

    for row in rows:
        notes = [row.note] if row.note else []
        if row.fitted_here:
            notes.append("the machine's one fitted constant is fitted on this figure")
        if row.stale:
            notes.append("[yellow]stale: our build changed since it was counted[/]")
        error = f"{row.error:+.0%}" if row.error is not None else ""
        table.add_row(row.target, row.model, show(row.published_tok_s), row.published_port,
                      show(row.predicted_published_port_tok_s), error, show(row.predicted_tok_s),
                      show(row.predicted_int8_tok_s), show(row.predicted_ternary_tok_s), "; ".join(notes))
    return table


def speed_json(rows):
    """One object per target, model and checkpoint version (0 fp32, 2 int8, 3 ternary)."""
    found = []
    for row in rows:
        for version, predicted in ((0, row.predicted_tok_s), (2, row.predicted_int8_tok_s),
                                   (3, row.predicted_ternary_tok_s)):
            data = row.as_json(version)
            data["predicted_tok_s"] = predicted
            data.pop("predicted_int8_tok_s")
            data.pop("predicted_ternary_tok_s")
            found.append(data)
    return found


def _model_name(model):
    from pathlib import Path

    from deploy.models import CATALOG

    name = Path(model).name
    return next((entry.name for entry in CATALOG.values() if entry.file == name or entry.name == model), Path(
        model).stem)


def report_rows(results):
    """(target, model, how, measured median, runs, published, predicted) for every measured or published pair; `how`
    is how the measured figure was obtained (deploy.results: native, emulated, device, by hand)."""
    import statistics

    from deploy.machine_model import counted_model, load_counts
    from deploy.models import CATALOG
    from deploy.planner import predict
    from deploy.profile import known_targets, load_profile
    from deploy.results import on_hardware

    counts = load_counts()

    measured = {}
    for result in results:
        measured.setdefault((result.target, _model_name(result.model), result.how), []).append(result.tok_s)
    rows = []
    for target in known_targets():
        profile = load_profile(target)
        published = {figure["model"]: figure.get("tok_s") for figure in profile.get("published") or []}
        models = {model for (t, model, _) in measured if t == target} | set(published)
        for model in sorted(models):
            entry = CATALOG.get(model)
            counted = counted_model(entry.shape) if entry else None
            prediction = predict(target, counted, 0, counts) if counted else None
            hows = [how for (t, m, how) in measured if t == target and m == model]
            figure = published.get(model)
            if figure is None and entry is not None:  # a model of a published model's shape compares directly
                figure = next((tok_s for name, tok_s in published.items()
                               if name in CATALOG and CATALOG[name].shape == entry.shape), None)
            predicted = prediction.tok_s if prediction else None
            if (figure or predicted) and not any(on_hardware(how) for how in hows):
                hows.insert(0, "")
            for how in hows:
                values = measured.get((target, model, how), [])
                comparable = not how or on_hardware(how)  # an emulator's speed is not set beside the machine's
                rows.append((target, model, how, statistics.median(values) if values else None, len(values),
                             figure if comparable else None, predicted if comparable else None))
    return rows


def results_report(out="results", results_path=None):
    from deploy.results import how_label, load

    rows = report_rows(load(results_path))
    table = Table(title="measured vs published vs predicted (tok/s); emulated figures measure this PC's emulator, "
                        "not the machine")
    for column in ("target", "model", "measured how", "measured (median)", "runs", "published", "predicted"):
        table.add_column(column, justify="right" if column in ("measured (median)", "runs", "published",
                                                               "predicted") else "left")

    def show(value):
        return f"{value:.3g}" if value is not None else ""

    for target, model, how, measured, runs, published, predicted in rows:
        table.add_row(target, model, how_label(how) if how else "", show(measured), str(runs or ""), show(published),
                      show(predicted))
    return table, chart(rows, out)


def machine_model_rows():
    from deploy.machine_model import rows

    return rows()[0]


def chart(rows, out):
    """Bar charts, log scale. Left: the machines themselves, published beside predicted and beside figures measured
    on the hardware. Right (hatched, apart): speeds on this PC, natively or under an emulator, which say nothing of
    the machine's own speed."""
    import textwrap
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from deploy.atomic import partial_name
    from deploy.results import how_label, on_hardware

    hardware = [row for row in rows if row[5] or row[6] or (row[3] and on_hardware(row[2]))]
    this_pc = [row for row in rows if row[3] and row[2] and not on_hardware(row[2])]
    if not hardware and not this_pc:
        return []
    panels = [(rows_, title) for rows_, title in
              ((hardware, "on the machines: published, predicted, measured on hardware"),
               (this_pc, "on this PC, emulated or native\n(not the machines' speed)")) if rows_]
    figure, axes_list = plt.subplots(1, len(panels), squeeze=False, width_ratios=[max(1, len(p[0])) for p in panels],
                                     figsize=(max(8, 1.3 * sum(len(p[0]) for p in panels) + 2), 5.5))
    for axes, (shown, title) in zip(axes_list[0], panels):
        if shown is hardware:
            series = [("measured on hardware", lambda r: r[3] if on_hardware(r[2]) else None, "#2b6cb0", None),
                      ("published", lambda r: r[5], "#dd6b20", None), ("predicted", lambda r: r[6], "#a0aec0", None)]
            labels = [f"{t}\n{textwrap.fill(m, 14)}" for t, m, *_ in shown]
        else:
            series = [("measured on this PC", lambda r: r[3], "#d69e2e", "//")]
            labels = [f"{t}\n{textwrap.fill(m, 14)}\n({how_label(h)})" for t, m, h, *_ in shown]
        width = 0.8 / len(series)
        for offset, (name, value_of, colour, hatch) in enumerate(series):
            values = [value_of(row) or 0 for row in shown]
            positions = [i + (offset - (len(series) - 1) / 2) * width for i in range(len(shown))]
            bars = axes.bar(positions, [v if v > 0 else float("nan") for v in values], width, label=name,
                            color=colour, hatch=hatch, edgecolor="#4a5568" if hatch else None)
            for bar, value in zip(bars, values):
                if value:
                    axes.annotate(f"{value:.3g}", (bar.get_x() + bar.get_width() / 2, value), ha="center",
                                  va="bottom", fontsize=7)
        axes.set_yscale("log")
        axes.set_ylabel("tokens per second (log scale)")
        axes.set_xticks(range(len(shown)), labels, fontsize=8)
        axes.set_title(title, fontsize=10)
        axes.legend(loc="upper left", fontsize=8)
        axes.grid(axis="y", which="both", alpha=0.3)
    figure.suptitle("llama2.c models on retro and small machines")
    figure.tight_layout()
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for suffix in ("png", "svg"):
        path = folder / f"report.{suffix}"
        tmp = partial_name(path).with_suffix(f".{suffix}")
        figure.savefig(tmp, dpi=120)
        tmp.replace(path)
        written.append(path)
    plt.close(figure)
    return written


def catalog_table():
    from deploy.models import CATALOG, find_file

    table = Table(title="model catalog")
    for column in ("name", "shape (dim/hidden/layers/heads/kv/vocab/seq)", "parameters", "size", "format", "here",
                   "source"):
        table.add_column(column)
    for entry in CATALOG.values():
        c = entry.shape
        shape = f"{c.dim}/{c.hidden_dim}/{c.n_layers}/{c.n_heads}/{c.n_kv_heads}/{c.vocab_size}/{c.seq_len}"
        table.add_row(entry.name, shape, f"{c.parameter_count() / 1e6:,.1f} M", f"{entry.size / 1e6:,.1f} MB",
                      f"v{entry.version} {KINDS[entry.version]}", "yes" if find_file(entry.file) else "no", entry.url or entry.source)
    return table
