/* Board support for QEMU's mps2-an500; see board.h. */
#include "board.h"

/* --- CMSDK APB UART (Arm CoreLink SDK, DDI0479: DATA, STATE, CTRL, INTSTATUS/INTCLEAR, BAUDDIV) --- */
typedef struct {
    volatile uint32_t data;
    volatile uint32_t state; /* bit 0 TX buffer full, bit 1 RX buffer full */
    volatile uint32_t ctrl;  /* bit 0 TX enable, bit 1 RX enable, bit 3 RX interrupt enable */
    volatile uint32_t intstatus; /* write 1 to clear; bit 1 RX interrupt */
    volatile uint32_t bauddiv;
} cmsdk_uart;

#define UART_STATE_TXFULL 0x1u
#define UART_STATE_RXFULL 0x2u
#define UART_CTRL_TXEN 0x1u
#define UART_CTRL_RXEN 0x2u
#define UART_CTRL_RXINT 0x8u
#define UART_INT_RX 0x2u

static cmsdk_uart *const uarts[3] = {
    (cmsdk_uart *)0x40004000u, (cmsdk_uart *)0x40005000u, (cmsdk_uart *)0x40006000u};

/* --- Cortex-M7 core registers (ARMv7-M ARM: SysTick B3.3, NVIC B3.4) --- */
#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)
#define NVIC_ISER0 (*(volatile uint32_t *)0xE000E100u)
#define SYSTICK_RELOAD 0x00FFFFFFu /* the full 24 bits: one interrupt every 0.67 s */

/* Receive rings: the interrupt handler writes, board_uart_read reads. Power-of-two size. */
#define RING_SIZE 1024u
typedef struct {
    uint8_t bytes[RING_SIZE];
    volatile uint32_t head; /* written by the interrupt */
    volatile uint32_t tail; /* written by the reader */
} rx_ring;

static rx_ring rings[2];
static volatile uint32_t systick_wraps;

/* Move received bytes from the UART into the ring while both have one / room for one. A byte that
 * finds the ring full stays in the UART, and QEMU holds the rest back (its UART accepts a byte
 * only when RXFULL is clear), so a burst larger than the ring (a 3,072-byte camera image against
 * 1,024 bytes of ring, while the CPU runs slowly under an instruction log) loses nothing. With the
 * ring full the RX interrupt is switched off, or it would fire again at once for the waiting byte;
 * board_uart_read switches it back on when it has taken a byte. Called by the interrupt and by the
 * reader with interrupts masked. */
static void uart_drain(cmsdk_uart *u, rx_ring *r)
{
    while (u->state & UART_STATE_RXFULL) {
        if (r->head - r->tail >= RING_SIZE) {
            u->ctrl &= ~UART_CTRL_RXINT;
            return;
        }
        r->bytes[r->head % RING_SIZE] = (uint8_t)u->data;
        r->head++;
    }
}

static void uart_rx_isr(enum board_uart which)
{
    cmsdk_uart *u = uarts[which];
    u->intstatus = UART_INT_RX;
    uart_drain(u, &rings[which]);
}

void UART0_RX_Handler(void) { uart_rx_isr(BOARD_UART_AGENT); }
void UART1_RX_Handler(void) { uart_rx_isr(BOARD_UART_CAMERA); }
void SysTick_Handler(void) { systick_wraps++; }

void board_init(void)
{
    for (int i = 0; i < 3; i++) {
        uarts[i]->bauddiv = 16; /* the smallest divisor the CMSDK UART accepts; QEMU ignores the rate */
        uarts[i]->ctrl = UART_CTRL_TXEN | (i < 2 ? (UART_CTRL_RXEN | UART_CTRL_RXINT) : 0u);
    }
    NVIC_ISER0 = (1u << 0) | (1u << 2); /* UART0 RX, UART1 RX */
    SYST_RVR = SYSTICK_RELOAD;
    SYST_CVR = 0;
    SYST_CSR = 0x7u; /* enable, interrupt on wrap, processor clock */
}

uint64_t board_ticks(void)
{
    uint32_t wraps, count;
    do { /* a wrap between the two reads would pair a new count with an old wrap count */
        wraps = systick_wraps;
        count = SYST_CVR;
    } while (wraps != systick_wraps);
    return (uint64_t)wraps * (SYSTICK_RELOAD + 1u) + (SYSTICK_RELOAD - count);
}

void board_uart_write(enum board_uart uart, const uint8_t *data, size_t len)
{
    cmsdk_uart *u = uarts[uart];
    for (size_t i = 0; i < len; i++) {
        while (u->state & UART_STATE_TXFULL) {
        }
        u->data = data[i];
    }
}

int board_uart_read(enum board_uart uart, uint64_t timeout_ticks)
{
    cmsdk_uart *u = uarts[uart];
    rx_ring *r = &rings[uart];
    uint64_t start = board_ticks();
    for (;;) {
        __asm volatile("cpsid i" ::: "memory");
        if (r->head != r->tail) {
            uint8_t byte = r->bytes[r->tail % RING_SIZE];
            r->tail++;
            if (!(u->ctrl & UART_CTRL_RXINT)) {
                /* the ring was full: there is room now. The interrupt goes back on before the
                 * drain, so a byte arriving after the drain raises it (QEMU sets the RX interrupt
                 * only for bytes received while it is enabled), and one that arrived before it is
                 * taken here. */
                u->ctrl |= UART_CTRL_RXINT;
                uart_drain(u, r);
            }
            __asm volatile("cpsie i" ::: "memory");
            return byte;
        }
        if (board_ticks() - start >= timeout_ticks) {
            __asm volatile("cpsie i" ::: "memory");
            return -1;
        }
        /* Sleep until an interrupt (a byte, or the SysTick wrap); a pending one wakes WFI at once
         * even with interrupts masked, so no byte can slip in between the check and the sleep. */
        __asm volatile("wfi\n cpsie i\n isb" ::: "memory");
    }
}

extern uint32_t __stack_limit__, __stack_top__;

size_t board_stack_size(void)
{
    return (size_t)((uintptr_t)&__stack_top__ - (uintptr_t)&__stack_limit__);
}

size_t board_stack_high_water(void)
{
    const uint32_t *p = &__stack_limit__;
    while (p < &__stack_top__ && *p == 0x5A5AA5A5u) { /* the reset handler's paint word */
        p++;
    }
    return (size_t)((uintptr_t)&__stack_top__ - (uintptr_t)p);
}

void board_log(const char *text)
{
    size_t n = 0;
    while (text[n]) {
        n++;
    }
    board_uart_write(BOARD_UART_LOG, (const uint8_t *)text, n);
}

void board_log_u32(uint32_t value)
{
    char digits[11];
    int i = 10;
    digits[i] = '\0';
    do {
        digits[--i] = (char)('0' + value % 10u);
        value /= 10u;
    } while (value);
    board_log(&digits[i]);
}

void board_log_i32(int32_t value)
{
    if (value < 0) {
        board_log("-");
        board_log_u32((uint32_t)0 - (uint32_t)value);
    } else {
        board_log_u32((uint32_t)value);
    }
}
