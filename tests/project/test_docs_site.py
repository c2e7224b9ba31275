"""The documentation holds together: the README is a front page whose example runs, every
relative link in README.md and docs/*.md reaches an existing file and heading, and the MkDocs
site (guides and the API reference generated from the docstrings) builds in strict mode."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]

FENCE = re.compile(r"^```.*?^```[^\n]*$", re.M | re.S)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.M)


def prose(text: str) -> str:
    """The text without fenced code blocks (a `# comment` there is no heading, `[x](y)` no link)."""
    return FENCE.sub("", text)


def slug(heading: str) -> str:
    """A heading's anchor as GitHub makes it (and as MkDocs' toc does for the headings here)."""
    text = heading.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for match in HEADING.finditer(prose(page.read_text())):
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(page: Path) -> list[str]:
    text = INLINE_CODE.sub("", prose(page.read_text()))
    return [match.group(1) for match in LINK.finditer(text)]


def test_the_pages_exist() -> None:
    names = {page.name for page in PAGES}
    assert {"README.md", "index.md", "getting-started.md", "reference.md"} <= names
    assert len(PAGES) > 10


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_relative_link_resolves_to_a_file_and_anchor(page: Path) -> None:
    broken: list[str] = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{target}: no file {resolved}")
            continue
        if page.parent == DOCS and not resolved.is_relative_to(DOCS):
            broken.append(f"{target}: leaves docs/, which the site cannot link to")
            continue
        if anchor:
            if resolved.suffix != ".md":
                broken.append(f"{target}: an anchor into a file that is not Markdown")
            elif anchor not in anchors(resolved):
                broken.append(f"{target}: no heading with anchor #{anchor} in {resolved.name}")
    assert not broken, f"{page.relative_to(ROOT)}:\n" + "\n".join(broken)


def test_links_are_found_and_checked() -> None:
    """The checker sees the links it is meant to check (a regex that matched nothing would pass)."""
    readme = links(ROOT / "README.md")
    assert "docs/subscriptions.md" in readme
    assert "docs/scale-out.md#consumer-groups-one-projection-over-many-processes" in readme
    assert "connection-budget-shared_lock_session" in anchors(DOCS / "scale-out.md")
    assert "a-taste-of-the-api" in anchors(ROOT / "README.md")
    assert "appendresultstream_uuid" not in " ".join(anchors(DOCS / "streams.md"))  # code comments


def test_the_readme_is_a_front_page() -> None:
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 300
    # The two commands of a fresh machine, then the test command, before anything else.
    demo = text.index("eventstore-actors demo")
    tests = text.index("pip install -e '.[dev]' && python -m pytest -q")
    assert text.index("pip install '.[embedded]'") < demo < tests < text.index("## ")


def readme_taste() -> str:
    text = (ROOT / "README.md").read_text()
    marker = text.index("<!-- example: taste")
    block = re.search(r"```python\n(.*?)```", text[marker:], re.S)
    assert block is not None
    return block.group(1)


def test_the_readme_taste_of_the_api_runs_as_written(dsn: str, schema: str, tmp_path: Path) -> None:
    code = readme_taste()
    target = '"postgresql://postgres@localhost/eventstore_dev", serializer='
    assert target in code
    code = code.replace(target, f"{dsn!r}, schema={schema!r}, serializer=")
    script = tmp_path / "taste.py"
    script.write_text(code)
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    printed = result.stdout.splitlines()  # the example's own lines only: the store prints nothing
    assert printed == [
        "2",
        "1 bank.Deposited Deposited(amount=100)",
        "2 bank.Deposited Deposited(amount=50)",
        "2",
        "[1, 2]",
    ], result.stdout


@pytest.mark.timeout(600)
def test_the_site_builds_in_strict_mode(tmp_path: Path) -> None:
    for module in ("mkdocs", "mkdocstrings", "mkdocstrings_handlers.python"):
        if importlib.util.find_spec(module.split(".")[0]) is None:
            pytest.skip(f"{module} is not installed: pip install -e '.[docs]'")
    site = tmp_path / "site"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--config-file",
            str(ROOT / "mkdocs.yml"),
            "--site-dir",
            str(site),
        ],
        capture_output=True,
        text=True,
        timeout=540,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (site / "index.html").exists()
    for page in sorted(DOCS.glob("*.md")):
        if page.name != "index.md":
            assert (site / page.stem / "index.html").exists(), page.name
    reference = (site / "reference" / "index.html").read_text()
    # The API reference was generated from the docstrings, not left as `::: name` lines.
    assert 'id="eventstore_actors.EventStore.append_to_stream"' in reference
    assert 'id="eventstore_actors.aio.AsyncEventStore"' in reference
    assert ":::" not in reference
