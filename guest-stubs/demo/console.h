/*
 * The demo kernel's console: the device /chosen stdout-path names, which is an ePAPR byte
 * channel on fwcfg-e500 and an ns16550 UART on QEMU's ppce500.  Lines are built in a buffer and
 * written whole under a spin lock, so lines from different CPUs never interleave.
 */
#ifndef DEMO_CONSOLE_H
#define DEMO_CONSOLE_H

#include <stdint.h>

#include "fdt.h"

/* CPU 0, once: resolves stdout-path.  `have_hcalls`: the tree advertises `sc 1` hypercalls. */
void console_setup(const struct fdt *f, int have_hcalls);
/* Every CPU before its first line: maps the UART page in this CPU's own TLB (QEMU needs it). */
void console_attach(void);
/* Whether console_setup found a device it can drive. */
int console_present(void);

struct line {
	char buf[200];
	uint32_t len;
};

void line_init(struct line *l);
void line_str(struct line *l, const char *s);
void line_char(struct line *l, char c);
/* "0x" and exactly eight hex digits: register values, so that columns line up. */
void line_hex32(struct line *l, uint32_t v);
/* "0x" and as few hex digits as the value needs. */
void line_hex(struct line *l, uint64_t v);
void line_dec(struct line *l, uint32_t v);
/* Writes the line and a newline to the console, atomically with respect to other CPUs. */
void line_emit(struct line *l);

#endif
