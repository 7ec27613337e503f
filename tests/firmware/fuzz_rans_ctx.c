/* Bounded random fuzz of the context coder (agn_rans_ctx.c), built with
 * -fsanitize=address,undefined by tests/firmware/test_firmware_rans_ctx.py. Every buffer is a heap
 * block of exactly the size the library is told, so ASan catches any byte read or written outside.
 *
 *   fuzz_rans_ctx MODELS SEED     prints "ok <counts>" and exits 0, or names the failure
 *
 * Per random model (levels, neighbours, bins, rows, row map, precision): encode -> decode is the
 * identity for every prefix of channels; too little room gives NOSPACE; random bodies decode to OK
 * or DATA, and an accepted body is exactly the encoding of what it decoded to. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agn_rans_ctx.h"

static uint64_t rng_state;
static uint32_t rnd(void) /* xorshift64* */
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 2685821657736338717ull) >> 32);
}
static uint32_t below(uint32_t n) { return n ? rnd() % n : 0; }

static long iteration;
#define CHECK(cond, ...)                                                          \
    do {                                                                          \
        if (!(cond)) {                                                            \
            fprintf(stderr, "FAIL line %d model %ld: ", __LINE__, iteration);     \
            fprintf(stderr, __VA_ARGS__);                                         \
            fprintf(stderr, "\n");                                                \
            exit(1);                                                              \
        }                                                                         \
    } while (0)

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return p;
}

int main(int argc, char **argv)
{
    const long models = argc > 1 ? atol(argv[1]) : 1000;
    rng_state = 0x9E3779B97F4A7C15ull ^ (uint64_t)(argc > 2 ? atol(argv[2]) : 1);
    long n_hostile_ok = 0, n_hostile_bad = 0, n_nospace = 0;
    for (iteration = 0; iteration < models; iteration++) {
        const uint16_t levels = (uint16_t)(2 + below(5));
        unsigned precision = 1;
        while ((1u << precision) < levels) {
            precision++;
        }
        precision += below(17 - precision);
        const uint32_t rows = 1 + below(6);
        uint16_t *freq = xmalloc(rows * levels * sizeof *freq);
        for (uint32_t t = 0; t < rows; t++) {
            uint32_t left = (1u << precision) - levels; /* spread over the row, every entry >= 1 */
            for (uint16_t s = 0; s < levels; s++) {
                const uint32_t extra = s + 1u == levels ? left : below(left + 1u);
                freq[t * levels + s] = (uint16_t)(1u + extra);
                left -= extra;
            }
        }
        agn_rans_symbol *syms = xmalloc(rows * levels * sizeof *syms);
        agn_rans_model rmodel;
        CHECK(agn_rans_prepare(freq, rows, levels, precision, syms, rows * levels, &rmodel) == AGN_OK, "prepare");

        agn_rans_ctx_model m;
        memset(&m, 0, sizeof m);
        m.num_neighbours = (uint8_t)(1 + below(3));
        for (unsigned k = 0; k < m.num_neighbours; k++) {
            m.neighbours[k] = (uint8_t)below(3); /* repeats are allowed in C; the manifest forbids them */
        }
        m.num_bins = (uint16_t)(1 + below(levels + 1u));
        uint8_t *bins = xmalloc(levels + 1u);
        for (unsigned v = 0; v <= levels; v++) {
            bins[v] = (uint8_t)below(m.num_bins);
        }
        m.channels = (uint16_t)(1 + below(4));
        m.height = (uint16_t)(1 + below(5));
        m.width = (uint16_t)(1 + below(5));
        uint32_t contexts = 1;
        for (unsigned k = 0; k < m.num_neighbours; k++) {
            contexts *= m.num_bins;
        }
        uint8_t *row_map = xmalloc((size_t)m.channels * contexts);
        for (size_t k = 0; k < (size_t)m.channels * contexts; k++) {
            row_map[k] = (uint8_t)below(rows);
        }
        m.rows = &rmodel;
        m.bins = bins;
        m.row_map = row_map;

        const size_t plane = (size_t)m.height * m.width;
        for (size_t sent = 0; sent <= m.channels; sent++) {
            const size_t count = sent * plane;
            uint8_t *sym = xmalloc(count);
            for (size_t i = 0; i < count; i++) { /* skewed: mostly 0, like real features */
                sym[i] = (uint8_t)(below(3) ? 0 : below(levels));
            }
            const size_t cap = AGN_RANS_MAX_BODY_BYTES(count);
            uint8_t *body = xmalloc(cap);
            size_t len = 0;
            CHECK(agn_rans_ctx_encode(&m, sym, sent, body, cap, &len) == AGN_OK, "encode");
            uint8_t *back = xmalloc(count);
            CHECK(agn_rans_ctx_decode(&m, body, len, sent, back) == AGN_OK, "decode of a valid body");
            CHECK(memcmp(back, sym, count) == 0, "round trip differs");
            if (len) { /* one byte too few: NOSPACE, nothing written past the smaller buffer */
                uint8_t *small = xmalloc(len - 1u);
                size_t small_len = 0;
                CHECK(agn_rans_ctx_encode(&m, sym, sent, small, len - 1u, &small_len) == AGN_ERR_NOSPACE, "nospace");
                n_nospace++;
                free(small);
            }
            /* hostile: random bytes, or the valid body with one byte changed */
            for (int h = 0; h < 4; h++) {
                const size_t hlen = h < 2 ? below(2u * (uint32_t)count + 6u) : len;
                uint8_t *hostile = xmalloc(hlen);
                for (size_t i = 0; i < hlen; i++) {
                    hostile[i] = h < 2 ? (uint8_t)rnd() : body[i];
                }
                if (h >= 2 && hlen) {
                    hostile[below((uint32_t)hlen)] ^= (uint8_t)(1u + below(255));
                }
                const agn_status st = agn_rans_ctx_decode(&m, hostile, hlen, sent, back);
                CHECK(st == AGN_OK || st == AGN_ERR_DATA, "hostile decode status %d", (int)st);
                if (st == AGN_OK) {
                    size_t again_len = 0;
                    uint8_t *again = xmalloc(cap);
                    CHECK(agn_rans_ctx_encode(&m, back, sent, again, cap, &again_len) == AGN_OK, "re-encode");
                    CHECK(again_len == hlen && memcmp(again, hostile, hlen) == 0, "accepted body is not canonical");
                    free(again);
                    n_hostile_ok++;
                } else {
                    n_hostile_bad++;
                }
                free(hostile);
            }
            free(sym);
            free(body);
            free(back);
        }
        free(freq);
        free(syms);
        free(bins);
        free(row_map);
    }
    printf("ok models=%ld hostile_accepted=%ld hostile_rejected=%ld nospace=%ld\n", models, n_hostile_ok,
           n_hostile_bad, n_nospace);
    return 0;
}
