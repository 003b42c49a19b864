/* See console.h. */
#include "console.h"

#include "abi.h"
#include "hcall.h"
#include "lib.h"
#include "ppc.h"
#include "sys.h"

enum console_kind { CON_NONE, CON_BYTE_CHANNEL, CON_NS16550 };

/* Written by CPU 0 before it releases any secondary; read-only afterwards. */
static struct {
	enum console_kind kind;
	uint32_t handle;    /* byte channel */
	uint64_t phys;      /* UART registers (36-bit physical) */
	uint32_t reg_shift; /* UART register spacing */
} con;

static volatile uint32_t console_lock __attribute__((section(".sync")));  /* see demo.ld */

#define UART_THR 0
#define UART_LSR 5
#define UART_LSR_THRE 0x20

static int is_uart(const struct fdt *f, int node)
{
	return fdt_prop_has_string(f, node, "compatible", "ns16550a") ||
	       fdt_prop_has_string(f, node, "compatible", "ns16550") ||
	       fdt_prop_has_string(f, node, "compatible", "ns8250");
}

void console_setup(const struct fdt *f, int have_hcalls)
{
	struct fdt_path chosen, out;
	const char *path;
	int node;
	uint64_t size;

	con.kind = CON_NONE;
	if (fdt_find_path(f, "/chosen", &chosen) < 0)
		return;
	path = fdt_getprop_str(f, chosen.node[chosen.depth], "stdout-path");
	if (!path)
		path = fdt_getprop_str(f, chosen.node[chosen.depth], "linux,stdout-path");
	if (!path || fdt_find_path(f, path, &out) < 0)
		return;
	node = out.node[out.depth];
	if (have_hcalls &&
	    fdt_prop_has_string(f, node, "compatible", DT_BYTE_CHANNEL_COMPATIBLE)) {
		uint32_t len;
		const void *h = fdt_getprop(f, node, "hv-handle", &len);

		if (h && len == 4) {
			con.handle = (uint32_t)fdt_read_cells(h, 1);
			con.kind = CON_BYTE_CHANNEL;
		}
	} else if (is_uart(f, node) && fdt_reg_phys(f, &out, 0, &con.phys, &size) == 0) {
		con.reg_shift = fdt_getprop_u32(f, node, "reg-shift", 0);
		if (con.reg_shift <= 4)
			con.kind = CON_NS16550;
	}
}

int console_present(void)
{
	return con.kind != CON_NONE;
}

void console_attach(void)
{
	if (con.kind == CON_NS16550)
		sys_map_device(TLB_ESEL_CONSOLE, EA_WINDOW_CONSOLE, con.phys);
}

static void uart_write(const char *s, uint32_t len)
{
	volatile uint8_t *regs = (volatile uint8_t *)sys_device_ea(EA_WINDOW_CONSOLE, con.phys);

	for (uint32_t i = 0; i < len; i++) {
		while (!(regs[UART_LSR << con.reg_shift] & UART_LSR_THRE))
			;
		regs[UART_THR] = (uint8_t)s[i];
		mbar();
	}
}

/*
 * Takes the console lock.  A CPU that finds it taken spins on real hardware and on QEMU; on a
 * machine with the hypercall console it parks with FW_WAIT_STORE on the lock word until the
 * owner's unlock store changes it, so waiting CPUs cost the host nothing and cannot starve
 * the owner of host CPU time.
 */
static void lock(void)
{
	uint32_t seen;

	for (;;) {
		__asm__ __volatile__("1:	lwarx	%0, 0, %1\n"
				     "	cmpwi	%0, 0\n"
				     "	bne-	2f\n"
				     "	stwcx.	%2, 0, %1\n"
				     "	bne-	1b\n"
				     "2:\n"
				     : "=&r"(seen)
				     : "r"(&console_lock), "r"(1)
				     : "cr0", "memory");
		if (seen == 0) {
			isync();
			return;
		}
		if (con.kind == CON_BYTE_CHANNEL)
			hcall3(HC_FW_WAIT_STORE, (uint32_t)(uintptr_t)&console_lock, seen, 0);
	}
}

static void unlock(void)
{
	msync();
	console_lock = 0;
}

void line_init(struct line *l)
{
	l->len = 0;
}

void line_char(struct line *l, char c)
{
	/* room is kept for the "\r\n" that line_emit adds */
	if (l->len < sizeof(l->buf) - 2)
		l->buf[l->len++] = c;
}

void line_str(struct line *l, const char *s)
{
	while (*s)
		line_char(l, *s++);
}

static const char hexdigits[] = "0123456789abcdef";

void line_hex32(struct line *l, uint32_t v)
{
	line_str(l, "0x");
	for (int shift = 28; shift >= 0; shift -= 4)
		line_char(l, hexdigits[(v >> shift) & 0xf]);
}

void line_hex(struct line *l, uint64_t v)
{
	uint32_t words[2] = { (uint32_t)(v >> 32), (uint32_t)v };
	int started = 0;

	line_str(l, "0x");
	for (int w = 0; w < 2; w++)
		for (int shift = 28; shift >= 0; shift -= 4) {
			uint32_t d = (words[w] >> shift) & 0xf;

			if (d || started || (w == 1 && shift == 0)) {
				line_char(l, hexdigits[d]);
				started = 1;
			}
		}
}

void line_dec(struct line *l, uint32_t v)
{
	char tmp[10];
	int n = 0;

	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	while (n)
		line_char(l, tmp[--n]);
}

void line_emit(struct line *l)
{
	lock();
	if (con.kind == CON_BYTE_CHANNEL) {
		l->buf[l->len] = '\n';
		hcall_byte_channel_send(con.handle, l->buf, l->len + 1);
	} else if (con.kind == CON_NS16550) {
		/* a raw serial line wants CR LF; QEMU -nographic puts the terminal in raw mode */
		l->buf[l->len] = '\r';
		l->buf[l->len + 1] = '\n';
		uart_write(l->buf, l->len + 2);
	}
	unlock();
	l->len = 0;
}
