"""Markdown tables from bench/peers.sh's raw measurements.

Input rows (tab-separated): tool, scenario, round, requests, seconds, cpu_s, rss_kb.
Send lateness rows (loadfleet's fixed-rate runs): tool, p50_ms, p99_ms.
Every figure is the median over rounds, with min and max when there were several.
"""

import statistics
import sys
from collections import defaultdict

results, sizes, idle_rss, lateness_file = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
lateness = defaultdict(list)
for line in open(lateness_file):
    tool, p50, p99 = line.rstrip("\n").split("\t")
    lateness[tool].append((float(p50), float(p99)))
runs = defaultdict(list)
for line in open(results):
    tool, scenario, _round, requests, seconds, cpu, rss = line.rstrip("\n").split("\t")
    runs[(tool, scenario)].append(
        {"requests": int(requests), "seconds": float(seconds), "cpu": float(cpu), "rss": int(rss)}
    )


def spread(values, fmt):
    med = statistics.median(values)
    if len(values) == 1:
        return fmt.format(med)
    return f"{fmt.format(med)} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def rps(r):
    return r["requests"] / r["seconds"] if r["seconds"] else 0.0


def us_per_request(r):
    return r["cpu"] / r["requests"] * 1e6 if r["requests"] else float("nan")


def mib(kb):
    return kb / 1024


tools = sorted(
    {t for t, s in runs if s == "max"},
    key=lambda t: -statistics.median(rps(r) for r in runs[(t, "max")]),
)
wrk = runs.get(("wrk", "max"))
wrk_us = statistics.median(us_per_request(r) for r in wrk) if wrk else None

print("## Closed loop, 50 connections, as fast as possible")
print()
print("| tool | req/s | generator CPU µs per request | vs wrk | peak RSS MiB |")
print("|---|---|---|---|---|")
for t in tools:
    rs = runs[(t, "max")]
    us = statistics.median(us_per_request(r) for r in rs)
    ratio = f"{us / wrk_us:.2f}×" if wrk_us else "–"
    print(
        f"| {t} | {spread([rps(r) for r in rs], '{:,.0f}')} | "
        f"{spread([us_per_request(r) for r in rs], '{:.1f}')} | {ratio} | "
        f"{spread([mib(r['rss']) for r in rs], '{:.1f}')} |"
    )



def label(tool):
    """A poll variant is its tool run with `--timing poll`."""
    if tool.endswith("-poll"):
        return f"{tool[: -len('-poll')]} `--timing poll`"
    return tool


rate_tools = []
for t in tools:
    rate_tools += [v for v in (t, f"{t}-poll") if (v, "rate5000") in runs]
if rate_tools:
    print()
    print("## Fixed rate, 5,000 requests per second, 50 connections")
    print()
    print(
        "Only tools that can hold a rate (wrk cannot; h2load with `--rps 100` on each "
        "of its 50 connections). Send lateness (how late each request left after its "
        "scheduled instant) is what loadfleet reports of itself; the peers do not "
        "report theirs. loadfleet's default timing sleeps on a high-resolution timer, "
        "arrivals within 0.75 ms of each other sharing a wake-up; `--timing poll` polls "
        "for the last 2 ms before each arrival instead, which at 5,000/s on one core is "
        "all the time between them. `bench/timing.sh` has the trade-off in detail."
    )
    print()
    print("| tool | achieved req/s | generator CPU µs per request | peak RSS MiB | send lateness p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|")
    for t in rate_tools:
        rs = runs[(t, "rate5000")]
        late = lateness.get(t)
        if late:
            late_cells = (
                f"{spread([p for p, _ in late], '{:.3f}')} | {spread([p for _, p in late], '{:.3f}')}"
            )
        else:
            late_cells = "not reported | not reported"
        print(
            f"| {label(t)} | {spread([rps(r) for r in rs], '{:,.0f}')} | "
            f"{spread([us_per_request(r) for r in rs], '{:.1f}')} | "
            f"{spread([mib(r['rss']) for r in rs], '{:.1f}')} | {late_cells} |"
        )

print()
print("## Memory")
print()
print("Peak RSS with 1,000 busy connections (no think time), one run each:")
print()
print("| tool | peak RSS MiB | req/s |")
print("|---|---|---|")
for t in sorted({t for t, s in runs if s == "conn1000"}, key=lambda t: runs[(t, "conn1000")][0]["rss"]):
    r = runs[(t, "conn1000")][0]
    print(f"| {t} | {mib(r['rss']):.1f} | {rps(r):,.0f} |")
think = sorted(
    (t, int(s[len("think"):]), runs[(t, s)][0]) for t, s in runs if s.startswith("think")
)
if think:
    print()
    print(
        "Users that think 1 s after each request (mostly idle, as real users are). "
        "`loadfleet` is the whole process (controller and embedded agent), "
        "`loadfleet-agent` a remote agent alone. KiB per added user: the growth "
        "from 50 users, divided by the users added."
    )
    print()
    print("| tool | users | peak RSS MiB | KiB per user | KiB per added user | req/s |")
    print("|---|---|---|---|---|---|")
    base = {t: r for t, n, r in think if n == 50}
    for t, n, r in think:
        added = (
            f"{(r['rss'] - base[t]['rss']) / (n - 50):.1f}" if t in base and n > 50 else ""
        )
        print(
            f"| {t} | {n:,} | {mib(r['rss']):.1f} | {r['rss'] / n:.1f} | {added} | {rps(r):,.0f} |"
        )
print()
print(f"An idle `loadfleet-agent` (waiting for its controller): {mib(int(idle_rss)):.1f} MiB RSS.")

size_rows = [line.rstrip("\n").split("\t") for line in open(sizes) if line.strip()]
if size_rows:
    print()
    print("## Binary size")
    print()
    print("| binary | bytes | MB |")
    print("|---|---|---|")
    for row in size_rows:
        name, size = row[0], row[1]
        script = len(row) > 2 and row[2] == "script"
        if name == "loadfleet-agent":
            label = "loadfleet-agent (agent-small profile, stripped)"
        elif script:
            label = f"{name} (a launcher script; its runtime is not counted)"
        else:
            label = f"{name} (as installed)"
        print(f"| {label} | {int(size):,} | {int(size) / 1e6:.1f} |")
