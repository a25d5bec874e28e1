#!/usr/bin/env python3
"""RainStorm operator: keep tuples whose value contains SUBSTR (case-sensitive).

usage: filter_contains.py SUBSTR

Passing tuples are written back unchanged (same key, same value). Protocol: one
`key<TAB>value` line per tuple on stdin and stdout, with tab, newline, carriage return and
backslash inside a field written as \\t, \\n, \\r, \\\\.
"""

import os
import sys

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

# ---- the operator ---------------------------------------------------------------------------


def main(argv):
    if len(argv) != 1:
        sys.stderr.write("usage: filter_contains.py SUBSTR\n")
        return 2
    needle = argv[0]
    # Fast path: for a value with no escapes the escaped text *is* the value, so test it as is.
    # A needle with characters that get escaped can only be found after unescaping.
    needle_is_plain = escape(needle) == needle

    def batch(lines):
        kept = []
        for line in lines:
            _, value = split_line(line)
            if needle_is_plain and "\\" not in value:
                hit = needle in value
            else:
                hit = needle in unescape(value)
            if hit:
                kept.append(line)
                kept.append("\n")
        return "".join(kept)

    serve(batch)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BrokenPipeError:
        sys.exit(1)
