/*
 * A firmware stub under development: the kind of thing one edits, rebuilds and boots twenty
 * times an hour.  It finds "opt/greeting" in the fw_cfg file directory (traditional interface:
 * selector + data register), upper-cases it into an answer, DMA-WRITEs the answer into the
 * host's writable file "opt/reply", prints it on the console and powers off with its length.
 *
 * Every number (MMIO base, hypercall tokens, fw_cfg keys and DMA bits) arrives as a -D from
 * examples/firmware_loop.py, which takes them from machine.platform and fwcfg: the stub and the
 * machine cannot disagree.  The code runs from ROM, so it keeps everything on the stack.
 */
#include <stdint.h>

#define REG32(off) (*(volatile uint32_t *)(FWCFG_BASE + (off)))
#define REG16(off) (*(volatile uint16_t *)(FWCFG_BASE + (off)))
#define REG8(off) (*(volatile uint8_t *)(FWCFG_BASE + (off)))
#define FW_DATA 0x0
#define FW_SELECTOR 0x8
#define FW_DMA_HIGH 0x10
#define FW_DMA_LOW 0x14
#define NAME_LEN 56
#define MAX_TEXT 64

struct dma_access {
	uint32_t control;
	uint32_t length;
	uint32_t address_high;
	uint32_t address_low;
} __attribute__((aligned(16)));

static uint32_t hcall(uint32_t token, uint32_t a3, uint32_t a4, uint32_t a5, uint32_t a6,
		      uint32_t a7, uint32_t a8)
{
	register uint32_t r11 __asm__("r11") = token;
	register uint32_t r3 __asm__("r3") = a3;
	register uint32_t r4 __asm__("r4") = a4;
	register uint32_t r5 __asm__("r5") = a5;
	register uint32_t r6 __asm__("r6") = a6;
	register uint32_t r7 __asm__("r7") = a7;
	register uint32_t r8 __asm__("r8") = a8;

	__asm__ __volatile__("sc 1"
			     : "+r"(r11), "+r"(r3), "+r"(r4), "+r"(r5), "+r"(r6), "+r"(r7),
			       "+r"(r8)
			     :
			     : "r0", "r9", "r10", "r12", "ctr", "xer", "cr0", "cr1", "cr5", "cr6",
			       "cr7", "memory");
	return r3;
}

static void put(const char *s, uint32_t n)
{
	while (n) {
		uint32_t count = n > 16 ? 16 : n, w[4] = { 0, 0, 0, 0 };

		for (uint32_t i = 0; i < count; i++)
			w[i / 4] |= (uint32_t)(uint8_t)s[i] << (24 - 8 * (i % 4));
		while (hcall(HC_EV_BYTE_CHANNEL_SEND, 0, count, w[0], w[1], w[2], w[3]) ==
		       EV_EAGAIN)
			;
		s += count;
		n -= count;
	}
}

static uint32_t length(const char *s)
{
	uint32_t n = 0;

	while (s[n])
		n++;
	return n;
}

static void say(const char *s)
{
	put(s, length(s));
}

static void __attribute__((noreturn)) power_off(uint32_t code)
{
	for (;;)
		hcall(HC_FW_POWEROFF, code, 0, 0, 0, 0, 0);
}

/* The directory entry of `name`: its selector key and size; 0 if absent. */
static uint16_t find_file(const char *name, uint32_t *size)
{
	uint32_t count;

	REG16(FW_SELECTOR) = FW_CFG_FILE_DIR;
	count = REG32(FW_DATA); /* the data register hands out bytes in item (big-endian) order */
	for (uint32_t i = 0; i < count; i++) {
		uint32_t entry_size = REG32(FW_DATA);
		uint16_t key = (uint16_t)(REG32(FW_DATA) >> 16); /* select, then reserved */
		uint32_t len = length(name);
		int same = 1;

		for (uint32_t j = 0; j < NAME_LEN; j++) {
			char c = (char)REG8(FW_DATA);

			if (j <= len && c != name[j]) /* up to and including the NUL */
				same = 0;
		}
		if (same) {
			*size = entry_size;
			return key;
		}
	}
	return 0;
}

void stub_main(void)
{
	static const char hello[] = "HELLO, ";
	char text[MAX_TEXT], answer[sizeof(hello) + MAX_TEXT + 1];
	struct dma_access dma;
	uint32_t size, n;
	uint16_t greeting = find_file("opt/greeting", &size), reply;

	for (n = 0; hello[n]; n++)
		answer[n] = hello[n];

	if (!greeting) {
		say("stub: error: no opt/greeting\n");
		power_off(255);
	}
	REG16(FW_SELECTOR) = greeting;
	for (uint32_t i = 0; i < size && i < MAX_TEXT; i++)
		text[i] = (char)REG8(FW_DATA);
	for (uint32_t i = 0; i < size && i < MAX_TEXT; i++)
		answer[n++] = text[i] >= 'a' && text[i] <= 'z' ? (char)(text[i] - 'a' + 'A') : text[i];
	answer[n++] = '!';

	reply = find_file("opt/reply", &size);
	if (!reply || size < n) {
		say("stub: error: no writable opt/reply big enough\n");
		power_off(254);
	}
	dma.control = (uint32_t)reply << 16 | FW_CFG_DMA_SELECT | FW_CFG_DMA_WRITE;
	dma.length = n;
	dma.address_high = 0;
	dma.address_low = (uint32_t)(uintptr_t)answer;
	__asm__ __volatile__("sync" ::: "memory");
	REG32(FW_DMA_HIGH) = 0;
	REG32(FW_DMA_LOW) = (uint32_t)(uintptr_t)&dma; /* starts the transfer */
	__asm__ __volatile__("sync" ::: "memory");
	if (*(volatile uint32_t *)&dma.control & FW_CFG_DMA_ERROR) {
		say("stub: error: DMA write to opt/reply failed\n");
		power_off(253);
	}
	say("stub: ");
	put(answer, n);
	say("\n");
	power_off(n);
}
