/*
 * The few C library routines the freestanding guest stubs need.  GCC may also emit calls to
 * memcpy/memset/memmove/memcmp on its own (-ffreestanding still allows that), so those four keep
 * their standard names.
 */
#ifndef GUEST_LIB_H
#define GUEST_LIB_H

#include <stddef.h>
#include <stdint.h>

void *memcpy(void *dst, const void *src, size_t n);
void *memmove(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);

/* The length of `s`, but at most `max` (== max means no NUL within `max` bytes). */
uint32_t lib_strnlen(const char *s, uint32_t max);
int lib_streq(const char *a, const char *b);
const void *lib_memchr(const void *p, int c, uint32_t n);

#endif
