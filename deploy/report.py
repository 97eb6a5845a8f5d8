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
