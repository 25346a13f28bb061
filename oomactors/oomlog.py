"""Reading OOM reports out of kernel logs as people paste them.

A log is dmesg text, journalctl or syslog lines, a serial console capture or a report
quoted in a mail or an issue: prefixes are stripped, lines are read in order, and every
OOM report in it is rebuilt as a :class:`Report` (what ``out_of_memory()`` printed about
its situation: the invoking task, the machine's or memcg's size, the task table, the
kernel's choice).  :mod:`oomactors.replay` asks policies the kernel's question again from
those reports.

A log's lines and their prefixes are :mod:`oomactors.oomlog_lines`; the report and the
joining of its fragments :mod:`oomactors.oomlog_report`; this module is the reader: the
kernel's lines, the task table, and the state machine that tells reports apart.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

from .oomlog_lines import logical_lines, split_prefixes, strip_prefixes
from .oomlog_report import (PAGE_KB, PAGE_SIZE, UNLIMITED_KB, Kill, LogWarning, Report, Row, kills_of,
                            put_back_together)

# re-exported: `from oomactors.oomlog import ...` is the public face
__all__ = ["PAGE_KB", "PAGE_SIZE", "UNLIMITED_KB", "Kill", "LogWarning", "Report", "Row", "parse_log",
           "split_prefixes", "strip_prefixes"]


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
def parse_log(text: str, file: str = "<log>") -> tuple[list[Report], list[LogWarning]]:
    """Every OOM report in ``text`` (a log file's contents), and the lines skipped."""
    parser = _Parser(file)
    for n, raw in logical_lines(text):
        stamp, line = split_prefixes(raw)
        body = line.strip()
        if body:
            parser.feed(n, stamp, body)
    parser.end_table()
    reports = [r for r in parser.reports if not r.tentative or r.rows or kills_of(r) or r.memcg_limit_kb is not None]
    return put_back_together(reports), parser.warnings


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
