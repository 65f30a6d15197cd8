"""MkDocs hook: the site's home page is the README, so the two cannot drift apart.

docs/index.md is a stand-in; its Markdown is replaced by README.md's, with the README's links into
docs/ (`docs/NAME.md`, `docs/gallery/...`) made relative to the docs folder, so that
`mkdocs build --strict` checks them like any other page's links.
"""

from __future__ import annotations

import re
from pathlib import Path

_README = Path(__file__).resolve().parent.parent / "README.md"


def on_page_markdown(markdown, page, config, files):
    if page.file.src_uri != "index.md":
        return markdown
    text = _README.read_text(encoding="utf-8")
    return re.sub(r'(\]\(|src=")docs/', r"\1", text)
