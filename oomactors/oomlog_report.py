"""An OOM report as a kernel log has it (:class:`Report`: the invoking task, the machine's
or memcg's size, the task table, the kernel's choice), and putting back together the
fragments of one report that lines out of order split in two.  :mod:`oomactors.oomlog`
reads logs into these.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from policies import api

PAGE_SIZE = 4096
PAGE_KB = PAGE_SIZE // 1024
UNLIMITED_KB = 1 << 50  # a memcg limit this big is "max" (PAGE_COUNTER_MAX, RES_COUNTER_MAX)


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


@dataclass(frozen=True)
class LogWarning:
    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


# --- fragments of one report ---------------------------------------------------------------
def put_back_together(reports: list[Report]) -> list[Report]:
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


def kills_of(rep: Report) -> list[Kill]:
    """The report's kill lines that are there: selected, killed, the oom-kill: summary."""
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
    killer = a if kills_of(a) else b if kills_of(b) else None
    if table is not None and killer is not None and table is not killer:
        # the kernel's victim is in its own report's table
        if not {k.pid for k in kills_of(killer)} <= {r.pid for r in table.rows}:
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
    what = "task table" if moved.rows else "kill line" if kills_of(moved) else "lines"
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
