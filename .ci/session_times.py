"""Pass nox's output through, then print each session's wall time and result (nox rounds to minutes)."""

import re
import sys
import time

rows: dict[str, float] = {}
results: dict[str, str] = {}
current, start = None, time.monotonic()
for line in sys.stdin:
    sys.stdout.write(line)
    sys.stdout.flush()
    now = time.monotonic()
    if m := re.match(r"nox > Running session (\S+)", line):
        if current is not None:
            rows[current] = now - start
        current, start = m.group(1), now
    elif m := re.match(r"nox > \* (\S+): (\w+)", line):
        results[m.group(1)] = m.group(2)
if current is not None:
    rows[current] = time.monotonic() - start
print("\n== session times (wall clock, environment included) ==")
for name, seconds in rows.items():
    print(f"{name:16s} {results.get(name, '?'):8s} {seconds:6.0f} s")
print(f"{'total':16s} {'':8s} {sum(rows.values()):6.0f} s")
