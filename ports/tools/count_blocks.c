/* A qemu-user TCG plugin (plugin API version 1, qemu 7.2): how often each translated block of guest code ran.
 *
 * Debian packages no plugin header, so the few API functions used are declared here from the documented API.
 * Each translated block gets one inline counter (QEMU_PLUGIN_INLINE_ADD_U64: no call per instruction) and keeps its
 * instructions' disassembly; at exit every block that ran is written to the file given as `out=PATH` (stderr
 * without it) as a line "@ COUNT N" followed by its N instructions, one per line. The machine model
 * (deploy/guest_model.py) costs each block per pass. Count one thread only: the inline add is not atomic.
 * Build: gcc -shared -fPIC -O2 -o count_blocks.so count_blocks.c
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;
struct qemu_plugin_insn;
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };
typedef void (*tb_trans_cb)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*udata_cb)(qemu_plugin_id_t id, void *userdata);

extern void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, tb_trans_cb cb);
extern size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
extern struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
extern char *qemu_plugin_insn_disas(const struct qemu_plugin_insn *insn);
extern void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb, enum qemu_plugin_op op, void *ptr,
                                                     uint64_t imm);
extern void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, udata_cb cb, void *userdata);

__attribute__((visibility("default"))) int qemu_plugin_version = 1;

struct block {
    uint64_t count;
    size_t n;
    struct block *next;
    char *text[];
};
static struct block *blocks;
static char out_path[1024];

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
    size_t n = qemu_plugin_tb_n_insns(tb), i;
    struct block *block = calloc(1, sizeof *block + n * sizeof(char *));
    (void)id;
    block->n = n;
    for (i = 0; i < n; i++) block->text[i] = qemu_plugin_insn_disas(qemu_plugin_tb_get_insn(tb, i));
    block->next = blocks;
    blocks = block;
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &block->count, 1);
}

static void at_exit_report(qemu_plugin_id_t id, void *userdata) {
    struct block *block;
    FILE *out = out_path[0] ? fopen(out_path, "w") : stderr;
    size_t i;
    (void)id;
    (void)userdata;
    if (!out) return;
    for (block = blocks; block; block = block->next) {
        if (!block->count) continue;
        fprintf(out, "@ %llu %lu\n", (unsigned long long)block->count, (unsigned long)block->n);
        for (i = 0; i < block->n; i++) fprintf(out, "%s\n", block->text[i] ? block->text[i] : "?");
    }
    if (out != stderr) fclose(out);
}

__attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id, const void *info, int argc,
                                                                 char **argv) {
    int i;
    (void)info;
    for (i = 0; i < argc; i++)
        if (strncmp(argv[i], "out=", 4) == 0) snprintf(out_path, sizeof out_path, "%s", argv[i] + 4);
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_atexit_cb(id, at_exit_report, NULL);
    return 0;
}
