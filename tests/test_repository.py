"""The repository carries its own design: code and docs cite files inside it, and those exist."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEXT = (".py", ".md", ".sh", ".toml", ".yaml", ".yml", ".jsonl", ".cfg", ".ini")


def tracked_text_files() -> list[Path]:
    names = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    return [ROOT / n for n in names if n.endswith(TEXT) and (ROOT / n).is_file()]


def test_no_file_cites_a_design_document_outside_the_repository():
    outside = re.compile(r"DESIGN\.md|STYLE\.md|\.\./shared/|/work/shared")
    offenders = [
        f"{path.relative_to(ROOT)}:{i}: {line.strip()[:100]}"
        for path in tracked_text_files()
        if path.name != "test_repository.py"
        for i, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if outside.search(line)
    ]
    assert not offenders, "cite docs/ instead:\n" + "\n".join(offenders)


def test_every_docs_page_the_code_cites_exists():
    cited = re.compile(r"\bdocs/([A-Za-z0-9_.-]+\.md)")
    missing = sorted(
        f"{path.relative_to(ROOT)} cites docs/{name}"
        for path in tracked_text_files()
        for name in cited.findall(path.read_text(errors="replace"))
        if not (ROOT / "docs" / name).is_file()
    )
    assert not missing, "\n".join(missing)
