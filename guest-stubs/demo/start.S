/*
 * Entry points of the demo kernel.
 *
 * _start: the boot CPU, in ePAPR boot state (r3 = device tree, r6 = magic, r7 = IMA size).
 * secondary_entry: a CPU released from the spin table (r3 = the entry's r3, r7 = 64 MiB).
 *
 * Both save r3..r9 and PIR before touching anything else, so that the registers the demo prints
 * are the ones the boot program handed over.  No stack is assumed (QEMU gives CPU 0 one,
 * fwcfg-e500's firmware does not promise one, secondaries get none): each CPU takes its own
 * 4 KiB stack from cpu_stacks, indexed by PIR.
 */
#include "abi.h"

#define STACK_SHIFT 12
#define STACK_SIZE (1 << STACK_SHIFT)
/* struct entry_regs: r3..r9 and pir */
#define REGS_SIZE 32
#define FRAME_SIZE (16 + REGS_SIZE)

	.section .text.start, "ax"
	.globl	_start
	.type	_start, @function
_start:
	lis	%r10, boot_regs@ha
	addi	%r10, %r10, boot_regs@l
	stw	%r3, 0(%r10)
	stw	%r4, 4(%r10)
	stw	%r5, 8(%r10)
	stw	%r6, 12(%r10)
	stw	%r7, 16(%r10)
	stw	%r8, 20(%r10)
	stw	%r9, 24(%r10)
	mfspr	%r0, SPR_PIR
	stw	%r0, 28(%r10)

	/* Zero .bss: a boot program may hand over RAM that is not zero. */
	lis	%r11, __bss_start@ha
	addi	%r11, %r11, __bss_start@l
	lis	%r12, __bss_end@ha
	addi	%r12, %r12, __bss_end@l
	li	%r0, 0
1:	cmplw	%r11, %r12
	bge	2f
	stw	%r0, 0(%r11)
	addi	%r11, %r11, 4
	b	1b

2:	lis	%r1, (cpu_stacks + STACK_SIZE)@ha
	addi	%r1, %r1, (cpu_stacks + STACK_SIZE)@l
	stwu	%r0, -16(%r1)		/* terminating back chain */
	mr	%r3, %r10
	bl	demo_main
	b	halt
	.size	_start, . - _start

	.text
	.globl	secondary_entry
	.type	secondary_entry, @function
secondary_entry:
	mfspr	%r10, SPR_PIR
	cmplwi	%r10, PLAT_MAX_CPUS
	bge	halt			/* no stack for it: stop rather than share one */
	addi	%r11, %r10, 1
	slwi	%r11, %r11, STACK_SHIFT
	lis	%r12, cpu_stacks@ha
	addi	%r12, %r12, cpu_stacks@l
	add	%r1, %r12, %r11
	li	%r0, 0
	stwu	%r0, -FRAME_SIZE(%r1)
	stw	%r3, 16(%r1)
	stw	%r4, 20(%r1)
	stw	%r5, 24(%r1)
	stw	%r6, 28(%r1)
	stw	%r7, 32(%r1)
	stw	%r8, 36(%r1)
	stw	%r9, 40(%r1)
	stw	%r10, 44(%r1)
	addi	%r3, %r1, 16
	bl	secondary_main
	.size	secondary_entry, . - secondary_entry

	.globl	halt
	.type	halt, @function
halt:
	b	halt
	.size	halt, . - halt

	.data
	.balign	8
	.globl	boot_regs
	.type	boot_regs, @object
boot_regs:
	.space	REGS_SIZE
	.size	boot_regs, REGS_SIZE

	.bss
	.balign	16
	.globl	cpu_stacks
	.type	cpu_stacks, @object
cpu_stacks:
	.space	PLAT_MAX_CPUS * STACK_SIZE
	.size	cpu_stacks, PLAT_MAX_CPUS * STACK_SIZE
