"""The text of a stored file, for chunking: plain text, Markdown, JSON and source code as they are (UTF-8), HTML
without its markup, PDF through pypdf. A file whose text cannot be had raises Unreadable with OpenAI's code."""

from __future__ import annotations

import io
from html.parser import HTMLParser
from pathlib import PurePath

HTML = {".html", ".htm", ".xhtml"}
#: Elements whose text is not the document's.
SKIPPED = {"script", "style", "head", "template", "noscript"}
#: HTML elements that end a line of the text.
BLOCKS = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "section", "article", "table", "blockquote"}


class Unreadable(Exception):
    """`code` is OpenAI's last_error code: `unsupported_file` or `invalid_file`."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def text_of(data: bytes, filename: str) -> str:
    suffix = PurePath(filename).suffix.lower()
    if suffix == ".pdf" or data.startswith(b"%PDF-"):
        text = pdf_text(data)
    else:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise Unreadable("unsupported_file", f"'{filename}' is neither UTF-8 text nor a PDF.") from None
        if suffix in HTML:
            text = html_text(text)
    if not text.strip():
        raise Unreadable("invalid_file", f"'{filename}' holds no text.")
    return text


def pdf_text(data: bytes) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data))
        return "\n\n".join(page.extract_text() or "" for page in reader.pages)
    except (PyPdfError, ValueError, KeyError, TypeError, OSError) as exc:
        raise Unreadable("invalid_file", f"The PDF could not be read: {exc}") from None


class _Text(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag, attrs):
        if tag in SKIPPED:
            self.skipping += 1
        elif tag in BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in SKIPPED:
            self.skipping = max(0, self.skipping - 1)
        elif tag in BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data):
        if not self.skipping:
            self.parts.append(data)


def html_text(html: str) -> str:
    parser = _Text()
    parser.feed(html)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    return "\n".join(line for line in lines if line)
