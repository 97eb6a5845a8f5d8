"""The machine model: its errors on the published figures (from the committed counts), one real recount, and the
pieces of the cost models that decide the big terms."""

import shutil

import pytest

from deploy import counting, guest_model, machine_model, p6_model
from deploy.profile import load_profile


@pytest.fixture(scope="module")
def rows():
    return machine_model.rows()[0]


def test_every_published_figure_is_predicted_within_2x(rows):
    published = [r for r in rows if r.published_tok_s]
    assert len(published) == len(machine_model.PUBLISHED)
    for row in published:
        assert row.predicted_published_port_tok_s, f"{row.target} {row.model}: not counted"
        assert 0.5 <= row.predicted_published_port_tok_s / row.published_tok_s <= 2.0, row


def test_the_pentium_ii_needs_no_fitted_constant_and_lands_near_exo(rows):
    exo = [r for r in rows if r.target == "win98-p2" and r.published_tok_s]
    assert {r.model for r in exo} == {"stories260K", "stories15M"}
    assert not any(r.fitted_here for r in exo)
    for row in exo:  # FACTS section 8: a naive build within about 15% of EXO's figures
        assert abs(row.error) < 0.2, row


def test_at_most_one_fitted_constant_and_it_is_not_checked_against_itself(rows):
    fitted = [p for p in machine_model.PUBLISHED if p.fit]
    assert len(fitted) == 1 and machine_model.MACHINES[fitted[0].machine].fitted
    checked = [r for r in rows if r.published_tok_s and r.target in ("powerbook-g4", "powermac-g3")
               and not r.fitted_here]
    assert len(checked) == 2  # Rossignol's AltiVec figure and Borys's G3
    fraction = machine_model.bandwidth_fraction(machine_model.load_counts(),
                                                {"powerbook-g4": load_profile("powerbook-g4")})
    assert 0.05 < fraction < 1.0  # a stream achieves a fraction of the bus's peak, never more


def test_predictions_for_our_builds_come_with_both_formats(rows):
    ours = {(r.target, r.model): r for r in rows}
    for target in ("win98-p2", "p2-linux"):
        row = ours[(target, "stories15M")]
        assert row.predicted_tok_s and row.predicted_int8_tok_s
    unvalidated = [r for r in rows if r.target in ("rpi4", "rpi-zero", "pixel6")]
    assert unvalidated and all("unvalidated" in r.note for r in unvalidated)


def test_an_accumulator_chain_costs_its_latency_per_element():
    g4 = guest_model.CORES["mpc7447a"]
    one = ["lfs f12, 0(r9)", "lfs f13, 0(r10)", "fmadds f0, f12, f13, f0", "lfs f11, 4(r9)", "lfs f10, 4(r10)",
           "fmadds f0, f11, f10, f0", "bdnz 0x100"]
    two = [line.replace("f0, f11, f10, f0", "f1, f11, f10, f1") for line in one]
    assert guest_model.block_cycles(g4, one)[0] == 10  # two chained fmadds, 5 cycles each
    assert guest_model.block_cycles(g4, two)[0] == 5  # two accumulators: 4 loads and the chain of one


def test_the_p6_naive_dot_product_is_load_port_bound():
    """gcc -O0's inner matmul loop keeps every variable on the stack: 13 loads per multiply-add."""
    body = ["mov -0x4(%ebp),%eax", "imul 0x14(%ebp),%eax", "mov %eax,%ecx", "mov -0x8(%ebp),%eax", "add %ecx,%eax",
            "mov %eax,-0x10(%ebp)", "mov -0x10(%ebp),%eax", "lea 0x0(,%eax,4),%ecx", "mov 0x10(%ebp),%eax",
            "add %ecx,%eax", "flds (%eax)", "mov -0x8(%ebp),%eax", "lea 0x0(,%eax,4),%ecx", "mov 0xc(%ebp),%eax",
            "add %ecx,%eax", "flds (%eax)", "fmulp %st,%st(1)", "flds -0xc(%ebp)", "faddp %st,%st(1)",
            "fstps -0xc(%ebp)", "incl -0x8(%ebp)", "mov -0x8(%ebp),%eax", "cmp 0x14(%ebp),%eax", "jl 804a8dd"]
    instructions = []
    for text in body:
        mnemonic, _, operands = text.partition(" ")
        instructions.append((p6_model.Instruction(0, 3, mnemonic, operands), 1.0))
    assert p6_model.group_cycles(instructions) == 13


@pytest.mark.skipif(not (shutil.which("valgrind") and shutil.which("i686-linux-gnu-gcc")),
                    reason="needs valgrind and gcc-i686-linux-gnu")
def test_a_real_recount_matches_the_committed_count(tmp_path):
    """llama98.c at -O0 on a stories260K-shaped model under callgrind, three short runs, as the script does."""
    committed = machine_model.find(machine_model.load_counts(), "pentium2", "llama98 -O0", "stories260K")
    program = counting.peer("llama98 -O0", tmp_path)
    assert program.fingerprint == committed["fingerprint"]
    fresh = counting.count(machine_model.MACHINES["pentium2"], program, "stories260K", 0, tmp_path)
    for name in ("instructions", "cycles"):
        assert fresh["per_token"][name] == pytest.approx(committed["per_token"][name], rel=0.02), name


@pytest.mark.skipif(not (shutil.which("valgrind") and shutil.which("i686-linux-gnu-gcc")),
                    reason="needs valgrind and gcc-i686-linux-gnu")
def test_the_per_token_fit_foresees_longer_runs(tmp_path):
    """The per-position growth fitted from runs of counting.FULL_STEPS predicts what steps 64 to 128 cost (our
    Pentium II int8 build, stories15M-shaped): runs of 2, 4 and 8 steps had doubled the attention's growth."""
    machine = machine_model.MACHINES["pentium2"]
    program = counting.ours("p2-linux", tmp_path)
    layers = counting.SHAPES["stories15M"].n_layers
    model, tokenizer = counting.synthetic_files(tmp_path, "stories15M", layers, 2, machine.byteorder)
    cycles = {n: counting.measure_run(machine, program, model, tokenizer, n, tmp_path)["cycles"]
              for n in (*counting.FULL_STEPS, 64, 128)}
    runs = {(layers, n): {"cycles": cycles[n]} for n in counting.FULL_STEPS}
    a = counting.per_token(runs, layers, window=0)["cycles"]  # a step's cost at position 0
    b = counting.per_token(runs, layers, window=2)["cycles"] - a  # and its growth per position
    foreseen = 64 * a + b * (128 * 127 - 64 * 63) / 2
    assert cycles[128] - cycles[64] == pytest.approx(foreseen, rel=0.01)


def test_the_p6_fpu_issues_an_fadd_between_two_fmuls():
    """Port 0 takes one x87 uop per cycle; the multiplier a new FMUL every 2nd cycle (register forms included: "fmul"
    was once read as "fmu"). Four multiply-adds with the x values on the stack: 8 cycles, the x87's one operation per
    cycle, not 12."""
    body = ["flds (%edi,%eax,4)", "flds (%ebx,%eax,4)", "fmul %st(1),%st", "faddp %st,%st(2)", "flds (%edx,%eax,4)",
            "fmul %st(1),%st", "faddp %st,%st(3)", "flds (%esi,%eax,4)", "fmul %st(1),%st", "faddp %st,%st(4)",
            "fmuls (%ecx,%eax,4)", "inc %eax", "cmp %eax,%ebp", "faddp %st,%st(4)", "jne 804bf30"]
    instructions = []
    for text in body:
        mnemonic, _, operands = text.partition(" ")
        instructions.append((p6_model.Instruction(0, 3, mnemonic, operands), 1.0))
    assert p6_model._base("fmul") == "fmul"
    assert p6_model.group_cycles(instructions) == 8
    divide = [(p6_model.Instruction(0, 2, "fdivrs", "(%eax)"), 1.0), (p6_model.Instruction(0, 2, "fadd", "%st(1)"), 1.0)]
    assert p6_model.group_cycles(divide) == 38  # the divider, not pipelined
