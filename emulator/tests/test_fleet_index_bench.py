"""bench/fleet_index.py, run small: every list pages through the whole fleet with the
number of requests its page size implies (its timings are printed, never asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

BENCH = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "bench", "fleet_index.py"
)


def test_fleet_index_bench_pages_everything():
    out = subprocess.run(
        [sys.executable, BENCH, "--count", "600", "--json"],
        capture_output=True, text=True, timeout=300, check=True,
    ).stdout
    print(out)
    rows = {row["call"]: row for row in json.loads(out.strip().splitlines()[-1].removeprefix("RESULT "))}
    expected = {
        "ListThings thingTypeName (250/page)": (3, 600),
        "ListCertificates (250/page)": (3, 601),  # plus the one real certificate the copies come from
        "ListTargetsForPolicy (250/page)": (3, 600),
        "SearchIndex thingTypeName (100/page)": (6, 600),
        "SearchIndex ... connectivity.connected:true": (2, 150),  # every fourth thing
        "SearchIndex ... shadow.hasDelta:true": (1, 12),  # every fiftieth
        "SearchIndex thingTypeName (100/page), again": (6, 600),
        "ListThings thingTypeName (250/page), again": (3, 600),
    }
    assert {call: (rows[call]["requests"], rows[call]["items"]) for call in expected} == expected
