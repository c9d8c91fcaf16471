"""The docs are a site a user can find their way in: mkdocs builds it with --strict (a broken link,
a missing anchor or a page left out of the nav fails the build), every page under docs/ is in
mkdocs.yml's nav, and the README stays a short front door whose links resolve and whose command
table names every command."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import typer
import yaml

from colabtunnel.cli import app

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
DOCS = REPO / "docs"
MKDOCS_YML = REPO / "mkdocs.yml"
CI_RUN = REPO / ".ci" / "run"
COMMANDS_PAGE = DOCS / "commands.md"
README_MAX_LINES = 250


def _build(site_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site_dir)],
        cwd=REPO,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},  # Material's notice on every build
        capture_output=True,
        text=True,
        timeout=120,
    )


def _nav_pages(entries: object) -> list[str]:
    """The page files a mkdocs nav names, at any depth."""
    if isinstance(entries, str):
        return [entries]
    if isinstance(entries, list):
        return [page for entry in entries for page in _nav_pages(entry)]
    if isinstance(entries, dict):
        return [page for value in entries.values() for page in _nav_pages(value)]
    return []


def _table_rows(text: str, header: str) -> list[str]:
    """The body rows of the Markdown table whose header line is `header`."""
    lines = text.splitlines()
    start = lines.index(header) + 2  # past the header and its |---| line
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append(line)
    return rows


def _github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def test_the_site_builds_with_strict(tmp_path: Path) -> None:
    done = _build(tmp_path / "site")
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}{done.stderr}"
    assert (tmp_path / "site" / "troubleshooting" / "index.html").is_file()


def test_a_broken_link_fails_the_build(tmp_path: Path) -> None:
    """The build above is a real check: mkdocs.yml makes a dead link and a dead anchor fail it."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text("# x\n\n[gone](gone.md) and [no anchor](index.md#nowhere)\n")
    config = yaml.safe_load(MKDOCS_YML.read_text())
    config.update(docs_dir=str(docs), nav=[{"Home": "index.md"}])
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(config))
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "s")],
        cwd=tmp_path,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0, done.stderr
    assert "gone.md" in done.stderr and "#nowhere" in done.stderr, done.stderr


def test_every_docs_page_is_in_the_nav() -> None:
    nav = _nav_pages(yaml.safe_load(MKDOCS_YML.read_text())["nav"])
    pages = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md"))
    assert sorted(set(nav) - set(pages)) == [], "mkdocs.yml's nav names pages that do not exist"
    assert sorted(set(pages) - set(nav)) == [], "pages under docs/ missing from mkdocs.yml's nav"
    assert len(nav) == len(set(nav)), "a page is in the nav twice"


def test_the_readme_is_short() -> None:
    lines = len(README.read_text().splitlines())
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines (at most {README_MAX_LINES}): move the detail to a docs/ page"
    )


def test_the_readme_links_resolve() -> None:
    """README's links to the repository's files (docs/... on GitHub) exist, with their anchors."""
    text = README.read_text()
    problems = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue  # a web address
        path, _, anchor = target.partition("#")
        file = REPO / path if path else README
        if not file.is_file():
            problems.append(f"{target}: no such file")
            continue
        if anchor:
            headings = re.findall(r"(?m)^#+ (.+)$", file.read_text())
            if anchor not in {_github_slug(h) for h in headings}:
                problems.append(f"{target}: no heading with that anchor in {path or 'README.md'}")
    assert not problems, "\n".join(problems)


def test_the_readme_command_table_names_every_command() -> None:
    header = "| command | what it does |"
    rows = _table_rows(README.read_text(), header)
    firsts = [row.split("|")[1] for row in rows]
    cli = typer.main.get_command(app)
    missing = []
    for name, command in cli.commands.items():  # type: ignore[attr-defined]
        if hasattr(command, "commands"):  # a group: profiles, secret
            for sub in command.commands:
                if not any(f"`{name} " in f and re.search(rf"\b{sub}\b", f) for f in firsts):
                    missing.append(f"{name} {sub}")
        elif not any(f.strip().startswith(f"`{name} ") for f in firsts):
            missing.append(name)
    assert not missing, f"commands with no row in README's command table: {missing}"
    assert rows == _table_rows(COMMANDS_PAGE.read_text(), header), (
        "README's command table and docs/commands.md's differ: keep them the same"
    )


def test_the_readme_holds_the_command_ci_runs() -> None:
    command = CI_RUN.read_text().strip().splitlines()[-1]
    assert command.startswith("python3 -m venv .venv"), command
    assert command in README.read_text().splitlines(), "README's test command is not .ci/run's"
