/*
 * fwcfg-e500 boot firmware, CPU 0 (PLATFORM.md "Boot flow", docs/DESIGN.md).
 *
 * Everything the firmware learns comes from fw_cfg: RAM size, CPU count, where the kernel and
 * initrd go, and the device tree (file "etc/fdt").  It checks all of it before touching RAM or
 * CPUs, so a missing piece costs one console line and a power-off with a FirmwareExit code, not
 * a half-booted machine.  Then it sends the secondaries into their spin-table park code, copies
 * the images, waits until every secondary has armed its entry, and enters the kernel.
 *
 * No writable globals (the ROM is read-only): state is a struct on the stack, and the stack is
 * the firmware's scratch area in the spin-table page at the top of RAM.
 */
#include <stdint.h>

#include "abi.h"
#include "hcall.h"
#include "lib.h"
#include "ppc.h"

#define FWCFG_REG(off) (PLAT_FWCFG_BASE + (off))
#define SPIN_WORD(fw, cpu, off) \
	((volatile uint32_t *)((fw)->spin_base + (cpu) * SPIN_ENTRY_SIZE + (off)))

/* A region of RAM an image goes to. */
struct region {
	uint32_t addr, size;
};

struct fw {
	uint32_t ram_size;
	uint32_t spin_base; /* the spin-table page: the last page of RAM */
	int dma;	    /* the device has the DMA interface */
	uint32_t ncpus;
	uint32_t kernel_entry;
	struct region kernel, initrd, fdt;
	uint16_t fdt_key;
};

void fw_main(uint32_t ram_size) __attribute__((noreturn));
void fw_fail(uint32_t code) __attribute__((noreturn));
void enter_kernel(uint32_t entry, uint32_t dtb, uint32_t ima_size) __attribute__((noreturn));
extern char secondary_park[];

static void console_line(const char *s)
{
	hcall_byte_channel_send(CONSOLE_HANDLE, s, lib_strnlen(s, 200));
	hcall_byte_channel_send(CONSOLE_HANDLE, "\n", 1);
}

/* Prints why the boot stops and powers off with `code` (a FirmwareExit value). */
void fw_fail(uint32_t code)
{
	static const char *const messages[] = {
		[FW_EXIT_NO_FWCFG] = FW_MSG_NO_FWCFG,
		[FW_EXIT_BAD_RAM_SIZE] = FW_MSG_BAD_RAM_SIZE,
		[FW_EXIT_BAD_CPU_COUNT] = FW_MSG_BAD_CPU_COUNT,
		[FW_EXIT_NO_KERNEL] = FW_MSG_NO_KERNEL,
		[FW_EXIT_NO_FDT] = FW_MSG_NO_FDT,
		[FW_EXIT_DOES_NOT_FIT] = FW_MSG_DOES_NOT_FIT,
		[FW_EXIT_DMA_ERROR] = FW_MSG_DMA_ERROR,
		[FW_EXIT_CPU_RELEASE] = FW_MSG_CPU_RELEASE,
	};

	if (code < sizeof(messages) / sizeof(messages[0]) && messages[code])
		console_line(messages[code]);
	for (;;)
		hcall3(HC_FW_POWEROFF, code, 0, 0);
}

/* --- fw_cfg access ----------------------------------------------------------------------- */

static void fwcfg_select(uint16_t key)
{
	*(volatile uint16_t *)FWCFG_REG(FW_CFG_REG_SELECTOR) = key;
	mbar();
}

/* Reads through the data register: whole words where the destination allows, then bytes. */
static void fwcfg_pio_read(void *dst, uint32_t len)
{
	uint8_t *d = dst;

	if (((uintptr_t)d & 3u) == 0)
		for (; len >= 4; len -= 4, d += 4)
			*(uint32_t *)d = *(volatile uint32_t *)FWCFG_REG(FW_CFG_REG_DATA);
	for (; len; len--)
		*d++ = *(volatile uint8_t *)FWCFG_REG(FW_CFG_REG_DATA);
}

/*
 * One DMA transfer (fw_cfg.rst "DMA interface"): the descriptor lives on the stack, which is in
 * RAM; writing the low half of the address register starts it.  Completion is the control
 * word reading 0 (or having ERROR); the machine completes it before the store returns, but
 * polling costs nothing and keeps to the spec.
 */
static void fwcfg_dma(uint32_t control, uint32_t len, uint32_t addr)
{
	volatile uint32_t desc[FW_CFG_DMA_ACCESS_SIZE / 4] __attribute__((aligned(16)));
	uint32_t status;

	desc[FW_CFG_DMA_OFF_CONTROL / 4] = control;
	desc[FW_CFG_DMA_OFF_LENGTH / 4] = len;
	desc[FW_CFG_DMA_OFF_ADDRESS / 4] = 0;
	desc[FW_CFG_DMA_OFF_ADDRESS / 4 + 1] = addr;
	msync();
	*(volatile uint32_t *)FWCFG_REG(FW_CFG_REG_DMA_HI) = 0;
	*(volatile uint32_t *)FWCFG_REG(FW_CFG_REG_DMA_LO) = (uint32_t)(uintptr_t)desc;
	msync();
	while ((status = desc[FW_CFG_DMA_OFF_CONTROL / 4]) & ~(uint32_t)FW_CFG_DMA_CTL_ERROR)
		;
	if (status & FW_CFG_DMA_CTL_ERROR)
		fw_fail(FW_EXIT_DMA_ERROR);
}

/* Reads `len` bytes of item `key` from its start into RAM at `dst`. */
static void fwcfg_read(const struct fw *fw, uint16_t key, void *dst, uint32_t len)
{
	if (fw->dma) {
		fwcfg_dma(((uint32_t)key << FW_CFG_DMA_SELECT_SHIFT) | FW_CFG_DMA_CTL_SELECT |
				  FW_CFG_DMA_CTL_READ,
			  len, (uint32_t)(uintptr_t)dst);
	} else {
		fwcfg_select(key);
		fwcfg_pio_read(dst, len);
	}
}

/* Reads the next `len` bytes of the selected item. */
static void fwcfg_read_more(const struct fw *fw, void *dst, uint32_t len)
{
	if (fw->dma)
		fwcfg_dma(FW_CFG_DMA_CTL_READ, len, (uint32_t)(uintptr_t)dst);
	else
		fwcfg_pio_read(dst, len);
}

static uint32_t le32(const uint8_t *b)
{
	return b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static uint32_t be32(const uint8_t *b)
{
	return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

/* An integer item (QEMU stores them little-endian); `size` is 2 or 4 bytes. */
static uint32_t fwcfg_read_int(const struct fw *fw, uint16_t key, uint32_t size)
{
	uint8_t b[4] = { 0, 0, 0, 0 };

	fwcfg_read(fw, key, b, size);
	return le32(b);
}

/* Finds "etc/fdt" in the file directory; returns 0 and sets fw->fdt / fw->fdt_key, or -1. */
static int find_fdt(struct fw *fw)
{
	uint8_t entry[FW_CFG_FILE_ENTRY_SIZE];
	uint32_t count;

	fwcfg_read(fw, FW_CFG_KEY_FILE_DIR, entry, FW_CFG_FILE_DIR_HEADER_SIZE);
	count = be32(entry);
	if (count > FW_CFG_MAX_FILE_SLOTS)
		count = FW_CFG_MAX_FILE_SLOTS; /* a garbage count must not keep us here for hours */
	for (uint32_t i = 0; i < count; i++) {
		const char *name = (const char *)entry + FW_CFG_FILE_OFF_NAME;

		fwcfg_read_more(fw, entry, sizeof(entry));
		if (lib_strnlen(name, FW_CFG_FILE_NAME_FIELD) < FW_CFG_FILE_NAME_FIELD &&
		    lib_streq(name, FDT_FILE_NAME)) {
			fw->fdt.size = be32(entry + FW_CFG_FILE_OFF_SIZE);
			fw->fdt_key = (uint16_t)(entry[FW_CFG_FILE_OFF_SELECT] << 8 |
						 entry[FW_CFG_FILE_OFF_SELECT + 1]);
			return 0;
		}
	}
	return -1;
}

/* --- image placement ---------------------------------------------------------------------- */

_Static_assert(PLAT_RAM_BASE == 0, "fits() assumes RAM starts at physical 0");

/* Whether `r` lies inside RAM below the spin-table page (empty regions always fit). */
static int fits(const struct fw *fw, const struct region *r)
{
	return r->size == 0 || (r->size <= fw->spin_base && r->addr <= fw->spin_base - r->size);
}

static int overlap(const struct region *a, const struct region *b)
{
	return a->size && b->size && a->addr < b->addr + b->size && b->addr < a->addr + a->size;
}

/* The initial mapped area for a tree ending at `end` (machine/platform.py ima_size). */
static uint32_t ima_size(uint32_t end)
{
	uint64_t size = 1024;

	while (size < end)
		size *= 4;
	return (uint32_t)size;
}

/* --- CPUs -------------------------------------------------------------------------------- */

/*
 * Sends CPUs 1..N-1 from their power-on idle loop to secondary_park, each with its own entry.
 * Clearing the low word first matters after FW_RESET (RAM may still say "armed" from the
 * previous boot): wait_secondaries_armed() must see each CPU write it again.
 */
static void release_secondaries(const struct fw *fw)
{
	for (uint32_t i = 1; i < fw->ncpus; i++)
		*SPIN_WORD(fw, i, SPIN_OFF_ENTRY_ADDR_LO) = 0;
	msync();
	for (uint32_t i = 1; i < fw->ncpus; i++) {
		uint32_t entry = fw->spin_base + i * SPIN_ENTRY_SIZE;

		if (hcall3(HC_FW_CPU_RELEASE, i, (uint32_t)(uintptr_t)secondary_park, entry) !=
		    EV_SUCCESS)
			fw_fail(FW_EXIT_CPU_RELEASE);
	}
}

/* Parks CPU 0 (FW_WAIT_STORE, no spinning) until every secondary's entry reads "held". */
static void wait_secondaries_armed(const struct fw *fw)
{
	for (uint32_t i = 1; i < fw->ncpus; i++) {
		volatile uint32_t *lo = SPIN_WORD(fw, i, SPIN_OFF_ENTRY_ADDR_LO);
		uint32_t v;

		while ((v = *lo) != SPIN_HOLD)
			hcall3(HC_FW_WAIT_STORE, (uint32_t)(uintptr_t)lo, v, 0);
	}
}

/* --- the boot ------------------------------------------------------------------------------ */

void fw_main(uint32_t ram_size)
{
	struct fw fw;
	uint8_t id[4];
	uint32_t dtb_end;

	memset(&fw, 0, sizeof(fw));
	fw.ram_size = ram_size;
	fw.spin_base = PLAT_RAM_BASE + ram_size - SPIN_TABLE_PAGE_SIZE;

	/* Feature bitmap: use DMA when the device has it, the data register otherwise. */
	fwcfg_read(&fw, FW_CFG_KEY_ID, id, sizeof(id));
	fw.dma = (le32(id) & FW_CFG_FEATURE_DMA) != 0;

	fw.ncpus = fwcfg_read_int(&fw, FW_CFG_KEY_NB_CPUS, 2);
	if (fw.ncpus < 1 || fw.ncpus > PLAT_MAX_CPUS)
		fw_fail(FW_EXIT_BAD_CPU_COUNT);

	fw.kernel.addr = fwcfg_read_int(&fw, FW_CFG_KEY_KERNEL_ADDR, 4);
	fw.kernel.size = fwcfg_read_int(&fw, FW_CFG_KEY_KERNEL_SIZE, 4);
	fw.kernel_entry = fwcfg_read_int(&fw, FW_CFG_KEY_KERNEL_ENTRY, 4);
	if (fw.kernel.size == 0)
		fw_fail(FW_EXIT_NO_KERNEL);
	fw.initrd.addr = fwcfg_read_int(&fw, FW_CFG_KEY_INITRD_ADDR, 4);
	fw.initrd.size = fwcfg_read_int(&fw, FW_CFG_KEY_INITRD_SIZE, 4);
	if (find_fdt(&fw) < 0 || fw.fdt.size == 0)
		fw_fail(FW_EXIT_NO_FDT);

	/* The device tree goes where QEMU's ppce500 puts it (machine/platform.py dtb_base). */
	if (!fits(&fw, &fw.kernel) || fw.fdt.size > DTB_MAX_SIZE)
		fw_fail(FW_EXIT_DOES_NOT_FIT);
	fw.fdt.addr = (fw.kernel.addr + fw.kernel.size + DTB_GAP) & ~(uint32_t)(DTB_ALIGN - 1);
	if (fw.fdt.addr < fw.kernel.addr || !fits(&fw, &fw.fdt) || !fits(&fw, &fw.initrd) ||
	    overlap(&fw.kernel, &fw.initrd) || overlap(&fw.kernel, &fw.fdt) ||
	    overlap(&fw.initrd, &fw.fdt))
		fw_fail(FW_EXIT_DOES_NOT_FIT);

	/* Secondaries first: they arm their entries while the images are copied. */
	release_secondaries(&fw);
	fwcfg_read(&fw, FW_CFG_KEY_KERNEL_DATA, (void *)(uintptr_t)fw.kernel.addr, fw.kernel.size);
	if (fw.initrd.size)
		fwcfg_read(&fw, FW_CFG_KEY_INITRD_DATA, (void *)(uintptr_t)fw.initrd.addr,
			   fw.initrd.size);
	fwcfg_read(&fw, fw.fdt_key, (void *)(uintptr_t)fw.fdt.addr, fw.fdt.size);
	wait_secondaries_armed(&fw);

	dtb_end = fw.fdt.addr + fw.fdt.size;
	msync();
	enter_kernel(fw.kernel_entry, fw.fdt.addr, ima_size(dtb_end));
}
