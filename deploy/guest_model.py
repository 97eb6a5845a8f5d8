"""Cycles on a PowerPC or ARM core from qemu-user block counts: a per-block resource and latency model.

`ports/tools/count_blocks.c`, a TCG plugin this project builds, writes every translated block that ran with its
execution count and its instructions' disassembly. Each block (a loop body under qemu is usually one block) costs per
pass the tightest of: dispatch width, load/store unit, integer, floating-point and vector pipes, non-pipelined
operations (divide, square root), and the longest accumulator chain (an instruction whose destination is also a
source, as `fmadds f0,f1,f2,f0` or `vmaddfp v0,..,v0`, waits for the previous one: a dot product with one
accumulator costs its multiply-add latency per element; with four accumulators a quarter of it).

The constants per core are the manufacturers' documented issue widths and latencies (sources in CORES). Not
modelled: cache misses other than streaming the weights (added by deploy.machine_model from the memory bandwidth),
branch mispredictions, in-block dependencies other than accumulator chains.
"""

import collections
import dataclasses
import re

from deploy.errors import DeployError


@dataclasses.dataclass(frozen=True)
class Core:
    name: str
    isa: str  # "ppc", "arm", "aarch64"
    dispatch: float  # instructions per cycle (sustained)
    lsu: float  # loads + stores per cycle
    int_pipes: float
    fp_pipes: float
    vec_pipes: float
    latency: dict  # class -> cycles from issue to a dependent instruction's issue
    blocking: dict  # class -> cycles the unit is busy (not pipelined)
    source: str


CORES = {
    "mpc7447a": Core("PowerPC 7447A (G4, e600-class 745x core)", "ppc", 3, 1, 3, 1, 2,
                     {"fp_madd": 5, "fp_add": 5, "vec_float": 4, "vec_complex": 4, "vec_perm": 2, "int_mul": 4},
                     {"fp_div": 21, "fp_sqrt": 21, "int_div": 23},
                     "Freescale, MPC7450 RISC Microprocessor Family Reference Manual (MPC7450UM rev. 5), chapter 6 "
                     "and appendix A: 3 instructions dispatched per cycle, 3 simple + 1 complex IU, 1 LSU, 1 FPU "
                     "(5-cycle fmadds/fadds/fmuls, fdivs 21), 4 AltiVec units, 2 AltiVec issues per cycle (vmaddfp 4, "
                     "vmsum 4, vperm 2)"),
    "ppc750": Core("PowerPC 750 (G3)", "ppc", 2, 1, 2, 1, 0,
                   {"fp_madd": 3, "fp_add": 3, "int_mul": 4},
                   {"fp_div": 17, "fp_sqrt": 17, "int_div": 19},
                   "IBM, PowerPC 750/740 RISC Microprocessor User's Manual (GK21-0263), chapter 6 and appendix: "
                   "2 instructions dispatched per cycle (plus branch folding), 2 IUs, 1 LSU, 1 FPU (single-precision "
                   "fmadds/fadds/fmuls 3 cycles, fdivs 17)"),
    "arm1176": Core("ARM1176JZF-S with VFP11", "arm", 1, 1, 1, 1, 0,
                    {"fp_madd": 8, "fp_add": 4, "int_mac": 2, "int_mul": 2},
                    {"fp_div": 15, "fp_sqrt": 15, "int_div": 20},
                    "ARM, ARM1176JZF-S Technical Reference Manual (DDI 0301), chapter 16 cycle timings, and VFP11 "
                    "Vector Floating-point Coprocessor TRM (DDI 0274): single issue; FMACS 8-cycle latency, FADDS 4, "
                    "FDIVS 15; SMLAD 2"),
    "cortex-a72": Core("Cortex-A72", "aarch64", 3, 2, 2, 2, 2,
                       {"fp_madd": 7, "fp_add": 4, "vec_float": 7, "vec_complex": 4, "vec_perm": 3, "int_mac": 4,
                        "int_mul": 3},
                       {"fp_div": 10, "fp_sqrt": 10, "int_div": 12},
                       "ARM, Cortex-A72 Software Optimization Guide (UAN 0016A): 3-wide decode/dispatch, 2 integer, "
                       "2 FP/ASIMD pipes, 1 load + 1 store pipe; FMLA/FMADD latency 7 (3 when chained into the same "
                       "accumulator is not modelled), FADD 4, ASIMD MLA 4"),
    "cortex-x1": Core("Cortex-X1", "aarch64", 5, 3, 4, 4, 4,
                      {"fp_madd": 4, "fp_add": 2, "vec_float": 4, "vec_complex": 3, "vec_perm": 2, "int_mac": 4,
                       "int_mul": 2},
                      {"fp_div": 7, "fp_sqrt": 7, "int_div": 12},
                      "ARM, Cortex-X1 Software Optimization Guide (PJDOC-466751330-14955): 5-wide dispatch, 4 ASIMD "
                      "pipes, 3 load pipes; FMLA latency 4, SDOT 3, FADD 2"),
}


def read_blocks(path):
    """[(count, [instruction text, ...])] from the plugin's output file."""
    blocks, current = [], None
    try:
        lines = open(path).read().splitlines()
    except OSError as error:
        raise DeployError(path, f"no block counts ({error.strerror}); did the plugin run?") from None
    for line in lines:
        if line.startswith("@ "):
            count, _n = line[2:].split()
            current = (int(count), [])
            blocks.append(current)
        elif current is not None:
            current[1].append(line.strip())
    return blocks


PPC_LOAD = re.compile(r"^(l[bhwdfmsv]\w*|lvx\w*|lve\w*)$")
PPC_NOT_LOAD = {"li", "lis", "lvsl", "lvsr"}


def classify(isa, mnemonic):
    """One instruction's class: load, store, branch, int, int_mul, int_div, int_mac, fp, fp_madd, fp_add, fp_div,
    fp_sqrt, vec_simple, vec_float, vec_complex, vec_perm."""
    m = mnemonic.lower()
    if isa == "ppc":
        if m in PPC_NOT_LOAD:
            return "vec_perm" if m.startswith("lv") else "int"
        if PPC_LOAD.match(m):
            return "load"
        if m.startswith("st") and m not in ("stop",):
            return "store"
        if m.startswith("b") or m in ("mtctr", "mflr", "mtlr", "mfctr"):
            return "branch" if m.startswith("b") else "int"
        if m.startswith("f"):
            if m.startswith(("fmadd", "fmsub", "fnmadd", "fnmsub")):
                return "fp_madd"
            if m.startswith(("fadd", "fsub", "fmul")):
                return "fp_add"
            if m.startswith("fdiv") or m.startswith("fres"):
                return "fp_div"
            if m.startswith(("fsqrt", "frsqrte")):
                return "fp_sqrt"
            return "fp"
        if m.startswith("v"):
            if m.startswith(("vmaddfp", "vnmsubfp", "vaddfp", "vsubfp", "vrefp", "vrsqrtefp", "vexptefp",
                             "vlogefp", "vctsxs", "vcfsx", "vmaxfp", "vminfp", "vrfi")):
                return "vec_float"
            if m.startswith(("vmsum", "vmul", "vmhadd", "vmladd", "vsum")):
                return "vec_complex"
            if m.startswith(("vperm", "vsldoi", "vsplt", "vmrg", "vpk", "vupk", "vsl", "vsr")) and not m.startswith(
                    ("vslw", "vsrw", "vslh", "vsrh", "vslb", "vsrb", "vsraw")):
                return "vec_perm"
            return "vec_simple"
        if m.startswith(("mull", "mulh")):
            return "int_mul"
        if m.startswith("divw"):
            return "int_div"
        return "int"
    # ARM, 32- and 64-bit
    if m.startswith(("ld", "vld", "pop")) or m in ("ldr", "ldrb", "ldrh"):
        return "load"
    if m.startswith(("st", "vst", "push")):
        return "store"
    if m.split(".")[0] in ("b", "bl", "bx", "blx", "br", "blr", "ret", "cbz", "cbnz", "tbz", "tbnz") or re.match(
            r"^b(eq|ne|lt|le|gt|ge|hi|ls|cs|cc|mi|pl|hs|lo)$", m):
        return "branch"
    base = m.split(".")[0]
    if base in ("fmla", "fmls", "fmadd", "fmsub", "fnmadd", "fnmsub", "vmla", "vmls", "vfma", "vfms", "fmacs",
                "fnmacs", "fmscs"):
        return "vec_float" if base in ("fmla", "fmls") or _is_vector(mnemonic) else "fp_madd"
    if base in ("fadd", "fsub", "fmul", "vadd", "vsub", "vmul", "faddp", "fmax", "fmin") and (
            base.startswith("f") or ".f" in m):
        return "vec_float" if _is_vector(mnemonic) else "fp_add"
    if base in ("fdiv", "vdiv"):
        return "fp_div"
    if base in ("fsqrt", "vsqrt"):
        return "fp_sqrt"
    if base in ("sdot", "udot", "smlal", "smlal2", "umlal", "mla", "mls", "smlad", "smlabb", "smlatt", "sadalp",
                "smlsd", "vmlal", "vpadal", "smmla"):
        return "int_mac"
    if base in ("mul", "smull", "umull", "madd", "msub", "smulbb", "smuad", "vmull", "smull2"):
        return "int_mul"
    if base in ("sdiv", "udiv"):
        return "int_div"
    if base.startswith(("f", "vcvt", "scvtf", "ucvtf", "vmov", "vneg", "vabs", "vcmp", "vmrs", "fcvt")):
        return "fp"
    if base in ("dup", "ext", "zip1", "zip2", "uzp1", "uzp2", "trn1", "trn2", "tbl", "ins", "addv", "faddp",
                "addp", "sxtl", "sxtl2", "uxtl", "xtn", "vdup", "vext", "vzip", "vuzp", "vtrn", "vpadd"):
        return "vec_perm"
    return "int"


def _is_vector(text):
    return bool(re.search(r"\bv\d+\.\d*[bhsd]|\bq\d+|\.f32\s+[dq]", text))


REGISTER = re.compile(r"\b([frvqdsxw]\d+)(?:\.\d*[bhsd])?\b")
ACCUMULATING = {"fp_madd", "fp_add", "vec_float", "vec_complex", "int_mac"}
IMPLICIT_ACCUMULATOR = re.compile(r"^(v?fml[as]|vml[as]|sdot|udot|[su]ml[as]l2?|mla|mls|sadalp|vpadal|vmlal|vfm[as])")


def _registers(text):
    """(destination, sources) as register names; s/d/q/v of one number are the same vector register on AArch64."""
    _, _, operands = text.partition(" ")
    names = [re.sub(r"^[sdqv](\d+)$", r"v\1", name) for name in REGISTER.findall(operands)]
    return (names[0], names[1:]) if names else (None, [])


def block_cycles(core, instructions):
    """Cycles per pass of one block on `core`."""
    classes = collections.Counter()
    chains = collections.Counter()
    for text in instructions:
        mnemonic = text.split(" ", 1)[0]
        kind = classify(core.isa, mnemonic)
        classes[kind] += 1
        if kind in ACCUMULATING:
            destination, sources = _registers(text)
            if destination and (destination in sources or IMPLICIT_ACCUMULATOR.match(mnemonic.lower())):
                chains[destination] += core.latency.get(kind, 1)
    n = sum(classes.values())
    vector = sum(v for k, v in classes.items() if k.startswith("vec_"))
    fp = sum(v for k, v in classes.items() if k.startswith("fp"))
    integer = classes["int"] + classes["int_mul"] + classes["int_mac"]
    bounds = [n / core.dispatch, (classes["load"] + classes["store"]) / core.lsu, integer / core.int_pipes,
              fp / core.fp_pipes if core.fp_pipes else fp, vector / core.vec_pipes if core.vec_pipes else vector,
              sum(classes[k] * cycles for k, cycles in core.blocking.items()), max(chains.values(), default=0)]
    return max(bounds), classes


def run_cycles(core, blocks):
    """(compute cycles, instructions, class counts) of one counted run."""
    cycles, instructions, classes = 0.0, 0, collections.Counter()
    for count, texts in blocks:
        per_pass, block_classes = block_cycles(core, texts)
        cycles += count * per_pass
        instructions += count * len(texts)
        for kind, value in block_classes.items():
            classes[kind] += count * value
    return cycles, instructions, classes
