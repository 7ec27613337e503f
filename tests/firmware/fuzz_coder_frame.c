/* Bounded random fuzz of the C coder and framing, built with -fsanitize=address,undefined by
 * tests/firmware/test_firmware_c_fuzz.py. Every buffer is a heap block of exactly the size the
 * library is told, so ASan catches any byte read or written outside it.
 *
 *   fuzz_coder_frame ITERATIONS SEED     prints "ok <counts>" and exits 0, or names the failure
 *
 * Properties: encode -> decode is the identity; an encoder given too little room says NOSPACE and
 * never writes past it; the decoders take any bytes and answer OK or a data/frame error, and an
 * accepted rANS body is exactly the encoding of what it decoded to. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agn_frame.h"
#include "agn_rans.h"

static uint64_t rng_state;
static uint32_t rnd(void) /* xorshift64* */
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 2685821657736338717ull) >> 32);
}
static uint32_t below(uint32_t n) { return n ? rnd() % n : 0; }

#define CHECK(cond, ...)                                                          \
    do {                                                                          \
        if (!(cond)) {                                                            \
            fprintf(stderr, "FAIL line %d iteration %ld: ", __LINE__, iteration); \
            fprintf(stderr, __VA_ARGS__);                                         \
            fprintf(stderr, "\n");                                                \
            exit(1);                                                              \
        }                                                                         \
    } while (0)

static long iteration;
static long n_rans, n_rans_accepted, n_frames, n_chunks_ok;

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return p;
}

static void fuzz_rans(void)
{
    const unsigned precision = 1 + below(16);
    unsigned max_levels = 1u << precision;
    if (max_levels > 256) {
        max_levels = 256;
    }
    const unsigned few = max_levels < 8 ? max_levels : 8; /* mostly small alphabets, sometimes up to 256 */
    const uint16_t levels = (uint16_t)(2 + below((below(4) == 0 ? max_levels : few) - 1));
    const uint32_t tables = 1 + below(4);
    uint16_t *freq = xmalloc(sizeof *freq * tables * levels);
    for (uint32_t t = 0; t < tables; t++) { /* every entry 1, the rest of 2^precision spread at random */
        uint32_t left = (1u << precision) - levels;
        for (uint32_t s = 0; s < levels; s++) {
            uint32_t extra = s + 1 == levels ? left : (below(3) ? below(left + 1) : 0);
            freq[t * levels + s] = (uint16_t)(1 + extra);
            left -= extra;
        }
    }
    agn_rans_symbol *syms = xmalloc(sizeof *syms * tables * levels);
    agn_rans_model model;
    agn_status st = agn_rans_prepare(freq, tables, levels, precision, syms, (size_t)tables * levels, &model);
    CHECK(st == AGN_OK, "prepare: %s", agn_status_name(st));

    const size_t count = below(400);
    uint8_t *symbols = xmalloc(count);
    uint16_t *tab = xmalloc(sizeof *tab * count);
    for (size_t i = 0; i < count; i++) {
        tab[i] = (uint16_t)below(tables);
        symbols[i] = (uint8_t)(below(2) ? below(levels) : 0);
    }
    const size_t cap = AGN_RANS_MAX_BODY_BYTES(count);
    uint8_t *body = xmalloc(cap);
    size_t len = 0;
    st = agn_rans_encode(&model, symbols, tab, count, body, cap, &len);
    CHECK(st == AGN_OK && len <= cap, "encode: %s", agn_status_name(st));
    uint8_t *back = xmalloc(count);
    st = agn_rans_decode(&model, body, len, tab, count, back);
    CHECK(st == AGN_OK && memcmp(back, symbols, count) == 0, "round trip: %s", agn_status_name(st));

    /* an exact-size buffer works, a smaller one says NOSPACE without writing outside it */
    size_t small_cap = len ? below((uint32_t)len + 1) : 0;
    uint8_t *small = xmalloc(small_cap);
    size_t small_len = 0;
    st = agn_rans_encode(&model, symbols, tab, count, small, small_cap, &small_len);
    CHECK(small_cap < len ? st == AGN_ERR_NOSPACE : (st == AGN_OK && memcmp(small, body, len) == 0),
          "cap %zu of %zu: %s", small_cap, len, agn_status_name(st));

    /* hostile bodies: mutate, truncate, extend or replace with noise */
    const size_t hostile_len = below(4) == 0 ? below(2 * (uint32_t)count + 8) : len + below(3);
    uint8_t *hostile = xmalloc(hostile_len);
    for (size_t i = 0; i < hostile_len; i++) {
        hostile[i] = i < len && below(8) ? body[i] : (uint8_t)rnd();
    }
    st = agn_rans_decode(&model, hostile, hostile_len, tab, count, back);
    CHECK(st == AGN_OK || st == AGN_ERR_DATA, "hostile decode: %s", agn_status_name(st));
    if (st == AGN_OK) { /* accepted: it must be exactly the encoding of what came out */
        uint8_t *again = xmalloc(AGN_RANS_MAX_BODY_BYTES(count));
        size_t again_len = 0;
        st = agn_rans_encode(&model, back, tab, count, again, AGN_RANS_MAX_BODY_BYTES(count), &again_len);
        CHECK(st == AGN_OK && again_len == hostile_len && memcmp(again, hostile, again_len) == 0,
              "accepted a body that is not the exact encoding");
        free(again);
        n_rans_accepted++;
    }
    n_rans++;
    free(hostile), free(small), free(back), free(body), free(tab), free(symbols), free(syms), free(freq);
}

static void fuzz_frame(void)
{
    const size_t n = below(5) == 0 ? below(AGN_FRAME_MAX_PAYLOAD + 1) : below(700);
    uint8_t *payload = xmalloc(n);
    const unsigned zero_odds = below(4);
    for (size_t i = 0; i < n; i++) {
        payload[i] = zero_odds && below(zero_odds + 1) == 0 ? 0 : (uint8_t)rnd();
    }
    const uint8_t version = (uint8_t)(1 + below(2)), type = (uint8_t)rnd();
    const uint16_t seq = (uint16_t)rnd();
    const size_t cap = AGN_FRAME_WIRE_BYTES(n);
    uint8_t *wire = xmalloc(cap);
    size_t len = 0;
    agn_status st = agn_frame_encode(version, type, seq, payload, n, wire, cap, &len);
    CHECK(st == AGN_OK && len <= cap && wire[0] == 0 && wire[len - 1] == 0, "frame encode: %s", agn_status_name(st));
    for (size_t i = 1; i + 1 < len; i++) {
        CHECK(wire[i] != 0, "zero inside a stuffed frame");
    }
    /* too small a buffer */
    size_t small_cap = below((uint32_t)len);
    uint8_t *small = xmalloc(small_cap);
    size_t small_len;
    st = agn_frame_encode(version, type, seq, payload, n, small, small_cap, &small_len);
    CHECK(st == AGN_ERR_NOSPACE, "frame encode into %zu of %zu: %s", small_cap, len, agn_status_name(st));

    /* decode in place (the chunk copied into an exact-size block) */
    const size_t chunk_len = len - 2;
    uint8_t *chunk = xmalloc(chunk_len);
    memcpy(chunk, wire + 1, chunk_len);
    agn_frame frame;
    st = agn_frame_decode(chunk, chunk_len, chunk, chunk_len, &frame);
    CHECK(st == AGN_OK && frame.version == version && frame.type == type && frame.seq == seq &&
              frame.payload_len == n && memcmp(frame.payload, payload, n) == 0,
          "frame round trip: %s", agn_status_name(st));

    /* hostile chunks, decoded into a buffer of random (often too small) size */
    memcpy(chunk, wire + 1, chunk_len);
    const unsigned flips = below(4);
    for (unsigned k = 0; k < flips && chunk_len; k++) {
        chunk[below((uint32_t)chunk_len)] ^= (uint8_t)(1u << below(8));
    }
    const size_t cut = below(3) == 0 ? below((uint32_t)chunk_len + 1) : chunk_len;
    const size_t work_cap = below(2) ? cut : below((uint32_t)cut + 1);
    uint8_t *work = xmalloc(work_cap);
    st = agn_frame_decode(chunk, cut, work, work_cap, &frame);
    CHECK(st == AGN_OK || st == AGN_ERR_FRAME || st == AGN_ERR_VERSION || st == AGN_ERR_NOSPACE ||
              st == AGN_ERR_TOO_LONG,
          "hostile chunk: %s", agn_status_name(st));
    if (st == AGN_OK) {
        n_chunks_ok++;
    }

    /* the byte reader over the wire bytes plus noise, with a small receive buffer */
    const size_t rcap = 1 + below(300);
    uint8_t *rbuf = xmalloc(rcap);
    agn_frame_reader reader;
    agn_frame_reader_init(&reader, rbuf, rcap);
    for (size_t i = 0; i < len + 50; i++) {
        size_t got;
        const uint8_t byte = i < len ? wire[i] : (uint8_t)(below(4) ? rnd() : 0);
        st = agn_frame_reader_push(&reader, byte, &got);
        CHECK(st == AGN_OK || st == AGN_ERR_TOO_LONG, "reader: %s", agn_status_name(st));
        CHECK(got <= rcap, "reader chunk longer than its buffer");
        if (got) {
            uint8_t *copy = xmalloc(got);
            memcpy(copy, rbuf, got);
            st = agn_frame_decode(copy, got, rbuf, rcap, &frame);
            (void)st;
            free(copy);
        }
    }
    n_frames++;
    free(rbuf), free(work), free(chunk), free(small), free(wire), free(payload);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s ITERATIONS SEED\n", argv[0]);
        return 2;
    }
    const long iterations = strtol(argv[1], NULL, 10);
    rng_state = strtoull(argv[2], NULL, 10) * 0x9E3779B97F4A7C15ull + 1;
    for (iteration = 0; iteration < iterations; iteration++) {
        fuzz_rans();
        fuzz_frame();
    }
    printf("ok rans=%ld rans_hostile_accepted=%ld frames=%ld hostile_chunks_ok=%ld\n", n_rans, n_rans_accepted,
           n_frames, n_chunks_ok);
    return 0;
}
