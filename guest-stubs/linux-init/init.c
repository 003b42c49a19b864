/*
 * The init of fwcfg-e500's default initramfs (machine/boot/initramfs.py packs it as /init).
 *
 * It is the one userspace program the Linux boot tests run, so each line it prints proves one
 * step of the boot, on fwcfg-e500 and on qemu-system-ppc -M ppce500 alike:
 *
 *   fwcfg-e500 init: hello from userspace   the kernel found the initramfs and ran /init
 *   init: cpus=N                            every CPU Linux brought up (/proc/cpuinfo)
 *   init: cmdline=...                       the command line the firmware passed (/proc/cmdline)
 *   init: type a line:                      then one line read from the console and
 *   init: echo: <line>                      echoed back: console input reaches userspace
 *   init: slept N s                         only with init.sleep=N: an idle system
 *   init: powering off                      then reboot(POWER_OFF): the machine exits
 *
 * Why no libc: the init must build with nothing but the cross compiler the guest stubs already
 * need, and stay small enough to read in one sitting.  start.S has _start and sys6 (the
 * system call); everything else is here.
 *
 * Why read /proc/cmdline for init.sleep: Linux 6.1 (init/main.c, unknown_bootoption) hands
 * unknown parameters to init as argv or environment, but drops every one with a dot in its
 * name as an unused module parameter.  Reading the whole command line works for any spelling,
 * so the parameter can keep the conventional "init." prefix.
 *
 * Each line is built in a buffer and written with one write(), so kernel messages printed
 * meanwhile cannot land in the middle of it.
 */
#include <stddef.h>
#include <stdint.h>

/* arch/powerpc/kernel/syscalls/syscall.tbl, 32-bit */
enum {
	SYS_read = 3,
	SYS_write = 4,
	SYS_open = 5,
	SYS_close = 6,
	SYS_mount = 21,
	SYS_mkdir = 39,
	SYS_reboot = 88,
	SYS_nanosleep = 162, /* sys_nanosleep_time32: 32-bit seconds */
};

enum { O_RDONLY = 0, EINTR = 4, EEXIST = 17 };

/* include/uapi/linux/reboot.h */
#define LINUX_REBOOT_MAGIC1 0xfee1deadUL
#define LINUX_REBOOT_MAGIC2 672274793UL
#define LINUX_REBOOT_CMD_POWER_OFF 0x4321fedcUL

struct timespec32 {
	int32_t tv_sec;
	int32_t tv_nsec;
};

/* start.S: a system call; returns the result, or -errno. */
long sys6(long nr, long a, long b, long c, long d, long e, long f);

#define SYS3(nr, a, b, c) sys6((nr), (long)(a), (long)(b), (long)(c), 0, 0, 0)
#define SYS5(nr, a, b, c, d, e) sys6((nr), (long)(a), (long)(b), (long)(c), (long)(d), (long)(e), 0)

void init_main(void) __attribute__((noreturn));

/* Static, not on the stack: the guest stubs build with -Wstack-usage=1024.  Linux's powerpc
 * COMMAND_LINE_SIZE is 2048; /proc/cpuinfo is about 100 bytes per CPU, 32 CPUs at most. */
static char cmdline[2048 + 1];
static char cpuinfo[16384];
static char input[256];

/* --- output: one line per write() ------------------------------------------------------ */

static char out[sizeof(cmdline) + 64];
static size_t out_len;

/* Keeps the last byte free for out_line's newline; a line too long is cut, not overrun. */
static void out_char(char c)
{
	if (out_len < sizeof(out) - 1)
		out[out_len++] = c;
}

static void out_str(const char *s)
{
	while (*s)
		out_char(*s++);
}

static void out_uint(unsigned long v)
{
	char digits[12];
	int n = 0;

	do {
		digits[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	while (n)
		out_char(digits[--n]);
}

/* Ends the line and writes it to the console (fd 1, which the kernel opened on /dev/console). */
static void out_line(void)
{
	size_t done = 0;

	out[out_len++] = '\n';
	while (done < out_len) {
		long n = SYS3(SYS_write, 1, out + done, out_len - done);
		if (n <= 0)
			break;
		done += (size_t)n;
	}
	out_len = 0;
}

static void say(const char *s)
{
	out_str(s);
	out_line();
}

static void say_errno(const char *what, long err)
{
	out_str("init: ");
	out_str(what);
	out_str(" failed: errno ");
	out_uint((unsigned long)-err);
	out_line();
}

/* --- files ------------------------------------------------------------------------------ */

/* Reads all of `path` (up to size - 1 bytes) into buf, NUL-terminated; returns the length or
 * -errno.  /proc files come in pieces, so read until end of file. */
static long read_file(const char *path, char *buf, size_t size)
{
	long fd = SYS3(SYS_open, path, O_RDONLY, 0);
	size_t len = 0;

	if (fd < 0)
		return fd;
	while (len < size - 1) {
		long n = SYS3(SYS_read, fd, buf + len, size - 1 - len);
		if (n < 0) {
			SYS3(SYS_close, fd, 0, 0);
			return n;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	buf[len] = '\0';
	SYS3(SYS_close, fd, 0, 0);
	return (long)len;
}

/* The kernel mounts nothing on /proc for an initramfs: mount it unless something already has. */
static void mount_proc(void)
{
	long fd = SYS3(SYS_open, "/proc/cmdline", O_RDONLY, 0);
	long err;

	if (fd >= 0) {
		SYS3(SYS_close, fd, 0, 0);
		return;
	}
	err = SYS3(SYS_mkdir, "/proc", 0555, 0);
	if (err < 0 && err != -EEXIST)
		say_errno("mkdir /proc", err);
	err = SYS5(SYS_mount, "proc", "/proc", "proc", 0, 0);
	if (err < 0)
		say_errno("mount /proc", err);
}

/* --- what the init reports ---------------------------------------------------------------- */

static int starts_with(const char *s, const char *prefix)
{
	while (*prefix)
		if (*s++ != *prefix++)
			return 0;
	return 1;
}

/* One "processor\t: N" line per online CPU. */
static unsigned long count_cpus(const char *text)
{
	unsigned long cpus = 0;
	const char *p = text;

	while (*p) {
		if (starts_with(p, "processor") && (p[9] == ' ' || p[9] == '\t' || p[9] == ':'))
			cpus++;
		while (*p && *p != '\n')
			p++;
		if (*p)
			p++;
	}
	return cpus;
}

/* The N of an "init.sleep=N" word in the command line, or 0. */
static unsigned long sleep_seconds(const char *text)
{
	static const char key[] = "init.sleep=";
	const char *p = text;

	while (*p) {
		if ((p == text || p[-1] == ' ') && starts_with(p, key)) {
			unsigned long n = 0;
			for (p += sizeof(key) - 1; *p >= '0' && *p <= '9' && n < 100000; p++)
				n = n * 10 + (unsigned long)(*p - '0');
			return n;
		}
		p++;
	}
	return 0;
}

static void nap(unsigned long seconds)
{
	struct timespec32 ts = { (int32_t)seconds, 0 };
	struct timespec32 rem;
	long err;

	while ((err = SYS3(SYS_nanosleep, &ts, &rem, 0)) == -EINTR)
		ts = rem;
	if (err < 0)
		say_errno("nanosleep", err);
}

void init_main(void)
{
	long n;
	unsigned long seconds;

	say("fwcfg-e500 init: hello from userspace");
	mount_proc();

	n = read_file("/proc/cpuinfo", cpuinfo, sizeof(cpuinfo));
	if (n < 0) {
		say_errno("read /proc/cpuinfo", n);
	} else {
		out_str("init: cpus=");
		out_uint(count_cpus(cpuinfo));
		out_line();
	}

	n = read_file("/proc/cmdline", cmdline, sizeof(cmdline));
	if (n < 0) {
		say_errno("read /proc/cmdline", n);
		cmdline[0] = '\0';
	} else {
		while (n > 0 && (cmdline[n - 1] == '\n' || cmdline[n - 1] == ' '))
			cmdline[--n] = '\0';
		out_str("init: cmdline=");
		out_str(cmdline);
		out_line();
	}

	/* The console is in canonical mode: read() returns once a whole line was typed. */
	say("init: type a line:");
	n = SYS3(SYS_read, 0, input, sizeof(input) - 1);
	if (n < 0) {
		say_errno("read from the console", n);
	} else {
		while (n > 0 && (input[n - 1] == '\n' || input[n - 1] == '\r'))
			n--;
		input[n] = '\0';
		out_str("init: echo: ");
		out_str(input);
		out_line();
	}

	seconds = sleep_seconds(cmdline);
	if (seconds) {
		nap(seconds);
		out_str("init: slept ");
		out_uint(seconds);
		out_str(" s");
		out_line();
	}

	say("init: powering off");
	n = SYS5(SYS_reboot, LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, LINUX_REBOOT_CMD_POWER_OFF,
		 0, 0);
	/* Only reached if the kernel refused; init must not exit (that panics the kernel). */
	say_errno("reboot(POWER_OFF)", n);
	for (;;)
		nap(3600);
}
