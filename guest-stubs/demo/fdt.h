/*
 * A small, read-only flattened device tree reader (devicetree specification v0.4, chapter 5).
 *
 * The demo kernel gets nothing but a pointer in r3, so everything it learns about the machine
 * (console, memory, CPUs, how to release them) comes through here.  Every read is bounds-checked
 * against the header: a corrupt tree makes lookups fail, it never makes the reader run away.
 *
 * Nodes are named by the offset of their FDT_BEGIN_NODE token inside the structure block.
 * Lookups that need to translate addresses also return the path from the root to the node
 * (`struct fdt_path`), because the flat format has no parent links.
 */
#ifndef DEMO_FDT_H
#define DEMO_FDT_H

#include <stdint.h>

#define FDT_MAGIC 0xd00dfeedu
#define FDT_MAX_DEPTH 16

struct fdt {
	const uint8_t *blob;
	uint32_t totalsize;
	uint32_t off_struct, size_struct;
	uint32_t off_strings, size_strings;
	uint32_t boot_cpuid_phys;
};

/* The nodes from the root (node[0]) down to a node (node[depth]). */
struct fdt_path {
	int node[FDT_MAX_DEPTH];
	int depth;
};

/* Checks the header at `addr`; 0 on success, -1 if it is not a usable version-17 tree. */
int fdt_open(struct fdt *f, uintptr_t addr);

int fdt_root(const struct fdt *f);
const char *fdt_node_name(const struct fdt *f, int node);
/* The first child / next sibling of a node, or -1. */
int fdt_first_child(const struct fdt *f, int node);
int fdt_next_sibling(const struct fdt *f, int node);

/* A property's value and length, or NULL when the node has no such property. */
const void *fdt_getprop(const struct fdt *f, int node, const char *name, uint32_t *len);
/* A property holding one u32 cell, or `dflt` when it is missing or has another size. */
uint32_t fdt_getprop_u32(const struct fdt *f, int node, const char *name, uint32_t dflt);
/* A property holding a NUL-terminated string, or NULL. */
const char *fdt_getprop_str(const struct fdt *f, int node, const char *name);
/* Whether a string-list property (such as "compatible") contains `s`. */
int fdt_prop_has_string(const struct fdt *f, int node, const char *name, const char *s);

/*
 * Looks a node up by path ("/soc/serial@4500", or an alias such as "serial0" resolved through
 * /aliases; anything after ':' is ignored, as for stdout-path).  A component without a unit
 * address matches a node name up to its '@'.  Returns 0 and fills `path`, or -1.
 */
int fdt_find_path(const struct fdt *f, const char *path, struct fdt_path *out);

/* The first node (depth-first) that has the property `name`.  Returns 0 and fills `out`, or -1. */
int fdt_find_with_prop(const struct fdt *f, const char *name, struct fdt_path *out);

/* Reads `count` cells (1 or 2) at `p` as one number. */
uint64_t fdt_read_cells(const void *p, uint32_t count);

/*
 * Entry `index` of the node's "reg", translated through every parent bus's "ranges" to a CPU
 * physical address.  Returns 0 on success, -1 when there is no such entry or the address cannot
 * be translated (a bus without "ranges", or more than two address cells).
 */
int fdt_reg_phys(const struct fdt *f, const struct fdt_path *path, uint32_t index,
		 uint64_t *addr, uint64_t *size);

#endif
