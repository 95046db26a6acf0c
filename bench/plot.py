#!/usr/bin/env python3
"""The README's picture: start-up time against the peers, and app throughput against
Docker and the host, from the JSON files run_startup.py and apps.py write.

    sudo .venv/bin/python bench/run_startup.py --json bench/results/startup.json
    sudo .venv/bin/python bench/apps.py --json bench/results/apps.json
    python3 bench/plot.py            # → docs/bench.png (Debian's python3-matplotlib)

matplotlib is a benchmark tool only, never a dependency of droot: run this with the
system's python3 (apt-get install python3-matplotlib) or a venv that has it.
"""

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: a file
import matplotlib.pyplot as plt  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
STARTUP_TOOLS = ["droot run", "crun run", "runc run", "systemd-nspawn", "docker run"]
WAYS = ["host", "droot run", "docker --net host", "docker run -p"]
DROOT_COLOUR, PEER_COLOUR = "#d9480f", "#868e96"


def startup(axes, medians: dict):
    tools = [tool for tool in STARTUP_TOOLS if tool in medians]
    values = [medians[tool] for tool in tools]
    colours = [DROOT_COLOUR if tool.startswith("droot") else PEER_COLOUR for tool in tools]
    bars = axes.barh(tools[::-1], values[::-1], color=colours[::-1])
    axes.bar_label(bars, labels=[f"{value:.0f} ms" for value in values[::-1]], padding=3)
    axes.set_title("Start /bin/true in a root (median ms, lower is better)")
    axes.set_xlim(0, max(values) * 1.25)
    axes.spines[["top", "right"]].set_visible(False)


def throughput(axes, medians: dict):
    apps = list(medians)
    width = 0.8 / len(WAYS)
    shades = {"host": "#343a40", "droot run": DROOT_COLOUR, "docker --net host": "#adb5bd",
              "docker run -p": "#dee2e6"}
    for index, way in enumerate(WAYS):
        ratios = [medians[app][way]["rps"] / medians[app]["host"]["rps"] for app in apps]
        positions = [number + (index - (len(WAYS) - 1) / 2) * width
                     for number in range(len(apps))]
        bars = axes.bar(positions, ratios, width, label=way, color=shades[way],
                        edgecolor="#495057", linewidth=0.5)
        axes.bar_label(bars, labels=[f"{ratio:.2f}" for ratio in ratios], fontsize=8,
                       padding=2)
    axes.set_xticks(range(len(apps)), [f"{app}\n(host {medians[app]['host']['rps']:.0f} req/s)"
                                       for app in apps])
    axes.set_title("App throughput with wrk, ratio to the host (higher is better)")
    axes.set_ylim(0, 1.5)  # room for the legend above the bars
    axes.axhline(1.0, color="#343a40", linewidth=0.5, linestyle=":")
    axes.legend(loc="upper center", fontsize=8, ncols=4, frameon=False)
    axes.spines[["top", "right"]].set_visible(False)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "bench.png")
    options = parser.parse_args()
    startup_results = json.loads((RESULTS / "startup.json").read_text())
    app_results = json.loads((RESULTS / "apps.json").read_text())
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4), width_ratios=[1, 1.2])
    startup(left, startup_results["medians_ms"])
    throughput(right, app_results["medians"])
    figure.text(0.5, 0.01, "2-vCPU VM shared with other work: medians of interleaved rounds "
                f"({startup_results['rounds']} for start-up, {app_results['rounds']} for the "
                "apps); bench/README.md says how to rerun", ha="center", fontsize=8,
                color="#495057")
    figure.tight_layout(rect=(0, 0.04, 1, 1))
    figure.savefig(options.output, dpi=110)
    print(options.output)


if __name__ == "__main__":
    main()
