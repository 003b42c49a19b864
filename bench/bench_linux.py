"""Linux 6.1 on fwcfg-e500 next to qemu-system-ppc -M ppce500, every figure from the same run.

Both machines boot the same kernel (the project's build, ``scripts/build-linux.sh``) and the
same initramfs (``machine.boot.initramfs``: the project's init, which prints
"fwcfg-e500 init: hello from userspace", its CPUs and command line, asks for a line, echoes it,
sleeps ``init.sleep=N`` seconds if asked and powers off).  The line is typed the moment
"init: type a line:" appears, on both.  Times are wall-clock seconds from just before the
process starts (``python -m machine ...``, the CLI a user types, interpreter start-up and
imports included, against QEMU's process) or, for "in-process", from just before
``E500Machine(...)`` is built; "init" is the arrival of the init's first line on the console,
"off" the end of the process (or of ``run()``) after the guest powered off.  Medians over
``--runs`` boots, with (min-max); the load average is printed at start and end because the host
is a shared 2-core VM and every figure moves with it.

What each item measures, and why:

1. **-smp 1, ours vs QEMU.**  The headline: a Python machine that boots Linux through its own
   firmware and fw_cfg should cost at most 1.5 x QEMU's direct-kernel boot (issue 14's target).
   The in-process figure shows what the interpreter start-up and imports add to the CLI's.
2. **-smp 2, 4, 8.**  Ours with the machine's device tree; QEMU with its own tree dumped
   (``-M ppce500,dumpdtb=``) and its GUTS compatible patched to "fsl,mpc8544-guts",
   "fsl,p2020-guts" so Linux freezes the timebase through DEVDISR instead of running the
   software contest.  QEMU hangs at -smp 8 after "Run /init": a hang is reported as the figure,
   with the last line printed.  QEMU with its own tree at -smp 2 is run once to show it hangs at
   "smp: Bringing up secondary CPUs" (the software timebase contest).  "SMP" is the time from
   "smp: Bringing up secondary CPUs" to "smp: Brought up": the secondaries' bring-up alone.
3. **The software contest.**  Ours at -smp 4 with its device tree's GUTS compatible reduced to
   QEMU's alone ("fsl,mpc8544-guts"), so Linux syncs each secondary's timebase with
   kernel/smp-tbsync.c (~10^4 spin-wait hand-offs per CPU): it boots because spinning vCPUs are
   parked until the store they wait for (machine/devices/spin_waits.py).  The spin-wait
   statistics (parks, wake reasons) come from the in-process boots; the same boot with parking
   off (``m.spins.enabled = False``: the plain round-robin quantum) is given ``--contest-timeout``
   seconds and reported by what it reached.
4. **Host CPU while Linux idles.**  -smp 4 with ``init.sleep=5``: the CPU time the whole process
   used between "init: echo:" and "init: slept" (from /proc/PID/stat), as a share of one core,
   and the busiest thread's (/proc/PID/task/TID/schedstat; in-process, the vCPU worker thread by
   name).  Target: < 5 % of a core for ours.  QEMU's is printed for reference.
5. **Reliability.**  ``--reliability`` boots in a row at -smp 4 (the CLI), each must print the
   init's lines and power off with exit status 0: a lost wake-up or a hang shows up here.
   ``--no-reliability`` skips it.

Usage: python3 bench/bench_linux.py [--runs N] [--idle-runs N] [--reliability N]
       [--no-reliability] [--kernel VMLINUX] [--failures DIR]
A boot that fails (either machine) is reported by how far it got, its first oops/stall line and
its last line, and its whole console is written under --failures (default /tmp/bench-linux/).
Needs qemu-system-ppc (QEMU 7.2) and dtc; the kernel is built (about 6 minutes, once) or found in
the cache by scripts/build-linux.sh.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from machine.api import E500Machine, RunResult  # noqa: E402
from machine.boot.devicetree import TreeConfig, build_fdt  # noqa: E402
from machine.boot.initramfs import default_initramfs  # noqa: E402

RAM_MIB = 256
QEMU = shutil.which("qemu-system-ppc")
DTC = shutil.which("dtc")
CLK_TCK = os.sysconf("SC_CLK_TCK")
#: Where failed boots' consoles are written (--failures); None: nowhere.
FAILURES: Path | None = None

HELLO = "fwcfg-e500 init: hello from userspace"
PROMPT = "init: type a line:"
ECHO = "init: echo: "
SLEPT = "init: slept "
OFF = "init: powering off"
SMP_START = "smp: Bringing up secondary CPUs"
SMP_DONE = "smp: Brought up"
#: Console texts whose first appearance is timed (and, for ECHO and SLEPT, CPU-sampled).
MARKS = (SMP_START, SMP_DONE, HELLO, PROMPT, ECHO, SLEPT, OFF)
TYPED = "hello from the bench"
#: Lines that say a boot went wrong (reported with a hang).
TROUBLE = re.compile(r"Oops|Kernel panic|BUG:|rcu_sched self-detected|rcu: INFO|"
                     r"watchdog: BUG|Unable to handle")

#: The GUTS compatibles: QEMU 7.2's alone makes Linux run the software timebase contest;
#: with "fsl,p2020-guts" after it, Linux freezes the timebase through DEVDISR.
GUTS_QEMU = '"fsl,mpc8544-guts"'
GUTS_FREEZE = '"fsl,mpc8544-guts", "fsl,p2020-guts"'


# --- CPU accounting from /proc ------------------------------------------------------------------


@dataclass(frozen=True)
class CpuSample:
    """One look at a process: its CPU seconds (all threads) and each thread's CPU nanoseconds."""

    process_s: float
    threads_ns: dict[int, int]


def cpu_sample(pid: int) -> CpuSample | None:
    """utime + stime of /proc/PID/stat (clock ticks) and the first field of every thread's
    schedstat (nanoseconds on a CPU); None once the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat.rpartition(")")[2].split()
        process_s = (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime
        threads: dict[int, int] = {}
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                threads[int(task.name)] = int((task / "schedstat").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
    except (OSError, ValueError, IndexError):
        return None
    return CpuSample(process_s, threads)


@dataclass(frozen=True)
class Idle:
    """CPU used during the init's sleep: the window's wall seconds, the process's CPU seconds,
    the busiest thread's (and, in-process, the named vCPU worker's) CPU seconds."""

    wall: float
    process: float
    busiest_thread: float
    worker: float | None = None

    def share(self, cpu_s: float) -> float:
        return 100.0 * cpu_s / self.wall


def idle_between(a: tuple[float, CpuSample | None], b: tuple[float, CpuSample | None],
                 worker_tid: int | None = None) -> Idle | None:
    (t0, s0), (t1, s1) = a, b
    if s0 is None or s1 is None or t1 <= t0:
        return None
    deltas = {tid: s1.threads_ns[tid] - ns for tid, ns in s0.threads_ns.items()
              if tid in s1.threads_ns}
    worker = None
    if worker_tid is not None and worker_tid in deltas:
        worker = deltas[worker_tid] / 1e9
    return Idle(wall=t1 - t0, process=s1.process_s - s0.process_s,
                busiest_thread=max(deltas.values(), default=0) / 1e9, worker=worker)


# --- one boot -------------------------------------------------------------------------------------


@dataclass
class Boot:
    """One boot's record: when each of MARKS first appeared (seconds from start), when it ended,
    whether it powered off cleanly, and the last line it printed."""

    marks: dict[str, float] = field(default_factory=dict)
    end: float | None = None
    ok: bool = False
    last: str = ""
    note: str = ""
    trouble: str = ""
    what: str = ""  # the command line, or the in-process configuration
    text: str = ""  # the whole console output
    idle: Idle | None = None
    spins: dict[str, Any] | None = None

    @property
    def init(self) -> float | None:
        return self.marks.get(HELLO)

    @property
    def off(self) -> float | None:
        return self.end if self.ok else None

    @property
    def smp(self) -> float | None:
        if SMP_START in self.marks and SMP_DONE in self.marks:
            return self.marks[SMP_DONE] - self.marks[SMP_START]
        return None

    def reached(self) -> str:
        """What a boot that did not power off got to: the furthest of MARKS, the first sign of
        trouble (an oops, a panic, a stall), its last line and how it ended."""
        furthest = max(self.marks, key=self.marks.__getitem__, default="nothing")
        trouble = f"; first trouble {self.trouble!r}" if self.trouble else ""
        note = f"; {self.note}" if self.note else ""
        return f"reached {furthest!r}{trouble}; last line {self.last!r}{note}{self.saved()}"

    def saved(self) -> str:
        """Writes a failed boot's console to FAILURES (once); ' (console: PATH)'."""
        if self.ok or FAILURES is None:
            return ""
        if not self._path:
            FAILURES.mkdir(parents=True, exist_ok=True)
            path = FAILURES / f"boot-{len(list(FAILURES.iterdir())) + 1:02d}.log"
            path.write_text(f"# {self.what}\n# {self.note}\n{self.text}")
            self._path = str(path)
        return f" (console: {self._path})"

    _path: str = ""


class Marks:
    """The console text of one boot, fed in chunks: times the first appearance of each of
    MARKS (and samples the CPU there), and wakes anyone waiting for one."""

    def __init__(self, t0: float, probe: Callable[[], CpuSample | None]) -> None:
        self.t0 = t0
        self._probe = probe
        self._buf = bytearray()
        self._cond = threading.Condition()
        self.times: dict[str, float] = {}
        self.samples: dict[str, tuple[float, CpuSample | None]] = {}
        self.ended = False

    def feed(self, data: bytes) -> None:
        now = time.perf_counter() - self.t0
        with self._cond:
            start = max(0, len(self._buf) - 64)  # a mark may straddle two chunks
            self._buf.extend(data)
            window = bytes(self._buf[start:])
            for mark in MARKS:
                if mark not in self.times and mark.encode() in window:
                    self.times[mark] = now
                    if mark in (ECHO, SLEPT):
                        self.samples[mark] = (now, self._probe())
            self._cond.notify_all()

    def end(self) -> None:
        with self._cond:
            self.ended = True
            self._cond.notify_all()

    def wait(self, mark: str, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: mark in self.times or self.ended,
                                       max(0.0, timeout)) and mark in self.times

    def text(self) -> str:
        with self._cond:
            return self._buf.decode("utf-8", "replace")

    def lines(self) -> list[str]:
        return [ln.strip() for ln in self.text().splitlines() if ln.strip()]

    def last_line(self) -> str:
        return next(iter(reversed(self.lines())), "")

    def trouble(self) -> str:
        return next((ln for ln in self.lines() if TROUBLE.search(ln)), "")

    def idle(self, worker_tid: int | None = None) -> Idle | None:
        if ECHO in self.samples and SLEPT in self.samples:
            return idle_between(self.samples[ECHO], self.samples[SLEPT], worker_tid)
        return None


def boot_process(cmd: Sequence[str], timeout: float) -> Boot:
    """Run ``cmd`` (a machine on stdio), type the line at the prompt, wait for it to exit."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(list(cmd), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, cwd=REPO)
    marks = Marks(t0, lambda: cpu_sample(proc.pid))
    assert proc.stdout is not None and proc.stdin is not None
    stdout = proc.stdout

    def pump() -> None:
        fd = stdout.fileno()
        while chunk := os.read(fd, 65536):
            marks.feed(chunk)
        marks.end()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    boot = Boot()
    deadline = t0 + timeout
    try:
        if marks.wait(PROMPT, deadline - time.perf_counter()):
            proc.stdin.write((TYPED + "\n").encode())
            proc.stdin.flush()
        rc = proc.wait(timeout=max(0.0, deadline - time.perf_counter()))
        boot.end = time.perf_counter() - t0
        reader.join(timeout=5)
        boot.ok = rc == 0 and HELLO in marks.times and OFF in marks.times
        if not boot.ok:
            boot.note = f"exit status {rc}"
    except subprocess.TimeoutExpired:
        boot.note = f"no power-off within {timeout:g} s (killed)"
    except BrokenPipeError:
        boot.note = "the process closed its stdin"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(timeout=5)
        proc.stdin.close()
        stdout.close()
    boot.marks = dict(marks.times)
    boot.last = marks.last_line()
    boot.trouble = marks.trouble()
    boot.what = " ".join(cmd)
    boot.text = marks.text()
    boot.idle = marks.idle()
    return boot


async def _boot_in_process(kernel: Path, initrd: Path, *, smp: int, append: str,
                           dtb: Path | None, spins: bool, timeout: float) -> Boot:
    t0 = time.perf_counter()
    before = set(threading.enumerate())
    m = E500Machine(kernel=kernel, initrd=initrd, append=append, smp=smp,
                    ram_size=RAM_MIB << 20, dtb=dtb)
    workers = [t for t in set(threading.enumerate()) - before if t.name.startswith("vcpus of")]
    worker_tid = workers[0].native_id if len(workers) == 1 else None
    m.spins.enabled = spins
    pid = os.getpid()
    marks = Marks(t0, lambda: cpu_sample(pid))
    m.console.add_listener(lambda cpu, data: marks.feed(data))
    ended: list[RunResult] = []

    async def run(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        ended.append(await m.run(timeout=timeout, task_status=task_status))

    async def type_at_prompt() -> None:
        while PROMPT not in marks.times and not ended:
            await trio.sleep(0.005)
        if not ended:
            await m.console.send(TYPED + "\n")

    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(run)
            nursery.start_soon(type_at_prompt)
    finally:
        m.close()
    boot = Boot(marks=dict(marks.times), end=time.perf_counter() - t0,
                last=marks.last_line(), trouble=marks.trouble(), idle=marks.idle(worker_tid),
                what=f"in-process: E500Machine(kernel={kernel}, initrd={initrd}, "
                     f"append={append!r}, smp={smp}, dtb={dtb}); spins.enabled={spins}",
                text=marks.text(),
                spins=m.spins.statistics())
    result = ended[0]
    boot.ok = result.code == 0 and HELLO in marks.times and OFF in marks.times
    if not boot.ok:
        boot.note = f"exit {result.code}: {result.reason}"
    return boot


def boot_in_process(kernel: Path, initrd: Path, *, smp: int, append: str,
                    dtb: Path | None = None, spins: bool = True, timeout: float = 60) -> Boot:
    """The same boot through the Python API, in this process."""
    return trio.run(lambda: _boot_in_process(kernel, initrd, smp=smp, append=append, dtb=dtb,
                                             spins=spins, timeout=timeout))


# --- the machines' command lines and trees ---------------------------------------------------


@dataclass(frozen=True)
class Setup:
    kernel: Path
    initrd: Path
    tmp: Path

    def ours(self, smp: int, extra: str = "", dtb: Path | None = None,
             timeout: float = 60) -> list[str]:
        cmd = [sys.executable, "-m", "machine", "-kernel", str(self.kernel), "-initrd",
               str(self.initrd), "-append", ("console=hvc0 " + extra).strip(), "-smp", str(smp),
               "-m", str(RAM_MIB), "--timeout", f"{timeout:g}"]
        return cmd + (["-dtb", str(dtb)] if dtb is not None else [])

    def qemu_args(self, smp: int, extra: str) -> list[str]:
        assert QEMU is not None
        return [QEMU, "-M", "ppce500", "-smp", str(smp), "-m", str(RAM_MIB), "-nographic",
                "-no-reboot", "-kernel", str(self.kernel), "-initrd", str(self.initrd),
                "-append", ("console=ttyS0 " + extra).strip()]

    def qemu(self, smp: int, extra: str = "", *, freeze: bool = True) -> list[str]:
        """QEMU's command line; ``freeze``: with its own tree patched to the DEVDISR freeze.
        The tree is dumped with the same kernel, initrd and command line, because QEMU takes a
        ``-dtb``'s /chosen (bootargs, initrd range) as it is."""
        cmd = self.qemu_args(smp, extra)
        if not freeze:
            return cmd
        tag = re.sub(r"\W", "_", extra)
        dumped = self.tmp / f"qemu-smp{smp}-{tag}.dtb"
        patched = dumped.with_suffix(".freeze.dtb")
        if not patched.exists():
            cmd0 = list(cmd)
            cmd0[2] = f"ppce500,dumpdtb={dumped}"
            subprocess.run(cmd0, check=True, capture_output=True, timeout=60)
            patch_guts(dumped, patched, GUTS_FREEZE)
        return [*cmd, "-dtb", str(patched)]

    def contest_dtb(self, smp: int) -> Path:
        """The machine's own tree with the GUTS compatible reduced to QEMU's alone."""
        ours = self.tmp / f"ours-smp{smp}.dtb"
        ours.write_bytes(build_fdt(TreeConfig(ram_size=RAM_MIB << 20, n_cpus=smp)))
        out = self.tmp / f"ours-smp{smp}-contest.dtb"
        patch_guts(ours, out, GUTS_QEMU)
        return out


def patch_guts(src: Path, dst: Path, compatible: str) -> None:
    """Rewrite the global-utilities node's compatible with dtc (decompile, edit, compile)."""
    assert DTC is not None
    dts = subprocess.run([DTC, "-q", "-I", "dtb", "-O", "dts", str(src)], check=True,
                         capture_output=True, text=True).stdout
    edited, n = re.subn(r'compatible = "fsl,mpc8544-guts[^;]*;', f"compatible = {compatible};",
                        dts)
    if n != 1:
        sys.exit(f"{src}: expected one GUTS node with fsl,mpc8544-guts, found {n}")
    subprocess.run([DTC, "-q", "-I", "dts", "-O", "dtb", "-o", str(dst), "-"], input=edited,
                   check=True, capture_output=True, text=True)


def project_kernel() -> Path:
    """scripts/build-linux.sh builds the kernel (or finds it cached); its last line is the path."""
    out = subprocess.run(["bash", str(REPO / "scripts" / "build-linux.sh")], check=True,
                         stdout=subprocess.PIPE, text=True)
    return Path(out.stdout.strip().splitlines()[-1])


# --- reporting ------------------------------------------------------------------------------------


def spread(xs: Sequence[float]) -> str:
    if not xs:
        return "-"
    if len(xs) == 1:
        return f"{xs[0]:.2f}"
    return f"{statistics.median(xs):.2f} ({min(xs):.2f}-{max(xs):.2f})"


def med(xs: Sequence[float]) -> float | None:
    return statistics.median(xs) if xs else None


def column(boots: Sequence[Boot], what: str) -> list[float]:
    values = (getattr(b, what) for b in boots if b.ok)
    return [v for v in values if v is not None]


def row(name: str, boots: Sequence[Boot]) -> str:
    ok = [b for b in boots if b.ok]
    if not boots:
        return f"  {name:<28} not run"
    if not ok:
        return f"  {name:<28} hangs: {boots[-1].reached()}"
    failed = [b for b in boots if not b.ok]
    tail = f"   {len(failed)} of {len(boots)} failed: {failed[0].reached()}" if failed else ""
    return (f"  {name:<28} {spread(column(ok, 'init')):<20} {spread(column(ok, 'off')):<20} "
            f"{spread(column(ok, 'smp')):<20} n={len(ok)}{tail}")


HEADER = f"  {'':<28} {'init (s)':<20} {'off (s)':<20} {'SMP bring-up (s)':<20}"


def ratio_line(ours: Sequence[Boot], qemu: Sequence[Boot], target: float | None) -> str:
    parts = []
    for what in ("init", "off"):
        a, b = med(column(ours, what)), med(column(qemu, what))
        if a is None or b is None:
            parts.append(f"{what}: - ({'QEMU' if b is None else 'ours'} did not finish)")
            continue
        r = a / b
        verdict = "" if target is None else (
            f" (target <= {target:g}: {'met' if r <= target else 'NOT met'})")
        parts.append(f"{what} {r:.2f}x{verdict}")
    return "  ours / QEMU: " + ", ".join(parts)


def repeat(runs: int, once: Callable[[], Boot]) -> list[Boot]:
    """Up to ``runs`` boots; stops after the first failure (a hang costs its whole timeout)."""
    boots: list[Boot] = []
    for _ in range(runs):
        boots.append(once())
        if not boots[-1].ok:
            break
    return boots


def loadavg() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


# --- the items -----------------------------------------------------------------------------------


def item_smp1(s: Setup, runs: int) -> None:
    print(f"\n== 1. -smp 1: ours vs QEMU (wall seconds from start, median (min-max) of {runs})")
    cli: list[Boot] = []
    inproc: list[Boot] = []
    qemu: list[Boot] = []
    for _ in range(runs):  # interleaved, so that a change in the host's load hits all three
        cli.append(boot_process(s.ours(1), 60))
        qemu.append(boot_process(s.qemu_args(1, ""), 60))
        inproc.append(boot_in_process(s.kernel, s.initrd, smp=1, append="console=hvc0"))
    startup = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "machine", "--help"], check=True,
                       capture_output=True, cwd=REPO)
        startup.append(time.perf_counter() - t0)
    print(HEADER)
    print(row("ours: python -m machine", cli))
    print(row("ours: in-process", inproc))
    print(row("QEMU 7.2 ppce500", qemu))
    print(ratio_line(cli, qemu, 1.5) + "   [CLI process vs QEMU process]")
    print(ratio_line(inproc, qemu, None) + "   [in-process]")
    print(f"  (python -m machine --help alone, interpreter and imports: {spread(startup)} s)")


def item_smp_n(s: Setup, runs: int, qemu_hang_timeout: float, own_tree_timeout: float) -> None:
    print(f"\n== 2. -smp 2, 4, 8: ours (our tree) vs QEMU (its tree patched to the DEVDISR "
          f"freeze), median (min-max) of {runs}")
    print(HEADER)
    for smp in (2, 4, 8):
        ours: list[Boot] = []
        qemu: list[Boot] = []
        qemu_cmd = s.qemu(smp)
        for _ in range(runs):
            ours.append(boot_process(s.ours(smp), 60))
            if not qemu or qemu[-1].ok:
                qemu.append(boot_process(qemu_cmd, qemu_hang_timeout))
        print(row(f"-smp {smp} ours", ours))
        print(row(f"-smp {smp} QEMU (freeze tree)", qemu))
        print(ratio_line(ours, qemu, None))
    own = boot_process(s.qemu(2, freeze=False), own_tree_timeout)
    print(row("-smp 2 QEMU (its own tree)", [own]))


def item_contest(s: Setup, runs: int, off_timeout: float) -> None:
    print("\n== 3. The software timebase contest: ours at -smp 4 with the GUTS compatible "
          f"reduced to {GUTS_QEMU}")
    dtb = s.contest_dtb(4)
    cli = repeat(runs, lambda: boot_process(s.ours(4, dtb=dtb), 60))
    inproc = repeat(runs, lambda: boot_in_process(s.kernel, s.initrd, smp=4,
                                                  append="console=hvc0", dtb=dtb))
    plain = boot_in_process(s.kernel, s.initrd, smp=4, append="console=hvc0")
    print(HEADER)
    print(row("contest, python -m machine", cli))
    print(row("contest, in-process", inproc))
    print(row("our tree (freeze), in-proc.", [plain]))
    for b in inproc:
        print(f"  spin-waits, contest:   {b.spins}")
    print(f"  spin-waits, our tree:  {plain.spins}")
    print(f"  parking off (m.spins.enabled = False), timeout {off_timeout:g} s ...", flush=True)
    off = boot_in_process(s.kernel, s.initrd, smp=4, append="console=hvc0", dtb=dtb,
                          spins=False, timeout=off_timeout)
    print(row("contest, parking off", [off]))
    if not off.ok:
        print(f"    reached: {', '.join(m for m in MARKS if m in off.marks) or 'none of the marks'}"
              f" ({off.marks.get(SMP_START, float('nan')):.2f} s to '{SMP_START}')")


def idle_text(idle: Idle | None) -> str:
    if idle is None:
        return "-"
    text = (f"{idle.share(idle.process):5.2f} % of a core (process {idle.process:.3f} s CPU "
            f"in {idle.wall:.2f} s; busiest thread {idle.share(idle.busiest_thread):.2f} %")
    if idle.worker is not None:
        text += f"; vCPU worker {idle.share(idle.worker):.2f} %"
    return text + ")"


def item_idle(s: Setup, runs: int, sleep: int) -> None:
    print(f"\n== 4. Host CPU while Linux idles: -smp 4, init.sleep={sleep}, between "
          f"'{ECHO.strip()}' and '{SLEPT.strip()}' (target < 5 % of a core)")
    extra = f"init.sleep={sleep}"
    rows: dict[str, list[Boot]] = {"ours: python -m machine": [], "ours: in-process": [],
                                   "QEMU (freeze tree)": []}
    for _ in range(runs):
        rows["ours: python -m machine"].append(boot_process(s.ours(4, extra), 60 + sleep))
        rows["ours: in-process"].append(
            boot_in_process(s.kernel, s.initrd, smp=4, append="console=hvc0 " + extra))
        rows["QEMU (freeze tree)"].append(boot_process(s.qemu(4, extra), 60 + sleep))
    for name, boots in rows.items():
        for b in boots:
            print(f"  {name:<26} {idle_text(b.idle) if b.ok else b.reached()}")
        shares = [b.idle.share(b.idle.process) for b in boots if b.ok and b.idle is not None]
        if shares:
            verdict = ""
            if name.startswith("ours"):
                verdict = f": target < 5 %: {'met' if max(shares) < 5 else 'NOT met'}"
            print(f"  {'':<26} median {statistics.median(shares):.2f} %, max "
                  f"{max(shares):.2f} %{verdict}")


def item_reliability(s: Setup, n: int) -> None:
    print(f"\n== 5. Reliability: {n} boots in a row at -smp 4 (python -m machine), each to "
          "the init and power-off with exit status 0")
    boots = []
    for i in range(n):
        b = boot_process(s.ours(4), 60)
        boots.append(b)
        if not b.ok:
            print(f"  boot {i + 1} failed: {b.reached()}")
    ok = [b for b in boots if b.ok]
    print(f"  {len(ok)}/{n} succeeded")
    print(f"  init: median {spread(column(ok, 'init'))}; off: median {spread(column(ok, 'off'))}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="boots per figure (default 5)")
    ap.add_argument("--idle-runs", type=int, default=2, help="idle boots per machine (default 2)")
    ap.add_argument("--sleep", type=int, default=5, help="init.sleep for item 4 (default 5)")
    ap.add_argument("--reliability", type=int, default=20, help="boots in item 5 (default 20)")
    ap.add_argument("--no-reliability", action="store_true", help="skip item 5 (~40 s)")
    ap.add_argument("--qemu-hang-timeout", type=float, default=60,
                    help="seconds QEMU gets with the patched tree (it hangs at -smp 8)")
    ap.add_argument("--own-tree-timeout", type=float, default=30,
                    help="seconds QEMU gets with its own tree at -smp 2 (it hangs)")
    ap.add_argument("--contest-timeout", type=float, default=90,
                    help="seconds the contest boot with parking off gets")
    ap.add_argument("--kernel", type=Path, help="vmlinux (default: scripts/build-linux.sh)")
    ap.add_argument("--failures", type=Path, default=Path(tempfile.gettempdir()) / "bench-linux",
                    help="directory for the consoles of failed boots (default %(default)s)")
    args = ap.parse_args()
    global FAILURES
    FAILURES = args.failures / time.strftime("%Y%m%d-%H%M%S")
    if QEMU is None or DTC is None:
        sys.exit("needs qemu-system-ppc and dtc (apt-get install qemu-system-ppc "
                 "device-tree-compiler)")

    kernel = args.kernel or project_kernel()
    qemu_version = subprocess.run([QEMU, "--version"], capture_output=True,
                                  text=True).stdout.splitlines()[0]
    print(f"kernel {kernel} ({kernel.stat().st_size} bytes); {qemu_version}; "
          f"{os.cpu_count()} host CPUs; python {sys.version.split()[0]}")
    print(f"start: {loadavg()}")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-linux-") as tmp:
        initrd = Path(tmp) / "initrd.cpio"
        initrd.write_bytes(default_initramfs())
        s = Setup(kernel=kernel, initrd=initrd, tmp=Path(tmp))
        item_smp1(s, args.runs)
        item_smp_n(s, args.runs, args.qemu_hang_timeout, args.own_tree_timeout)
        item_contest(s, min(args.runs, 3), args.contest_timeout)
        item_idle(s, args.idle_runs, args.sleep)
        if not args.no_reliability:
            item_reliability(s, args.reliability)
    print(f"\nend: {loadavg()}; the benchmark took {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
