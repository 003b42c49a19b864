/*
 * PAD_SIZE zero bytes that must be loaded, not zero-filled: the benchmark's padded demo kernel
 * (Makefile target `padded`).  Never part of the shipped demo.elf.
 */
	.section .pad, "aw", @progbits
	.space	PAD_SIZE
