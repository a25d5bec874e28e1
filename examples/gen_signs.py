#!/usr/bin/env python3
"""Generate a synthetic, traffic-sign-inventory-like CSV for RainStorm demos and benchmarks.

The output is fully determined by --seed and --lines: the same arguments always give the
same bytes (Python's `random.Random` Mersenne Twister is stable across versions for the calls
used here: random(), getrandbits() and choices() with cumulative weights).

Layout (12 columns, a header line first; --lines counts the header too, so the file has
exactly N lines):

     1 X            longitude, 7 decimals
     2 Y            latitude, 7 decimals
     3 OBJECTID     1, 2, 3, ... (the data row number)
     4 Sign_Type    e.g. "Stop"; a few values contain a quoted comma
     5 Size_        e.g. 30x30
     6 Supplement   often empty; sometimes a quoted value with a comma
     7 Sign_Post    small set: "Punched Telespar", "Unknown", "Wood", "Steel", "Round", ...
     8 Year_Insta   1985..2023, or empty
     9 Category     8 values: Warning, Regulatory, Guide, School, ...
    10 Notes        free text, sometimes quoted with commas and doubled quotes
    11 MUTCD        sign code, e.g. R1-1
    12 GlobalID     {8-4-4-4-12 hex}

Guarantees the demos rely on: no tabs, backslashes, carriage returns or embedded newlines
anywhere; the text "Punched Telespar" appears only in column 7; column 9 never needs quoting.
Average line length is about 146 bytes.
"""

import argparse
import os
import random
import sys

HEADER = ("X,Y,OBJECTID,Sign_Type,Size_,Supplement,Sign_Post,Year_Insta,"
          "Category,Notes,MUTCD,GlobalID")

# (Sign_Type as it appears in the file, MUTCD code, Category, weight)
SIGNS = [
    ("Stop", "R1-1", "Regulatory", 14),
    ("Yield", "R1-2", "Regulatory", 5),
    ("Speed Limit 25", "R2-1", "Regulatory", 8),
    ("Speed Limit 35", "R2-1", "Regulatory", 4),
    ("No Parking Any Time", "R7-1", "Parking", 7),
    ("No Parking 2AM-6AM", "R7-201", "Parking", 3),
    ("Parking 2 Hours", "R7-108", "Parking", 3),
    ("Handicap Parking", "R7-8", "Parking", 2),
    ("One Way", "R6-1", "Regulatory", 4),
    ("Do Not Enter", "R5-1", "Regulatory", 3),
    ("No Left Turn", "R3-2", "Regulatory", 2),
    ('"Keep Right, Median"', "R4-7", "Regulatory", 1),
    ("Street Name", "D3-1", "Guide", 9),
    ("Route Marker", "M1-4", "Guide", 2),
    ("Destination", "D1-2", "Guide", 2),
    ('"Bike Route, Shared Lane"', "D11-1", "Recreation", 1),
    ("Trail Crossing", "W11-15", "Recreation", 1),
    ("Park Entrance", "D6-1", "Recreation", 1),
    ("Curve Ahead", "W1-2", "Warning", 3),
    ('"Curve, Left"', "W1-2L", "Warning", 1),
    ("Pedestrian Crossing", "W11-2", "Warning", 4),
    ("Deer Crossing", "W11-3", "Warning", 1),
    ("Dead End", "W14-1", "Warning", 2),
    ("Signal Ahead", "W3-3", "Warning", 2),
    ("Slippery When Wet", "W8-5", "Warning", 1),
    ("School Zone", "S5-1", "School", 3),
    ("School Crossing", "S1-1", "School", 2),
    ('"School Bus Stop, Ahead"', "S3-1", "School", 1),
    ("Road Work Ahead", "W20-1", "Construction", 2),
    ("Detour", "M4-8", "Construction", 1),
    ("Lane Closed", "W20-5", "Construction", 1),
    ("Hospital", "D9-2", "Service", 1),
    ("Gas", "D9-7", "Service", 1),
    ("Library", "I-8", "Service", 1),
]

SIZES = [("30x30", 30), ("24x24", 20), ("36x36", 10), ("24x30", 12), ("18x24", 10),
         ("48x48", 3), ("30x36", 8), ("12x18", 7)]

SUPPLEMENTS = [("", 60), ("None", 15), ("Arrow", 8), ("Plaque", 6), ("Ahead", 5),
               ('"Left, Right"', 3), ('"Distance, 500 FT"', 2), ("Time Limit", 1)]

POSTS = [("Punched Telespar", 30), ("Unknown", 12), ("Wood", 14), ("Steel", 12),
         ("Round", 10), ("U-Channel", 9), ("Square Tube", 6), ("Mast Arm", 4),
         ("Signal Pole", 2), ("Utility Pole", 1)]

NOTES = [
    ("", 8),
    ("Faded", 8),
    ("Sheeting peeling at the corners", 5),
    ("Inspected during the annual survey and no defects found", 8),
    ("Relocated for sidewalk project", 4),
    ("Bent post", 5),
    ("Replaced after storm damage", 6),
    ("Graffiti removed", 3),
    ("Obstructed by tree branches", 5),
    ("Installed with new curb", 4),
    ("Reflectivity test passed", 6),
    ("Reflectivity below minimum", 3),
    ("Check mounting height", 3),
    ("Reported missing by resident", 2),
    ('"Faded, replacement scheduled"', 5),
    ('"Near school, north side of street"', 4),
    ('"Post leaning, needs reset"', 3),
    ('"Marked ""temporary"" by contractor, verify"', 1),
    ('"Two signs on one post, upper is older"', 2),
]

YEARS = [str(y) for y in range(1985, 2024)]


def _table(pairs):
    values = [p[0] for p in pairs]
    cum, total = [], 0
    for p in pairs:
        total += p[-1]
        cum.append(total)
    return values, cum


def generate(out, lines, seed, chunk=20000):
    """Write `lines` lines (header included) to the binary stream `out`."""
    rng = random.Random(seed)
    sign_idx, sign_cum = _table([(i, s[3]) for i, s in enumerate(SIGNS)])
    sizes, size_cum = _table(SIZES)
    supps, supp_cum = _table(SUPPLEMENTS)
    posts, post_cum = _table(POSTS)
    notes, note_cum = _table(NOTES)
    year_pool = YEARS + [""] * 4  # roughly 1 in 11 rows has no year

    if lines <= 0:
        return
    out.write((HEADER + "\n").encode())
    remaining = lines - 1
    oid = 0
    rand = rng.random
    bits = rng.getrandbits
    while remaining > 0:
        n = min(chunk, remaining)
        remaining -= n
        s_col = rng.choices(sign_idx, cum_weights=sign_cum, k=n)
        z_col = rng.choices(sizes, cum_weights=size_cum, k=n)
        u_col = rng.choices(supps, cum_weights=supp_cum, k=n)
        p_col = rng.choices(posts, cum_weights=post_cum, k=n)
        n_col = rng.choices(notes, cum_weights=note_cum, k=n)
        y_col = rng.choices(year_pool, k=n)
        rows = []
        append = rows.append
        for i in range(n):
            oid += 1
            st, mutcd, cat, _ = SIGNS[s_col[i]]
            g = "%032X" % bits(128)
            append("%.7f,%.7f,%d,%s,%s,%s,%s,%s,%s,%s,%s,{%s-%s-%s-%s-%s}" % (
                -88.3200000 + rand() * 0.1500000,
                40.0600000 + rand() * 0.0900000,
                oid, st, z_col[i], u_col[i], p_col[i], y_col[i], cat, n_col[i], mutcd,
                g[:8], g[8:12], g[12:16], g[16:20], g[20:]))
        append("")
        out.write("\n".join(rows).encode())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lines", type=int, default=1_000_000,
                    help="total lines in the file, header included (default 1000000)")
    ap.add_argument("--seed", type=int, default=425, help="PRNG seed (default 425)")
    ap.add_argument("--out", default="-", help="output path, '-' for stdout (default)")
    args = ap.parse_args(argv)

    if args.out == "-":
        generate(sys.stdout.buffer, args.lines, args.seed)
        sys.stdout.buffer.flush()
        return 0
    parent = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(parent, exist_ok=True)
    tmp = args.out + ".tmp-%d" % os.getpid()
    with open(tmp, "wb", buffering=1 << 20) as f:
        generate(f, args.lines, args.seed)
    os.replace(tmp, args.out)  # never leave a half-written dataset under the final name
    return 0


if __name__ == "__main__":
    sys.exit(main())
