/*
 * Machine-level helpers of the demo kernel: device mappings, atomics, parking a CPU and
 * stopping the machine.
 *
 * Mapping rule: an address below 4 GiB is accessed at the same effective address (identity),
 * with a TLB1 entry added when it lies outside the initial mapped area; an address above 4 GiB
 * (QEMU's CCSR and spin table at 0xF_xxxx_xxxx) goes through a fixed 4 KiB window.  On
 * fwcfg-e500 TLB writes are stored but do not translate, and everything it offers is below
 * 4 GiB, so the identity rule keeps both machines working with one code path.
 */
#ifndef DEMO_SYS_H
#define DEMO_SYS_H

#include <stdint.h>

/* TLB1 entries the demo uses; 0 and 1 belong to the boot program's initial mappings. */
#define TLB_ESEL_CONSOLE 4
#define TLB_ESEL_SPIN 5
#define TLB_ESEL_RESET 6
/* Effective addresses of the 4 KiB windows onto pages above 4 GiB. */
#define EA_WINDOW_CONSOLE 0xE0000000u
#define EA_WINDOW_SPIN 0xE0100000u
#define EA_WINDOW_RESET 0xE0200000u

/* Bytes mapped at effective address 0 when CPU 0 entered (its r7); set before any mapping. */
extern uint32_t sys_ima_size;

/* Maps the device page holding `phys` (cache-inhibited, guarded) on this CPU. */
void sys_map_device(unsigned esel, uint32_t window, uint64_t phys);
/* The effective address of `phys` once sys_map_device(.., window, phys) has run. */
uintptr_t sys_device_ea(uint32_t window, uint64_t phys);

/* Atomically adds one to *p (lwarx/stwcx.); returns the new value. */
uint32_t sys_atomic_inc(volatile uint32_t *p);

/* Stops this CPU for good: EV_IDLE with hypercalls, else doze (QEMU halts the vCPU). */
void sys_park(int have_hcalls) __attribute__((noreturn));

#endif
