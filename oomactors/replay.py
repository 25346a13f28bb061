"""Replaying real kernel OOM reports: who the kernel killed, next to who each policy would.

``oomactors replay LOGFILE...`` reads kernel log text -- ``dmesg`` (with ``[ 1234.567890]``
or ``dmesg -T`` stamps), ``journalctl`` / syslog lines (``Mon DD HH:MM:SS host kernel: ...``),
a report pasted into a mail or an issue (``> `` quoting too) -- finds every OOM report in
it, rebuilds what ``out_of_memory()`` had in front of it, and asks kill policies the
kernel's question again.

A report is rebuilt from:

* the ``X invoked oom-killer: gfp_mask=..., order=N, oom_score_adj=M`` line (every
  variant since 2.6.36), which opens it; a task-table header, a memcg ``memory: usage``
  line or a kill line seen outside any report opens a partial one (a paste that starts
  in the middle, or a report cut short by the printk ratelimit);
* the kernel version from ``CPU: N PID: N Comm: X Not tainted|Tainted: ... VERSION #N``;
* ``NNN pages RAM``, ``NNN pages reserved`` and ``Total swap = NNNkB`` for a global OOM,
  or ``memory: usage NkB, limit NkB`` (with ``memory+swap:`` or ``swap:``) for a memcg one;
* the task table, whatever its layout: the header line names the columns (``nr_ptes``,
  ``nr_ptes nr_pmds``, ``pgtables_bytes``, ``rss_anon rss_file rss_shmem``, 2.6.36's
  ``cpu oom_adj``), so no layout is hard-coded;
* the constraint (``oom-kill:constraint=...``, or a memcg OOM's own lines);
* the kernel's victim: ``...: Kill process X (comm) score N or sacrifice child`` (what
  ``select_bad_process`` picked, up to 5.0) and ``[...: ]Killed process Y (comm) ...``
  (what died: a sacrificed child when Y is not X).

From the report an :class:`~policies.api.OomContext` is built -- one
:class:`~policies.api.TaskView` per table row, in table order, which is the kernel's scan
order -- and each policy is asked to choose.  ``linux`` chooses with the era of the kernel
that printed the report: the version it printed picks the profile
(:func:`profile_for_version`), else the table layout does (:func:`profile_for_layout`),
unless ``--profile`` names one.

What the log cannot say, and what is assumed instead (README, "What is simplified"):

* totalpages of a global OOM is ``totalram_pages() + total_swap_pages``; totalram counts
  managed pages, and ``pages RAM - pages reserved`` is exactly the managed pages of the
  zones show_mem printed (present - managed per zone), so T = RAM - reserved + swap.  A
  cpuset or mempolicy OOM's T (the allowed nodes' pages + swap) is not in the log: the
  global T stands in, with a note;
* a memcg OOM's T is its limit plus the swap it may use: ``min(swap.max, total swap)``
  (cgroup v2) or ``memsw.limit - limit`` capped by the total swap (v1).  A memcg report
  does not print the machine's swap size, so unless the same report printed
  ``Total swap`` the swap part is taken as 0 (note);
* pages are 4 KiB;
* uid 0 is taken to hold CAP_SYS_ADMIN (the 2.6.36-4.16 root bonus); the table has no
  capabilities column;
* the table has no parent/child links, so "sacrifice child" is not replayed: a policy is
  compared with the task ``select_bad_process`` picked (the ``Kill process`` line);
* no task is known to be an earlier OOM victim still exiting (a printed kill means the
  kernel did not abort), and threads are not listed, so ties resolve by table order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from policies import api

from .errors import InputError
from .kernel.profiles import DEFAULT_PROFILE, PROFILES

PAGE_SIZE = 4096
PAGE_KB = PAGE_SIZE // 1024
UNLIMITED_KB = 1 << 50  # a memcg limit this big is "max" (PAGE_COUNTER_MAX, RES_COUNTER_MAX)

# --- line prefixes ---------------------------------------------------------------------
_QUOTE = re.compile(r"^(?:[ \t]*>)+ ?")
_TIME = r"(?:[A-Za-z]{3}\s+\d{1,2}\s+\d{1,2}:\d\d:\d\d|\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d\S*)"
_SYSLOG_KERNEL = re.compile(rf"^{_TIME}\s+\S+\s+(?:<[^>]*>\s+)?kernel(?:\[\d+\])?:\s?")
_SYSLOG_HOST = re.compile(rf"^{_TIME}\s+\S+:\s?")
_BARE_KERNEL = re.compile(r"^kernel(?:\[\d+\])?:\s?")
_PRIORITY = re.compile(r"^<\d+>")
_STAMP = re.compile(r"^\[\s*\d+\.\d+\](?:\[\s*[TC]\d+\])?\s?")
_STAMP_T = re.compile(r"^\[[^\[\]]*\d{1,2}:\d\d:\d\d[^\[\]]*\]\s?")


def strip_prefixes(line: str) -> str:
    """The kernel's own text of a log line: without mail quoting, the syslog/journal
    time-host-tag, a printk priority and the dmesg time stamp (seconds or ``-T``)."""
    line = _QUOTE.sub("", line, count=1)
    for rx in (_SYSLOG_KERNEL, _SYSLOG_HOST, _BARE_KERNEL):
        new = rx.sub("", line, count=1)
        if new != line:
            line = new
            break
    line = _PRIORITY.sub("", line, count=1)
    new = _STAMP.sub("", line, count=1)
    if new == line:
        new = _STAMP_T.sub("", line, count=1)
    return new


# --- the kernel's lines ----------------------------------------------------------------
_INVOKED = re.compile(r"^(?P<comm>.*?) invoked oom-killer:(?P<rest>.*)$", re.IGNORECASE)
_GFP = re.compile(r"gfp_mask=(?P<mask>0x[0-9a-fA-F]+)(?:\((?P<flags>[^)]*)\))?")
_ORDER = re.compile(r"\border=(?P<order>-?\d+)")
_ADJ = re.compile(r"\boom_score_adj=(?P<adj>-?\d+)")
_NODEMASK = re.compile(r"\bnodemask=(?P<nodemask>.*?),\s+order=")
_CPU = re.compile(r"^CPU: \d+ (?:UID: \d+ )?PID: (?P<pid>\d+) Comm: (?P<comm>.*?) "
                  r"(?:Not tainted|Tainted:)[^\d]*?(?P<ver>\d+\.\d+\S*)")
_PID_OLD = re.compile(r"^Pid: (?P<pid>\d+), comm: (?P<comm>\S+)\s+(?:Not tainted|Tainted:)[^\d]*?"
                      r"(?P<ver>\d+\.\d+\S*)")
_RAM = re.compile(r"^(?P<n>\d+) pages RAM\s*$")
_RESERVED = re.compile(r"^(?P<n>\d+) pages reserved\s*$")
_SWAP_TOTAL = re.compile(r"^Total swap = (?P<kb>\d+)kB")
_MEMCG_MEM = re.compile(r"^memory: usage (?P<usage>\d+)kB, limit (?P<limit>\d+)kB")
_MEMCG_MEMSW = re.compile(r"^memory\+swap: usage (?P<usage>\d+)kB, limit (?P<limit>\d+)kB")
_MEMCG_SWAP = re.compile(r"^swap: usage (?P<usage>\d+)kB, limit (?P<limit>\d+)kB")
_MEMCG_STATS = re.compile(r"^Memory cgroup stats for (?P<path>\S+?):")
_TASK_IN = re.compile(r"^Task in (?P<task>\S+) killed as a result of limit of (?P<memcg>\S+)")
_TASKS_STATE = re.compile(r"^Tasks state \(memory values in pages\):")
_HEADER = re.compile(r"^(?P<pid>\[\s*pid\s*\])\s+(?P<cols>.*\bname)\s*$")
_ROW = re.compile(r"^\[\s*(?P<pid>[^\]]*?)\s*\]\s*(?P<rest>.*)$")
_SELECT = re.compile(r"^(?:(?P<msg>.*?): )?[Kk]ill process (?P<pid>\d+) \((?P<comm>.*)\) "
                     r"score (?P<score>-?\d+) (?:or sacrifice child|or a child|and children)")
_KILLED = re.compile(
    r"^(?:(?P<msg>.*?): )?Killed process (?P<pid>\d+) \((?P<comm>.*?)\)"
    r"(?:(?:,? UID:? ?\d+,?)? total-vm:(?P<total_vm>\d+)kB, anon-rss:(?P<anon>\d+)kB, "
    r"file-rss:(?P<file>\d+)kB(?:, shmem-rss:(?P<shmem>\d+)kB)?"
    r"(?:, UID:(?P<uid>\d+) pgtables:(?P<pgtables>\d+)kB oom_score_adj:(?P<adj>-?\d+))?.*"
    r"|\.?\s*)$")
_SUMMARY = re.compile(r"^oom-kill:(?P<body>.*)$")
_EXITING = re.compile(r"OOM victim (?P<pid>\d+) \((?P<comm>.*)\) is already exiting")
_GROUP = re.compile(r"^Tasks in (?P<path>\S+) are going to be killed due to memory\.oom\.group set")
_NO_KILLABLE = re.compile(r"Out of memory and no killable process")
_PANIC = re.compile(r"^Kernel panic - not syncing: (?P<msg>.*)$")

# column names of the task table, and the synonyms some kernels or patches used
_COLUMN_ALIASES = {"score_adj": "oom_score_adj", "swap": "swapents"}
_INT_COLUMNS = {"uid", "tgid", "total_vm", "rss", "rss_anon", "rss_file", "rss_shmem", "nr_ptes", "nr_pmds",
                "nr_puds", "pgtables_bytes", "swapents", "oom_score_adj", "cpu", "oom_adj", "ppid"}


@dataclass
class Row:
    """One task-table row (memory in pages, page tables in bytes)."""

    line: int
    pid: int
    values: dict[str, int]
    comm: str

    def get(self, key: str, default: int = 0) -> int:
        return self.values.get(key, default)

    @property
    def pgtables_bytes(self) -> int:
        if "pgtables_bytes" in self.values:
            return self.values["pgtables_bytes"]
        pages = self.get("nr_ptes") + self.get("nr_pmds") + self.get("nr_puds")
        return pages * PAGE_SIZE

    def view(self) -> api.TaskView:
        uid = self.get("uid", 0)
        if "rss_anon" in self.values:
            anon, file, shmem = self.get("rss_anon"), self.get("rss_file"), self.get("rss_shmem")
        else:
            anon, file, shmem = self.get("rss"), 0, 0
        caps = frozenset({"CAP_SYS_ADMIN"}) if uid == 0 else frozenset()
        return api.TaskView(pid=self.pid, tgid=self.get("tgid", self.pid), comm=self.comm, uid=uid,
                            oom_score_adj=self.get("oom_score_adj"), rss_anon=anon, rss_file=file,
                            rss_shmem=shmem, swapents=self.get("swapents"),
                            pgtables_bytes=self.pgtables_bytes, total_vm=self.get("total_vm"), caps=caps)


@dataclass
class Kill:
    """A kill line: what select_bad_process picked (``score``) or what died."""

    line: int
    pid: int
    comm: str
    message: str | None = None
    score: int | None = None
    uid: int | None = None


@dataclass
class Report:
    """One OOM report as the log has it."""

    file: str
    line: int
    end_line: int = 0
    partial: bool = False                  # no "invoked oom-killer" line
    comm: str | None = None                # the invoking task
    pid: int | None = None
    gfp_mask: int | None = None
    gfp_flags: str | None = None
    order: int | None = None
    oom_score_adj: int | None = None
    nodemask: str | None = None
    kernel_version: str | None = None
    ram_pages: int | None = None
    reserved_pages: int | None = None
    swap_total_kb: int | None = None
    memcg_limit_kb: int | None = None
    memcg_memsw_limit_kb: int | None = None
    memcg_swap_limit_kb: int | None = None
    memcg: str | None = None
    memcg_oom: bool = False
    constraint: str | None = None          # as the oom-kill: line printed it
    header: str | None = None              # the task-table header as printed
    columns: list[str] = field(default_factory=list)
    tasks_state: bool = False
    rows: list[Row] = field(default_factory=list)
    selected: Kill | None = None           # "Kill process X ... or sacrifice child"
    killed: Kill | None = None             # "Killed process Y ..."
    summary: Kill | None = None            # the oom-kill: line's task=,pid=,uid=
    group_kills: list[Kill] = field(default_factory=list)
    allocating_task: bool = False
    skipped_lines: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    closed: bool = False
    in_table: bool = False
    group_marker: bool = False

    # --- what the report says ---------------------------------------------------------
    @property
    def layout(self) -> str | None:
        """The memory columns of the task table between rss and swapents."""
        if not self.columns:
            return None
        known = ("rss_anon", "rss_file", "rss_shmem", "nr_ptes", "nr_pmds", "nr_puds", "pgtables_bytes",
                 "cpu", "oom_adj")
        return " ".join(c for c in self.columns if c in known) or None

    @property
    def constraint_name(self) -> str:
        if self.memcg_oom:
            return "CONSTRAINT_MEMCG"
        return self.constraint or "CONSTRAINT_NONE"

    @property
    def victim_selected(self) -> Kill | None:
        """What select_bad_process picked: the Kill-process line, else the one killed."""
        return self.selected or self.killed or self.summary

    def totalpages(self) -> tuple[int | None, str]:
        """oc->totalpages and how it was worked out."""
        swap_pages = self.swap_total_kb // PAGE_KB if self.swap_total_kb is not None else None
        if self.constraint_name == "CONSTRAINT_MEMCG":
            if self.memcg_limit_kb is None:
                return self._estimate("the memcg limit is not in the report")
            limit = self.memcg_limit_kb // PAGE_KB
            if self.memcg_swap_limit_kb is not None:           # cgroup v2: swap.max
                allow, what = self.memcg_swap_limit_kb // PAGE_KB, "swap.max"
                if self.memcg_swap_limit_kb >= UNLIMITED_KB:
                    allow, what = UNLIMITED_KB, "swap.max (unlimited)"
            elif self.memcg_memsw_limit_kb is not None:        # cgroup v1: memsw - mem
                allow, what = max(0, (self.memcg_memsw_limit_kb - self.memcg_limit_kb) // PAGE_KB), \
                    "memsw.limit - limit"
                if self.memcg_memsw_limit_kb >= UNLIMITED_KB:
                    allow, what = UNLIMITED_KB, "memsw.limit (unlimited)"
            elif swap_pages:                                  # swap.limit unset: all swap
                return max(1, limit + swap_pages), f"memcg limit {limit} + swap {swap_pages}"
            else:
                allow, what = 0, None
            if what is None or allow == 0:
                return max(1, limit), f"memcg limit {limit}"
            if swap_pages is None:
                allows = "" if allow >= UNLIMITED_KB else f" {allow}"
                return max(1, limit), (f"memcg limit {limit} + swap taken as 0 (the machine's swap size is "
                                       f"not in the report; {what}{allows})")
            extra = min(allow, swap_pages)
            return max(1, limit + extra), f"memcg limit {limit} + min({what} {allow}, swap {swap_pages})"
        if self.ram_pages is None:
            return self._estimate("the report has no 'pages RAM' line")
        reserved = self.reserved_pages or 0
        swap = swap_pages or 0
        how = f"RAM {self.ram_pages} - reserved {reserved} + swap {swap}"
        if self.constraint_name in ("CONSTRAINT_CPUSET", "CONSTRAINT_MEMORY_POLICY"):
            how += " (the whole machine: the allowed nodes' size is not in the report)"
        return max(1, self.ram_pages - reserved + swap), how

    def _estimate(self, why: str) -> tuple[int | None, str]:
        if not self.rows:
            return None, why
        total = sum(r.view().rss + r.get("swapents") + r.pgtables_bytes // PAGE_SIZE for r in self.rows)
        return max(1, total), f"estimated as the tasks' own pages ({why})"


# --- parsing ---------------------------------------------------------------------------
@dataclass(frozen=True)
class LogWarning:
    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


def _logical_lines(text: str) -> Iterable[tuple[int, str]]:
    for n, raw in enumerate(text.splitlines(), start=1):
        if raw.lstrip().startswith("#"):
            continue  # comments: the source notes of our test data, and shell prompts
        # rsyslog escapes the newlines of multi-line printk records as #012
        for part in raw.split("#012"):
            yield n, part


def parse_log(text: str, file: str = "<log>") -> tuple[list[Report], list[LogWarning]]:
    """Every OOM report in ``text`` (a log file's contents), and the lines skipped."""
    reports: list[Report] = []
    warnings: list[LogWarning] = []
    cur: Report | None = None

    def warn(n: int, msg: str) -> None:
        warnings.append(LogWarning(file, n, msg))
        if cur is not None:
            cur.skipped_lines.append(n)

    def start(n: int, partial: bool) -> Report:
        nonlocal cur
        if cur is not None:
            cur.closed = True
        cur = Report(file=file, line=n, end_line=n, partial=partial)
        reports.append(cur)
        return cur

    for n, raw in _logical_lines(text):
        line = strip_prefixes(raw).rstrip()
        body = line.strip()
        if not body:
            continue
        open_ = cur is not None and not cur.closed

        m = _INVOKED.match(body)
        if m:
            rep = start(n, partial=False)
            rep.comm = m["comm"].strip()
            rest = m["rest"]
            g, o, a = _GFP.search(rest), _ORDER.search(rest), _ADJ.search(rest)
            if g:
                rep.gfp_mask, rep.gfp_flags = int(g["mask"], 16), g["flags"]
            if o:
                rep.order = int(o["order"])
            if a:
                rep.oom_score_adj = int(a["adj"])
            nm = _NODEMASK.search(rest)
            if nm:
                rep.nodemask = nm["nodemask"]
            if not (g and o):
                warn(n, "could not read gfp_mask/order from the 'invoked oom-killer' line")
            continue

        # a table row (or what should be one) while a task table is being read
        header = _HEADER.match(body)
        if open_ and cur.in_table and body.startswith("[") and header is None:
            _table_row(cur, n, body, warn)
            cur.end_line = n
            continue
        if open_ and cur.in_table:
            cur.in_table = False

        if header is not None:
            if not open_ or cur.rows:
                start(n, partial=True)  # a table without its report's first lines
            cols = [_COLUMN_ALIASES.get(c, c) for c in header["cols"].split()]
            if "rss" not in cols or cols[-1] != "name":
                warn(n, "unrecognised task-table header")
                continue
            cur.header, cur.columns, cur.in_table = body, cols, True
            cur.end_line = n
            continue

        m = _SELECT.match(body)
        if m:
            if not open_ or cur.selected is not None:
                start(n, partial=True)
            cur.selected = Kill(n, int(m["pid"]), m["comm"], m["msg"], int(m["score"]))
            _note_message(cur, m["msg"])
            cur.end_line = n
            continue

        if "Killed process" in body:
            m = _KILLED.match(body)
            if not m:
                warn(n, "could not read a 'Killed process' line")
                continue
            kill = Kill(n, int(m["pid"]), m["comm"], m["msg"], uid=int(m["uid"]) if m["uid"] else None)
            if cur is not None and cur.closed and cur.group_marker:
                cur.group_kills.append(kill)  # memory.oom.group: the rest of the group
                cur.end_line = n
                continue
            if not open_:
                start(n, partial=True)
            cur.killed = kill
            _note_message(cur, m["msg"])
            cur.closed = True
            cur.end_line = n
            continue

        m = _GROUP.match(body)
        if m and cur is not None:
            cur.group_marker = True
            cur.end_line = n
            continue

        m = _MEMCG_MEM.match(body)
        if m:
            if not open_ or cur.memcg_limit_kb is not None:
                start(n, partial=True)
            cur.memcg_oom = True
            cur.memcg_limit_kb = int(m["limit"])
            cur.end_line = n
            continue

        if (m := _PANIC.match(body)) is not None and cur is not None:
            cur.notes.append(f"the kernel panicked: {m['msg']}")
            cur.closed = True
            continue
        if not open_:
            continue  # outside a report: call traces, page allocation failures, ...
        cur.end_line = n
        if (m := _CPU.match(body) or _PID_OLD.match(body)) is not None:
            if cur.kernel_version is None:
                cur.kernel_version = m["ver"]
                cur.pid = int(m["pid"])
                if cur.comm is None:
                    cur.comm = m["comm"]
        elif (m := _RAM.match(body)) is not None:
            cur.ram_pages = int(m["n"])
        elif (m := _RESERVED.match(body)) is not None:
            cur.reserved_pages = int(m["n"])
        elif (m := _SWAP_TOTAL.match(body)) is not None:
            cur.swap_total_kb = int(m["kb"])
        elif (m := _MEMCG_MEMSW.match(body)) is not None:
            cur.memcg_memsw_limit_kb = int(m["limit"])
        elif (m := _MEMCG_SWAP.match(body)) is not None:
            cur.memcg_swap_limit_kb = int(m["limit"])
        elif (m := _MEMCG_STATS.match(body)) is not None:
            if cur.memcg is None:
                cur.memcg = m["path"]
        elif (m := _TASK_IN.match(body)) is not None:
            cur.memcg_oom = True
            cur.memcg = m["memcg"]
        elif _TASKS_STATE.match(body):
            cur.tasks_state = True
        elif (m := _SUMMARY.match(body)) is not None:
            _summary_line(cur, n, m["body"], warn)
        elif (m := _EXITING.search(body)) is not None:
            cur.notes.append(f"the kernel's choice, {m['comm']} ({m['pid']}), was already exiting: "
                             "nothing was killed")
            cur.selected = Kill(n, int(m["pid"]), m["comm"])
            cur.closed = True
        elif _NO_KILLABLE.search(body):
            cur.notes.append("the kernel found no killable process")
            cur.closed = True
    return reports, warnings


def _table_row(rep: Report, n: int, body: str, warn: Any) -> None:
    m = _ROW.match(body)
    numeric = rep.columns[:-1]
    if m is None or not m["pid"].isdigit():
        warn(n, f"skipped an unreadable task-table row: {body[:60]!r}")
        return
    parts = m["rest"].split(None, len(numeric))
    if len(parts) != len(numeric) + 1:
        warn(n, f"skipped a task-table row with {len(parts)} fields (the header has {len(numeric) + 1}): "
                f"{body[:60]!r}")
        return
    values: dict[str, int] = {}
    for col, text in zip(numeric, parts):
        try:
            values[col] = int(text)
        except ValueError:
            if col in _INT_COLUMNS:
                warn(n, f"skipped a task-table row: {col} is {text!r}, not a number")
                return
    rep.rows.append(Row(n, int(m["pid"]), values, parts[-1].strip()))


def _note_message(rep: Report, msg: str | None) -> None:
    if not msg:
        return
    if msg.startswith("Memory cgroup out of memory"):
        rep.memcg_oom = True
    if "oom_kill_allocating_task" in msg:
        rep.allocating_task = True


def _summary_line(rep: Report, n: int, body: str, warn: Any) -> None:
    """``oom-kill:constraint=...,nodemask=...,cpuset=...,mems_allowed=...,
    global_oom|oom_memcg=...,task_memcg=...,task=...,pid=...,uid=...`` (5.0+)."""
    c = re.search(r"constraint=(\w+)", body)
    if c:
        rep.constraint = c[1]
    memcg = re.search(r"(?:^|,)oom_memcg=([^,]*)", body)
    if memcg:
        rep.memcg_oom = True
        rep.memcg = memcg[1]
    if rep.constraint == "CONSTRAINT_MEMCG":
        rep.memcg_oom = True
    t = re.search(r",task=(?P<comm>.*),pid=(?P<pid>\d+),uid=(?P<uid>\d+)\s*$", body)
    if t:
        rep.summary = Kill(n, int(t["pid"]), t["comm"], uid=int(t["uid"]))
    elif not c:
        warn(n, "could not read the oom-kill: summary line")


# --- kernel eras -----------------------------------------------------------------------
def _version_tuple(version: str) -> tuple[int, int, int] | None:
    m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", version)
    if not m:
        return None
    return int(m[1]), int(m[2]), int(m[3] or 0)


def profile_for_version(version: str) -> str | None:
    """The profile whose badness the kernel ``version`` used (None: not a version)."""
    v = _version_tuple(version)
    if v is None:
        return None
    if v < (2, 5, 0):
        return "linux-2.4"
    if v < (3, 5, 0):
        # 2.6.36-3.4; older 2.6 kernels come here too: RHEL 6's 2.6.32 carries the rewrite
        return "linux-2.6.36"
    if v < (3, 14, 0):
        return "linux-3.10"
    if v < (4, 17, 0):
        return "linux-4.14"
    if v < (5, 9, 0):
        return "linux-4.19"
    if v < (5, 18, 0):
        return "linux-5.10"
    return "linux-6.12"


def profile_for_layout(rep: Report) -> tuple[str, str]:
    """The era a report without a kernel version most likely comes from, from how its
    task table and kill lines look (kernel-oom-killer.md §10.6 and §10.8)."""
    cols = set(rep.columns)
    wide_pid = rep.header is not None and rep.header.startswith("[  pid  ]")
    if "rss_anon" in cols:
        return "linux-6.12", "table layout: rss_anon/rss_file/rss_shmem columns (6.8+)"
    if "pgtables_bytes" in cols and (wide_pid or rep.tasks_state):
        if rep.selected is not None and rep.killed is not None:
            return "linux-4.19", "table layout: 7-wide pid and a 'sacrifice child' line (4.19-5.0)"
        return "linux-5.10", "table layout: 7-wide pid column (4.19+; 5.9+ assumed)"
    if "pgtables_bytes" in cols:
        return "linux-4.19", "table layout: pgtables_bytes with a 5-wide pid (4.15-4.18)"
    if "nr_pmds" in cols:
        return "linux-4.14", "table layout: nr_ptes and nr_pmds (4.1-4.14)"
    if "nr_ptes" in cols:
        return "linux-3.10", "table layout: nr_ptes without nr_pmds (3.x-4.0)"
    if "oom_adj" in cols or "cpu" in cols:
        return "linux-2.6.36", "table layout: cpu and oom_adj columns (2.6.36-3.x)"
    if rep.selected is not None:
        return "linux-4.19", "a 'sacrifice child' kill line and no task table (2.6.36-5.0; 4.19 assumed)"
    return DEFAULT_PROFILE, "default: no kernel version and no task table"


def choose_profile(rep: Report, override: str | None) -> tuple[str, str]:
    if override is not None:
        return override, "--profile"
    if rep.kernel_version is not None:
        name = profile_for_version(rep.kernel_version)
        if name is not None:
            return name, "kernel version"
    name, why = profile_for_layout(rep)
    return name, why


# --- replaying -------------------------------------------------------------------------
_PER_MILLE_ERAS = {"linux-3.10", "linux-4.14", "linux-4.19"}


def shown_points(policy: Any, profile: str, points: int, totalpages: int) -> tuple[int, str]:
    """A policy's points on the scale the era's console printed its ``score`` in: 2.6.36's
    badness is already per mille; 3.5-5.0 printed points*1000/totalpages; 2.4 and 5.1+
    printed none, so the raw badness in pages.  Non-kernel policies keep their own."""
    from policies.linux import Linux

    if not isinstance(policy, Linux):
        return points, "policy"
    era = policy.era or profile
    if era in _PER_MILLE_ERAS:
        return max(0, points) * 1000 // max(1, totalpages), "per-mille"
    if era == "linux-2.6.36":
        return points, "per-mille"
    return points, "pages"


def build_context(rep: Report, profile: str, totalpages: int) -> api.OomContext:
    views = tuple(r.view() for r in rep.rows)
    current = next((v for v in views if rep.pid is not None and v.pid == rep.pid), None)
    if current is None:
        flags = frozenset({api.KTHREAD}) if rep.comm and rep.comm.startswith("kworker") else frozenset()
        current = api.TaskView(pid=rep.pid or 0, tgid=rep.pid or 0, comm=rep.comm or "?",
                               oom_score_adj=rep.oom_score_adj or 0, flags=flags)
    gfp = rep.gfp_flags or (f"{rep.gfp_mask:#x}" if rep.gfp_mask is not None else "")
    return api.OomContext(constraint=rep.constraint_name, totalpages=totalpages, gfp_mask=rep.gfp_mask or 0,
                          gfp=gfp, order=rep.order if rep.order is not None else 0, current=current,
                          memcg=rep.memcg if rep.constraint_name == "CONSTRAINT_MEMCG" else None,
                          profile=profile, candidates=views)


def load_policies(names: Sequence[str]) -> list[tuple[str, Any]]:
    from policies.registry import load_policy

    out = []
    for name in names:
        policy = load_policy(name)
        if getattr(policy, "kind", None) != "kernel":
            raise api.PolicyError(f"policy {name!r} is a userspace daemon: replay asks kernel-side "
                                  "policies (see `oomactors policies`)")
        out.append((name, policy))
    return out


def _choose(name: str, policy: Any, ctx: api.OomContext, rep: Report, profile: str) -> dict[str, Any]:
    try:
        decision = policy.select(ctx)
    except Exception as exc:  # noqa: BLE001 - the user's policy, reported by name
        raise api.PolicyError(f"policy {name!r} raised {type(exc).__name__}: {exc} "
                              f"(report at {rep.file}:{rep.line})") from exc
    if isinstance(decision, api.Kill):
        view = ctx.by_pid(decision.pid) if isinstance(decision.pid, int) else None
        if view is None or not isinstance(decision.points, int):
            raise api.PolicyError(f"policy {name!r} answered {decision!r}, which names none of the "
                                  f"{len(ctx.candidates)} tasks of the report at {rep.file}:{rep.line}")
        points, scale = shown_points(policy, profile, decision.points, ctx.totalpages)
        selected = rep.victim_selected
        return {"pid": view.pid, "comm": view.comm, "points": points, "badness": decision.points,
                "scale": scale, "whole_cgroup": decision.whole_cgroup,
                "agrees": selected.pid == view.pid if selected is not None else None}
    if isinstance(decision, api.Abort):
        return {"pid": None, "comm": None, "points": None, "decision": f"abort: {decision.reason}"}
    if isinstance(decision, api.NothingKillable):
        return {"pid": None, "comm": None, "points": None, "decision": "nothing killable"}
    raise api.PolicyError(f"policy {name!r} returned {decision!r}: expected Kill, Abort or NothingKillable")


def replay_report(rep: Report, index: int, policies: Sequence[tuple[str, Any]],
                  profile_override: str | None = None) -> dict[str, Any]:
    """One report, rebuilt and asked again: the JSON-ready record ``replay --json`` prints."""
    profile, profile_source = choose_profile(rep, profile_override)
    totalpages, how = rep.totalpages()
    notes = list(rep.notes)
    if rep.partial:
        notes.append("partial report: no 'invoked oom-killer' line")
    if rep.selected is not None and rep.killed is not None and rep.selected.pid != rep.killed.pid:
        notes.append(f"the kernel selected {rep.selected.comm} ({rep.selected.pid}) and sacrificed its child "
                     f"{rep.killed.comm} ({rep.killed.pid}); policies are compared with the selection")
    if rep.allocating_task:
        notes.append("vm.oom_kill_allocating_task: the kernel killed the allocating task without a scan")
    choices: dict[str, Any] = {}
    if not rep.rows or totalpages is None:
        why = "no task table" if not rep.rows else "totalpages unknown"
        notes.append("no task table (oom_dump_tasks off, the report rate-limited, or trimmed): no policy "
                     "can choose" if not rep.rows else f"totalpages unknown: {how}")
        for name, _policy in policies:
            choices[name] = {"pid": None, "comm": None, "points": None, "decision": why}
    else:
        ctx = build_context(rep, profile, totalpages)
        for name, policy in policies:
            choices[name] = _choose(name, policy, ctx, rep, profile)
    selected = rep.victim_selected
    victim = None
    if selected is not None:
        died = rep.killed or selected
        victim = {"pid": died.pid, "comm": died.comm,
                  "score": rep.selected.score if rep.selected is not None else None,
                  "selected": {"pid": selected.pid, "comm": selected.comm},
                  "sacrificed_child": died.pid != selected.pid,
                  "message": next((k.message for k in (rep.killed, rep.selected) if k and k.message), None)}
        if rep.group_kills:
            victim["group"] = [{"pid": k.pid, "comm": k.comm} for k in rep.group_kills]
    return {
        "index": index,
        "file": rep.file,
        "line": rep.line,
        "end_line": rep.end_line,
        "kernel_version": rep.kernel_version,
        "profile": profile,
        "profile_source": profile_source,
        "constraint": rep.constraint_name,
        "memcg": rep.memcg,
        "totalpages": totalpages,
        "totalpages_source": how,
        "invoking_task": {"pid": rep.pid, "comm": rep.comm, "oom_score_adj": rep.oom_score_adj,
                          "gfp_mask": f"{rep.gfp_mask:#x}" if rep.gfp_mask is not None else None,
                          "gfp_flags": rep.gfp_flags, "order": rep.order},
        "table_layout": rep.layout,
        "tasks": len(rep.rows),
        "kernel_victim": victim,
        "choices": choices,
        "skipped_lines": list(rep.skipped_lines),
        "notes": notes,
    }


def read_log(path: str) -> str:
    try:
        data = Path(path).read_bytes()
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, not a log file") from None
    except OSError as err:
        raise InputError(f"{path}: cannot read: {err.strerror or err}") from None
    return data.decode("utf-8", errors="replace")


def replay_files(paths: Sequence[str], policy_names: Sequence[str] = ("linux",),
                 profile: str | None = None) -> tuple[list[dict[str, Any]], list[LogWarning]]:
    """Every report of every file, replayed with each policy; and the skipped lines.

    Raises InputError for an unreadable file, a file without an OOM report, an unknown
    profile or policy."""
    if profile is not None and profile not in PROFILES:
        raise InputError(f"--profile: unknown profile {profile!r} (known: {', '.join(PROFILES)})")
    policies = load_policies(list(policy_names) or ["linux"])
    parsed = []
    warnings: list[LogWarning] = []
    for path in paths:
        reports, warns = parse_log(read_log(path), path)
        if not reports:
            raise InputError(f"{path}: no OOM report found (no 'invoked oom-killer' line, task table or "
                             "'Killed process' line)")
        parsed.extend(reports)
        warnings.extend(warns)
    results = [replay_report(rep, i, policies, profile) for i, rep in enumerate(parsed, start=1)]
    return results, warnings
