"""Render the inference sources for a build plan from the Jinja templates in ports/."""

import jinja2

from deploy.atomic import write_atomic
from deploy.profile import ROOT

PORTS_DIR = ROOT / "ports"


def environment():
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(PORTS_DIR)), undefined=jinja2.StrictUndefined,
                              trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)


def render_run_c(plan):
    return environment().get_template("run.c.j2").render(**plan.template_context())


def write_sources(plan):
    """Render into the plan's output directory; returns the paths written."""
    plan.out_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(plan.source, render_run_c(plan))
    return [plan.source]
