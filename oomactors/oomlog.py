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
from typing import Any, Iterable, Sequence

from policies import api

PAGE_SIZE = 4096
PAGE_KB = PAGE_SIZE // 1024
UNLIMITED_KB = 1 << 50  # a memcg limit this big is "max" (PAGE_COUNTER_MAX, RES_COUNTER_MAX)

# --- line prefixes ---------------------------------------------------------------------
_QUOTE = re.compile(r"^(?:[ \t]*>)+ ?")
_CLOCK = r"\d{1,2}:\d\d:\d\d(?:[.,]\d+)?"
# syslog / journalctl (short, short-precise, short-full, short-iso[-precise], RFC 3339)
_TIME = (rf"(?:(?:[A-Za-z]{{3}},?\s+)?(?:[A-Za-z]{{3}}\s+\d{{1,2}}|\d{{4}}-\d\d-\d\d)[T ]\s*{_CLOCK}"
         rf"(?:Z|[+-]\d\d:?\d\d)?(?:\s+[A-Z]{{2,5}})?)")
_SYSLOG_KERNEL = re.compile(rf"^{_TIME}\s+\S+\s+(?:<[^>]*>\s+)?kernel(?:\[\d+\])?:\s?(?::\s?)?")
_SYSLOG_HOST = re.compile(rf"^{_TIME}\s+\S+:\s?")
_MONO_KERNEL = re.compile(r"^\[\s*\d+\.\d+\]\s+\S+\s+kernel(?:\[\d+\])?:\s?")  # journalctl -o short-monotonic
_BARE_KERNEL = re.compile(r"^kernel(?:\[\d+\])?:\s?")
_PRIORITY = re.compile(r"^<\d+>")
_STAMP = re.compile(r"^\[\s*(?P<secs>\d+\.\d+)\](?:\s*\[\s*[TC]\d+\])?\s?")
_CALLER = re.compile(r"^\[\s*[TC]\d+\]\s?")   # CONFIG_PRINTK_CALLER without a time stamp
_STAMP_T = re.compile(r"^\[[^\[\]]*\d{1,2}:\d\d:\d\d[^\[\]]*\]\s?")
_HMS = re.compile(r"(\d{1,2}):(\d\d):(\d\d(?:[.,]\d+)?)")


def _clock_seconds(text: str) -> float | None:
    m = _HMS.search(text)
    if m is None:
        return None
    return int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3].replace(",", "."))


def split_prefixes(line: str) -> tuple[float | None, str]:
    """The time a log line carries (seconds: dmesg's own stamp, else the syslog clock of
    the day; None without either) and the kernel's own text: without indentation, mail
    quoting, the syslog/journal time-host-tag, a printk priority, the dmesg time stamp
    (seconds or ``-T``) and the printk caller id."""
    stamp = None
    line = _QUOTE.sub("", line.lstrip(), count=1)
    for rx in (_SYSLOG_KERNEL, _MONO_KERNEL, _SYSLOG_HOST, _BARE_KERNEL):
        m = rx.match(line)
        if m is not None:
            stamp = _clock_seconds(m[0])
            mono = re.match(r"\[\s*(\d+\.\d+)\]", m[0])
            if mono is not None:
                stamp = float(mono[1])
            line = line[m.end():]
            break
    line = _PRIORITY.sub("", line.lstrip(), count=1)
    m = _STAMP.match(line)
    if m is not None:
        return float(m["secs"]), line[m.end():]
    m = _STAMP_T.match(line)
    if m is not None:
        return _clock_seconds(m[0]), line[m.end():]
    return stamp, _CALLER.sub("", line, count=1)


def strip_prefixes(line: str) -> str:
    """The kernel's own text of a log line (see :func:`split_prefixes`)."""
    return split_prefixes(line)[1]


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
_KILLED_ANY = re.compile(r"\bKilled process \d+ ")
_REAPED = re.compile(r"^oom_reaper: reaped process")

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
    stamp: float | None = None


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
    first_stamp: float | None = None       # the log's time of its first and last line
    last_stamp: float | None = None
    tentative: bool = False                # opened by a line other dumps print too (CPU:, Mem-Info:)
    interleaved: list[int] = field(default_factory=list)  # foreign lines inside the table
    merged: list[str] = field(default_factory=list)       # fragments put back together

    def saw(self, n: int, stamp: float | None) -> None:
        self.end_line = max(self.end_line, n)
        if stamp is not None:
            if self.first_stamp is None:
                self.first_stamp = stamp
            self.last_stamp = stamp

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
        return _at_least_one(self.ram_pages - reserved + swap, how)

    def _estimate(self, why: str) -> tuple[int | None, str]:
        if not self.rows:
            return None, why
        total = sum(r.view().rss + r.get("swapents") + r.pgtables_bytes // PAGE_SIZE for r in self.rows)
        return max(1, total), f"estimated as the tasks' own pages ({why})"


def _at_least_one(total: int, how: str) -> tuple[int, str]:
    """totalpages is a divisor: a report whose figures leave none (reserved above RAM,
    0 pages RAM) is taken as 1 page -- and the note says so."""
    if total >= 1:
        return total, how
    return 1, f"{how} = {total}, not a page: taken as 1 (the report's figures are inconsistent)"


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
    parser = _Parser(file)
    for n, raw in _logical_lines(text):
        stamp, line = split_prefixes(raw)
        body = line.strip()
        if body:
            parser.feed(n, stamp, body)
    parser.end_table()
    reports = [r for r in parser.reports if not r.tentative or r.rows or _kill_of(r) or r.memcg_limit_kb is not None]
    return _put_back_together(reports), parser.warnings


# Lines that may follow a task table in its own report: the table has ended when one comes.
# Anything else inside a table is other console output written between its rows (another
# CPU's printk, a getty or systemd on a serial console) and is passed over.
_AFTER_TABLE = (_SUMMARY, _SELECT, _GROUP, _PANIC, _MEMCG_MEM, _KILLED_ANY, _REAPED, _NO_KILLABLE, _EXITING)
_NOISE_LIMIT = 8   # this many foreign lines in a row: the table has ended (a report cut short)
_PENDING_LIMIT = 3  # lines a row cut short waits for the rest of its text


class _Parser:
    def __init__(self, file: str) -> None:
        self.file = file
        self.reports: list[Report] = []
        self.warnings: list[LogWarning] = []
        self.cur: Report | None = None
        self.pending: tuple[int, str, int] | None = None   # line, text, lines waited
        self.noise = 0

    def warn(self, n: int, msg: str) -> None:
        self.warnings.append(LogWarning(self.file, n, msg))
        if self.cur is not None:
            self.cur.skipped_lines.append(n)

    def start(self, n: int, stamp: float | None, partial: bool) -> Report:
        self.end_table()
        if self.cur is not None:
            self.cur.closed = True
        self.cur = Report(file=self.file, line=n, end_line=n, partial=partial)
        self.cur.saw(n, stamp)
        self.reports.append(self.cur)
        return self.cur

    # --- the task table ---------------------------------------------------------------
    def end_table(self) -> None:
        if self.pending is not None:
            n, text, _ = self.pending
            self.pending = None
            self.warn(n, _read_row(self.cur.columns, n, text))
        if self.cur is not None:
            self.cur.in_table = False
        self.noise = 0

    def table_line(self, n: int, stamp: float | None, body: str) -> bool:
        """Take a line met while a task table is open; False: the table has ended."""
        cur = self.cur
        if _ROW_START.match(body):
            if self.pending is not None:
                pn, text, _ = self.pending
                self.pending = None
                self.warn(pn, _read_row(cur.columns, pn, text))
            row = _read_row(cur.columns, n, body)
            if isinstance(row, Row):
                cur.rows.append(row)
            elif _row_fields(cur.columns, body) < len(cur.columns):
                self.pending = (n, body, 0)   # perhaps cut by other output: wait for the rest
            else:
                self.warn(n, row)
            self.noise = 0
            cur.saw(n, stamp)
            return True
        if _HEADER.match(body) or any(rx.search(body) for rx in _AFTER_TABLE) or _INVOKED.match(body):
            self.end_table()
            return False
        if self.pending is not None:
            pn, text, waited = self.pending
            for joined in (text + body, f"{text} {body}"):   # cut inside a field, or between two
                row = _read_row(cur.columns, pn, joined)
                if isinstance(row, Row):
                    cur.rows.append(row)
                    cur.merged.append(f"the row of pid {row.pid} at line {pn} was cut by other console "
                                      f"output; its rest is at line {n}")
                    self.pending = None
                    cur.saw(n, stamp)
                    return True
            self.pending = (pn, text, waited + 1) if waited + 1 < _PENDING_LIMIT else None
            if self.pending is None:
                self.warn(pn, _read_row(cur.columns, pn, text))
        self.noise += 1
        if self.noise > _NOISE_LIMIT:
            cur.interleaved = cur.interleaved[:-_NOISE_LIMIT]
            self.end_table()
            return False
        cur.interleaved.append(n)
        return True

    # --- one line ---------------------------------------------------------------------
    def feed(self, n: int, stamp: float | None, body: str) -> None:
        cur = self.cur
        m = _INVOKED.match(body)
        if m:
            rep = self.start(n, stamp, partial=False)
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
                self.warn(n, "could not read gfp_mask/order from the 'invoked oom-killer' line")
            return
        if cur is not None and cur.in_table and self.table_line(n, stamp, body):
            return
        open_ = cur is not None and not cur.closed

        if _ROW_START.match(body) and (cols := _headerless_columns(body, cur)) is not None:
            if not open_ or cur.rows:
                cur = self.start(n, stamp, partial=True)
            cur.columns, cur.in_table, cur.header = cols, True, None
            cur.notes.append(f"the task table has no header line: its {len(cols)} columns were taken as "
                             f"{' '.join(cols[4:-3])} from the rows' shape")
            self.table_line(n, stamp, body)
            return

        header = _HEADER.match(body)
        if header is not None:
            if not open_ or cur.rows:
                cur = self.start(n, stamp, partial=True)  # a table without its report's first lines
            cols = [_COLUMN_ALIASES.get(c, c) for c in header["cols"].split()]
            if "rss" not in cols or cols[-1] != "name":
                self.warn(n, "unrecognised task-table header")
                return
            cur.header, cur.columns, cur.in_table = body, cols, True
            cur.saw(n, stamp)
            return

        m = _SELECT.match(body)
        if m:
            if not open_ or cur.selected is not None:
                cur = self.start(n, stamp, partial=True)
            cur.selected = Kill(n, int(m["pid"]), m["comm"], m["msg"], int(m["score"]), stamp=stamp)
            _note_message(cur, m["msg"])
            cur.saw(n, stamp)
            return

        if "Killed process" in body:
            m = _KILLED.match(body)
            if not m:
                self.warn(n, "could not read a 'Killed process' line")
                return
            kill = Kill(n, int(m["pid"]), m["comm"], m["msg"], uid=int(m["uid"]) if m["uid"] else None,
                        stamp=stamp)
            if cur is not None and cur.closed and cur.group_marker:
                cur.group_kills.append(kill)  # memory.oom.group: the rest of the group
                cur.saw(n, stamp)
                return
            if not open_ or cur.killed is not None:
                cur = self.start(n, stamp, partial=True)
            cur.killed = kill
            _note_message(cur, m["msg"])
            cur.closed = True
            cur.saw(n, stamp)
            return

        m = _GROUP.match(body)
        if m and cur is not None:
            cur.group_marker = True
            cur.saw(n, stamp)
            return

        m = _MEMCG_MEM.match(body)
        if m:
            if not open_ or cur.memcg_limit_kb is not None:
                cur = self.start(n, stamp, partial=True)
            cur.memcg_oom = True
            cur.memcg_limit_kb = int(m["limit"])
            cur.saw(n, stamp)
            return

        if (m := _PANIC.match(body)) is not None and cur is not None:
            cur.notes.append(f"the kernel panicked: {m['msg']}")
            cur.closed = True
            return
        if not open_:
            if not _REPORT_HEAD.match(body):
                return  # outside a report: call traces, page allocation failures, ...
            # a paste that lost its first line: what follows may be a report's head (or
            # another dump's: kept only if a table, a kill or memcg lines follow)
            cur = self.start(n, stamp, partial=True)
            cur.tentative = True
        self.report_line(cur, n, stamp, body)

    def report_line(self, cur: Report, n: int, stamp: float | None, body: str) -> None:
        """A line inside an open report that neither opens nor closes one."""
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
            _summary_line(cur, n, m["body"], self.warn)
        elif (m := _EXITING.search(body)) is not None:
            cur.notes.append(f"the kernel's choice, {m['comm']} ({m['pid']}), was already exiting: "
                             "nothing was killed")
            cur.selected = Kill(n, int(m["pid"]), m["comm"], stamp=stamp)
            cur.closed = True
        elif _NO_KILLABLE.search(body):
            cur.notes.append("the kernel found no killable process")
            cur.closed = True
        else:
            return  # Mem-Info, call traces, ... of this report: nothing we read
        cur.saw(n, stamp)


_ROW_START = re.compile(r"^\[\s*\d+\s*\]")
_REPORT_HEAD = re.compile(r"^(?:CPU: \d+ (?:UID: \d+ )?PID: \d+ Comm: |Pid: \d+, comm: |Mem-Info:|\d+ pages RAM\s*$|"
                          r"Tasks state \(memory values in pages\):|\S+ cpuset=\S* mems_allowed=)")


# the task table's columns by the number of fields of a row, when its header is lost
_LAYOUTS = {
    12: ("rss_anon", "rss_file", "rss_shmem", "pgtables_bytes"),   # 6.8+
    10: ("nr_ptes", "nr_pmds"),                                    # 4.1-4.14
    9: ("pgtables_bytes",),                                        # 4.15+ (or nr_ptes: 3.x-4.0)
}


def _headerless_columns(body: str, rep: Report | None) -> list[str] | None:
    """The columns of a task-table row met without a header, from its shape: the pid in
    brackets, then numbers, then the name."""
    m = _ROW.match(body)
    parts = m["rest"].split() if m else []
    if len(parts) < 8:
        return None
    for fields in sorted(_LAYOUTS, reverse=True):
        # the name may hold spaces: the first fields-2 words after the pid are the numbers
        if len(parts) >= fields - 1 and all(p.lstrip("-").isdigit() for p in parts[:fields - 2]):
            middle = list(_LAYOUTS[fields])
            if middle == ["pgtables_bytes"]:
                value = int(parts[4])
                version = rep.kernel_version if rep is not None else None
                old = version is not None and tuple(map(int, re.findall(r"\d+", version)[:2])) < (4, 15)
                if old or value % PAGE_SIZE or value == 0:
                    middle = ["nr_ptes"]
            return ["pid", "uid", "tgid", "total_vm", "rss", *middle, "swapents", "oom_score_adj", "name"][1:]
    return None


def _row_fields(columns: Sequence[str], body: str) -> int:
    m = _ROW.match(body)
    return 1 + len(m["rest"].split(None, len(columns) - 1)) if m else 0


def _read_row(columns: Sequence[str], n: int, body: str) -> Row | str:
    """The row ``body`` under ``columns`` (pid first, name last), or why it is not one
    (the warning for a skipped row)."""
    m = _ROW.match(body)
    if m is None or not m["pid"].isdigit():
        return f"skipped an unreadable task-table row: {body[:60]!r}"
    numeric = columns[:-1]
    parts = m["rest"].split(None, len(numeric))
    if len(parts) != len(numeric) + 1:
        return (f"skipped a task-table row with {len(parts)} fields (the header has {len(numeric) + 1}): "
                f"{body[:60]!r}")
    values: dict[str, int] = {}
    for col, text in zip(numeric, parts):
        try:
            values[col] = int(text)
        except ValueError:
            if col in _INT_COLUMNS:
                return f"skipped a task-table row: {col} is {text!r}, not a number"
    return Row(n, int(m["pid"]), values, parts[-1].strip())


def _put_back_together(reports: list[Report]) -> list[Report]:
    """Join the fragments of one report that lines out of order split in two: a task table
    after its report's kill line (a paste that moved lines), or a kill line printed after a
    report but pasted before it.  Fragments of different OOMs stay apart: two tables, two
    kills, or times that say they were printed at different moments."""
    out: list[Report] = []
    for rep in reports:
        prev = out[-1] if out else None
        if prev is not None and _same_report(prev, rep):
            _absorb(prev, rep)
        else:
            out.append(rep)
    return out


_SAME_MOMENT = 1.0  # seconds: one report is printed within milliseconds


def _kill_of(rep: Report) -> list[Kill]:
    return [k for k in (rep.selected, rep.killed, rep.summary) if k is not None]


def _same_report(a: Report, b: Report) -> bool:
    """Are the fragments ``a`` and then ``b`` one report whose lines were moved?"""
    if not (a.partial or b.partial) or (a.rows and b.rows):
        return False
    if any(getattr(a, k) is not None and getattr(b, k) is not None for k in ("selected", "killed", "summary")):
        return False
    if a.memcg_limit_kb is not None and b.memcg_limit_kb is not None:
        return False
    table = a if a.rows else b if b.rows else None
    killer = a if _kill_of(a) else b if _kill_of(b) else None
    if table is not None and killer is not None and table is not killer:
        # the kernel's victim is in its own report's table
        if not {k.pid for k in _kill_of(killer)} <= {r.pid for r in table.rows}:
            return False
    if a.first_stamp is None or b.first_stamp is None:
        # no times to go by: only a fragment that lacks its report's first lines follows it
        return b.partial and table is not None and killer is not None and table is not killer
    if max(a.last_stamp, b.last_stamp) - min(a.first_stamp, b.first_stamp) > _SAME_MOMENT:
        return False
    # a kill line is printed after its report's table: one printed before it is an earlier OOM's
    return table is None or killer is None or killer.last_stamp >= table.first_stamp


def _absorb(a: Report, b: Report) -> None:
    # the report is the fragment with its first line, else the one the kernel printed first
    if a.partial != b.partial:
        b_first = a.partial
    else:
        b_first = a.first_stamp is not None and b.first_stamp is not None and b.first_stamp < a.first_stamp
    base, moved = (b, a) if b_first else (a, b)
    what = "task table" if moved.rows else "kill line" if _kill_of(moved) else "lines"
    a.merged.append(f"lines out of order: the {what} at line {moved.line} belongs to the report at line "
                    f"{base.line}")
    a.partial = a.partial and b.partial
    for name in ("comm", "pid", "gfp_mask", "gfp_flags", "order", "oom_score_adj", "nodemask", "kernel_version",
                 "ram_pages", "reserved_pages", "swap_total_kb", "memcg_limit_kb", "memcg_memsw_limit_kb",
                 "memcg_swap_limit_kb", "memcg", "constraint", "header", "selected", "killed", "summary"):
        if getattr(a, name) is None:
            setattr(a, name, getattr(b, name))
    a.memcg_oom = a.memcg_oom or b.memcg_oom
    a.tasks_state = a.tasks_state or b.tasks_state
    a.allocating_task = a.allocating_task or b.allocating_task
    if not a.columns:
        a.columns = b.columns
    a.rows.extend(b.rows)
    a.group_kills.extend(b.group_kills)
    for name in ("skipped_lines", "notes", "interleaved", "merged"):
        getattr(a, name).extend(getattr(b, name))
    a.line, a.end_line = min(a.line, b.line), max(a.end_line, b.end_line)
    stamps = [s for s in (a.first_stamp, b.first_stamp) if s is not None]
    a.first_stamp = min(stamps) if stamps else None
    stamps = [s for s in (a.last_stamp, b.last_stamp) if s is not None]
    a.last_stamp = max(stamps) if stamps else None


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
