#!/usr/bin/env python3
"""Compute what app1 / app2 must output, straight from the CSV, with no engine involved.

    python3 examples/reference.py app1 examples/data/signs.csv           # sorted expected lines
    python3 examples/reference.py app2 examples/data/signs.csv
    python3 examples/reference.py app1 examples/data/signs.csv --compare out/app1.txt

app1: lines containing "Punched Telespar" -> CSV columns 3-5.
app2: lines containing "Punched Telespar" -> running count per CSV column 9.

The engine's output order depends on scheduling, so outputs are compared as multisets and
printed sorted (by code point, the same order as `LC_ALL=C sort`). For app2 the running
counts of a category with n matching lines are exactly `CAT,1` ... `CAT,n`, whichever order
the tuples arrived in, so that multiset is the expected output.

Every line of the file is a tuple, the header included (it matches no app's filter with the
default parameters). A trailing "\\r" is dropped from each line, the way line readers treat
CRLF files. Each line is parsed with Python's csv module; a column beyond the end of a
record is empty. select's output is re-quoted like csv.writer (only where needed); count's
`VALUE,COUNT` is written as is, like the built-in count-by.

--compare FILE checks FILE (the sink output) against the reference instead of printing it
and exits 0 if the multisets are equal, 1 if not, listing a few missing / unexpected lines.
"""

import argparse
import collections
import csv
import io
import sys

# A field may be as long as a line (the engine carries lines up to about 64 MiB); the csv
# module's default cap is 128 KiB.
csv.field_size_limit(1 << 30)

APP_DEFAULTS = {"app1": {"select": "3-5"}, "app2": {"count_col": 9}}
DEFAULT_FILTER = "Punched Telespar"


def read_lines(path):
    with open(path, "rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the newline ending the last line does not start another one
    for raw in lines:
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        # As the engine reads its source: UTF-8 text, a byte sequence that is not UTF-8
        # taken as U+FFFD (README, "Every line of the source is a tuple").
        yield raw.decode("utf-8", "replace")


def parse_record(line):
    rows = list(csv.reader([line]))
    return rows[0] if rows else []


def write_record(fields):
    buf = io.StringIO()
    csv.writer(buf).writerow(fields)  # QUOTE_MINIMAL, "\r\n" terminator
    return buf.getvalue()[:-2]


def parse_columns(spec):
    cols = []
    for part in spec.split(","):
        if "-" in part:
            a, b = (int(x) for x in part.split("-", 1))
            cols.extend(range(a, b + 1) if b >= a else range(a, b - 1, -1))
        else:
            cols.append(int(part))
    if not cols or min(cols) < 1:
        raise ValueError("bad column list %r" % spec)
    return cols


def matching_records(path, contains=None, filter_col=None, filter_value=None):
    """Yield (line, fields-or-None) for lines passing the filter."""
    for line in read_lines(path):
        if filter_col is not None:
            fields = parse_record(line)
            if len(fields) >= filter_col and fields[filter_col - 1] == filter_value:
                yield line, fields
        elif contains is None or contains in line:
            yield line, None


def reference_lines(app, path, contains=DEFAULT_FILTER, filter_col=None, filter_value=None,
                    select=None, count_col=None):
    """Sorted list of the lines the app's sink must hold."""
    if filter_col is not None:
        contains = None
    out = []
    if app == "app1":
        cols = parse_columns(select or APP_DEFAULTS["app1"]["select"])
        for line, fields in matching_records(path, contains, filter_col, filter_value):
            if fields is None:
                fields = parse_record(line)
            out.append(write_record([fields[c - 1] if c <= len(fields) else "" for c in cols]))
    elif app == "app2":
        col = count_col or APP_DEFAULTS["app2"]["count_col"]
        totals = collections.Counter()
        for line, fields in matching_records(path, contains, filter_col, filter_value):
            if fields is None:
                fields = parse_record(line)
            totals[fields[col - 1] if len(fields) >= col else ""] += 1
        for cat, n in totals.items():
            for i in range(1, n + 1):
                out.append("%s,%d" % (cat, i))
    else:
        raise ValueError("unknown app %r (expected app1 or app2)" % app)
    out.sort()
    return out


def compare(expected, got):
    """Multiset comparison -> dict with counts and a few examples of each difference."""
    want = collections.Counter(expected)
    have = collections.Counter(got)
    missing = want - have
    extra = have - want
    dup = sum(c for k, c in extra.items() if k in want)
    return {
        "expected": sum(want.values()),
        "got": sum(have.values()),
        "missing": sum(missing.values()),
        "extra": sum(extra.values()),
        "extra_duplicates": dup,  # extra copies of lines that are expected (replays)
        "missing_examples": sorted(missing)[:5],
        "extra_examples": sorted(extra)[:5],
        "equal": not missing and not extra,
    }


def read_output(path):
    with open(path, "rb") as f:
        data = f.read()
    lines = data.decode("utf-8", "surrogateescape").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="Independent reference output for the RainStorm demo apps.",
        epilog="Filter: substring --contains (default %r) or, with --filter-col, exact "
               "equality of that CSV column with --filter-value." % DEFAULT_FILTER)
    ap.add_argument("app", choices=["app1", "app2"])
    ap.add_argument("csv", help="the input CSV (every line is a tuple)")
    ap.add_argument("--contains", default=DEFAULT_FILTER,
                    help="keep lines containing this text (default %(default)r)")
    ap.add_argument("--filter-col", type=int, help="instead: keep lines whose column N ...")
    ap.add_argument("--filter-value", default=DEFAULT_FILTER,
                    help="... equals this (default %(default)r)")
    ap.add_argument("--select", default="3-5", help="app1 columns (default %(default)s)")
    ap.add_argument("--count-col", type=int, default=9,
                    help="app2 category column (default %(default)s)")
    ap.add_argument("--compare", metavar="OUTPUT",
                    help="compare this sink output with the reference instead of printing")
    args = ap.parse_args(argv)

    expected = reference_lines(args.app, args.csv, contains=args.contains,
                               filter_col=args.filter_col, filter_value=args.filter_value,
                               select=args.select, count_col=args.count_col)
    if not args.compare:
        out = sys.stdout.buffer
        for line in expected:
            out.write(line.encode("utf-8", "surrogateescape") + b"\n")
        out.flush()
        return 0

    r = compare(expected, read_output(args.compare))
    if r["equal"]:
        print("OK: %s matches the %s reference (%d lines)" % (args.compare, args.app,
                                                               r["expected"]))
        return 0
    print("MISMATCH: %s vs %s reference: expected %d lines, got %d; %d missing, %d unexpected "
          "(%d of them extra copies of expected lines)"
          % (args.compare, args.app, r["expected"], r["got"], r["missing"], r["extra"],
             r["extra_duplicates"]))
    for line in r["missing_examples"]:
        print("  missing:    %r" % line)
    for line in r["extra_examples"]:
        print("  unexpected: %r" % line)
    return 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # e.g. piped into head
        sys.exit(0)
