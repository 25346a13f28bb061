"""The console report follows the profile's kernel era (kernel-oom-killer.md §10)."""

from __future__ import annotations

from pathlib import Path

import pytest

from oomactors.config import parse_config
from oomactors.report import console_lines, legacy_oom_adj, summarize

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = (ROOT / "configs" / "quickstart.toml").read_text()


def _console(simulate, profile: str) -> list[str]:
    text = QUICKSTART.replace('profile = "linux-5.10"', f'profile = "{profile}"')
    r = simulate(parse_config(text, "quickstart"))
    lines = [line.split("] ", 1)[1] for line in console_lines(r.records, hz=r.hz)]
    assert summarize(r.records, seed=r.seed, hz=r.hz)["profile"] == profile
    return lines


def test_510_report(simulate):
    lines = _console(simulate, "linux-5.10")
    assert "leaker invoked oom-killer: gfp_mask=0x100cca(GFP_HIGHUSER_MOVABLE), order=0, oom_score_adj=0" in lines
    assert "Tasks state (memory values in pages):" in lines
    assert any(x.startswith("oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/") for x in lines)
    assert any(x.startswith("Out of memory: Killed process") and "UID:1000 pgtables:" in x for x in lines)
    assert not any("sacrifice child" in x for x in lines)


def test_612_report_splits_rss_in_the_task_table(simulate):
    lines = _console(simulate, "linux-6.12")
    header = ("[  pid  ]   uid  tgid total_vm      rss rss_anon rss_file rss_shmem pgtables_bytes "
              "swapents oom_score_adj name")
    i = lines.index(header)
    leaker = next(x for x in lines[i:] if x.endswith(" leaker"))
    pid, uid, tgid, total_vm, rss, anon, file, shmem = leaker.strip("[").replace("]", "").split()[:8]
    assert int(rss) == int(anon) + int(file) + int(shmem) and int(anon) > 0


def test_419_report_has_nodemask_and_sacrifice_child_but_no_summary_line(simulate):
    lines = _console(simulate, "linux-4.19")
    assert any(x.startswith("leaker invoked oom-killer: gfp_mask=0x100cca(GFP_HIGHUSER_MOVABLE), "
                            "nodemask=(null), order=0, oom_score_adj=0") for x in lines)
    assert not any(x.startswith("oom-kill:") for x in lines)
    kill = next(i for i, x in enumerate(lines) if "or sacrifice child" in x)
    assert lines[kill].startswith("Out of memory: Kill process ") and "(leaker) score " in lines[kill]
    assert lines[kill + 1].startswith("Killed process ") and "shmem-rss:" in lines[kill + 1]


def test_2636_report_has_numeric_mask_oom_adj_and_cpu_column(simulate):
    lines = _console(simulate, "linux-2.6.36")
    assert "leaker invoked oom-killer: gfp_mask=0x100cca, order=0, oom_adj=0, oom_score_adj=0" in lines
    assert "[ pid ]   uid  tgid total_vm      rss cpu oom_adj oom_score_adj name" in lines
    assert "Tasks state (memory values in pages):" not in lines
    killed = next(x for x in lines if x.startswith("Killed process"))
    assert "shmem-rss" not in killed and killed.endswith("kB")


def test_24_report_is_one_line_per_kill(simulate):
    lines = _console(simulate, "linux-2.4")
    kills = [x for x in lines if x.startswith("Out of Memory: Killed process")]
    assert kills and all(x.endswith(").") for x in kills)
    assert not any("invoked oom-killer" in x for x in lines)


@pytest.mark.parametrize("adj, oom_adj", [(0, 0), (1000, 15), (-1000, -17), (500, 8), (-941, -15)])
def test_legacy_oom_adj_readback(adj, oom_adj):
    assert legacy_oom_adj(adj) == oom_adj
