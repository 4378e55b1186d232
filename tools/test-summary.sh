#!/bin/sh
# Sums every "N passed, N failed" line of a test log into one last line; exits 1 on any failure.
log="$1"
awk '
  /^[0-9]+ passed, [0-9]+ failed/ { p += $1; f += $3; seen = 1 }
  END {
    if (!seen) { f += 1; print "no test summary found in the log" }
    printf "%d passed, %d failed\n", p, f
    exit (f > 0 ? 1 : 0)
  }' "$log"
