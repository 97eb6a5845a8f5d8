"""Pentium II (P6) cycles from a callgrind profile: a documented cost model, no fitted constant (FACTS section 8).

callgrind, run with the Pentium II's cache geometry and `--dump-instr=yes`, gives each executed instruction's count and
the L1/L2 misses. Instructions of one function executed the same number of times are one loop body (or straight-line
block); each such group costs its count times the tightest of the P6's resource bounds: decode (4-1-1: one multi-uop
instruction per cycle, up to three instructions), 16 fetch bytes, 3 retired uops, and the execution ports (port 0:
one uop per cycle, every x87 arithmetic uop among them; behind it the FP multiplier takes an FMUL every 2nd cycle and
the divider one FDIV/FSQRT at a time, while port 0 issues other uops (an FADD) in between: the x87's one operation per
cycle; port 1; port 2 loads; ports 3 and 4 the store address and data). Misses add 15 cycles for an L1 miss that hits L2 and 41 for an L2 miss (a 32-byte line at
the ~270 MB/s of a PII/440BX with PC100), not overlapped with compute.

Sources: Agner Fog, "Instruction tables" (Pentium Pro/II/III) and "The microarchitecture of Intel, AMD and VIA CPUs"
(section on the PPro/PII/PIII pipeline); Intel, "Intel Architecture Optimization Manual" (1997, order 242816), for
the 4-1-1 decoders, ports and latencies. Not modelled: branch mispredictions, loop-carried latency chains (the
resource bound is the larger on the code measured: FACTS section 8), TLB misses, DRAM page effects.
"""

import collections
import dataclasses
import re
import subprocess

from deploy.errors import DeployError

CLOCK_HZ = 350e6
L2_HIT_CYCLES = 15  # an L1 miss served by the L2 (18-cycle L2 hit, 3 of them the L1 load latency)
L2_MISS_CYCLES = 41  # 32 bytes at ~270 MB/s = 118 ns = 41 cycles at 350 MHz
CLUSTER_RATIO = 0.9  # instructions of a function within 10% of each other's execution count run as one loop
CACHE_ARGS = ["--I1=16384,4,32", "--D1=16384,4,32", "--LL=524288,4,32"]
# glibc then takes its x87 libm and string code, as a Pentium II without SSE would
NO_SSE = "glibc.cpu.hwcaps=-SSE,-SSE2,-SSE3,-SSSE3,-SSE4_1,-SSE4_2,-AVX,-AVX2,-FMA,-FMA4"

# x87 and integer operations with a port-0 occupancy above one cycle (microcoded or not pipelined)
PORT0_CYCLES = {"fldcw": 10, "f2xm1": 66, "fyl2x": 103, "fyl2xp1": 103, "fsin": 65, "fcos": 65, "fsincos": 80,
                "fptan": 110, "fpatan": 150, "fscale": 12, "frndint": 20, "fprem": 26, "fprem1": 26,
                "div": 39, "idiv": 39, "pmaddwd": 1}
# units behind port 0 that accept a new uop only every so many cycles; port 0 issues other uops meanwhile
UNIT_CYCLES = {"fmul": ("multiplier", 2), "fimul": ("multiplier", 2), "fdiv": ("divider", 38),
               "fdivr": ("divider", 38), "fidiv": ("divider", 38), "fidivr": ("divider", 38),
               "fsqrt": ("divider", 69)}
# uops of microcoded or multi-uop instructions with register operands (memory operands add their own)
UOPS = {"push": 3, "pop": 2, "call": 4, "ret": 4, "leave": 3, "xchg": 3, "cmov": 2, "mul": 3, "div": 4,
        "idiv": 4, "cltd": 1, "cdq": 1, "fnstsw": 3, "fstsw": 3, "fldcw": 3, "fnstcw": 3, "fild": 4, "fist": 4,
        "fistp": 4, "fisttp": 4, "fld1": 2, "fldl2e": 2, "fldln2": 2, "fldlg2": 2, "fldpi": 2, "fldl2t": 2,
        "fscale": 5, "frndint": 10, "f2xm1": 20, "fyl2x": 40, "fyl2xp1": 40, "fsin": 20, "fcos": 20,
        "fsincos": 25, "fptan": 25, "fpatan": 30, "fprem": 20, "fprem1": 20, "fxam": 2, "fwait": 2, "emms": 11,
        "rep": 8, "fxch": 1, "sahf": 1, "lahf": 1}
MOVES = re.compile(r"^(mov[a-z]*|fld[slt]?|fild[slq]?|fstp?[slt]?|fistt?p?[slq]?|fnstcw|fnstsw|fstcw|set[a-z]+|fxch)$")
X87_LOAD = re.compile(r"^(fld|fild)")


@dataclasses.dataclass
class Instruction:
    address: int
    length: int
    mnemonic: str
    operands: str


@dataclasses.dataclass
class Callgrind:
    """One callgrind run: self cost per instruction address, per function, and the event totals."""
    costs: dict  # function -> {address: [one value per event]}
    totals: dict
    events: list
    calls: collections.Counter  # function name -> times called


def disassemble(program, objdump="objdump"):
    """{address: Instruction} for every instruction of a static i386 binary."""
    done = subprocess.run([objdump, "-d", "-w", str(program)], capture_output=True, text=True)
    if done.returncode:
        raise DeployError(program, f"objdump failed: {done.stderr.strip()[-200:]}")
    found = {}
    for line in done.stdout.splitlines():
        parts = line.split("\t")
        if len(parts) < 3 or not parts[0].strip().endswith(":"):
            continue
        address = int(parts[0].strip()[:-1], 16)
        text = parts[2].split("#")[0].split("<")[0].strip()
        mnemonic, _, operands = text.partition(" ")
        found[address] = Instruction(address, len(parts[1].split()), mnemonic, operands.strip())
    return found


def read_callgrind(path):
    """Parse a callgrind output file written with --dump-instr=yes (self costs only; call lines skipped)."""
    costs, events, calls = collections.defaultdict(dict), [], collections.Counter()
    names, function, position, skip_next, totals = {}, None, [0, 0], False, {}
    with open(path) as lines:
        for line in lines:
            if line.startswith("events:"):
                events = line.split()[1:]
            elif line.startswith(("summary:", "totals:")):
                totals = dict(zip(events, map(int, line.split()[1:])))
            elif line.startswith("fn="):
                function = _name(line[3:].strip(), names)
            elif line.startswith("cfn="):
                callee = _name(line[4:].strip(), names)
            elif line.startswith("calls="):
                calls[callee] += int(line[6:].split()[0])
                skip_next = True
            elif line[:1] in "0123456789+-*" and line.strip() and function is not None:
                fields = line.split()
                for index in range(2):
                    position[index] = _position(fields[index], position[index])
                if skip_next:
                    skip_next = False
                    continue
                values = [int(v) for v in fields[2:]]
                cell = costs[function].setdefault(position[0], [0] * len(events))
                for index, value in enumerate(values):
                    cell[index] += value
    if not events:
        raise DeployError(path, "not a callgrind output file (no events line)")
    return Callgrind(dict(costs), totals, calls=calls, events=events)


def _name(field, names):
    match = re.match(r"\((\d+)\)\s*(.*)", field)
    if not match:
        return field
    if match.group(2):
        names[match.group(1)] = match.group(2)
    return names.get(match.group(1), field)


def _position(field, previous):
    """A callgrind position: "*" (same), "+N"/"-N" (relative) or absolute, each decimal or 0x-hex."""
    if field == "*":
        return previous
    return previous + int(field, 0) if field[0] in "+-" else int(field, 0)


def uops_and_ports(instruction):
    """(uops, {port: cycles}) of one instruction on a P6; ports 'p0', 'p1', 'p01' (either), 'p2', 'p3', 'p4', and
    the x87 'multiplier' and 'divider' behind port 0."""
    mnemonic, operands = instruction.mnemonic, instruction.operands
    base = "rep" if mnemonic.startswith("rep") else _base(mnemonic)
    ops = _split(operands)
    ports = collections.Counter()
    if base.startswith("j") or base in ("push", "pop", "call", "ret", "leave", "rep"):
        uops = UOPS.get(base, 1)
        if base.startswith("j"):
            ports["p1"] += 1
        elif base in ("push", "call"):
            ports.update({"p3": 1, "p4": 1, "p01": uops - 2})
        else:
            ports.update({"p2": 1, "p01": uops - 1})
        return uops, ports
    if base == "lea" or base == "nop":
        ports["p0" if base == "lea" else "p01"] += 1
        return 1, ports
    single = len(ops) == 1
    if MOVES.match(mnemonic):  # a load, a store or a register move: only its memory uops, plus any conversion
        reads = bool(_is_memory(ops[0]) and (not single or X87_LOAD.match(mnemonic)))
        writes = bool(_is_memory(ops[-1]) and (not single or not X87_LOAD.match(mnemonic)))
        extra = UOPS.get(base, 1) - 1
        ports["p0"] += extra + (0 if reads or writes or base == "fxch" or not base.startswith("f") else 1)
        if not base.startswith("f") and not (reads or writes):
            ports["p01"] += 1
        ports["p2"] += reads
        ports.update({"p3": writes, "p4": writes})
        return max(1, extra + reads + 2 * writes + (not (reads or writes))), ports
    uops = UOPS.get(base, 1)
    x87_or_slow = base in PORT0_CYCLES or base.startswith(("f", "imul", "sh", "sa", "ro", "pmul", "pmadd"))
    if x87_or_slow:
        ports["p0"] += PORT0_CYCLES.get(base, 1) if base != "fxch" else 0
        ports["p01"] += uops - 1
        if base in UNIT_CYCLES:
            unit, cycles = UNIT_CYCLES[base]
            ports[unit] += cycles
    else:
        ports["p01"] += uops
    reads = int(any(_is_memory(op) for op in ops))
    writes = int(_is_memory(ops[-1]) and not base.startswith(("cmp", "test", "bt", "f")))
    ports["p2"] += reads
    ports.update({"p3": writes, "p4": writes})
    return uops + reads + 2 * writes, ports


def _split(operands):
    """AT&T operands, split on the commas outside parentheses."""
    return [op for op in re.split(r",(?![^(]*\))", operands) if op] or [""]


def _is_memory(operand):
    """A memory operand: `disp(base,index,scale)` or a bare absolute address (immediates start with $)."""
    operand = operand.strip().lstrip("*")
    if not operand or operand.startswith(("$", "%")):
        return False
    return "(" in operand or operand.startswith("0x") or operand[0].isdigit()


def _base(mnemonic):
    """Drop AT&T size suffixes where they are not part of the name (movl -> mov, fadds -> fadd, fildl -> fild)."""
    for stem in ("fild", "fistp", "fisttp", "fist", "fiadd", "fimul", "fisub", "fidiv", "fcom", "fucom", "fnstcw",
                 "fldcw", "fnstsw", "cmov", "set", "movz", "movs"):
        if mnemonic.startswith(stem):
            return stem
    if mnemonic in ("flds", "fldl", "fldt"):
        return "fld"
    if mnemonic in ("fstps", "fstpl", "fstpt"):
        return "fstp"
    if mnemonic in ("fsts", "fstl"):
        return "fst"
    arithmetic = re.fullmatch(r"(f(?:add|sub|mul|div)r?)p?[sl]?", mnemonic)  # fmul %st(1),%st is fmul, not "fmu"
    if arithmetic:
        return arithmetic.group(1)
    if mnemonic in ("fld1", "fldz", "fldpi", "fldl2e", "fldln2", "fldlg2", "fldl2t"):
        return mnemonic
    if len(mnemonic) > 2 and mnemonic[-1] in "bwlq" and mnemonic[:-1] in (
            "mov", "add", "sub", "and", "or", "xor", "cmp", "test", "inc", "dec", "neg", "not", "push", "pop",
            "imul", "mul", "div", "idiv", "shl", "shr", "sar", "sal", "lea", "adc", "sbb", "call", "ret", "jmp"):
        return mnemonic[:-1]
    return mnemonic


def group_cycles(weighted):
    """Cycles per pass of a cluster of (instruction, executions per pass) run together: the tightest P6 resource.
    Decoding follows the 4-1-1 rule in address order (a multi-uop instruction starts a cycle on decoder 0)."""
    uops_total, ports, decode, slot, fetch_bytes = 0.0, collections.Counter(), 0.0, 3, 0.0
    for instruction, weight in weighted:
        uops, used = uops_and_ports(instruction)
        uops_total += weight * uops
        for port, cycles in used.items():
            ports[port] += weight * cycles
        fetch_bytes += weight * instruction.length
        if uops == 1 and slot < 3:
            slot += 1
        else:  # decoder 0 starts a new cycle; microcode (more than 4 uops) takes more
            decode += weight * (1 + (uops - 1) // 4)
            slot = 1
    execution = max(ports["p0"], ports["p1"], (ports["p0"] + ports["p1"] + ports["p01"]) / 2, ports["p2"],
                    ports["p3"], ports["p4"], ports["multiplier"], ports["divider"])
    return max(decode, fetch_bytes / 16, uops_total / 3, execution)


@dataclasses.dataclass
class Cost:
    instructions: int
    core_cycles: float
    l2_hits: int
    l2_misses: int

    @property
    def cycles(self):
        return cycles(self.core_cycles, self.l2_hits, self.l2_misses)

    def as_dict(self):
        return dataclasses.asdict(self)


def cycles(core_cycles, l2_hits, l2_misses):
    """Cycles with the misses: not overlapped with the core's work."""
    return core_cycles + L2_HIT_CYCLES * l2_hits + L2_MISS_CYCLES * l2_misses


def cost(profile, code):
    """Cycles of one run: the sum of `by_function`."""
    parts = by_function(profile, code).values()
    return Cost(sum(p.instructions for p in parts), sum(p.core_cycles for p in parts), sum(p.l2_hits for p in parts),
                sum(p.l2_misses for p in parts))


def by_function(profile, code):
    """{function: Cost}: each function's instructions clustered by execution count (a loop's body and its test
    differ by the loop's entries), each cluster costed by `group_cycles`, plus the cache misses of its instructions."""
    index = {name: position for position, name in enumerate(("Ir", "I1mr", "D1mr", "D1mw", "ILmr", "DLmr", "DLmw"))}
    columns = [profile.events.index(name) if name in profile.events else None for name in index]
    found = {}
    for function, cells in profile.costs.items():
        core = 0.0
        by_count = sorted(((cell[0], address) for address, cell in cells.items() if cell[0]), reverse=True)
        cluster = []
        for count, address in by_count + [(0, None)]:
            if cluster and count < CLUSTER_RATIO * cluster[0][0]:
                reference = cluster[0][0]
                known = [(code[a], c / reference) for c, a in cluster if a in code]
                unknown = sum(c for c, a in cluster if a not in code)
                core += reference * group_cycles(sorted(known, key=lambda item: item[0].address)) + unknown / 3
                cluster = []
            cluster.append((count, address))
        sums = [sum(cell[column] for cell in cells.values()) if column is not None else 0 for column in columns]
        instructions, l1_misses, l2_misses = sums[0], sum(sums[1:4]), sum(sums[4:7])
        found[function] = Cost(instructions, core, l1_misses - l2_misses, l2_misses)
    return found


def callgrind_command(out_file, program_argv):
    return ["valgrind", "--tool=callgrind", "--cache-sim=yes", *CACHE_ARGS, "--dump-instr=yes",
            f"--callgrind-out-file={out_file}", *map(str, program_argv)]
