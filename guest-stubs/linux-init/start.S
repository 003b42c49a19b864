/*
 * The two things a libc would give the init: an entry point and a way into the kernel.
 *
 * _start: Linux enters a static ELF with r1 pointing at argc/argv/envp and everything else
 * undefined; the init needs none of them (it reads /proc/cmdline instead), so it only aligns
 * the stack, ends the back chain and calls init_main, which never returns.
 *
 * sys6: the PowerPC Linux system call ABI (r0 = number, arguments in r3..r8, result in r3,
 * CR0[SO] set on error with r3 = the positive errno).  sys6 shifts its C arguments down one
 * register and returns -errno on error, so C sees the kernel's usual convention.
 */
	.text
	.globl	_start
	.type	_start, @function
_start:
	clrrwi	%r1, %r1, 4
	li	%r0, 0
	stwu	%r1, -16(%r1)
	stw	%r0, 0(%r1)
	mtlr	%r0
	bl	init_main
1:	b	1b
	.size	_start, . - _start

	/* long sys6(long nr, long a, long b, long c, long d, long e, long f) */
	.globl	sys6
	.type	sys6, @function
sys6:
	mr	%r0, %r3
	mr	%r3, %r4
	mr	%r4, %r5
	mr	%r5, %r6
	mr	%r6, %r7
	mr	%r7, %r8
	mr	%r8, %r9
	sc
	bnslr
	neg	%r3, %r3
	blr
	.size	sys6, . - sys6
