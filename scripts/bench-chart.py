#!/usr/bin/env python3
"""Renders the side-by-side benchmark as a PNG: median throughput ratio per scenario and target.

Usage: scripts/bench-chart.py RESULTS.tsv [RESULTS.tsv ...] OUTPUT.png
The TSV files are `results.tsv` of runs of the harness in ../shared/bench (run.sh); ratios are taken against the
scenario's reference within each round (origin-static for `hit`, origin for the others), then the median over
rounds is drawn. Needs matplotlib (`pip install matplotlib`).
"""
import csv
import statistics
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

REFERENCE = {"hit": "origin-static"}
ORDER = ["edge", "nginx-cache", "nginx-proxy", "varnish"]


def ratios(paths):
    """{scenario: {target: [ratio per round]}} from one or more results.tsv files."""
    out = defaultdict(lambda: defaultdict(list))
    for run, path in enumerate(paths):
        rounds = defaultdict(dict)
        with open(path, newline="") as f:
            for row in csv.DictReader(f, delimiter="\t"):
                rounds[(run, row["round"], row["scenario"])][row["target"]] = float(row["rps"])
        for (_, _, scenario), targets in rounds.items():
            reference = targets.get(REFERENCE.get(scenario, "origin"))
            if not reference:
                continue
            for target, rps in targets.items():
                if target in ORDER:
                    out[scenario][target].append(rps / reference)
    return out


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    data = ratios(sys.argv[1:-1])
    scenarios = [s for s in ["hit", "pass", "nocache"] if s in data]
    targets = [t for t in ORDER if any(t in data[s] for s in scenarios)]
    width = 0.8 / max(len(targets), 1)
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
    top = 1.0
    for i, target in enumerate(targets):
        medians = [statistics.median(data[s][target]) if data[s].get(target) else 0 for s in scenarios]
        xs = [x + (i - (len(targets) - 1) / 2) * width for x in range(len(scenarios))]
        top = max([top, *medians])
        bars = ax.bar(xs, medians, width, label=target)
        ax.bar_label(bars, fmt="%.2f", fontsize=8)
    ax.set_xticks(range(len(scenarios)))
    ax.set_xticklabels([f"{s}\n(vs {REFERENCE.get(s, 'origin')})" for s in scenarios])
    ax.set_ylabel("throughput ratio (median over rounds)")
    ax.set_title("cloudreve-edge beside nginx and Varnish, one core each (../shared/bench)")
    ax.axhline(1.0, color="grey", linewidth=0.8, linestyle=":")  # the reference
    ax.set_ylim(0, top * 1.12)
    ax.legend()
    fig.tight_layout()
    fig.savefig(sys.argv[-1])


if __name__ == "__main__":
    main()
