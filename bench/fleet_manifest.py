#!/usr/bin/env python3
"""Write a fleet manifest (CSV) for bench/fleet.sh and bench/fleet_ceiling.py.

    fleet_manifest.py N FILE

Header `thing_name,serial,line,firmware`, then N rows:

    bench-sensor-00001,SN-2025-00001,line-1,1.0.0

`thing_name` is what `iotreg up --fleet` requires; every other column becomes a
thing attribute (names [a-zA-Z0-9_.,@/:#-], values [a-zA-Z0-9_.,@/:#=\\[\\]-]*,
which these values respect). Deterministic: the same N gives the same file.
Standard library only.
"""

from __future__ import annotations

import csv
import sys

HEADER = ("thing_name", "serial", "line", "firmware")
FIRMWARE = ("1.0.0", "1.0.1", "1.1.0", "2.0.0-rc.1")


def rows(n: int):
    for i in range(1, n + 1):
        yield (
            f"bench-sensor-{i:05d}",
            f"SN-2025-{i:05d}",
            f"line-{(i - 1) % 4 + 1}",
            FIRMWARE[(i - 1) % len(FIRMWARE)],
        )


def main(argv: list[str]) -> int:
    if len(argv) != 3 or not argv[1].isdigit() or not 1 <= int(argv[1]) <= 99999:
        print("usage: fleet_manifest.py N FILE   (1 <= N <= 99999)", file=sys.stderr)
        return 2
    n, path = int(argv[1]), argv[2]
    with open(path, "w", newline="", encoding="ascii") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(HEADER)
        w.writerows(rows(n))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
