/*
 * ePAPR hypercalls from C (ePAPR 1.1 chapter 7, PLATFORM.md "Hypercalls").
 *
 * The hypercall instruction is `sc 1`; the token goes in r11, arguments in r3..r10, the status
 * comes back in r3 and outputs in r4..r10.  r0, r3..r12, CTR, XER and CR0/CR1/CR5..CR7 are
 * volatile across the call (ePAPR table 7-1), which is exactly what the clobber list says, so the
 * compiler keeps nothing live in them.  The tokens come from abi.h, generated from
 * machine/platform.py, so the guest and the machine cannot disagree on a number.
 */
#ifndef GUEST_HCALL_H
#define GUEST_HCALL_H

#include <stdint.h>

#include "abi.h"

/* Outputs of a hypercall: status (r3) and the first output registers (r4..r8). */
struct hcall_out {
	uint32_t status;
	uint32_t r4, r5, r6, r7, r8;
};

static inline void hcall(uint32_t token, uint32_t a3, uint32_t a4, uint32_t a5, uint32_t a6,
			 uint32_t a7, uint32_t a8, struct hcall_out *out)
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
	if (out) {
		out->status = r3;
		out->r4 = r4;
		out->r5 = r5;
		out->r6 = r6;
		out->r7 = r7;
		out->r8 = r8;
	}
}

/* A call whose only result is its status. */
static inline uint32_t hcall3(uint32_t token, uint32_t a3, uint32_t a4, uint32_t a5)
{
	struct hcall_out out;

	hcall(token, a3, a4, a5, 0, 0, 0, &out);
	return out.status;
}

/*
 * Sends `len` bytes on a byte channel, at most BYTE_CHANNEL_MAX per call, packed big-endian into
 * r5..r8 (ePAPR 7.7.1).  EV_EAGAIN means "no space now, nothing sent": retry.  Returns the last
 * status (EV_SUCCESS when everything went out).
 */
static inline uint32_t hcall_byte_channel_send(uint32_t handle, const char *buf, uint32_t len)
{
	while (len) {
		uint32_t n = len < BYTE_CHANNEL_MAX ? len : BYTE_CHANNEL_MAX;
		uint32_t w[4] = { 0, 0, 0, 0 };
		struct hcall_out out;

		for (uint32_t i = 0; i < n; i++)
			w[i / 4] |= (uint32_t)(uint8_t)buf[i] << (24 - 8 * (i % 4));
		hcall(HC_EV_BYTE_CHANNEL_SEND, handle, n, w[0], w[1], w[2], w[3], &out);
		if (out.status == EV_EAGAIN)
			continue;
		if (out.status != EV_SUCCESS)
			return out.status;
		/* A machine may take fewer bytes than offered; send the rest next time round. */
		if (out.r4 == 0 || out.r4 > n)
			return EV_EIO;
		buf += out.r4;
		len -= out.r4;
	}
	return EV_SUCCESS;
}

#endif
