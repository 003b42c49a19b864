/*
 * The boot firmware, linked into the boot ROM (PLAT_ROM_BASE, PLAT_ROM_SIZE from abi.h; the
 * Makefile runs this file through the C preprocessor).  The ROM is read-only, so
 * the firmware has no writable sections at all: its stack and scratch live in the spin-table
 * page at the top of RAM (docs/DESIGN.md, "Firmware scratch memory").  The ASSERTs turn an
 * accidental global variable into a link error instead of a silent write to ROM.
 */
#include "abi.h"

OUTPUT_FORMAT("elf32-powerpc")
OUTPUT_ARCH(powerpc:common)
ENTRY(_start)

MEMORY
{
	rom (rx) : ORIGIN = PLAT_ROM_BASE, LENGTH = PLAT_ROM_SIZE
}

SECTIONS
{
	.text : {
		*(.text.start)
		*(.text .text.*)
	} >rom
	.rodata : {
		*(.rodata .rodata.*)
		*(.sdata2 .sdata2.*)
	} >rom
	.data : { *(.data .data.* .sdata .sdata.*) } >rom
	.bss : { *(.bss .bss.* .sbss .sbss.* COMMON) } >rom
	/DISCARD/ : {
		*(.eh_frame .eh_frame_hdr .note.* .comment .gnu.attributes .PPC.EMB.apuinfo)
	}
}

ASSERT(SIZEOF(.data) == 0, "firmware: writable data in ROM")
ASSERT(SIZEOF(.bss) == 0, "firmware: .bss in ROM")
