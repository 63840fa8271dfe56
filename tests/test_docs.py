"""The docs stand on their own: README.md and docs/*.md cite nothing a reader of the repository
lacks (notes outside it, working-session labels) and every relative link and file path they
name exists."""

import re
from functools import lru_cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

# Notes that live outside the repository (and bare section numbers of one: "paper §3" is fine),
# and labels of how the work was organised (say what was measured, by date and hardware, instead).
OUTSIDE = re.compile(r"\.\./shared|ENV-FACTS|TRM-FACTS|AR-TRM|SOURCES\.md|(?<!paper )§ ?\d|\b(?:session|issue) \d",
                     re.I)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
# `path/in/the/repo.ext` in backticks, under one of the repository's top-level folders.
CODE_PATH = re.compile(r"`((?:trmlm|cli|puzzles|configs|benchmarks|tests|scripts|docs)/[\w./-]+)(?:::\w+)?`")


def page_id(p: Path) -> str:
    return str(p.relative_to(REPO))


def without_code_blocks(text: str) -> str:
    """Fenced code blocks removed (shell examples may show any path); inline code stays."""
    return re.sub(r"```.*?```", "", text, flags=re.S)


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_no_citations_of_notes_outside_the_repository(page):
    hits = [f"{page_id(page)}:{n}: {line.strip()}" for n, line in enumerate(page.read_text().splitlines(), 1)
            if OUTSIDE.search(line)]
    assert not hits, "\n".join(hits)


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_relative_links_resolve(page):
    missing = []
    for target in LINK.findall(without_code_blocks(page.read_text())):
        if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # http(s)://, mailto:, in-page anchors
        path = target.split("#")[0]
        if not (page.parent / path).exists():
            missing.append(target)
    assert not missing, f"{page_id(page)} links to missing files: {missing}"


# Installed names of the folders beside trmlm/ (pyproject's package-dir): trmlm/cli is cli/, ...
INSTALLED = {"trmlm/cli": "cli", "trmlm/puzzles": "puzzles", "trmlm/configs": "configs"}


def in_repository(name: str) -> Path:
    name = name.rstrip(".")
    for installed, folder in INSTALLED.items():
        if name == installed or name.startswith(installed + "/"):
            name = folder + name[len(installed):]
    return REPO / name


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_named_repository_files_exist(page):
    names = {m for m in CODE_PATH.findall(page.read_text()) if not re.search(r"[*<>{}]", m)}
    missing = sorted(n for n in names if not in_repository(n).exists())
    assert not missing, f"{page_id(page)} names files that are not in the repository: {missing}"


def test_the_checks_catch_what_they_look_for(tmp_path):
    """The patterns themselves: each kind of slip is found, ordinary text is not."""
    assert OUTSIDE.search("see ../shared/design/AR-TRM.md §2") and OUTSIDE.search("measured in session 2")
    assert OUTSIDE.search("as ENV-FACTS.md predicted") and OUTSIDE.search("Target (issue 2)")
    assert OUTSIDE.search("two §2.2-trained models") and not OUTSIDE.search("the HRM paper §3.1 recipe")
    assert not OUTSIDE.search("criticism of TRM issues 18 and 60; a shared filesystem")
    assert LINK.findall("[a](docs/x.md#y) and ![img](img/p.png)") == ["docs/x.md#y", "img/p.png"]
    assert CODE_PATH.findall("`trmlm/act.py::continue_target` and `runs/x`") == ["trmlm/act.py"]
    assert in_repository("trmlm/configs/sudoku-cpu.yaml").is_file() and in_repository("trmlm/puzzle").is_dir()


HEADING = re.compile(r"^#{1,6} +(.+?) *#*$", re.M)


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: link text kept, formatting and punctuation dropped,
    lower case, each space a hyphen."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").replace("*", "")
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


@lru_cache(maxsize=None)
def anchors(page: Path) -> frozenset:
    found, seen = set(), {}
    for heading in HEADING.findall(without_code_blocks(page.read_text())):
        base = slug(heading)
        n = seen.get(base, 0)
        found.add(base if n == 0 else f"{base}-{n}")
        seen[base] = n + 1
    return frozenset(found)


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_section_links_reach_a_heading(page):
    broken = []
    for target in LINK.findall(without_code_blocks(page.read_text())):
        if "#" not in target or re.match(r"[a-z][a-z0-9+.-]*:", target):
            continue
        path, anchor = target.split("#", 1)
        other = page if not path else page.parent / path
        if other.suffix == ".md" and other.exists() and anchor not in anchors(other):
            broken.append(target)
    assert not broken, f"{page_id(page)} links to sections that no heading has: {broken}"


def test_slugs_follow_github():
    assert slug("Measured: the state cache at the arithmetic preset's 30 CPU-minutes (test problems, 2026-12-07, later)") \
        == "measured-the-state-cache-at-the-arithmetic-presets-30-cpu-minutes-test-problems-2026-12-07-later"
    assert slug("With n = 1, N_sup = 2, batch 16 (2026-12-05, the arithmetic preset's step)") \
        == "with-n--1-n_sup--2-batch-16-2026-12-05-the-arithmetic-presets-step"
    assert slug("Reasoning-text tasks (`trm train-lm --task NAME`)") == "reasoning-text-tasks-trm-train-lm---task-name"
    assert slug("**Bold** and [a link](x.md)") == "bold-and-a-link"
