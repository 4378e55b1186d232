#!/bin/sh
# Sums every "N passed, N failed" line of a test log into one last line; exits 1 on any failure.
# Before it, repeats the log's short failure lines (specs' "FAILED: ", torture's, a C test binary
# or the Python suite that failed), so that the end of the log alone says what failed.
log="$1"
grep -E '^(FAILED: |torture: FAILED|FAIL: |ERROR: )|: CHECK(_NEAR)? failed|^[0-9]+ passed, [1-9][0-9]* failed' "$log" | cut -c1-300 | head -n 30
awk '
  /^[0-9]+ passed, [0-9]+ failed/ { p += $1; f += $3; seen = 1 }
  END {
    if (!seen) { f += 1; print "no test summary found in the log" }
    printf "%d passed, %d failed\n", p, f
    exit (f > 0 ? 1 : 0)
  }' "$log"
