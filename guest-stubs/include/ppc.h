/*
 * e500v2 (Book E) processor helpers shared by the guest stubs: SPR access, barriers, the time
 * base and TLB1 entries.
 */
#ifndef GUEST_PPC_H
#define GUEST_PPC_H

#include <stdint.h>

#include "abi.h"

#define mfspr(n)                                                                   \
	({                                                                         \
		uint32_t v_;                                                       \
		__asm__ __volatile__("mfspr %0, %1" : "=r"(v_) : "i"(n));          \
		v_;                                                                \
	})

#define mtspr(n, v) __asm__ __volatile__("mtspr %0, %1" : : "i"(n), "r"((uint32_t)(v)))

/* msync: every earlier store is visible to other CPUs and devices before any later one. */
static inline void msync(void)
{
	__asm__ __volatile__("msync" : : : "memory");
}

/* mbar: orders accesses to cache-inhibited (device) memory. */
static inline void mbar(void)
{
	__asm__ __volatile__("mbar" : : : "memory");
}

static inline void isync(void)
{
	__asm__ __volatile__("isync" : : : "memory");
}

static inline uint32_t read_pir(void)
{
	return mfspr(SPR_PIR);
}

/* The 64-bit time base, read so that a carry between TBU and TBL cannot tear it. */
static inline uint64_t read_timebase(void)
{
	uint32_t hi, lo, hi2;

	do {
		hi = mfspr(SPR_TBU_READ);
		lo = mfspr(SPR_TBL_READ);
		hi2 = mfspr(SPR_TBU_READ);
	} while (hi != hi2);
	return ((uint64_t)hi << 32) | lo;
}

/* Book E MMU assist registers and their fields (e500 core reference manual, "MMU"). */
#define SPR_MAS0 624
#define SPR_MAS1 625
#define SPR_MAS2 626
#define SPR_MAS3 627
#define SPR_MAS7 944
#define MAS0_TLBSEL1 0x10000000u
#define MAS0_ESEL(n) ((uint32_t)(n) << 16)
#define MAS1_VALID 0x80000000u
#define MAS1_TSIZE_4K (1u << 8)
#define MAS2_I 0x08u /* cache-inhibited */
#define MAS2_M 0x04u /* memory coherence required */
#define MAS2_G 0x02u /* guarded */
#define MAS3_SX 0x10u
#define MAS3_SW 0x04u
#define MAS3_SR 0x01u
#define TLB_PAGE 0x1000u

/*
 * Writes TLB1 entry `esel`: the 4 KiB page at effective address `ea` maps the page holding the
 * 36-bit physical address `pa`, supervisor read/write, with the WIMGE bits `wimge`.
 */
static inline void tlb1_map_4k(unsigned esel, uint32_t ea, uint64_t pa, uint32_t wimge,
			       uint32_t perms)
{
	mtspr(SPR_MAS0, MAS0_TLBSEL1 | MAS0_ESEL(esel));
	mtspr(SPR_MAS1, MAS1_VALID | MAS1_TSIZE_4K);
	mtspr(SPR_MAS2, (ea & ~(TLB_PAGE - 1)) | wimge);
	mtspr(SPR_MAS3, ((uint32_t)pa & ~(TLB_PAGE - 1)) | perms);
	mtspr(SPR_MAS7, (uint32_t)(pa >> 32));
	isync();
	__asm__ __volatile__("tlbwe" : : : "memory");
	isync();
}

#endif
