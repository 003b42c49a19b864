/*
 * Entry from the boot ROM: every CPU starts here with r3 = its index.  CPU 0 gets a stack at
 * the top of the first MiB of RAM and runs stub_main; the others idle (EV_IDLE costs the host
 * nothing) until the machine powers off.
 */
	.section .text.start, "ax"
	.globl _start
_start:
	cmpwi	3, 0
	bne	idle
	lis	1, 0x0010
	li	0, 0
	stwu	0, -16(1)
	bl	stub_main
idle:
	lis	11, HC_EV_IDLE@h
	ori	11, 11, HC_EV_IDLE@l
	sc	1
	b	idle
