"""`oomactors replay` on real kernel OOM reports (tests/data/oom_reports/*.log, each with
its public source in its first line): the kernel's own selection is reproduced by the
`linux` policy of the kernel's era, and where the kernel printed a score, by the same
number; where the kernel did something else, the test says why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from oomactors.cli import main
from oomactors.kernel import profiles
from oomactors.replay import (parse_log, profile_for_version, replay_files, replay_report, strip_prefixes)
from oomactors.report import console_lines
from policies.api import Kill, KillPolicy, NothingKillable, TaskView
from policies.registry import load_policy

DATA = Path(__file__).resolve().parent / "data" / "oom_reports"
LONG_MIN = -(1 << 63)


def _cli(*args: str):
    return CliRunner().invoke(main, list(args))


def _one(name: str, *policies: str, profile: str | None = None) -> dict:
    results, warnings = replay_files([str(DATA / name)], policies or ("linux",), profile)
    assert warnings == [] and len(results) == 1
    return results[0]


# file, kernel version printed, profile picked, constraint, totalpages, the pid select_bad_process
# picked, the score the kernel printed (None: this era prints none), the linux policy's points
# (per mille where the era prints a score, else pages)
REAL = [
    ("rhel7-3.10-nr_ptes.log", "3.10.0-514.6.1.el7.x86_64", "linux-3.10", "CONSTRAINT_NONE",
     8379834 - 192987 + 8388604 // 4, 6576, 651, 651),
    ("aliyun-3.10-syslog-no-version.log", None, "linux-3.10", "CONSTRAINT_NONE",
     2097151 - 94167, 5424, 800, 800),
    ("ubuntu-4.4-nr_pmds-syslog.log", "4.4.0-71-generic", "linux-4.14", "CONSTRAINT_NONE",
     2071474 - 53281 + 1022972 // 4, 3110, 586, 586),
    ("arch-4.17-memcg-v1-sacrifice-child.log", "4.17.2-1-ARCH", "linux-4.19", "CONSTRAINT_MEMCG",
     10240 // 4, 18160, 261, 261),
    ("k8s-memcg-adj-998-clamp.log", None, "linux-4.19", "CONSTRAINT_MEMCG", 16777216 // 4, 5740, None, 0),
    ("ubuntu-5.13-sysrq-pgtables_bytes.log", "5.13.0-19-generic", "linux-5.10", "CONSTRAINT_NONE",
     524158 - 17809, 651, None, 5232 + 106496 // 4096),
    ("rpi-6.12-rss_anon-columns.log", "6.12.62+rpt-rpi-v8", "linux-6.12", "CONSTRAINT_NONE",
     114688 - 8170 + 425980 // 4, 996, None, 30557 + 31936 + 1183744 // 4096),
]


@pytest.mark.parametrize("name, version, profile, constraint, totalpages, selected, score, points", REAL,
                         ids=[r[0].removesuffix(".log") for r in REAL])
def test_linux_picks_what_the_real_kernel_picked(name, version, profile, constraint, totalpages, selected,
                                                 score, points):
    r = _one(name)
    assert r["kernel_version"] == version
    assert r["profile"] == profile
    assert r["constraint"] == constraint
    assert r["totalpages"] == totalpages
    assert r["kernel_victim"]["selected"]["pid"] == selected
    assert r["kernel_victim"]["score"] == score
    choice = r["choices"]["linux"]
    assert choice["pid"] == selected and choice["agrees"] is True
    # the printed score is reproduced exactly: the totalpages rebuilt from the log are right
    assert choice["points"] == points


def test_header_columns_are_mapped_whatever_the_layout():
    layouts = {name: _one(name)["table_layout"] for name, *_ in REAL}
    assert layouts["rhel7-3.10-nr_ptes.log"] == "nr_ptes"
    assert layouts["ubuntu-4.4-nr_pmds-syslog.log"] == "nr_ptes nr_pmds"
    assert layouts["ubuntu-5.13-sysrq-pgtables_bytes.log"] == "pgtables_bytes"
    assert layouts["rpi-6.12-rss_anon-columns.log"] == "rss_anon rss_file rss_shmem pgtables_bytes"
    # 6.x: the rss split is kept, page tables come from bytes; 3.x: page-table pages become bytes
    rep = parse_log((DATA / "rpi-6.12-rss_anon-columns.log").read_text())[0][0]
    python = next(r.view() for r in rep.rows if r.pid == 1025)
    assert (python.rss_anon, python.rss_file, python.rss_shmem, python.pgtables_bytes) == (12717, 0, 0, 864256)
    rep = parse_log((DATA / "ubuntu-4.4-nr_pmds-syslog.log").read_text())[0][0]
    vbox = next(r.view() for r in rep.rows if r.pid == 3110)
    assert (vbox.rss_anon, vbox.pgtables_bytes, vbox.swapents) == (1329785, (2883 + 10) * 4096, 0)
    # names keep their spaces and parentheses
    assert any(r.comm == "(sd-pam)" for r in rep.rows)


def test_sacrificed_child_is_reported_next_to_the_selection():
    # 4.17: "Kill process 18160 ... or sacrifice child" then "Killed process 18415": the log has
    # no parent/child links, so the policies answer for select_bad_process, which picked 18160
    v = _one("arch-4.17-memcg-v1-sacrifice-child.log")["kernel_victim"]
    assert (v["pid"], v["comm"], v["sacrificed_child"]) == (18415, "foo.sh", True)
    assert v["selected"] == {"pid": 18160, "comm": "foo.sh"}
    assert v["message"] == "Memory cgroup out of memory"


def test_the_pre_59_clamp_kills_the_first_task_and_59_the_biggest():
    # every task at -998 scores below 0 and is clamped to 1 (4.x), so the first one scanned
    # dies: pause, one page.  5.9 made badness signed: data_sim, 3.97 M pages, would have died
    r = _one("k8s-memcg-adj-998-clamp.log", "linux", "linux-5.10", "largest-rss")
    assert r["kernel_victim"]["pid"] == 5740
    assert r["choices"]["linux"]["pid"] == 5740 and r["choices"]["linux"]["badness"] == 1
    assert r["choices"]["linux-5.10"]["pid"] == 58406 and r["choices"]["linux-5.10"]["agrees"] is False
    assert r["choices"]["largest-rss"]["comm"] == "data_sim"
    assert "partial report: no 'invoked oom-killer' line" in r["notes"]


def test_the_printed_score_shows_the_314_root_bonus():
    # No version line: the nr_ptes layout says 3.x, and 3.5-3.13's bonus (30 per mille off adj,
    # times 768/1000 = 0 pages here) leaves 879 pages -> 1144.  The kernel printed 1110: 3% off
    # the root task's own pages, 3.14-4.16's bonus, (879 - 26) * 1000 / 768
    r = _one("lxc-3.x-memcg-root-bonus.log", "linux", "linux-4.14")
    assert r["profile"] == "linux-3.10" and r["totalpages"] == 768
    assert r["kernel_victim"]["score"] == 1110
    assert r["choices"]["linux"]["points"] == 1144
    assert r["choices"]["linux-4.14"]["points"] == 1110
    assert _one("lxc-3.x-memcg-root-bonus.log", profile="linux-4.14")["choices"]["linux"]["points"] == 1110


class UnsignedPointsV2(KillPolicy):
    """The v2 patch of "make the calculation of oom badness more accurate" made oom_badness
    signed and started chosen_points at LONG_MIN, but left oom_evaluate_task's local
    ``points`` unsigned long: a negative badness became a huge number, and LONG_MIN (every
    start) compared as 2^63, above any positive badness."""

    name = "linux-next-20200710"

    def select(self, ctx):
        def u64(x: int) -> int:
            return x & ((1 << 64) - 1)
        chosen, chosen_points = None, LONG_MIN
        for t in ctx.candidates:
            if t.oom_score_adj == -1000:
                continue  # LONG_MIN: skipped before the comparison
            points = u64(t.rss + t.swapents + t.pgtables_bytes // 4096 + t.oom_score_adj * (ctx.totalpages // 1000))
            if points < u64(chosen_points):
                continue
            chosen, chosen_points = t, points
        return NothingKillable() if chosen is None else Kill(chosen.pid, 0)


def test_a_real_kernel_bug_explains_the_two_linux_next_reports(tmp_path):
    # One file, two reports.  linux (5.8 -> linux-4.19) picks "random", 27.7 M pages; the
    # patched linux-next killed dbus-daemon (-900) and then found nothing to kill and panicked.
    results, _ = replay_files([str(DATA / "linux-next-5.8-two-reports.log")], ["linux"])
    first, second = results
    assert (first["index"], second["index"]) == (1, 2)
    assert (first["line"], second["line"]) == (5, 63)
    assert first["kernel_victim"]["comm"] == "dbus-daemon"
    assert first["choices"]["linux"]["comm"] == "random" and first["choices"]["linux"]["agrees"] is False
    assert second["kernel_victim"] is None
    assert "the kernel found no killable process" in second["notes"]
    assert "the kernel panicked: System is deadlocked on memory" in second["notes"]
    # the patch's bug, as a policy: it reproduces both of the kernel's answers
    rep1, rep2 = parse_log((DATA / "linux-next-5.8-two-reports.log").read_text())[0]
    bug = UnsignedPointsV2()
    a = replay_report(rep1, 1, [("bug", bug)])["choices"]["bug"]
    b = replay_report(rep2, 2, [("bug", bug)])["choices"]["bug"]
    assert a["pid"] == 1155 and a["agrees"] is True
    assert b["pid"] is None and b["decision"] == "nothing killable"


def test_several_files_and_reports_are_numbered_in_order():
    names = ["rhel7-3.10-nr_ptes.log", "linux-next-5.8-two-reports.log", "rpi-6.12-rss_anon-columns.log"]
    results, _ = replay_files([str(DATA / n) for n in names], ["linux"])
    assert [r["index"] for r in results] == [1, 2, 3, 4]
    assert [Path(r["file"]).name for r in results] == [names[0], names[1], names[1], names[2]]


def _reprefix(src: Path, dst: Path, prefix: str) -> None:
    lines = [ln if ln.startswith("#") else prefix + ln for ln in src.read_text().splitlines()]
    dst.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("prefix", [
    "Jan 14 03:12:55 db01 kernel: ",                       # journalctl / syslog
    "2025-01-14T03:12:55+0100 db01 kernel: ",               # journalctl -o short-iso
    "[Tue Jan 14 03:12:55 2025] ",                          # dmesg -T
    "Jan 14 03:12:55 db01 kernel: [ 8803.402761] ",         # syslog with dmesg stamps
    "<4>[ 8803.402761] ",                                  # /dev/kmsg-style priority
    "> ",                                                  # quoted in a mail
])
def test_log_prefixes_do_not_change_the_replay(tmp_path, prefix):
    path = tmp_path / "prefixed.log"
    _reprefix(DATA / "rhel7-3.10-nr_ptes.log", path, prefix)
    r = _one_path(path)
    plain = _one("rhel7-3.10-nr_ptes.log")
    for key in ("kernel_version", "profile", "constraint", "totalpages", "tasks", "kernel_victim", "choices"):
        assert r[key] == plain[key], key


def _one_path(path: Path) -> dict:
    results, warnings = replay_files([str(path)], ["linux"])
    assert warnings == [] and len(results) == 1
    return results[0]


def test_prefix_stripping_keeps_the_kernel_text():
    assert strip_prefixes("Jun  4 17:19:10 iZ23tpcto8eZ kernel: [  338]     0   338 x") == "[  338]     0   338 x"
    assert strip_prefixes("[  246.610518][ T1778] random invoked oom-killer: x") == "random invoked oom-killer: x"
    assert strip_prefixes("[Sun Aug 11 20:21:28 2024] [    215]   100") == "[    215]   100"
    # a task-table row is not a time stamp
    assert strip_prefixes("[ 6576] 12345  6576  8478546") == "[ 6576] 12345  6576  8478546"


def test_a_garbled_row_is_skipped_with_a_warning_naming_its_line(tmp_path):
    text = (DATA / "aliyun-3.10-syslog-no-version.log").read_text().splitlines()
    n = next(i for i, ln in enumerate(text) if "(java)" not in ln and ln.endswith(" java") and "1537770" in ln)
    text[n] = text[n][:70]                                   # the java row cut short ...
    m = next(i for i, ln in enumerate(text) if ln.endswith(" crond"))
    text[m] = text[m].replace("31575", "3l575")              # ... and a letter in a number
    path = tmp_path / "garbled.log"
    path.write_text("\n".join(text) + "\n")
    res = _cli("replay", str(path), "--json")
    assert res.exit_code == 0, res.output
    warnings = res.stderr.strip().splitlines()
    assert len(warnings) == 2
    assert warnings[0].startswith(f"oomactors: warning: {path}:{m + 1}: skipped a task-table row: total_vm")
    assert warnings[1].startswith(f"oomactors: warning: {path}:{n + 1}: skipped a task-table row with 4 fields")
    r = json.loads(res.stdout)[0]
    assert r["skipped_lines"] == [m + 1, n + 1] and r["tasks"] == 34
    # without the 6.4 GB java, the kernel's victim is not in the table: the other java is next
    assert r["choices"]["linux"]["comm"] == "java" and r["choices"]["linux"]["pid"] == 13675
    assert r["choices"]["linux"]["agrees"] is False


def test_a_rate_limited_kill_is_a_report_no_policy_can_answer(tmp_path):
    # past the printk ratelimit only the kill lines appear: no table, so no choice (the two lines
    # as quoted in https://github.com/microsoft/pai/issues/1687, host name shortened)
    path = tmp_path / "ratelimited.log"
    path.write_text("Nov  4 03:03:34 infra-1001 kernel: Out of memory: Kill process 8596 (python) score 998 or "
                    "sacrifice child\nNov  4 03:03:34 infra-1001 kernel: Killed process 8603 (nvidia-smi) "
                    "total-vm:16976kB, anon-rss:2808kB, file-rss:0kB, shmem-rss:0kB\n")
    r = _one_path(path)
    assert r["kernel_victim"]["pid"] == 8603 and r["kernel_victim"]["selected"]["pid"] == 8596
    assert r["kernel_victim"]["sacrificed_child"] is True and r["kernel_victim"]["score"] == 998
    assert r["choices"]["linux"] == {"pid": None, "comm": None, "points": None, "decision": "no task table"}
    assert r["profile"] == "linux-4.19" and r["tasks"] == 0


def test_json_output_has_the_documented_shape():
    res = _cli("replay", str(DATA / "ubuntu-5.13-sysrq-pgtables_bytes.log"),
               str(DATA / "arch-4.17-memcg-v1-sacrifice-child.log"), "--policy", "linux", "--policy",
               "largest-rss", "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert isinstance(data, list) and len(data) == 2
    for r in data:
        for key in ("index", "kernel_version", "constraint", "kernel_victim", "choices"):
            assert key in r
        assert set(r["kernel_victim"]) >= {"pid", "comm"}
        assert set(r["choices"]) == {"linux", "largest-rss"}
        for c in r["choices"].values():
            assert set(c) >= {"pid", "comm", "points"}
    assert data[0]["kernel_version"] == "5.13.0-19-generic" and data[0]["constraint"] == "CONSTRAINT_NONE"
    assert data[0]["kernel_victim"]["pid"] == 651 and data[0]["choices"]["linux"]["pid"] == 651
    assert data[0]["invoking_task"] == {"pid": 735, "comm": "kworker/0:2", "oom_score_adj": 0, "gfp_mask": "0xcc0",
                                        "gfp_flags": "GFP_KERNEL", "order": -1}
    assert data[1]["constraint"] == "CONSTRAINT_MEMCG" and data[1]["memcg"] == "/dirty-test"


def test_table_output_names_the_kernel_victim_and_each_choice():
    res = _cli("replay", str(DATA / "rhel7-3.10-nr_ptes.log"), "--policy", "linux", "--policy", "linux-5.10")
    assert res.exit_code == 0, res.output
    out = res.stdout
    assert "kernel 3.10.0-514.6.1.el7.x86_64: profile linux-3.10" in out
    assert "the kernel killed mysqld (pid 6576), score 651" in out
    assert "651 ‰" in out and "6700394 pages" in out


def test_a_file_without_a_report_exits_2(tmp_path):
    path = tmp_path / "quiet.log"
    path.write_text("Jan 14 03:12:55 db01 kernel: EXT4-fs (sda1): mounted filesystem\n")
    res = _cli("replay", str(path))
    assert res.exit_code == 2
    assert res.stderr.strip() == f"oomactors: error: {path}: no OOM report found (no 'invoked oom-killer' " \
                                 "line, task table or 'Killed process' line)"


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "missing.log", "cannot read: No such file or directory"),
    (lambda d: d, "is a directory, not a log file"),
])
def test_an_unreadable_file_exits_2(tmp_path, make, message):
    path = make(tmp_path)
    res = _cli("replay", str(path))
    assert res.exit_code == 2
    assert res.stderr.strip() == f"oomactors: error: {path}: {message}"


def test_bad_profile_and_policy_exit_2():
    res = _cli("replay", str(DATA / "rhel7-3.10-nr_ptes.log"), "--profile", "linux-9")
    assert res.exit_code == 2 and "--profile: unknown profile 'linux-9'" in res.stderr
    res = _cli("replay", str(DATA / "rhel7-3.10-nr_ptes.log"), "--policy", "no-such-policy")
    assert res.exit_code == 2 and "unknown policy 'no-such-policy'" in res.stderr


def test_policy_that_answers_nonsense_is_named(tmp_path):
    class Nonsense(KillPolicy):
        name = "nonsense"

        def select(self, ctx):
            return Kill(424242, 1)

    rep = parse_log((DATA / "aliyun-3.10-syslog-no-version.log").read_text(), "x.log")[0][0]
    from policies.api import PolicyError
    with pytest.raises(PolicyError, match="policy 'nonsense' answered .* none of the 36 tasks .* x.log:3"):
        replay_report(rep, 1, [("nonsense", Nonsense())])


@pytest.mark.parametrize("version, profile", [
    ("2.4.37", "linux-2.4"), ("2.6.32-279.1.1.el6.i686", "linux-2.6.36"), ("3.4.0", "linux-2.6.36"),
    ("3.5.0", "linux-3.10"), ("3.10.0-1160.el7.x86_64", "linux-3.10"), ("3.13.11", "linux-3.10"),
    ("3.14.0", "linux-4.14"), ("4.16.18", "linux-4.14"), ("4.17.2-1-ARCH", "linux-4.19"),
    ("5.8.0-rc4-next-20200710", "linux-4.19"), ("5.9.0", "linux-5.10"), ("5.17.15", "linux-5.10"),
    ("5.18.0", "linux-6.12"), ("6.12.62+rpt-rpi-v8", "linux-6.12"), ("not-a-version", None),
])
def test_version_to_profile(version, profile):
    assert profile_for_version(version) == profile


# --- the two profiles added for the replay ----------------------------------------------
def _view(**kw) -> TaskView:
    base = dict(pid=10, tgid=10, comm="t", uid=1000, rss_anon=10_000, swapents=500, pgtables_bytes=40 * 4096)
    base.update(kw)
    return TaskView(**base)


def test_badness_310_and_414_by_hand():
    t, root = _view(), _view(caps=frozenset({"CAP_SYS_ADMIN"}))
    # 10_000 + 500 + 40 pages; T = 100_000 -> adj unit 100 pages
    assert profiles.badness_310(t, 100_000, 0, 250) == 10_540
    assert profiles.badness_310(root, 100_000, 0, 250) == 10_540 - 30 * 100      # 30 per mille of T
    assert profiles.badness_414(root, 100_000, 0, 250) == 10_540 - 10_540 * 3 // 100  # 3% of its own
    assert profiles.badness_310(_view(oom_score_adj=-500), 100_000, 0, 250) == 1    # clamped to 1
    assert profiles.badness_414(_view(oom_score_adj=200), 100_000, 0, 250) == 10_540 + 20_000
    assert profiles.badness_310(_view(oom_score_adj=-1000), 100_000, 0, 250) == 0
    assert load_policy("linux-3.10").era == "linux-3.10" and load_policy("linux-4.14").era == "linux-4.14"


@pytest.mark.parametrize("profile, header, invoked", [
    ("linux-3.10", "[ pid ]   uid  tgid total_vm      rss nr_ptes swapents oom_score_adj name",
     "leaker invoked oom-killer: gfp_mask=0x100cca, order=0, oom_score_adj=0"),
    ("linux-4.14", "[ pid ]   uid  tgid total_vm      rss nr_ptes nr_pmds swapents oom_score_adj name",
     "leaker invoked oom-killer: gfp_mask=0x100cca(GFP_HIGHUSER_MOVABLE), nodemask=(null),  order=0, "
     "oom_score_adj=0"),
], ids=["linux-3.10", "linux-4.14"])
def test_new_profiles_simulate_and_their_console_replays(simulate, profile, header, invoked):
    from oomactors.config import parse_config
    text = (Path(__file__).resolve().parent.parent / "configs" / "quickstart.toml").read_text()
    r = simulate(parse_config(text.replace('profile = "linux-5.10"', f'profile = "{profile}"'), "q"))
    lines = console_lines(r.records, hz=r.hz)
    bare = [ln.split("] ", 1)[1] for ln in lines]
    assert header in bare and invoked in bare
    kill = next(ln for ln in bare if "or sacrifice child" in ln)
    assert kill.startswith("Out of memory: Kill process ") and "(leaker)" in kill
    # the simulator's own console is a kernel log: replaying it picks the same task
    reports, warnings = parse_log("\n".join(lines), "console")
    assert warnings == [] and len(reports) == 1
    out = replay_report(reports[0], 1, [("linux", load_policy("linux"))])
    assert out["profile"] == profile
    assert out["kernel_victim"]["comm"] == "leaker" and out["choices"]["linux"]["agrees"] is True
