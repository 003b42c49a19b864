/*
 * The demo kernel's flattened device tree reader; see fdt.h.  Offsets are relative to the
 * structure block; every access goes through next_tag(), which checks it against the sizes in
 * the header before reading.
 */
#include "fdt.h"

#include "lib.h"

#define FDT_BEGIN_NODE 1u
#define FDT_END_NODE 2u
#define FDT_PROP 3u
#define FDT_NOP 4u
#define FDT_END 9u
#define FDT_HEADER_SIZE 40u
/* The demo refuses trees bigger than this: a guard against a garbage header, not a limit. */
#define FDT_MAX_SIZE (8u << 20)

static uint32_t be32_at(const uint8_t *p)
{
	return *(const uint32_t *)p; /* big-endian CPU, 4-aligned by construction */
}

static int in_struct(const struct fdt *f, uint32_t off, uint32_t len)
{
	return off <= f->size_struct && len <= f->size_struct - off;
}

static const uint8_t *struct_at(const struct fdt *f, uint32_t off)
{
	return f->blob + f->off_struct + off;
}

static uint32_t align4(uint32_t v)
{
	return (v + 3u) & ~3u;
}

int fdt_open(struct fdt *f, uintptr_t addr)
{
	const uint8_t *h = (const uint8_t *)addr;

	if (addr == 0 || (addr & 3u))
		return -1;
	if (be32_at(h) != FDT_MAGIC)
		return -1;
	f->blob = h;
	f->totalsize = be32_at(h + 4);
	f->off_struct = be32_at(h + 8);
	f->off_strings = be32_at(h + 12);
	f->boot_cpuid_phys = be32_at(h + 28);
	f->size_strings = be32_at(h + 32);
	f->size_struct = be32_at(h + 36);
	/* version >= 17 (for size_dt_struct) and last compatible version <= 17 */
	if (be32_at(h + 20) < 17 || be32_at(h + 24) > 17)
		return -1;
	if (f->totalsize < FDT_HEADER_SIZE || f->totalsize > FDT_MAX_SIZE)
		return -1;
	if ((f->off_struct & 3u) || f->off_struct > f->totalsize ||
	    f->size_struct > f->totalsize - f->off_struct)
		return -1;
	if (f->off_strings > f->totalsize || f->size_strings > f->totalsize - f->off_strings)
		return -1;
	return fdt_root(f) < 0 ? -1 : 0;
}

/* The tag at `off`, with `*next` set to the offset of the tag after it; 0 if malformed. */
static uint32_t next_tag(const struct fdt *f, int off, int *next)
{
	uint32_t p, tag;

	if (off < 0 || ((uint32_t)off & 3u) || !in_struct(f, (uint32_t)off, 4))
		return 0;
	tag = be32_at(struct_at(f, (uint32_t)off));
	p = (uint32_t)off + 4;
	switch (tag) {
	case FDT_BEGIN_NODE: {
		uint32_t room = f->size_struct - p;
		uint32_t n = lib_strnlen((const char *)struct_at(f, p), room);

		if (n == room)
			return 0;
		p = align4(p + n + 1);
		break;
	}
	case FDT_PROP: {
		uint32_t len;

		if (!in_struct(f, p, 8))
			return 0;
		len = be32_at(struct_at(f, p));
		if (!in_struct(f, p + 8, len))
			return 0;
		p = align4(p + 8 + len);
		break;
	}
	case FDT_END_NODE:
	case FDT_NOP:
	case FDT_END:
		break;
	default:
		return 0;
	}
	*next = (int)p;
	return tag;
}

/* Skips NOPs from `off`; returns the offset of the next real tag (or -1) and the tag. */
static int skip_nops(const struct fdt *f, int off, uint32_t *tag)
{
	int next;

	for (;;) {
		*tag = next_tag(f, off, &next);
		if (*tag != FDT_NOP)
			return *tag ? off : -1;
		off = next;
	}
}

/* The offset of the first tag after a node's name, or -1 if `node` is not a node. */
static int node_body(const struct fdt *f, int node)
{
	int next;

	if (next_tag(f, node, &next) != FDT_BEGIN_NODE)
		return -1;
	return next;
}

int fdt_root(const struct fdt *f)
{
	uint32_t tag;
	int off = skip_nops(f, 0, &tag);

	return (off >= 0 && tag == FDT_BEGIN_NODE) ? off : -1;
}

const char *fdt_node_name(const struct fdt *f, int node)
{
	if (node_body(f, node) < 0)
		return "";
	return (const char *)struct_at(f, (uint32_t)node + 4);
}

static const char *string_at(const struct fdt *f, uint32_t nameoff)
{
	const char *s;

	if (nameoff >= f->size_strings)
		return 0;
	s = (const char *)f->blob + f->off_strings + nameoff;
	if (lib_strnlen(s, f->size_strings - nameoff) == f->size_strings - nameoff)
		return 0;
	return s;
}

const void *fdt_getprop(const struct fdt *f, int node, const char *name, uint32_t *len)
{
	int off = node_body(f, node);

	while (off >= 0) {
		int next;
		uint32_t tag = next_tag(f, off, &next);
		const char *pname;

		if (tag == FDT_NOP) {
			off = next;
			continue;
		}
		if (tag != FDT_PROP)
			return 0;
		pname = string_at(f, be32_at(struct_at(f, (uint32_t)off + 8)));
		if (pname && lib_streq(pname, name)) {
			if (len)
				*len = be32_at(struct_at(f, (uint32_t)off + 4));
			return struct_at(f, (uint32_t)off + 12);
		}
		off = next;
	}
	return 0;
}

uint32_t fdt_getprop_u32(const struct fdt *f, int node, const char *name, uint32_t dflt)
{
	uint32_t len;
	const void *p = fdt_getprop(f, node, name, &len);

	return (p && len == 4) ? be32_at(p) : dflt;
}

const char *fdt_getprop_str(const struct fdt *f, int node, const char *name)
{
	uint32_t len;
	const char *p = fdt_getprop(f, node, name, &len);

	if (!p || len == 0 || p[len - 1] != '\0')
		return 0;
	return p;
}

int fdt_prop_has_string(const struct fdt *f, int node, const char *name, const char *s)
{
	uint32_t len;
	const char *p = fdt_getprop(f, node, name, &len);

	while (p && len) {
		uint32_t n = lib_strnlen(p, len);

		if (n == len)
			return 0; /* unterminated */
		if (lib_streq(p, s))
			return 1;
		p += n + 1;
		len -= n + 1;
	}
	return 0;
}

int fdt_first_child(const struct fdt *f, int node)
{
	int off = node_body(f, node);
	uint32_t tag;

	while (off >= 0) {
		int next;

		tag = next_tag(f, off, &next);
		if (tag == FDT_PROP || tag == FDT_NOP) {
			off = next;
			continue;
		}
		return tag == FDT_BEGIN_NODE ? off : -1;
	}
	return -1;
}

int fdt_next_sibling(const struct fdt *f, int node)
{
	int off = node, depth = 0;
	uint32_t tag;

	if (node_body(f, node) < 0)
		return -1;
	do {
		int next;

		tag = next_tag(f, off, &next);
		if (tag == FDT_BEGIN_NODE)
			depth++;
		else if (tag == FDT_END_NODE)
			depth--;
		else if (tag != FDT_PROP && tag != FDT_NOP)
			return -1;
		off = next;
	} while (depth > 0);
	off = skip_nops(f, off, &tag);
	return (off >= 0 && tag == FDT_BEGIN_NODE) ? off : -1;
}

/* Whether a path component names a node: exactly, or up to the node's '@' if it has none. */
static int component_matches(const char *node_name, const char *comp, uint32_t comp_len)
{
	uint32_t i;

	for (i = 0; i < comp_len; i++)
		if (node_name[i] != comp[i])
			return 0;
	if (node_name[i] == '\0')
		return 1;
	return node_name[i] == '@' && lib_memchr(comp, '@', comp_len) == 0;
}

int fdt_find_path(const struct fdt *f, const char *path, struct fdt_path *out)
{
	char buf[256];
	uint32_t n = 0, i;
	const char *p = path;

	/* Resolve a leading alias ("serial0" or "serial0/child") through /aliases. */
	if (*p != '/') {
		struct fdt_path aliases;
		uint32_t alen = 0;
		const char *target;
		char alias[64];

		while (p[alen] && p[alen] != '/' && p[alen] != ':') {
			if (alen + 1 >= sizeof(alias))
				return -1;
			alias[alen] = p[alen];
			alen++;
		}
		alias[alen] = '\0';
		if (fdt_find_path(f, "/aliases", &aliases) < 0)
			return -1;
		target = fdt_getprop_str(f, aliases.node[aliases.depth], alias);
		if (!target || target[0] != '/')
			return -1;
		while (*target) {
			if (n + 1 >= sizeof(buf))
				return -1;
			buf[n++] = *target++;
		}
		p += alen;
	}
	while (*p && *p != ':') {
		if (n + 1 >= sizeof(buf))
			return -1;
		buf[n++] = *p++;
	}
	buf[n] = '\0';

	out->depth = 0;
	out->node[0] = fdt_root(f);
	if (out->node[0] < 0)
		return -1;
	for (i = 0; i < n;) {
		uint32_t start, len;
		int child;

		while (i < n && buf[i] == '/')
			i++;
		if (i == n)
			break;
		start = i;
		while (i < n && buf[i] != '/')
			i++;
		len = i - start;
		for (child = fdt_first_child(f, out->node[out->depth]); child >= 0;
		     child = fdt_next_sibling(f, child))
			if (component_matches(fdt_node_name(f, child), buf + start, len))
				break;
		if (child < 0 || out->depth + 1 >= FDT_MAX_DEPTH)
			return -1;
		out->node[++out->depth] = child;
	}
	return 0;
}

int fdt_find_with_prop(const struct fdt *f, const char *name, struct fdt_path *out)
{
	int node = fdt_root(f);

	out->depth = 0;
	out->node[0] = node;
	if (node < 0)
		return -1;
	for (;;) {
		int next;

		if (fdt_getprop(f, out->node[out->depth], name, 0))
			return 0;
		/* depth first: the first child, else the next sibling of the nearest ancestor */
		next = fdt_first_child(f, out->node[out->depth]);
		if (next >= 0 && out->depth + 1 < FDT_MAX_DEPTH) {
			out->node[++out->depth] = next;
			continue;
		}
		for (;;) {
			if (out->depth == 0)
				return -1;
			next = fdt_next_sibling(f, out->node[out->depth]);
			if (next >= 0) {
				out->node[out->depth] = next;
				break;
			}
			out->depth--;
		}
	}
}

uint64_t fdt_read_cells(const void *p, uint32_t count)
{
	const uint8_t *b = p;
	uint64_t v = 0;

	for (uint32_t i = 0; i < count; i++)
		v = (v << 32) | be32_at(b + 4 * i);
	return v;
}

/* #address-cells / #size-cells of the bus `node` (the defaults the specification gives). */
static uint32_t address_cells(const struct fdt *f, int node)
{
	return fdt_getprop_u32(f, node, "#address-cells", 2);
}

static uint32_t size_cells(const struct fdt *f, int node)
{
	return fdt_getprop_u32(f, node, "#size-cells", 1);
}

int fdt_reg_phys(const struct fdt *f, const struct fdt_path *path, uint32_t index,
		 uint64_t *addr, uint64_t *size)
{
	uint32_t ac, sc, len;
	const uint8_t *reg;
	int level;

	if (path->depth < 1)
		return -1;
	ac = address_cells(f, path->node[path->depth - 1]);
	sc = size_cells(f, path->node[path->depth - 1]);
	reg = fdt_getprop(f, path->node[path->depth], "reg", &len);
	if (!reg || ac < 1 || ac > 2 || sc > 2 || (index + 1) * 4 * (ac + sc) > len)
		return -1;
	reg += index * 4 * (ac + sc);
	*addr = fdt_read_cells(reg, ac);
	*size = fdt_read_cells(reg + 4 * ac, sc);

	/* Up through every bus below the root: child address -> parent address via "ranges". */
	for (level = path->depth - 1; level >= 1; level--) {
		int bus = path->node[level];
		uint32_t cac = address_cells(f, bus), csc = size_cells(f, bus);
		uint32_t pac = address_cells(f, path->node[level - 1]);
		uint32_t entry = 4 * (cac + pac + csc);
		const uint8_t *r = fdt_getprop(f, bus, "ranges", &len);
		int found = 0;

		if (!r)
			return -1;
		if (len == 0)
			continue; /* identity */
		if (cac < 1 || cac > 2 || pac < 1 || pac > 2 || csc > 2)
			return -1;
		for (; len >= entry; r += entry, len -= entry) {
			uint64_t cbase = fdt_read_cells(r, cac);
			uint64_t pbase = fdt_read_cells(r + 4 * cac, pac);
			uint64_t rsize = fdt_read_cells(r + 4 * (cac + pac), csc);

			if (*addr >= cbase && *addr - cbase < rsize) {
				*addr = *addr - cbase + pbase;
				found = 1;
				break;
			}
		}
		if (!found)
			return -1;
	}
	return 0;
}
