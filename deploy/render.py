"""Render the inference sources for a build plan from the Jinja templates in ports/ (and, for a bundle that is
built on the target, its build script and README)."""

import jinja2

from deploy.atomic import write_atomic
from deploy.profile import ROOT

PORTS_DIR = ROOT / "ports"


def environment():
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(PORTS_DIR)), undefined=jinja2.StrictUndefined,
                              trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)


def render_run_c(plan):
    return environment().get_template("run.c.j2").render(**plan.template_context())


def _line_ends(text, style):
    return text.replace("\n", "\r\n") if style == "crlf" else text


def bundle_files(plan):
    """{name: text} of a bundle's build script and README, with the target's line ends."""
    tc, files = plan.toolchain, plan.profile["files"]
    command = " ".join(tc["command"])
    crlf = tc.get("line_ends") == "crlf"
    script = f"@echo off\nREM builds {files['program']}\n{command}\n" if crlf else f"#!/bin/sh\nset -e\n{command}\n"
    readme_name = "README.TXT" if crlf else "README.txt"
    readme = environment().get_template("bundle-readme.txt.j2").render(
        target=plan.target, command=command, script_call=tc["script"] if crlf else f"sh {tc['script']}",
        program=files["program"], model=files["model"], tokenizer=files["tokenizer"],
        endianness=plan.profile.endianness)
    style = tc.get("line_ends", "lf")
    return {tc["script"]: _line_ends(script, style), readme_name: _line_ends(readme, style)}


def write_sources(plan):
    """Render into the plan's output directory; returns the paths written."""
    plan.out_dir.mkdir(parents=True, exist_ok=True)
    source = render_run_c(plan)
    written = [plan.source]
    if plan.is_bundle:
        source = _line_ends(source, plan.toolchain.get("line_ends", "lf"))
        for name, text in bundle_files(plan).items():
            write_atomic(plan.out_dir / name, text.encode())
            written.append(plan.out_dir / name)
    write_atomic(plan.source, source.encode())
    return written
