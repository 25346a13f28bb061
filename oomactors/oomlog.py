"""Reading OOM reports out of kernel logs as people paste them.

A log is dmesg text, journalctl or syslog lines, a serial console capture or a report
quoted in a mail or an issue: prefixes are stripped, lines are read in order, and every
OOM report in it is rebuilt as a :class:`Report` (what ``out_of_memory()`` printed about
its situation: the invoking task, the machine's or memcg's size, the task table, the
kernel's choice).  :mod:`oomactors.replay` asks policies the kernel's question again from
those reports.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable

from policies import api

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
