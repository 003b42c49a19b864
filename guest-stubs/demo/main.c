/*
 * The demo kernel: an ePAPR client that knows nothing but what the device tree in r3 says.
 *
 * CPU 0 prints the command line, memory and CPUs, then releases every secondary through its
 * spin-table entry exactly as Linux's 32-bit mpc85xx code does (pir, then r3, then the low word
 * of entry_addr last), one at a time, waiting for each to report before releasing the next: that
 * is what Linux does too, and it makes the output the same on every run and on every machine.
 * Each secondary prints the registers it entered with.  Lines carry no addresses that differ
 * between fwcfg-e500 and QEMU's ppce500, so the two consoles can be compared line by line.
 *
 * Stopping: FW_POWEROFF on fwcfg-e500; a reset request through the GUTS RSTCR register on
 * ppce500 (with -no-reboot QEMU then exits); otherwise the CPU parks.
 */
#include <stdint.h>

#include "abi.h"
#include "console.h"
#include "fdt.h"
#include "hcall.h"
#include "lib.h"
#include "ppc.h"
#include "sys.h"

/* Registers as a CPU entered the kernel; filled in by start.S. */
struct entry_regs {
	uint32_t r3, r4, r5, r6, r7, r8, r9, pir;
};

struct cpu_info {
	uint32_t reg;
	uint64_t release_addr;
};

/* How long CPU 0 polls for a secondary when it cannot park on FW_WAIT_STORE. */
#define REPORT_TIMEOUT_S 10u
#define DEFAULT_TIMEBASE_HZ 400000000u
#define GUTS_RSTCR 0xb0u
#define RSTCR_HRESET_REQ 0x2u
#define NOP_INSN 0x60000000u

extern char secondary_entry[];

static struct fdt fdt;
/* Set by CPU 0 before any release; secondaries read them. */
static int have_hcalls;
/* Secondaries that printed their line; CPU 0 parks on this word (FW_WAIT_STORE). */
static volatile uint32_t cpus_reported __attribute__((section(".sync")));  /* see demo.ld */

/* Whether the tree advertises `sc 1` as the hypercall sequence (padded with nops at most). */
static int detect_hcalls(void)
{
	struct fdt_path hv;
	uint32_t len;
	const uint8_t *insn;

	if (fdt_find_path(&fdt, "/hypervisor", &hv) < 0)
		return 0;
	insn = fdt_getprop(&fdt, hv.node[hv.depth], "hcall-instructions", &len);
	if (!insn || len < 4 || len > 16 || (len & 3u))
		return 0;
	if (fdt_read_cells(insn, 1) != HCALL_INSN)
		return 0;
	for (uint32_t i = 4; i < len; i += 4)
		if (fdt_read_cells(insn + i, 1) != NOP_INSN)
			return 0;
	return 1;
}

static void print_cmdline(void)
{
	struct fdt_path chosen;
	const char *args = 0;
	struct line l;

	if (fdt_find_path(&fdt, "/chosen", &chosen) == 0)
		args = fdt_getprop_str(&fdt, chosen.node[chosen.depth], "bootargs");
	line_init(&l);
	line_str(&l, "cmdline: ");
	line_str(&l, args ? args : "(none)");
	line_emit(&l);
}

static void print_memory(void)
{
	int root = fdt_root(&fdt);
	uint32_t ac = fdt_getprop_u32(&fdt, root, "#address-cells", 2);
	uint32_t sc = fdt_getprop_u32(&fdt, root, "#size-cells", 1);
	struct line l;

	line_init(&l);
	for (int n = fdt_first_child(&fdt, root); n >= 0; n = fdt_next_sibling(&fdt, n)) {
		const char *dt = fdt_getprop_str(&fdt, n, "device_type");
		const uint8_t *reg;
		uint32_t len;

		if (!dt || !lib_streq(dt, "memory"))
			continue;
		reg = fdt_getprop(&fdt, n, "reg", &len);
		if (!reg || ac < 1 || ac > 2 || sc < 1 || sc > 2)
			continue;
		for (; len >= 4 * (ac + sc); reg += 4 * (ac + sc), len -= 4 * (ac + sc)) {
			uint64_t base = fdt_read_cells(reg, ac), size = fdt_read_cells(reg + 4 * ac, sc);

			line_str(&l, "memory: ");
			if ((size & 0xfffff) == 0 && (size >> 52) == 0) {
				line_dec(&l, (uint32_t)(size >> 20));
				line_str(&l, " MiB");
			} else {
				line_hex(&l, size);
				line_str(&l, " bytes");
			}
			line_str(&l, " at ");
			line_hex(&l, base);
			line_emit(&l);
		}
	}
}

/* The secondaries the tree says to start with the spin table, sorted by reg. */
static uint32_t find_secondaries(struct cpu_info *cpus, uint32_t *ncpus)
{
	struct fdt_path path;
	uint32_t n = 0, total = 0;

	if (fdt_find_path(&fdt, "/cpus", &path) < 0)
		return 0;
	for (int c = fdt_first_child(&fdt, path.node[path.depth]); c >= 0;
	     c = fdt_next_sibling(&fdt, c)) {
		const char *dt = fdt_getprop_str(&fdt, c, "device_type");
		const char *method = fdt_getprop_str(&fdt, c, "enable-method");
		uint32_t reg = fdt_getprop_u32(&fdt, c, "reg", 0xffffffffu);
		const void *rel;
		uint32_t len;

		if (!dt || !lib_streq(dt, "cpu"))
			continue;
		total++;
		if (reg == fdt.boot_cpuid_phys || !method || !lib_streq(method, "spin-table"))
			continue;
		rel = fdt_getprop(&fdt, c, "cpu-release-addr", &len);
		if (!rel || (len != 4 && len != 8) || n == PLAT_MAX_CPUS)
			continue;
		cpus[n].reg = reg;
		cpus[n].release_addr = fdt_read_cells(rel, len / 4);
		/* insertion sort by reg */
		for (uint32_t i = n; i > 0 && cpus[i - 1].reg > cpus[i].reg; i--) {
			struct cpu_info t = cpus[i];

			cpus[i] = cpus[i - 1];
			cpus[i - 1] = t;
		}
		n++;
	}
	*ncpus = total;
	return n;
}

/* Releases one CPU through its spin-table entry, in Linux's order of stores. */
static void release(const struct cpu_info *cpu)
{
	volatile uint32_t *e;

	sys_map_device(TLB_ESEL_SPIN, EA_WINDOW_SPIN, cpu->release_addr);
	e = (volatile uint32_t *)sys_device_ea(EA_WINDOW_SPIN, cpu->release_addr);
	e[SPIN_OFF_PIR / 4] = cpu->reg;
	e[SPIN_OFF_R3_HI / 4] = 0;
	e[SPIN_OFF_R3_LO / 4] = cpu->reg;
	msync();
	e[SPIN_OFF_ENTRY_ADDR_LO / 4] = (uint32_t)(uintptr_t)secondary_entry;
	msync();
}

static uint32_t timebase_hz(void)
{
	struct fdt_path path;
	int c;

	if (fdt_find_path(&fdt, "/cpus", &path) < 0)
		return DEFAULT_TIMEBASE_HZ;
	c = fdt_first_child(&fdt, path.node[path.depth]);
	return c < 0 ? DEFAULT_TIMEBASE_HZ
		     : fdt_getprop_u32(&fdt, c, "timebase-frequency", DEFAULT_TIMEBASE_HZ);
}

/*
 * Waits until `target` secondaries have reported.  With hypercalls CPU 0 parks on the counter
 * (FW_WAIT_STORE: no spinning); a machine that does not implement it, or QEMU, gets polling
 * with a time-base deadline.  Returns 1 if they all reported.
 */
static int wait_reported(uint32_t target)
{
	uint64_t start, limit;
	uint32_t v;

	while (have_hcalls && (v = cpus_reported) < target)
		if (hcall3(HC_FW_WAIT_STORE, (uint32_t)(uintptr_t)&cpus_reported, v, 0) !=
		    EV_SUCCESS)
			break;
	start = read_timebase();
	limit = (uint64_t)timebase_hz() * REPORT_TIMEOUT_S;
	while (cpus_reported < target)
		if (read_timebase() - start > limit)
			return 0;
	return 1;
}

/*
 * "cpu N: r3=... pir=N".  The boot CPU's r3 is printed as "fdt" (it has been checked to point
 * at a valid tree by then): its value differs between machines, its meaning does not.
 */
static void print_regs(struct line *l, const struct entry_regs *r, int boot_cpu)
{
	line_str(l, "cpu ");
	line_dec(l, r->pir);
	line_str(l, ": r3=");
	if (boot_cpu)
		line_str(l, "fdt");
	else
		line_hex32(l, r->r3);
	line_str(l, " r4=");
	line_hex32(l, r->r4);
	line_str(l, " r5=");
	line_hex32(l, r->r5);
	line_str(l, " r6=");
	line_hex32(l, r->r6);
	line_str(l, " r7=");
	line_hex32(l, r->r7);
	line_str(l, " pir=");
	line_dec(l, r->pir);
	line_emit(l);
}

static void __attribute__((noreturn)) power_off(uint32_t code)
{
	struct fdt_path guts;
	uint64_t addr, size;

	if (have_hcalls)
		hcall3(HC_FW_POWEROFF, code, 0, 0);
	if (fdt_find_with_prop(&fdt, "fsl,has-rstcr", &guts) == 0 &&
	    fdt_reg_phys(&fdt, &guts, 0, &addr, &size) == 0) {
		sys_map_device(TLB_ESEL_RESET, EA_WINDOW_RESET, addr);
		*(volatile uint32_t *)(sys_device_ea(EA_WINDOW_RESET, addr) + GUTS_RSTCR) =
			RSTCR_HRESET_REQ;
		msync();
	}
	sys_park(have_hcalls);
}

void demo_main(const struct entry_regs *r) __attribute__((noreturn));
void demo_main(const struct entry_regs *r)
{
	static struct cpu_info cpus[PLAT_MAX_CPUS];
	uint32_t nsec, ntotal = 1, up = 1;
	const char *model;
	struct line l;

	sys_ima_size = r->r7;
	if (fdt_open(&fdt, r->r3) < 0)
		sys_park(0); /* no tree: no console to complain on, nothing to release */
	have_hcalls = detect_hcalls();
	console_setup(&fdt, have_hcalls);
	console_attach();

	model = fdt_getprop_str(&fdt, fdt_root(&fdt), "model");
	line_init(&l);
	line_str(&l, "demo: ePAPR demo kernel on ");
	line_str(&l, model ? model : "an unnamed machine");
	line_emit(&l);
	print_cmdline();
	print_memory();

	nsec = find_secondaries(cpus, &ntotal);
	line_str(&l, "cpus: ");
	line_dec(&l, ntotal);
	line_str(&l, " (boot cpu ");
	line_dec(&l, fdt.boot_cpuid_phys);
	line_str(&l, ", ");
	line_dec(&l, nsec);
	line_str(&l, " spin-table)");
	line_emit(&l);
	print_regs(&l, r, 1);

	for (uint32_t i = 0; i < nsec; i++) {
		release(&cpus[i]);
		if (!wait_reported(i + 1)) {
			line_str(&l, "demo: cpu ");
			line_dec(&l, cpus[i].reg);
			line_str(&l, " did not come up");
			line_emit(&l);
			break;
		}
		up++;
	}
	if (up == 1 + nsec && up == 1) {
		line_str(&l, "demo: 1 cpu up");
	} else if (up == 1 + nsec) {
		line_str(&l, "demo: all ");
		line_dec(&l, up);
		line_str(&l, " cpus up");
	} else {
		line_str(&l, "demo: only ");
		line_dec(&l, up);
		line_str(&l, " of ");
		line_dec(&l, 1 + nsec);
		line_str(&l, " cpus up");
	}
	line_emit(&l);
	power_off(up == 1 + nsec ? 0 : 1);
}

void secondary_main(const struct entry_regs *r) __attribute__((noreturn));
void secondary_main(const struct entry_regs *r)
{
	struct line l;

	console_attach();
	line_init(&l);
	print_regs(&l, r, 0);
	sys_atomic_inc(&cpus_reported);
	sys_park(have_hcalls);
}
