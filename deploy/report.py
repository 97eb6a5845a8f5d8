"""Tables for the terminal (rich): builds, tools."""

from rich.table import Table


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
    for column in ("host", "target", "connection", "steps", "tok/s", "seconds", "result"):
        table.add_column(column, justify="right" if column in ("tok/s", "seconds") else "left")
    for result in results:
        steps = " ".join(dict.fromkeys(step for step, _ in result.steps if step != "failed"))
        outcome = f"[red]{result.error}[/]" if result.error else "[green]ok[/]"
        table.add_row(result.host, result.target, result.connection, steps,
                      f"{result.tok_s:.2f}" if result.tok_s is not None else "", f"{result.seconds:.1f}", outcome)
    return table


def plan_tables(profile, model_name, header, fit, prediction, alternatives, published):
    """The tables `invoke plan` prints: the fit checks, alternatives when it does not fit, the speed estimate."""
    fit_table = Table(title=f"{model_name} on {profile.name}")
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
            alt.add_row(option.what, f"{option.model_bytes / 2**20:,.1f} MB", f"{option.memory_bytes / 2**20:,.1f} MB",
                        ("[green]yes[/]" if option.fits else "[red]no[/]") + (f" ({option.note})" if option.note
                                                                             else ""))
        tables.append(alt)
    speed = Table(title="expected speed (from the profile's memory bandwidth and FLOP rate)")
    for column in ("model", "predicted tok/s", "bound", "MB/token", "MFLOP/token", "published tok/s", "predicted / "
                   "published"):
        speed.add_column(column)
    if prediction:
        speed.add_row(model_name, f"{prediction.tok_s:.3g}", prediction.bound, f"{prediction.megabytes_per_token:.1f}",
                      f"{prediction.mflop_per_token:.1f}", "", "")
    for figure, predicted, ratio in published:
        speed.add_row(figure["model"], f"{predicted.tok_s:.3g}" if predicted else "",
                      predicted.bound if predicted else "", "", "",
                      f"{figure['tok_s']}" if figure.get("tok_s") is not None else "no figure",
                      f"{ratio:.2f}" if ratio else "")
    tables.append(speed)
    return tables
