/* Reset and exception vectors for the Cortex-M7 of QEMU's mps2-an500.
 *
 * The reset handler copies .data from flash, zeroes .bss, paints the stack with a known word (so
 * the high-water mark can be measured later, board.c), turns the FPU on (newlib's startup code is
 * not used: nothing here needs constructors) and calls main().
 */
#include <stdint.h>

#include "board.h"

extern uint32_t __data_start__, __data_end__, __data_load__, __bss_start__, __bss_end__;
extern uint32_t __stack_limit__, __stack_top__;

int main(void);
void Reset_Handler(void);
void Default_Handler(void);
void SysTick_Handler(void);
void UART0_RX_Handler(void);
void UART1_RX_Handler(void);

/* Unused exceptions spin where a debugger can see them. */
void Default_Handler(void)
{
    for (;;) {
    }
}

/* Cortex-M7: 16 system exceptions, then the external interrupts. mps2-an500 wires UART0 RX to IRQ 0
 * and UART1 RX to IRQ 2 (QEMU hw/arm/mps2.c); the rest are not used. */
typedef void (*vector_fn)(void);
__attribute__((section(".vectors"), used)) static const vector_fn vectors[16 + 8] = {
    (vector_fn)(uintptr_t)&__stack_top__, /* initial stack pointer */
    Reset_Handler,
    Default_Handler, /* NMI */
    Default_Handler, /* HardFault */
    Default_Handler, /* MemManage */
    Default_Handler, /* BusFault */
    Default_Handler, /* UsageFault */
    0, 0, 0, 0,
    Default_Handler, /* SVCall */
    Default_Handler, /* DebugMon */
    0,
    Default_Handler, /* PendSV */
    SysTick_Handler,
    UART0_RX_Handler, /* IRQ 0: UART0 RX */
    Default_Handler,  /* IRQ 1: UART0 TX */
    UART1_RX_Handler, /* IRQ 2: UART1 RX */
    Default_Handler, Default_Handler, Default_Handler, Default_Handler, Default_Handler,
};

__attribute__((naked, noreturn)) void Reset_Handler(void)
{
    /* Paint the stack below the current SP before anything uses it; done in assembly because C
     * code here would itself use the stack it paints. r0 = limit, r1 = sp - 8, r2 = paint word. */
    __asm volatile(
        "ldr r0, =__stack_limit__\n"
        "mov r1, sp\n"
        "sub r1, r1, #8\n"
        "ldr r2, =0x5A5AA5A5\n"
        "1: cmp r0, r1\n"
        "bhs 2f\n"
        "str r2, [r0], #4\n"
        "b 1b\n"
        "2: b board_reset_c\n");
}

__attribute__((noreturn, used)) void board_reset_c(void);
__attribute__((noreturn, used)) void board_reset_c(void)
{
    uint32_t *src = &__data_load__;
    for (uint32_t *dst = &__data_start__; dst < &__data_end__;) {
        *dst++ = *src++;
    }
    for (uint32_t *dst = &__bss_start__; dst < &__bss_end__;) {
        *dst++ = 0;
    }
    /* CPACR: full access to CP10 and CP11 (the FPU), then flush the pipeline. */
    *(volatile uint32_t *)0xE000ED88u |= (0xFu << 20);
    __asm volatile("dsb\n isb" ::: "memory");
    (void)main();
    for (;;) {
    }
}
