"""mkdocs hooks: the README is the site's first page and the CHANGELOG its last, with
their links rewritten for the site (``docs/x.md`` -> ``x.md``, repository files -> the
text of their names), so the site and the repository say the same thing once."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent
PAGES = {"index.md": "README.md", "changelog.md": "CHANGELOG.md"}


def on_files(files: Files, config: Any) -> Files:
    for name in PAGES:
        files.append(File.generated(config, name, content=_page(PAGES[name])))
    return files


def _page(source: str) -> str:
    text = (ROOT / source).read_text(encoding="utf-8")
    text = re.sub(r"\]\(docs/([^)]+)\)", r"](\1)", text)
    text = text.replace("](CHANGELOG.md)", "](changelog.md)")
    # a link to a file that is not a page (CONTRIBUTING.md, LICENSE): its name, as code
    other = r"\[([^\]]+)\]\((?!https?:|#)([^)]+?\.(?!md\))\w+|CONTRIBUTING\.md)\)"
    return re.sub(other, r"\1", text)
