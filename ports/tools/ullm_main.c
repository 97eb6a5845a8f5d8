/* A command line for ullm (Andrew Rossignol's port, built from ../shared/peers/ullm) without its c-flags
 * dependency: `ullm_main checkpoint tokenizer steps [prompt]`, greedy sampling, one line of output. Used only by the
 * machine model and the peer benchmarks to count ullm's instructions; it calls ullm's public API (ullm/llama2.h). */
#include <stdio.h>
#include <stdlib.h>

#include "ullm/llama2.h"

static void print_piece(const char *piece, void *cookie) {
    (void)cookie;
    fputs(piece, stdout);
}

int main(int argc, char **argv) {
    UllmLlama2RunConfig config;
    UllmLlama2State state;
    UllmStatus status;
    if (argc < 4) {
        fprintf(stderr, "usage: %s checkpoint tokenizer steps [prompt]\n", argv[0]);
        return 2;
    }
    UllmLlama2RunConfigInit(&config);
    config.checkpoint_path = argv[1];
    config.tokenizer_path = argv[2];
    config.steps = (unsigned int)atoi(argv[3]);
    config.prompt = argc > 4 ? argv[4] : "";
    config.temperature = 0.0f;
    config.output_callback = print_piece;
    status = UllmLlama2Init(&config, &state);
    if (status == ULLM_STATUS_OK) status = UllmLlama2Generate(&config, &state);
    UllmLlama2Deinit(&state);
    putchar('\n');
    return status == ULLM_STATUS_OK ? 0 : 1;
}
