/* See sys.h. */
#include "sys.h"

#include "abi.h"
#include "hcall.h"
#include "ppc.h"

#define SPR_HID0 1008
#define HID0_DOZE 0x00800000u
#define MSR_WE 0x00040000u

uint32_t sys_ima_size;

void sys_map_device(unsigned esel, uint32_t window, uint64_t phys)
{
	uint32_t hi = (uint32_t)(phys >> 32), lo = (uint32_t)phys;

	if (hi)
		tlb1_map_4k(esel, window, phys, MAS2_I | MAS2_G, MAS3_SR | MAS3_SW);
	else if (lo >= sys_ima_size)
		tlb1_map_4k(esel, lo, phys, MAS2_I | MAS2_G, MAS3_SR | MAS3_SW);
}

uintptr_t sys_device_ea(uint32_t window, uint64_t phys)
{
	if (phys >> 32)
		return window + ((uint32_t)phys & (TLB_PAGE - 1));
	return (uint32_t)phys;
}

uint32_t sys_atomic_inc(volatile uint32_t *p)
{
	uint32_t v;

	/* "b": addi with r0 as its source would read the constant 0 */
	__asm__ __volatile__("1:	lwarx	%0, 0, %1\n"
			     "	addi	%0, %0, 1\n"
			     "	stwcx.	%0, 0, %1\n"
			     "	bne-	1b\n"
			     : "=&b"(v)
			     : "r"(p)
			     : "cr0", "memory");
	return v;
}

void sys_park(int have_hcalls)
{
	for (;;) {
		if (have_hcalls) {
			hcall3(HC_EV_IDLE, 0, 0, 0);
		} else {
			uint32_t msr;

			mtspr(SPR_HID0, mfspr(SPR_HID0) | HID0_DOZE);
			msync();
			__asm__ __volatile__("mfmsr %0" : "=r"(msr));
			__asm__ __volatile__("mtmsr %0; isync" : : "r"(msr | MSR_WE) : "memory");
		}
	}
}
