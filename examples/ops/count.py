#!/usr/bin/env python3
"""RainStorm operator: running count per value of CSV column COL (stateful).

usage: count.py COL

For every input tuple the count of the text in column COL (1-based, CSV rules; empty if the
record is shorter) goes up by one, and the operator emits key = that text and
value = `TEXT,COUNT`, written as is (no CSV quoting), like the built-in `count-by`. The
output depends only on the order of the inputs, as RainStorm's replay requires. For correct
totals every tuple of one category must reach the same task, so the stage before this one
should key its output by the same column (see filter.py --key-col or keyby.py).

Protocol: one `key<TAB>value` line per tuple on stdin and stdout, with tab, newline,
carriage return and backslash inside a field written as \\t, \\n, \\r, \\\\.
"""

import csv
import os
import sys

# A field may be as long as a line (the engine carries lines up to about 64 MiB); the csv
# module's default cap is 128 KiB.
csv.field_size_limit(1 << 30)

# ---- protocol helpers (the same block is in every Python operator here) -------------------

_UNESCAPES = {"t": "\t", "n": "\n", "r": "\r", "\\": "\\"}


def unescape(s):
    """Undo the protocol escapes; an unknown escape is kept as written."""
    if "\\" not in s:
        return s
    parts, i, n = [], 0, len(s)
    while i < n:
        j = s.find("\\", i)
        if j < 0:
            parts.append(s[i:])
            break
        parts.append(s[i:j])
        if j + 1 == n:
            parts.append("\\")
            break
        c = s[j + 1]
        parts.append(_UNESCAPES.get(c, "\\" + c))
        i = j + 2
    return "".join(parts)


def escape(s):
    if "\\" in s or "\t" in s or "\n" in s or "\r" in s:
        s = (s.replace("\\", "\\\\").replace("\t", "\\t")
             .replace("\n", "\\n").replace("\r", "\\r"))
    return s


def split_line(line):
    """Raw protocol line (no newline) -> (escaped key, escaped value)."""
    if line.endswith("\r"):
        line = line[:-1]
    key, tab, value = line.partition("\t")
    if not tab:  # no tab at all: the whole line is the value
        return "", key
    return key, value


def serve(batch):
    """Feed complete input lines to batch(lines) -> output text, until stdin closes.

    os.read returns whatever the pipe holds (up to 64 KiB), so under load the batches are
    big and writes are amortised, while at a trickle every tuple is answered at once: output
    is flushed whenever the operator has consumed all input that was available.
    """
    out = sys.stdout.buffer
    tail = b""
    while True:
        chunk = os.read(0, 1 << 16)
        if not chunk:
            break
        cut = chunk.rfind(b"\n")
        if cut < 0:
            tail += chunk
            continue
        data = (tail + chunk[:cut]) if tail else chunk[:cut]
        tail = chunk[cut + 1:]
        text = batch(data.decode("utf-8", "surrogateescape").split("\n"))
        if text:
            out.write(text.encode("utf-8", "surrogateescape"))
            out.flush()
    if tail:
        text = batch([tail.decode("utf-8", "surrogateescape")])
        if text:
            out.write(text.encode("utf-8", "surrogateescape"))
    out.flush()

# ---- CSV helpers (same block in every CSV-aware operator here) ------------------------------


def csv_fields(value):
    """Split one CSV record the way Python's csv module does (RFC 4180 quoting).

    A value with no double quote is split on commas directly, which is what the csv module
    would do anyway, only much faster. The empty value is one empty field.
    """
    if '"' not in value:
        return value.split(",")
    try:
        return next(csv.reader((value,), strict=False), [""])
    except csv.Error:  # e.g. a bare newline outside quotes: fall back to plain splitting
        return value.split(",")


def csv_quote(field):
    """Quote a field only when needed, like csv.writer's QUOTE_MINIMAL."""
    if "," in field or '"' in field or "\n" in field or "\r" in field:
        return '"' + field.replace('"', '""') + '"'
    return field


def csv_join(fields):
    if len(fields) == 1 and fields[0] == "":
        return '""'  # csv.writer writes a lone empty field as "" so the row is not blank
    return ",".join([csv_quote(f) for f in fields])


def column_index(text):
    """1-based column number from the command line -> 0-based index."""
    col = int(text)
    if col < 1:
        raise ValueError("columns are numbered from 1")
    return col - 1

# ---- the operator ---------------------------------------------------------------------------


def main(argv):
    try:
        if len(argv) != 1:
            raise ValueError("wrong number of arguments")
        col = column_index(argv[0])
    except ValueError as e:
        sys.stderr.write("count.py: %s\nusage: count.py COL\n" % e)
        return 2
    counts = {}
    prefix = {}  # category -> its escaped "key<TAB>TEXT," (categories are few)

    def batch(lines):
        out = []
        for line in lines:
            _, value = split_line(line)
            fields = csv_fields(unescape(value))
            cat = fields[col] if col < len(fields) else ""
            n = counts.get(cat, 0) + 1
            counts[cat] = n
            pre = prefix.get(cat)
            if pre is None:
                pre = prefix[cat] = escape(cat) + "\t" + escape(cat) + ","
            out.append(pre + str(n) + "\n")
        return "".join(out)

    serve(batch)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BrokenPipeError:
        sys.exit(1)
