"""The Pentium II fast kernels against the oracle inside one program: the p2-linux build's rendered source compiled
with a small driver (its main renamed) and run natively and under qemu-i386 -cpu pentium2 (an SSE instruction
faults there). quantize must give the oracle's integers (ties included) and the MMX layout matmul_q8_rows reads;
matmul_q8_rows must give dot_rows_q8's sums up to float rounding, for every path: groups of 4 with and without a
last lone group, groups of 8, 32 and 64, and row counts that are not a multiple of the four rows per pass."""

import shutil
import subprocess

import pytest

from tests.test_ports import _plan

DRIVER = r"""
#define main run_main
#include "run.c"
#undef main

static int oracle(float v, float scale)
{
    volatile float rounded = v / scale; /* the oracle's quotient, rounded to float */
    float q = rounded;
    return (int)(q >= 0.0f ? floor((double)q + 0.5) : -floor(0.5 - (double)q));
}

static unsigned long seed = 12345;
static float random_float(float spread)
{
    seed = seed * 1103515245UL + 12345UL;
    return ((float)((seed >> 8) & 0xFFFF) - 32768.0f) / spread;
}

int main(void)
{
    static float x[1024], w[16 * 1024], ws[16 * 1024], got[16], want[16];
    static signed char xq[1024], wq[16 * 1024];
    static float xs[1024];
    static const int shapes[][2] = {{4, 64}, {4, 172}, {8, 104}, {32, 288}, {64, 768}, {32, 96}};
    int bad = 0, ties = 0, shape, trial, i, r;
    for (shape = 0; shape < 6; shape++) {
        int group = shapes[shape][0], n = shapes[shape][1];
        for (trial = 0; trial < 40; trial++) {
            int rows = 1 + trial % 16;
            for (i = 0; i < n; i++) x[i] = random_float(trial % 3 ? 3000.0f : 7.0f);
            if (trial % 4 == 0) /* exact ties: each group's top is 127 scales, the others k + 0.5 scales */
                for (i = 0; i < n; i++) x[i] = i % group ? (float)((i * 7) % 254 - 127) + 0.5f : 127.0f;
            if (trial % 8 == 0) x[0] = -x[0];
            for (i = 0; i < rows * n; i++) w[i] = random_float(1000.0f);
            quantize(wq, ws, w, rows * n, group);
            quantize(xq, xs, x, n, group);
            for (i = 0; i < n; i++) {
                int expected = oracle(x[i], xs[i / group] != 0.0f ? xs[i / group] : 1.0f);
                float q = x[i] / xs[i / group];
                ties += fabs(q) - floor(fabs(q)) == 0.5;
                if (xq[i] != expected) bad++;
#ifdef MMX_MAX_N
                if (i < n - n % 8 && mmx_x[MMX_SLOT(i)] != (i % 2 ? expected * 256 : expected)) bad++;
#endif
            }
            matmul_q8_rows(got, wq, ws, xq, xs, n, rows, group);
            dot_rows_q8(want, wq, ws, xq, xs, n, rows, group);
            for (r = 0; r < rows; r++)
                if (fabs(got[r] - want[r]) > 1e-5 * (1.0 + fabs(want[r]))) {
                    if (bad < 5) printf("group %d n %d rows %d row %d: %g, oracle %g\n", group, n, rows, r, got[r],
                                        want[r]);
                    bad++;
                }
        }
    }
    printf("bad %d ties %d\n", bad, ties);
    return bad != 0;
}
"""


@pytest.fixture(scope="module")
def driver(build_dir):
    plan = _plan("p2-linux", False, build_dir)
    source = plan.program.parent / "run.c"
    (source.parent / "x87_driver.c").write_text(DRIVER)
    binary = source.parent / "x87_driver"
    cc = plan.toolchain["cc"]
    done = subprocess.run([cc, *[f for f in plan.cflags if f != "-std=c89"], "-std=gnu89", "-w", "-o", str(binary),
                           str(source.parent / "x87_driver.c"), "-lm"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return binary


@pytest.mark.parametrize("emulator", [[], ["qemu-i386", "-cpu", "pentium2"]], ids=["native", "qemu-pentium2"])
def test_x87_quantize_and_mmx_rows_match_the_oracle(driver, emulator):
    if emulator and shutil.which(emulator[0]) is None:
        pytest.skip("qemu-user not installed")
    done = subprocess.run([*emulator, str(driver)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    bad, ties = (int(word) for word in done.stdout.split()[1::2])
    assert bad == 0 and ties > 1000, done.stdout
