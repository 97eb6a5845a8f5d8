"""`invoke bench`: run a deployed model several times on a host (device, emulator) or natively, parse tok/s, and
record each run as a JSON line."""

import statistics

from deploy import processes
from deploy.build import build
from deploy.convert import model_for_target
from deploy.errors import DeployError
from deploy.manifest import sha256_file
from deploy.plan import make_plan
from deploy.profile import load_profile
from deploy.results import Result, now, record, this_machine
from deploy.runner import tokens_per_second

ARGS = ("-n", "128", "-t", "0", "-i", "Once upon a time")


def _tok_s(stderr, where):
    speed = tokens_per_second(stderr)
    if speed is None:
        raise DeployError(where, "the program printed no tok/s: " + stderr.strip()[-200:])
    return speed


def bench_native(target, model, tokenizer, runs=5, exact=False, results=None):
    """Run a target's build directly on this machine (host, or an i686 stand-in such as p2-linux)."""
    profile = load_profile(target)
    plan = make_plan(profile, exact=exact)
    built = build(plan)
    model_path, tokenizer_path = model_for_target(profile, model, tokenizer, plan.out_dir / "model")
    speeds = []
    for _ in range(runs):
        done = processes.run([str(plan.program), str(model_path), "-z", str(tokenizer_path), *ARGS], text=True,
                             timeout=3600)
        speeds.append(_tok_s(done.stderr, plan.program))
        record(Result(now(), "native", target, this_machine(), "native", plan.toolchain["name"],
                      " ".join(plan.cflags), str(model), sha256_file(model), speeds[-1], exact), results)
    return speeds, " ".join(built.command)


def bench_host(host, model, tokenizer, runs=5, exact=False, results=None, console=None):
    """Deploy to an inventory host (if needed), then run there `runs` times."""
    from deploy import deliver
    from deploy.pipeline import Options, check_ran, deploy_hosts, host_plan, run_delivered
    from deploy.results import emulator_of, how_measured

    if not deliver.can_run(host):
        raise DeployError(host.name, f"connects by {host.connection}: the program is started by hand there; record "
                                     "its figure with `invoke record`")
    options = Options(str(model), str(tokenizer), exact=exact, run_args=ARGS)
    outcome = deploy_hosts([host], options, console or _Quiet())[0]
    if outcome.error:
        raise DeployError(outcome.error)
    profile, plan = host_plan(host, options)
    how = how_measured(host, profile)
    emulator = emulator_of(host, profile)
    machine = this_machine() + f" under {' '.join(emulator)}" if emulator else host.get("description", host.name)
    speeds = []
    for _ in range(runs):
        done = run_delivered(host, options)
        check_ran(host, done)
        speeds.append(_tok_s(done.stderr, host.name))
        record(Result(now(), host.name, host.target, machine, how, plan.toolchain["name"], " ".join(plan.cflags),
                      str(model), sha256_file(model), speeds[-1], exact), results)
    return speeds


class _Quiet:
    def print(self, *args, **kwargs):
        pass


def median(values):
    return statistics.median(values) if values else None
