"""A kernel log's lines: which of them count, and where the kernel's own text starts in each.

A log is dmesg text, journalctl or syslog lines, a serial console capture or a report
quoted in a mail or an issue; :func:`split_prefixes` takes off what each of those put in
front of the kernel's text and keeps the time the line carries.
"""

from __future__ import annotations

import re
from typing import Iterable

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


# --- lines ---------------------------------------------------------------------------------
def logical_lines(text: str) -> Iterable[tuple[int, str]]:
    """(line number, text) of every line that may be the kernel's: comment lines left out,
    a syslog line holding several printk lines split into them."""
    for n, raw in enumerate(text.splitlines(), start=1):
        if raw.lstrip().startswith("#"):
            continue  # comments: the source notes of our test data, and shell prompts
        # rsyslog escapes the newlines of multi-line printk records as #012
        for part in raw.split("#012"):
            yield n, part
