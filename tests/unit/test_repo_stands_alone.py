"""The repository stands alone: a fresh clone holds everything it links or cites.

Every file a commit would hold (tracked, or new and not ignored) is read, and none may
cite a path outside the repository: a relative path up into a sibling ``shared`` folder,
the absolute path of a development machine (under ``work``, ``home``, ``Users`` or
``root`` at the file system's root, also as a ``file://`` URL or a Windows user folder),
or a design file kept elsewhere. URLs are not paths (a home folder inside an https address
is fine), and neither are ``/tmp``, ``/var/task`` or ``/opt``. Every relative
Markdown link must resolve to a file inside the repository, and its ``#anchor`` to a
heading of that file.

The patterns are built so that this file does not match them itself.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import unquote

import pytest

REPO = Path(__file__).resolve().parents[2]
_NOT_SOURCE = frozenset({".git", ".venv", ".aws-sam", "__pycache__", ".mypy_cache"})

_DEV_ROOTS = "work|home|Users|root"
CITATIONS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("a path up into a sibling folder", re.compile(re.escape("..") + r"[/\\]shared\b")),
    (
        "an absolute path of a development machine",
        re.compile(
            # Not after a host, a word, a dot, a colon, a slash or a dash: URLs and
            # relative paths (``s3://bucket/work/``, ``api/home/``) are not machine paths.
            rf"(?<![\w.:/-])/(?:{_DEV_ROOTS})/"
            rf"|file://(?:localhost)?/(?:{_DEV_ROOTS})/"
            r"|\b[A-Za-z]:[\\/]Users[\\/]"
        ),
    ),
    ("a design file kept outside", re.compile(r"\bDESIGN\.md\b", re.IGNORECASE)),
    ("the shared reference folder", re.compile(r"\bshared[/\\]reference\b")),
)

_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$")
_LINK = re.compile(r"\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)")
_CODE_SPAN = re.compile(r"`[^`\n]*`")
_SCHEME = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.-]*:|//)")


def commit_files(root: Path = REPO) -> list[Path]:
    """What a commit holds: tracked files and new ones git does not ignore. Without git
    (an exported tree), every file outside the virtualenv, caches and build output."""
    try:
        listing = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=root,
            capture_output=True,
            check=True,
        ).stdout.decode()
    except (OSError, subprocess.CalledProcessError):
        return sorted(
            path
            for path in root.rglob("*")
            if path.is_file() and not _NOT_SOURCE & set(path.relative_to(root).parts)
        )
    return sorted({root / name for name in listing.split("\0") if name and (root / name).is_file()})


def _text(path: Path) -> str | None:
    """The file's text; None for a binary file (it holds a NUL byte)."""
    data = path.read_bytes()
    return None if b"\0" in data else data.decode("utf-8", "replace")


def citations(text: str) -> list[tuple[int, str, str]]:
    """(line number, what, the line) of every citation of a path outside the repository."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for what, pattern in CITATIONS:
            if pattern.search(line):
                found.append((number, what, line.strip()))
    return found


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: its text (code marks, emphasis and link syntax
    gone), lower case, without punctuation, spaces as dashes."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").replace("*", "")
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def _unfenced(text: str) -> Iterable[tuple[int, str]]:
    """(number, line) of the lines outside fenced code blocks."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            yield number, line


def anchors(text: str) -> set[str]:
    """Every heading anchor of a Markdown text (repeats numbered as GitHub does)."""
    seen: dict[str, int] = {}
    result = set()
    for _, line in _unfenced(text):
        match = _HEADING.match(line)
        if match is None:
            continue
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def broken_links(path: Path, root: Path = REPO) -> list[tuple[int, str, str]]:
    """(line number, target, why) of every relative link of a Markdown file that leaves
    the repository, names no file, or names a heading the file lacks."""
    text = path.read_text(encoding="utf-8")
    problems = []
    for number, text_line in _unfenced(text):
        line = _CODE_SPAN.sub(lambda span: " " * len(span.group()), text_line)  # code, not links
        targets = [m.group(1) for m in _LINK.finditer(line)]
        reference = _REFERENCE_LINK.match(line)
        if reference:
            targets.append(reference.group(1))
        for target in targets:
            why = _link_problem(path, target, root)
            if why:
                problems.append((number, target, why))
    return problems


def _link_problem(source: Path, target: str, root: Path) -> str | None:
    if not target or _SCHEME.match(target):
        return None  # an absolute URL (https:, mailto:), not a path
    location, _, anchor = unquote(target).partition("#")
    if location.startswith("/"):
        destination = (root / location.lstrip("/")).resolve()
    else:
        destination = (source.parent / location).resolve() if location else source
    if not destination.is_relative_to(root.resolve()):
        return "leaves the repository"
    if not destination.exists():
        return "names no file in the repository"
    if (
        anchor
        and destination.suffix == ".md"
        and anchor not in anchors(destination.read_text(encoding="utf-8"))
    ):
        return f"{destination.name} has no heading #{anchor}"
    return None


def _markdown(files: Iterable[Path]) -> list[Path]:
    return [path for path in files if path.suffix == ".md"]


def test_no_file_cites_a_path_outside_the_repository() -> None:
    offences = []
    for path in commit_files():
        text = _text(path)
        if text is None:
            continue
        for number, what, line in citations(text):
            offences.append(f"{path.relative_to(REPO)}:{number}: {what}: {line[:160]}")
    assert not offences, "cites outside the repository:\n" + "\n".join(offences)


def test_every_markdown_link_resolves_inside_the_repository() -> None:
    offences = [
        f"{path.relative_to(REPO)}:{number}: ({target}) {why}"
        for path in _markdown(commit_files())
        for number, target, why in broken_links(path)
    ]
    assert not offences, "broken or outside links:\n" + "\n".join(offences)


def test_docs_holds_the_architecture_and_api_pages_and_the_readme_links_them() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for page in ("architecture.md", "clover-api.md", "hipoink-api.md"):
        assert (REPO / "docs" / page).is_file(), page
        assert f"](docs/{page})" in readme, f"README does not link docs/{page}"


# The checks themselves: what they must catch and what they must let through. The
# examples are assembled at run time, so that this file does not cite them itself.
UP, SLASH = "..", "/"
DESIGN_FILE = "DESIGN" + ".md"


@pytest.mark.parametrize(
    "line",
    [
        f"see [{DESIGN_FILE}]({UP}{SLASH}shared{SLASH}{DESIGN_FILE})",
        f"It reproduces what {SLASH}work{SLASH}shared{SLASH}reference{SLASH}clover-api.md states",
        f'DATA = Path("{SLASH}home{SLASH}alice{SLASH}esl-sync{SLASH}events")',
        f"cd {SLASH}Users{SLASH}bob{SLASH}src && ./scripts/test",
        f"cache in {SLASH}root{SLASH}.cache",
        f"open file:{SLASH}{SLASH}{SLASH}home{SLASH}carol{SLASH}notes.md",
        "C:" + "\\" + "Users" + "\\" + "dave" + "\\" + "esl",
        f"(the project's {DESIGN_FILE.lower()})",
        f"facts in shared{SLASH}reference{SLASH}hipoink-api.md",
        f"~{SLASH}work{SLASH}esl-sync",
    ],
)
def test_a_citation_outside_is_caught(line: str) -> None:
    assert citations(f"fine\n{line}\n")[0][0] == 2


@pytest.mark.parametrize(
    "line",
    [
        "https://example.com/home/page and https://docs.clover.com/docs/work/with-items",
        "s3://bucket/work/x, api/home/y, ./scripts/test, layers/common/esl_sync/",
        "tempfile in /tmp/esl, the handler in /var/task, the layer in /opt/python",
        '"file:///etc/passwd" is hostile input',
        "docs/architecture.md, ../README.md from docs/, the shared layer",
        "GET /v3/merchants/{mId}/items and POST /oauth/v2/refresh",
    ],
)
def test_what_is_no_citation_passes(line: str) -> None:
    assert citations(line) == []


def test_links_that_leave_name_nothing_or_miss_a_heading_are_caught(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "page.md").write_text(
        "# A page\n\n## The poll: what `always` holds\n\n## Twice\n\n## Twice\n"
        "```sh\n# not a heading\n```\n"
    )
    readme = root / "README.md"
    readme.write_text(
        "# Readme\n"
        "[ok](docs/page.md) [ok](docs/page.md#the-poll-what-always-holds) [ok](#readme)\n"
        "[ok](docs/page.md#twice-1) [ok](https://example.com/x) [ok](mailto:a@b.c)\n"
        f"[out]({UP}/outside.md)\n"
        "[missing](docs/nothing.md)\n"
        "[no heading](docs/page.md#not-a-heading)\n"
        "[code is no heading](docs/page.md#not-a-heading-either)\n"
        "`[in code](nowhere.md)`\n"
        "```\n[in a fence](nowhere.md)\n```\n"
        "[ref]: docs/gone.md\n"
    )
    assert [(number, why) for number, _, why in broken_links(readme, root)] == [
        (4, "leaves the repository"),
        (5, "names no file in the repository"),
        (6, "page.md has no heading #not-a-heading"),
        (7, "page.md has no heading #not-a-heading-either"),
        (12, "names no file in the repository"),
    ]


def test_headings_become_anchors_as_github_makes_them() -> None:
    assert slug("The poll: what always holds") == "the-poll-what-always-holds"
    assert slug("`sam local invoke` (with Docker)") == "sam-local-invoke-with-docker"
    assert slug("1. Prerequisites") == "1-prerequisites"
    assert slug("Where [it](x.md) is *proved*, and why") == "where-it-is-proved-and-why"
