/*
 * fwcfg-e500 boot firmware: entry points (PLATFORM.md "Boot flow", docs/DESIGN.md "Decisions
 * PLATFORM.md leaves open").
 *
 * Every CPU starts at _start with r3 = its index and MSR = 0.  The ROM is read-only and there is
 * no stack yet, so this file does what needs no stack:
 *
 *   CPU 0        checks the fw_cfg signature and reads RAM_SIZE through the data register,
 *                puts its stack at the top of RAM (the spin-table page, whose bytes past the
 *                entries are the firmware's scratch) and calls fw_main() in C.
 *   CPUs 1..N-1  idle with EV_IDLE until CPU 0 releases them with FW_CPU_RELEASE into
 *                secondary_park (they must not touch fw_cfg: CPU 0 owns its one selector).
 *   secondary_park  arms the CPU's spin-table entry and waits on it with FW_WAIT_STORE until
 *                the OS clears bit 0 of entry_addr, then enters the OS in the ePAPR
 *                released-secondary state.
 */
#include "abi.h"

/* Before RAM_SIZE is known, a failure message needs a stack: RAM is at least this big. */
#define EARLY_STACK (PLAT_RAM_BASE + PLAT_MIN_RAM_SIZE - 16)

	.section .text.start, "ax"
	.globl	_start
	.type	_start, @function
_start:
	cmpwi	%r3, 0
	bne	power_on_idle

	lis	%r20, PLAT_FWCFG_BASE@h
	ori	%r20, %r20, PLAT_FWCFG_BASE@l
	li	%r0, FW_CFG_KEY_SIGNATURE
	sth	%r0, FW_CFG_REG_SELECTOR(%r20)
	mbar
	lwz	%r4, FW_CFG_REG_DATA(%r20)	/* 4 bytes in item order: "QEMU" */
	lis	%r5, FW_CFG_SIGNATURE@h
	ori	%r5, %r5, FW_CFG_SIGNATURE@l
	cmpw	%r4, %r5
	li	%r3, FW_EXIT_NO_FWCFG
	bne	early_fail

	/* RAM_SIZE: a little-endian u64, read a byte at a time into r21 (low) and r22 (high). */
	li	%r0, FW_CFG_KEY_RAM_SIZE
	sth	%r0, FW_CFG_REG_SELECTOR(%r20)
	mbar
	bl	read_le32
	mr	%r21, %r3
	bl	read_le32
	mr	%r22, %r3

	li	%r3, FW_EXIT_BAD_RAM_SIZE
	cmpwi	%r22, 0
	bne	early_fail
	lis	%r5, PLAT_MIN_RAM_SIZE@h
	ori	%r5, %r5, PLAT_MIN_RAM_SIZE@l
	cmplw	%r21, %r5
	blt	early_fail
	lis	%r5, PLAT_MAX_RAM_SIZE@h
	ori	%r5, %r5, PLAT_MAX_RAM_SIZE@l
	cmplw	%r21, %r5
	bgt	early_fail
	andi.	%r5, %r21, PLAT_RAM_ALIGN - 1
	bne	early_fail

	/* The stack grows down from the top of RAM, inside the spin-table page. */
	addi	%r1, %r21, -16
	li	%r0, 0
	stw	%r0, 0(%r1)			/* terminating back chain */
	mr	%r3, %r21
	bl	fw_main				/* does not return */
	b	.

early_fail:
	lis	%r1, EARLY_STACK@h
	ori	%r1, %r1, EARLY_STACK@l
	li	%r0, 0
	stw	%r0, 0(%r1)
	bl	fw_fail				/* does not return */
	b	.
	.size	_start, . - _start

/* r3 = the next 4 bytes of the selected fw_cfg item, as a little-endian u32.  Uses r0, r4..r6. */
	.type	read_le32, @function
read_le32:
	li	%r3, 0
	li	%r4, 0				/* shift */
1:	lbz	%r5, FW_CFG_REG_DATA(%r20)
	slw	%r5, %r5, %r4
	or	%r3, %r3, %r5
	addi	%r4, %r4, 8
	cmpwi	%r4, 32
	blt	1b
	blr
	.size	read_le32, . - read_le32

/*
 * CPUs 1..N-1 at power-on.  A spurious wake-up (console input) just idles again; a release by
 * CPU 0 does not come back here: the machine starts the CPU at secondary_park instead.
 */
	.type	power_on_idle, @function
power_on_idle:
	lis	%r11, HC_EV_IDLE@h
	ori	%r11, %r11, HC_EV_IDLE@l
	sc	1
	b	power_on_idle
	.size	power_on_idle, . - power_on_idle

/*
 * Entered through FW_CPU_RELEASE with r3 = this CPU's spin-table entry.  Fill the entry in
 * (r3 = pir = PIR, reserved 0, entry_addr = 1 with the low word written last), then wait for the
 * OS to clear bit 0 of entry_addr.  FW_WAIT_STORE parks this CPU until the word differs from
 * the value last read; anything else that wakes it (a spurious wake-up) just re-checks.
 * r30 = entry, r31 = PIR: both survive hypercalls.
 */
	.globl	secondary_park
	.type	secondary_park, @function
secondary_park:
	mr	%r30, %r3
	mfspr	%r31, SPR_PIR
	li	%r0, 0
	stw	%r0, SPIN_OFF_ENTRY_ADDR_HI(%r30)
	stw	%r0, SPIN_OFF_R3_HI(%r30)
	stw	%r31, SPIN_OFF_R3_LO(%r30)
	stw	%r0, SPIN_OFF_RESERVED(%r30)
	stw	%r31, SPIN_OFF_PIR(%r30)
	msync
	li	%r0, SPIN_HOLD
	stw	%r0, SPIN_OFF_ENTRY_ADDR_LO(%r30)
	msync
1:	lwz	%r4, SPIN_OFF_ENTRY_ADDR_LO(%r30)
	andi.	%r0, %r4, SPIN_HOLD
	beq	2f
	addi	%r3, %r30, SPIN_OFF_ENTRY_ADDR_LO
	lis	%r11, HC_FW_WAIT_STORE@h
	ori	%r11, %r11, HC_FW_WAIT_STORE@l
	sc	1
	b	1b

	/* Released: the ePAPR released-secondary state (ePAPR 1.1 5.5.3, PLATFORM.md step 3). */
2:	mtctr	%r4
	lwz	%r3, SPIN_OFF_R3_LO(%r30)
	li	%r4, 0
	li	%r5, 0
	li	%r6, 0
	lis	%r7, SECONDARY_IMA_SIZE@h
	ori	%r7, %r7, SECONDARY_IMA_SIZE@l
	li	%r8, 0
	li	%r9, 0
	isync
	bctr
	.size	secondary_park, . - secondary_park

/*
 * enter_kernel(entry, dtb, ima_size): the ePAPR boot-CPU state (ePAPR 1.1 table 5-1,
 * PLATFORM.md step 2): r3 = device tree, r4 = r5 = 0, r6 = magic, r7 = IMA size, r8 = r9 = 0.
 * r1 is left to the implementation by ePAPR; it gets what direct boot and QEMU's ppce500 give
 * (16 MiB - 8), so a kernel that pushes a frame before setting up its own stack writes low RAM
 * and not the spin-table page the firmware's stack was in.
 */
	.globl	enter_kernel
	.type	enter_kernel, @function
enter_kernel:
	lis	%r1, DIRECT_BOOT_STACK@h
	ori	%r1, %r1, DIRECT_BOOT_STACK@l
	mtctr	%r3
	mr	%r3, %r4
	mr	%r7, %r5
	li	%r4, 0
	li	%r5, 0
	lis	%r6, EPAPR_MAGIC@h
	ori	%r6, %r6, EPAPR_MAGIC@l
	li	%r8, 0
	li	%r9, 0
	isync
	bctr
	.size	enter_kernel, . - enter_kernel
