#!/usr/bin/env python3
"""Plots a soak's samples: `bench/soak/plot.py soak.csv soak.png`.

One panel a measure kind (resident memory, open files, sockets, queued messages, PostgreSQL
bytes, Redis keys and bytes), one line a service, over the run's minutes. Needs matplotlib
(`python3 -m pip install --user --break-system-packages matplotlib`).
"""

import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PANELS = [
    ("resident memory (MiB)", "_rss_kib", 1 / 1024),
    ("open files", "_open_files", 1),
    ("sockets", "_sockets", 1),
    ("queued messages", "queued_messages", 1),
    ("PostgreSQL tables and indexes (MiB)", "postgres_bytes", 1 / 2**20),
    ("Redis: the namespace's keys", "redis_keys", 1),
    ("Redis: the server's memory (MiB)", "redis_used_bytes", 1 / 2**20),
]


def main(source: str, target: str) -> None:
    with open(source, newline="") as f:
        rows = list(csv.DictReader(f))
    minutes = [float(r["seconds"]) / 60 for r in rows]
    figure, axes = plt.subplots(len(PANELS), 1, figsize=(9, 2.2 * len(PANELS)), sharex=True)
    for axis, (title, suffix, scale) in zip(axes, PANELS):
        for column in rows[0]:
            if column.endswith(suffix):
                label = column[: -len(suffix)] if suffix.startswith("_") else None
                values = [float(r[column]) * scale for r in rows]
                axis.plot(minutes, values, label=label)
        axis.set_title(title, fontsize=9)
        axis.set_ylim(bottom=0)
        if suffix.startswith("_"):
            axis.legend(fontsize=7, loc="upper left")
    axes[-1].set_xlabel("minutes")
    figure.tight_layout()
    figure.savefig(target, dpi=80)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
