/* AgileNN firmware: the device half of AgileNN on an MCU, talking to `agilenn-agent --port`.
 *
 * Per image: ask the camera for an image, run the generated device library (int8 extractor,
 * quantizer, rANS coder), send the payload in a FEATURES frame at once, run the local predictor
 * while the request is on its way, then send its logits in a LOCAL frame and wait for the
 * PREDICTION (docs/serial-protocol.md, version 3; stop-and-wait as section 4 of that page says).
 * With an agent that speaks only version 2 it runs the whole device part first and sends one
 * FEATURES frame with the logits in it. When no answer comes the firmware answers from its own
 * local predictor. One log line per image on the log UART.
 *
 * Camera protocol (UART1, fed by the host): the firmware sends one byte 0x01 ("next image, please")
 * and reads exactly AGN_IMAGE_BYTES raw uint8 HWC pixels back.
 */
#include <stdint.h>
#include <string.h>

#include "agilenn_device.h"
#include "agn_frame.h"
#include "board.h"

/* --- settings ------------------------------------------------------------------------------ */
#define FW_NAME "agilenn-fw/" AGN_MODEL_NAME
#define ANSWER_TIMEOUT_MS 5000u /* > the agent's --deadline-ms (default 1000) + both frames' transfer */
#define GRACE_MS 300u           /* after an ERROR with seq 0xFFFF: keep reading for our own seq this long */
#define MAX_TRIES 4u            /* sends of one frame before the firmware answers locally */
#define HELLO_RETRY_MS 1000u    /* the agent may not have opened its port yet */
#define RX_PAYLOAD_MAX 512u     /* largest answer payload we take (announced as max_rx; >= 140) */

#define PROTOCOL_VERSION 3u /* the newest this firmware speaks; HELLO falls back to 2 */
#define MSG_HELLO 0x01u
#define MSG_FEATURES 0x03u
#define MSG_LOCAL 0x04u
#define MSG_HELLO_REPLY 0x81u
#define MSG_PREDICTION 0x82u
#define MSG_ERROR 0x83u
#define SEQ_NONE 0xFFFFu
#define FEATURES_FIXED 12u
#define LOCAL_FIXED 8u
#define ERR_BAD_VERSION 3u
#define ERR_MISSING_FEATURES 7u /* the agent lacks the FEATURES of our LOCAL: send both again */
#define MS_TO_TICKS(ms) ((uint64_t)(ms) * (BOARD_SYSTICK_HZ / 1000u))

/* --- static buffers: no heap -------------------------------------------------------------- */
static uint32_t arena[(AGN_ARENA_BYTES + 3u) / 4u]; /* uint32_t: aligned to AGN_ARENA_ALIGN (4) */
static uint8_t image[AGN_IMAGE_BYTES];
static uint8_t features[FEATURES_FIXED + 2u * AGN_NUM_CLASSES + AGN_PAYLOAD_MAX_BYTES];
static uint8_t local_msg[LOCAL_FIXED + 2u * AGN_NUM_CLASSES];
static uint8_t tx_wire[AGN_FRAME_WIRE_BYTES(sizeof features)];
/* the longest chunk an answer of RX_PAYLOAD_MAX bytes stuffs to; decoded in place */
static uint8_t rx_chunk[AGN_COBS_MAX_ENCODED(AGN_FRAME_RAW_BYTES(RX_PAYLOAD_MAX))];
static agn_frame_reader reader;
static const uint8_t *rx_payload; /* the last answer's payload, inside rx_chunk */

static uint16_t next_seq;
static uint8_t version = PROTOCOL_VERSION; /* what the agent accepted in HELLO */

static uint16_t take_seq(void)
{
    uint16_t seq = next_seq;
    next_seq = (uint16_t)(next_seq == SEQ_NONE - 1u ? 0u : next_seq + 1u); /* 0xFFFF is never used */
    return seq;
}

static void put_u16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put_u32(uint8_t *p, uint32_t v) { put_u16(p, (uint16_t)v); put_u16(p + 2, (uint16_t)(v >> 16)); }
static uint16_t get_u16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

static void fail(const char *what, agn_status status)
{
    board_log("fatal: ");
    board_log(what);
    board_log(": ");
    board_log(agn_status_name(status));
    board_log("\n");
    for (;;) {
    }
}

static void send_frame(uint8_t type, uint16_t seq, const uint8_t *payload, size_t len)
{
    size_t wire_len = 0;
    agn_status st = agn_frame_encode(version, type, seq, payload, len, tx_wire, sizeof tx_wire, &wire_len);
    if (st != AGN_OK) {
        fail("agn_frame_encode", st);
    }
    board_uart_write(BOARD_UART_AGENT, tx_wire, wire_len);
}

/* A received frame from the agent. */
typedef struct {
    uint8_t type;
    uint16_t seq;
    size_t len; /* payload bytes, at rx_payload */
} rx_frame;

/* Next good frame from the agent until deadline (in ticks); 0 on timeout. Chunks that fail a check
 * are dropped silently (the MCU never answers the agent; docs/serial-protocol.md, "The MCU's side"). */
static int receive_frame(rx_frame *out, uint64_t deadline)
{
    for (;;) {
        uint64_t now = board_ticks();
        if (now >= deadline) {
            return 0;
        }
        int c = board_uart_read(BOARD_UART_AGENT, deadline - now);
        if (c < 0) {
            return 0;
        }
        size_t chunk_len = 0;
        if (agn_frame_reader_push(&reader, (uint8_t)c, &chunk_len) != AGN_OK || chunk_len == 0) {
            continue; /* mid-chunk, or a chunk too long for us (dropped up to the next delimiter) */
        }
        agn_frame f;
        if (agn_frame_decode(reader.buf, chunk_len, reader.buf, reader.cap, &f) == AGN_OK) {
            out->type = f.type;
            out->seq = f.seq;
            out->len = f.payload_len;
            rx_payload = f.payload;
            return 1;
        }
    }
}

/* A frame that opens a request and is sent again before the frame that completes it on every
 * resend (version 3: the FEATURES before its LOCAL); type 0: none. */
typedef struct {
    uint8_t type;
    const uint8_t *payload;
    size_t len;
} pre_frame;

static const pre_frame no_pre_frame = {0, NULL, 0};

/* Send a frame and wait for the answer with its seq (section 4): `expect` or an ERROR. Returns 1
 * with the answer in *answer, or 0 after max_tries sends (*tries counts them). `pre` went out
 * already before the first send; it goes out again before each resend, and an ERROR
 * MISSING_FEATURES (the agent did not get it intact) triggers a resend at once. */
static int exchange(uint8_t type, uint8_t expect, uint16_t seq, const uint8_t *payload, size_t len,
                    const pre_frame *pre, uint32_t timeout_ms, uint32_t max_tries, rx_frame *answer, uint32_t *tries)
{
    for (*tries = 1; *tries <= max_tries; (*tries)++) {
        if (*tries > 1 && pre->type != 0u) {
            send_frame(pre->type, seq, pre->payload, pre->len);
        }
        send_frame(type, seq, payload, len);
        uint64_t deadline = board_ticks() + MS_TO_TICKS(timeout_ms);
        for (;;) {
            if (!receive_frame(answer, deadline)) {
                break; /* timeout, or the grace after an unreadable-chunk error ran out: resend */
            }
            if (answer->seq == seq && answer->type == MSG_ERROR && pre->type != 0u && answer->len >= 1 &&
                rx_payload[0] == ERR_MISSING_FEATURES) {
                break; /* our FEATURES was damaged on the line (or lost): resend the pair */
            }
            if (answer->seq == seq && (answer->type == expect || answer->type == MSG_ERROR)) {
                return 1;
            }
            if (answer->seq == SEQ_NONE && answer->type == MSG_ERROR) {
                /* Some chunk was unreadable: maybe ours, maybe noise before it. Our answer would
                 * follow right behind, so keep reading briefly before resending. */
                uint64_t grace = board_ticks() + MS_TO_TICKS(GRACE_MS);
                if (grace < deadline) {
                    deadline = grace;
                }
            }
            /* anything else: a stale duplicate, ignore */
        }
    }
    return 0;
}

static void hello(void)
{
    uint8_t msg[4 + sizeof FW_NAME - 1];
    msg[1] = 0; /* no merged logits: this firmware needs only the class */
    put_u16(msg + 2, RX_PAYLOAD_MAX);
    memcpy(msg + 4, FW_NAME, sizeof FW_NAME - 1);
    static const char want[] = AGN_MODEL_NAME ":" AGN_MODEL_VERSION;
    for (;;) {
        rx_frame a;
        uint32_t tries;
        msg[0] = version;
        if (!exchange(MSG_HELLO, MSG_HELLO_REPLY, take_seq(), msg, sizeof msg, &no_pre_frame, HELLO_RETRY_MS, 1, &a,
                      &tries)) {
            continue;
        }
        if (a.type == MSG_ERROR && a.len >= 1 && rx_payload[0] == ERR_BAD_VERSION && version > 2u) {
            version = 2u; /* an agent from before version 3: one FEATURES frame with the logits in it */
            board_log("hello: the agent speaks serial protocol version 2\n");
            continue;
        }
        if (a.type == MSG_HELLO_REPLY) {
            if (a.len >= 12 && a.len - 12 == sizeof want - 1 && memcmp(rx_payload + 12, want, a.len - 12) == 0) {
                board_log("hello: agent serves " AGN_MODEL_NAME ":" AGN_MODEL_VERSION "\n");
                return;
            }
            board_log("hello: the agent serves another model; retrying\n");
        }
    }
}

static int argmax(const int16_t *v, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++) {
        if (v[i] > v[best]) {
            best = i;
        }
    }
    return best;
}

static void next_image(void)
{
    for (;;) {
        static const uint8_t ask = 0x01;
        board_uart_write(BOARD_UART_CAMERA, &ask, 1);
        size_t got = 0;
        while (got < sizeof image) {
            int c = board_uart_read(BOARD_UART_CAMERA, MS_TO_TICKS(10000));
            if (c < 0) {
                break; /* the camera went quiet mid-image: ask again from the start */
            }
            image[got++] = (uint8_t)c;
        }
        if (got == sizeof image) {
            return;
        }
    }
}

int main(void)
{
    board_init();
    agn_frame_reader_init(&reader, rx_chunk, sizeof rx_chunk);
    board_log("agilenn firmware " AGN_MODEL_NAME ":" AGN_MODEL_VERSION " on mps2-an500\n");
    hello();
    int16_t logits[AGN_NUM_CLASSES];
    const float scale = AGN_LOGIT_SCALE;
    for (uint32_t n = 0;; n++) {
        next_image();

        /* the device part, timed in SysTick ticks (instructions = ticks x 40 under -icount shift=0):
         * up to the payload, then the local predictor (in version 3 while the request is out) */
        size_t payload_len = 0;
        uint16_t sent = 0;
        uint8_t *payload = features + FEATURES_FIXED + (version >= 3u ? 0u : 2u * AGN_NUM_CLASSES);
        uint64_t t0 = board_ticks();
        agn_status st = agn_device_features(image, sizeof image, arena, sizeof arena, payload, AGN_PAYLOAD_MAX_BYTES,
                                            &payload_len, &sent);
        uint64_t t1 = board_ticks();
        if (st != AGN_OK) {
            fail("agn_device_features", st);
        }
        uint32_t to_payload = (uint32_t)((t1 - t0) * BOARD_INSTRUCTIONS_PER_TICK);
        uint16_t seq = take_seq();

        /* FEATURES: logits format (1: int16 + scale in this frame; 0: they follow in LOCAL), n,
         * reserved, scale, cycles (up to here; version 2: set below, the whole device part),
         * [logits], payload */
        features[0] = version >= 3u ? 0u : 1u;
        features[1] = AGN_NUM_CLASSES;
        put_u16(features + 2, 0);
        memcpy(features + 4, &scale, 4); /* IEEE-754 float32, little-endian like the frame */
        put_u32(features + 8, to_payload);
        size_t len = FEATURES_FIXED + (version >= 3u ? 0u : 2u * AGN_NUM_CLASSES) + payload_len;
        if (version >= 3u) {
            send_frame(MSG_FEATURES, seq, features, len); /* on the link while the local predictor runs */
        }
        uint64_t t2 = board_ticks();
        st = agn_device_local(arena, sizeof arena, logits, AGN_NUM_CLASSES);
        uint64_t t3 = board_ticks();
        if (st != AGN_OK) {
            fail("agn_device_local", st);
        }
        uint32_t local_instructions = (uint32_t)((t3 - t2) * BOARD_INSTRUCTIONS_PER_TICK);
        uint32_t instructions = to_payload + local_instructions;
        int local = argmax(logits, AGN_NUM_CLASSES);

        rx_frame a;
        uint32_t tries = 0;
        int label = local, degraded = 1, reason = -1, answered;
        if (version >= 3u) {
            /* LOCAL: logits format 1 (int16, the FEATURES frame's scale), n, reserved, cycles of the
             * local predictor, logits; it completes the request, and the PREDICTION answers it */
            const pre_frame pre = {MSG_FEATURES, features, len};
            local_msg[0] = 1;
            local_msg[1] = AGN_NUM_CLASSES;
            put_u16(local_msg + 2, 0);
            put_u32(local_msg + 4, local_instructions);
            for (int i = 0; i < AGN_NUM_CLASSES; i++) {
                put_u16(local_msg + LOCAL_FIXED + 2 * i, (uint16_t)logits[i]);
            }
            answered = exchange(MSG_LOCAL, MSG_PREDICTION, seq, local_msg, sizeof local_msg, &pre, ANSWER_TIMEOUT_MS,
                                MAX_TRIES, &a, &tries);
        } else {
            put_u32(features + 8, instructions); /* version 2: the whole device part */
            for (int i = 0; i < AGN_NUM_CLASSES; i++) {
                put_u16(features + FEATURES_FIXED + 2 * i, (uint16_t)logits[i]);
            }
            answered = exchange(MSG_FEATURES, MSG_PREDICTION, seq, features, len, &no_pre_frame, ANSWER_TIMEOUT_MS,
                                MAX_TRIES, &a, &tries);
        }
        if (answered) {
            if (a.type == MSG_PREDICTION && a.len >= 18) {
                label = get_u16(rx_payload);
                degraded = rx_payload[2] & 1;
                reason = rx_payload[3];
            } else if (a.type == MSG_ERROR && a.len >= 2) {
                reason = 100 + rx_payload[0]; /* the agent refused the frame: 100 + error code */
            }
        }
        /* reason -1: no answer at all (the agent is gone): the local prediction stands */

        board_log("image ");
        board_log_u32(n);
        board_log(" class ");
        board_log_i32(label);
        board_log(" local ");
        board_log_i32(local);
        board_log(" degraded ");
        board_log_i32(degraded);
        board_log(" reason ");
        board_log_i32(reason);
        board_log(" tries ");
        board_log_u32(tries);
        board_log(" payload ");
        board_log_u32((uint32_t)payload_len);
        board_log(" channels ");
        board_log_u32(sent);
        board_log(" instructions ");
        board_log_u32(instructions);
        board_log(" to_payload ");
        board_log_u32(to_payload);
        board_log(" stack ");
        board_log_u32((uint32_t)board_stack_high_water());
        board_log("\n");
    }
}
