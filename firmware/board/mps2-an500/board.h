/* Board support for QEMU's mps2-an500 (Cortex-M7): UARTs, a time base from SysTick, stack use.
 *
 *   UART0 0x40004000  the link to agilenn-agent (first  -serial), RX interrupt IRQ 0
 *   UART1 0x40005000  the "camera": the host feeds images (second -serial), RX interrupt IRQ 2
 *   UART2 0x40006000  a log of one text line per image (third -serial), TX only
 *
 * Addresses and IRQs as QEMU 7.2 builds the machine (hw/arm/mps2.c; `info mtree` lists the UARTs).
 *
 * Time: under `qemu-system-arm -icount shift=0` one instruction is 1 ns of virtual time and SysTick
 * (processor clock, 25 MHz on this board) ticks every 40 ns, so instructions = ticks x 40 (+-40)
 * for code that does not sleep. While the CPU sleeps in WFI, QEMU lets virtual time follow the host
 * clock, so timeouts measured in ticks are about real time.
 */
#ifndef BOARD_H
#define BOARD_H

#include <stddef.h>
#include <stdint.h>

#define BOARD_SYSTICK_HZ 25000000u
#define BOARD_INSTRUCTIONS_PER_TICK 40u

enum board_uart { BOARD_UART_AGENT = 0, BOARD_UART_CAMERA = 1, BOARD_UART_LOG = 2 };

void board_init(void);

/* Blocking transmit of len bytes. */
void board_uart_write(enum board_uart uart, const uint8_t *data, size_t len);

/* One received byte (0..255), or -1 when none arrives within timeout_ticks (0: do not wait). The
 * CPU sleeps (WFI) while it waits. Bytes arriving while nobody reads wait in a 1 KB ring per UART. */
int board_uart_read(enum board_uart uart, uint64_t timeout_ticks);

/* SysTick ticks since board_init(), 64-bit (25 MHz: wraps after 23,000 years). */
uint64_t board_ticks(void);

/* Bytes of the stack that were ever written since reset (stack painting). */
size_t board_stack_high_water(void);
size_t board_stack_size(void);

/* Text log on UART2. */
void board_log(const char *text);
void board_log_u32(uint32_t value);
void board_log_i32(int32_t value);

#endif /* BOARD_H */
