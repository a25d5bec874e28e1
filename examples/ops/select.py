#!/usr/bin/env python3
"""RainStorm operator: project CSV columns, like the built-in `select`.

usage: select.py COLS        e.g. 3,4,5  or  3-5  or  1,3-5,9

Columns are 1-based and may repeat or go backwards (5,4). The value is parsed as one CSV
record; the chosen fields are joined with commas, quoting a field only where CSV needs it
(csv.writer's QUOTE_MINIMAL). A column past the end of the record gives an empty field.
The key is unchanged.

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


def parse_cols(spec):
    cols = []
    for part in spec.split(","):
        part = part.strip()
        if "-" in part:
            lo, hi = part.split("-", 1)
            lo, hi = column_index(lo), column_index(hi)
            step = 1 if hi >= lo else -1
            cols.extend(range(lo, hi + step, step))
        else:
            cols.append(column_index(part))
    if not cols:
        raise ValueError("no columns given")
    return cols


def main(argv):
    try:
        if len(argv) != 1:
            raise ValueError("wrong number of arguments")
        cols = parse_cols(argv[0])
    except ValueError as e:
        sys.stderr.write("select.py: %s\nusage: select.py COLS   (e.g. 3,4,5 or 3-5)\n" % e)
        return 2

    def batch(lines):
        out = []
        for line in lines:
            key, value = split_line(line)
            fields = csv_fields(unescape(value))
            n = len(fields)
            picked = [fields[c] if c < n else "" for c in cols]
            out.append(key + "\t" + escape(csv_join(picked)) + "\n")
        return "".join(out)

    serve(batch)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BrokenPipeError:
        sys.exit(1)
