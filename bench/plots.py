"""PNG plots for docs/benchmarks.md. Runs in .venv-bench (matplotlib): ``python bench/plots.py results.json outdir``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def b1(results: dict, out: Path) -> None:
    rows = results["b1"][0]
    labels = [r["design"] for r in rows]
    fields = [("graph_calls", "Graph"), ("token_calls", "token endpoint"), ("kv_ops", "Key Vault")]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.8 / len(rows)
    for i, row in enumerate(rows):
        vals = [row[f] / row["emails"] for f, _ in fields]
        ax.bar([x + i * width for x in range(len(fields))], vals, width, label=labels[i])
    ax.set_xticks([x + width * (len(rows) - 1) / 2 for x in range(len(fields))], [n for _, n in fields])
    ax.set_ylabel("calls per sent email")
    ax.set_title(f"B1: cost per email ({rows[0]['emails']} emails, {rows[0]['mailboxes']} mailboxes)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "b1_cost.png", dpi=100)


def b2(results: dict, out: Path) -> None:
    rows = results["b2"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 3.5))
    names = [r["name"] for r in rows]
    a.boxplot([[x["first_send_s"] for x in r["all"]] for r in rows], tick_labels=names)
    a.set_ylabel("s, import + first send")
    b.bar(names, [r["peak_rss_mb"] for r in rows])
    b.set_ylabel("peak RSS, MiB")
    fig.suptitle("B2: cold start (fresh process)")
    fig.tight_layout()
    fig.savefig(out / "b2_cold.png", dpi=100)


def b4(results: dict, out: Path) -> None:
    r = results["b4"]
    t0 = r["completed_at"][0]
    xs = [t - t0 for t in r["completed_at"]]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(xs, range(1, len(xs) + 1), label="sent (Mailbridge)")
    cap = r["limit_per_window"]
    ax.plot([0, xs[-1]], [cap, cap + xs[-1] * r["limit_per_s"]], "--", label="Graph limit (burst + rate)")
    ax.set_xlabel("s")
    ax.set_ylabel("messages sent")
    ax.set_title(f"B4: {r['messages']} messages to one mailbox, {r['throttled_429']} x 429")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "b4_pacing.png", dpi=100)


def b3(results: dict, out: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for r in results["b3"]:
        xs = r["completed_after_s"]
        label = "Exchange limits on" if r["rate_limits"] else "rate limits lifted"
        ax.plot(xs, range(1, len(xs) + 1), label=f"{label}: {r['per_s']:.1f} / s, {r['throttled_429']} x 429")
    ax.set_xlabel("s since the listener started")
    ax.set_ylabel("messages final")
    r0 = results["b3"][0]
    ax.set_title(f"B3: {r0['messages']} queued messages, {r0['mailboxes']} mailboxes, {r0['graph_latency_ms']} ms")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "b3_throughput.png", dpi=100)


def b6(results: dict, out: Path) -> None:
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    for r in results["b6"]:
        t0 = r["completed_at"][0]
        xs = [t - t0 for t in r["completed_at"]]
        label = f"{r['mailboxes']} mailbox(es), {r['instances']} inst.: {r['fraction_of_limit']:.0%}"
        label += f", {r['throttled_429']} x 429"
        (a if r["mailboxes"] == 1 else b).plot(xs, range(1, len(xs) + 1), label=label)
    for ax, title in ((a, "one mailbox at its limit"), (b, "many mailboxes")):
        ax.set_xlabel("s")
        ax.set_ylabel("messages sent")
        ax.set_title(title)
        ax.legend(fontsize=7)
    fig.suptitle("B6: 1 vs 3 instances sharing the mailboxes' limits")
    fig.tight_layout()
    fig.savefig(out / "b6_scaleout.png", dpi=100)


def main(results_path: str, out_dir: str) -> None:
    results = json.loads(Path(results_path).read_text())
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, plot in (("b1", b1), ("b2", b2), ("b3", b3), ("b4", b4), ("b6", b6)):
        if results.get(name):
            plot(results, out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
