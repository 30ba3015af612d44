#!/usr/bin/env python3
"""Plain text of an HTML documentation page (stdlib only), used to make prompt texts.

Keeps the text from the first line equal to --start (if given) on, drops <head>/<script>/<style>,
turns block elements into paragraph breaks and joins hard-wrapped lines inside a paragraph.

Example (the SmolLM2 sample text; SQLite's documentation is in the public domain):

    apt-get download sqlite3-doc && dpkg -x sqlite3-doc_*.deb sqlite3-doc
    python3 tools/html_to_text.py sqlite3-doc/usr/share/doc/sqlite3/whentouse.html \\
        --start "Appropriate Uses For SQLite" > tools/data/sqlite_whentouse.txt
"""
import argparse
import html.parser
import re
import sys

BLOCK = {"p", "h1", "h2", "h3", "h4", "li", "br", "div", "tr", "ul", "ol", "table", "blockquote", "pre"}


class _Text(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.out, self.skip = [], 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style", "head"):
            self.skip += 1
        if tag in BLOCK:
            self.out.append("\n\n")

    def handle_endtag(self, tag):
        if tag in ("script", "style", "head"):
            self.skip = max(0, self.skip - 1)
        if tag in BLOCK:
            self.out.append("\n\n")

    def handle_data(self, data):
        if not self.skip:
            self.out.append(data)


def html_to_text(src: str, start: str | None = None) -> str:
    p = _Text()
    p.feed(src)
    paras = []
    for block in re.split(r"\n\s*\n", "".join(p.out)):
        t = re.sub(r"\s+", " ", block).strip()
        if t:
            paras.append(t)
    if start:
        if start not in paras:
            raise SystemExit(f"error: no paragraph equal to {start!r}")
        paras = paras[paras.index(start):]
    return "\n\n".join(paras) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("html")
    ap.add_argument("--start", help="drop everything before the paragraph with exactly this text")
    a = ap.parse_args()
    sys.stdout.write(html_to_text(open(a.html, encoding="utf-8").read(), a.start))


if __name__ == "__main__":
    main()
