"""The documentation site builds with --strict and lists everything the code has.

The reference pages are generated from the code (oomactors/docgen.py, a MkDocs hook), so
this checks the generator against the code's own lists, through the built HTML: a key,
step, command, event or point the generator missed, a broken link or a page missing from
the nav fails here."""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytest.importorskip("mkdocs", reason="the docs extra is installed by `make test`")


def _build(project: Path, site: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict",
                           "-f", str(project / "mkdocs.yml"), "-d", str(site)],
                          cwd=project, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    done = _build(ROOT, out)
    assert done.returncode == 0, done.stderr
    return out


def _text(site: Path, page: str) -> str:
    """A built page's text (its article, without the navigation), tags dropped and
    entities decoded."""
    raw = (site / page / "index.html").read_text()
    raw = raw.split("<article", 1)[1].split("</article>", 1)[0]
    return html.unescape(re.sub(r"<[^>]+>", "", raw))


def test_every_config_key_is_documented(site: Path) -> None:
    from oomactors.config import FIXES
    from oomactors.docgen import config_keys

    text = _text(site, "reference/config")
    keys = [path for path, *_ in config_keys()]
    assert len(keys) > 60
    for key in ("machine.memory", "kernel.overcommit_memory", "run.seed", "tasks[].program",
                "memcgs[].max", "cpusets[].mems", "cpuset_updates[].at", "policy.name"):
        assert key in keys
    for key in keys:
        assert key in text, key
    for switch in FIXES:
        assert f"kernel.fixes.{switch}" in text
    # a default and a meaning, not just the name
    assert re.search(r"machine\.memory\s+size\s+\"2GiB\"\s+RAM\.", text)


def test_every_program_step_is_documented_with_its_op(site: Path) -> None:
    from oomactors.config import STEP_TYPES

    text = _text(site, "reference/steps")
    for op, model in STEP_TYPES.items():
        heading = f'op = "{op}"¶'  # each kind's section heading, with its permalink
        assert heading in text, op
        part = text.split(heading, 1)[1].split("¶", 1)[0]
        for key in model.model_fields:
            if key != "op":
                assert key in part, (op, key)


def test_every_command_is_documented(site: Path) -> None:
    from oomactors.docgen import commands

    text = _text(site, "reference/cli")
    names = [name for name, _ in commands()]
    for name in ("oomactors run", "oomactors trace show", "oomactors replay", "oomactors explore"):
        assert name in names
    for name, cmd in commands():
        assert name in text, name
        for p in cmd.params:
            for opt in getattr(p, "opts", ()):
                if opt.startswith("--") and opt != "--help":
                    assert opt in text, (name, opt)


def test_every_event_kind_and_point_is_documented(site: Path) -> None:
    from oomactors.events import EVENTS
    from oomactors.sched import POINTS

    events = _text(site, "reference/events")
    for kind in EVENTS:
        assert kind.name in events, kind.name
        for f in kind.fields:
            assert f in events
    points = _text(site, "reference/points")
    for name, where in POINTS.items():
        assert name in points and html.unescape(where) in points, name


def test_simplified_list_is_its_own_page(site: Path) -> None:
    text = _text(site, "simplified")
    assert "These are deliberate differences from the kernel" in text
    assert "Race switches" in text


def test_a_broken_link_fails_the_build(tmp_path: Path) -> None:
    """--strict with the project's validation settings: a link to a missing page fails."""
    copy = tmp_path / "project"
    copy.mkdir()
    shutil.copy(ROOT / "mkdocs.yml", copy / "mkdocs.yml")
    shutil.copytree(ROOT / "docs", copy / "docs")
    (copy / "oomactors").mkdir()
    shutil.copy(ROOT / "oomactors" / "docgen.py", copy / "oomactors" / "docgen.py")
    page = copy / "docs" / "events.md"
    page.write_text(page.read_text() + "\nSee [nowhere](no-such-page.md).\n")
    done = _build(copy, tmp_path / "broken")
    assert done.returncode != 0
    assert "no-such-page.md" in done.stderr


def test_readme_is_short_and_keeps_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    assert "make run " in readme and "make test " in readme
    for link in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (ROOT / link).exists(), link
