#!/usr/bin/env bash
# RainStorm operator written in bash + awk: upper-cases every tuple's value, key unchanged.
#
# usage: upper.sh
#
# Shows that an operator can be any executable speaking the line protocol: read
# `key<TAB>value` lines on stdin, write `key<TAB>value` lines on stdout. Escapes in the value
# (\t \n \r \\) are copied through as they are, so `\t` does not turn into `\T`. Runs awk in
# the C locale, so only ASCII letters change and the output never depends on the machine's
# locale (operators must be deterministic).
#
# Latency: a tuple must not sit in a buffer while the stream idles. Each output line is
# flushed at once, and mawk (Debian's default awk) additionally needs `-W interactive`, or it
# waits to fill its input buffer before handling any line; gawk handles short reads by itself.
set -euo pipefail
if [ "$#" -ne 0 ]; then
    echo "usage: upper.sh   (takes no arguments)" >&2
    exit 2
fi
export LC_ALL=C
awk_opts=()
case "$(awk -W version 2>&1 </dev/null || true)" in
    *mawk*) awk_opts=(-W interactive) ;;
esac
exec awk "${awk_opts[@]}" '
function up(v,    out, j) {
    if (index(v, "\\") == 0)
        return toupper(v)
    out = ""
    while ((j = index(v, "\\")) > 0) {
        out = out toupper(substr(v, 1, j - 1)) substr(v, j, 2)
        v = substr(v, j + 2)
    }
    return out toupper(v)
}
{
    line = $0
    sub(/\r$/, "", line)
    tab = index(line, "\t")
    if (tab == 0) { key = ""; val = line }
    else { key = substr(line, 1, tab - 1); val = substr(line, tab + 1) }
    print key "\t" up(val)
    fflush()
}
'
