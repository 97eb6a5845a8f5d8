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
        steps = " ".join(step for step, _ in result.steps if step != "failed")
        outcome = f"[red]{result.error}[/]" if result.error else "[green]ok[/]"
        table.add_row(result.host, result.target, result.connection, steps,
                      f"{result.tok_s:.2f}" if result.tok_s is not None else "", f"{result.seconds:.1f}", outcome)
    return table
