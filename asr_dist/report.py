"""`asr-dist report RUN_DIR`: a run folder's report.md with PNG plots, for people rather than scripts.

Reads what a training run leaves behind and nothing else, so it works on any run, finished, killed or still
going:
  RUN_DIR/metrics.jsonl   one JSON object per line: "step" plus scalars ("loss", "lr/<group>",
                          "audio_sec_per_sec", "padding_fraction", ...; eval lines carry "eval/wer", "eval/cer", ...)
  RUN_DIR/config.yaml     the resolved config
  RUN_DIR/eval.json       the final evaluation (optional; else the last eval line of metrics.jsonl)
  RUN_DIR/summary.json    the trainer's summary: exit code, memory per rank (optional)
and writes RUN_DIR/report.md and RUN_DIR/report/*.png. Every key is optional: a plot whose metrics were not
logged is left out, and a truncated last line (a killed run) is ignored.

A resume shows in metrics.jsonl as a new process ("elapsed" starts again); the plots mark it with a dotted
vertical line. MetricsLogger drops the lines the resumed run will log again; in a file that still has them,
the later value of a step wins.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

PLOT_DIR = "report"
SMOOTH_WINDOW = 9  # points in the running median drawn over noisy per-step curves


# ----------------------------------------------------------------------------- reading a run


@dataclass
class RunMetrics:
    """metrics.jsonl as series: for each key, (steps, values) in step order, a resumed run's values winning."""

    series: dict[str, tuple[list[int], list[float]]] = field(default_factory=dict)
    resumed_at: list[int] = field(default_factory=list)  # first step logged by each restarted process
    wall_seconds: float | None = None  # first process's start to the last line, downtime between processes included
    train_seconds: float | None = None  # the processes' own running time ("elapsed" at their last line), summed
    last_record: dict[str, Any] = field(default_factory=dict)
    last_examples: list[dict] = field(default_factory=list)  # reference/hypothesis pairs of the last eval line
    skipped_samples: list[list[str]] = field(default_factory=list)  # [shard, key, reason] the loader skipped

    def has(self, key: str) -> bool:
        return bool(self.series.get(key, ([], []))[0])

    def last(self, key: str) -> float | None:
        steps, values = self.series.get(key, ([], []))
        return values[-1] if steps else None

    def keys(self, prefix: str) -> list[str]:
        return sorted(k for k in self.series if k.startswith(prefix) and self.has(k))


NOT_SCALARS = ("step", "time", "elapsed", "kind")
ALIASES = {"audio_seconds_per_second": "audio_sec_per_sec"}  # other spellings of the same figure


def read_metrics(path: Path) -> RunMetrics:
    """Parse metrics.jsonl (the shape metrics.MetricsLogger writes); tolerant of anything else.

    A restart shows as "elapsed" (seconds since the process started logging) going back, or the step going
    back. MetricsLogger drops the lines after the checkpoint a run resumes from, but a plain file may not:
    either way, the last value logged for a step wins. Lines without a step or not valid JSON (one cut by a
    kill) are skipped.
    """
    by_key: dict[str, dict[int, float]] = {}
    resumed_at: list[int] = []
    times: list[float] = []
    train_seconds = first_elapsed = 0.0
    last_step = last_elapsed = None
    last_record: dict[str, Any] = {}
    last_examples: list[dict] = []
    skipped_samples: list[list[str]] = []
    if not path.is_file():
        return RunMetrics()
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(record, dict) or not isinstance(record.get("step"), (int, float)):
            continue
        step = int(record["step"])
        elapsed = record.get("elapsed") if isinstance(record.get("elapsed"), (int, float)) else None
        restarted = (last_step is not None and step < last_step) or (
            elapsed is not None and last_elapsed is not None and elapsed < last_elapsed)
        if restarted:
            resumed_at.append(step)
            train_seconds += last_elapsed or 0.0
        last_step, last_elapsed = step, elapsed if elapsed is not None else last_elapsed
        if isinstance(record.get("time"), (int, float)):
            if not times and elapsed is not None:
                first_elapsed = elapsed  # the first line came this long after its process started
            times.append(float(record["time"]))
        last_record = record
        if isinstance(record.get("examples"), list):
            last_examples = [e for e in record["examples"] if isinstance(e, dict)]
        if isinstance(record.get("data/skipped"), list):
            skipped_samples += [s for s in record["data/skipped"] if isinstance(s, list)]
        for key, value in record.items():
            if key in NOT_SCALARS or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if math.isfinite(value):
                by_key.setdefault(ALIASES.get(key, key), {})[step] = float(value)
    series = {k: (sorted(v), [v[s] for s in sorted(v)]) for k, v in by_key.items()}
    wall = max(times) - min(times) + first_elapsed if len(times) > 1 else None
    trained = train_seconds + last_elapsed if last_elapsed is not None else None
    return RunMetrics(series, resumed_at, wall, trained, last_record, last_examples, skipped_samples)


def read_eval(run_dir: Path, metrics: RunMetrics) -> dict[str, Any]:
    """The final evaluation: eval.json when the run saved one, else the last eval/* values of metrics.jsonl.

    Returns {"wer", "cer", "loss", "num_samples", "subsets": {name: {"wer", "cer", "num_samples"}},
    "examples": [{"key", "ref", "hyp"}]} with whatever is known: the shape of evaluate.EvalResult.to_dict().
    """
    result: dict[str, Any] = {}
    for name in ("eval.json", "eval_results.json", "final_eval.json"):
        path = run_dir / name
        if path.is_file():
            try:
                result = json.loads(path.read_text())
                result["source"] = name
            except json.JSONDecodeError as e:
                raise ValueError(f"{path} is not valid JSON: {e}") from None
            break
    result = _normalize_eval(result)
    for key in ("wer", "cer", "loss", "num_samples"):
        if result.get(key) is None and metrics.last(f"eval/{key}") is not None:
            result[key] = metrics.last(f"eval/{key}")
            result.setdefault("source", "metrics.jsonl")
    if not result["subsets"]:  # the trainer logs per-subset scores as eval/wer/<subset>, eval/cer/<subset>
        for key in metrics.keys("eval/wer/"):
            name = key.removeprefix("eval/wer/")
            result["subsets"][name] = {"wer": metrics.last(key), "cer": metrics.last(f"eval/cer/{name}")}
    if not result["examples"]:
        result["examples"] = metrics.last_examples
    if isinstance(result.get("num_samples"), float):
        result["num_samples"] = int(result["num_samples"])
    return result


def _normalize_eval(raw: dict[str, Any]) -> dict[str, Any]:
    """Accept "wer" or "eval/wer" style keys, and subsets as a dict or a list of rows."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        out[key.removeprefix("eval/")] = value
    subsets = out.get("subsets") or out.get("per_subset") or {}
    if isinstance(subsets, list):
        subsets = {str(row.get("name", row.get("subset", i))): row for i, row in enumerate(subsets)}
    out["subsets"] = {str(k): _normalize_eval(v) if isinstance(v, dict) else {"wer": v} for k, v in subsets.items()}
    out["examples"] = out.get("examples") or []
    return out


def read_config_text(run_dir: Path) -> str | None:
    path = run_dir / "config.yaml"
    return path.read_text() if path.is_file() else None


# ----------------------------------------------------------------------------- plots


def _smooth(values: list[float], window: int = SMOOTH_WINDOW) -> list[float]:
    """Running median: keeps the curve's level without letting one skipped or spiky step dominate."""
    if len(values) < 2 * window:
        return values
    out = []
    for i in range(len(values)):
        half = min(window // 2, i, len(values) - 1 - i)  # centered, narrower at the ends: no edge plateaus
        chunk = sorted(values[i - half: i + half + 1])
        out.append(chunk[len(chunk) // 2])
    return out


def _mark_resumes(ax, metrics: RunMetrics) -> None:
    for i, step in enumerate(metrics.resumed_at):
        ax.axvline(step, color="gray", linestyle=":", linewidth=1, label="resumed here" if i == 0 else None)


def _finish(fig, ax, path: Path, title: str, ylabel: str) -> Path:
    ax.set_title(title)
    ax.set_xlabel("optimizer step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _wide_range(values: list[float]) -> bool:
    """Log scale helps when a positive curve spans more than a factor of 30."""
    positive = [v for v in values if v > 0]
    return len(positive) == len(values) and bool(positive) and max(positive) / min(positive) > 30


def plot_loss(metrics: RunMetrics, out_dir: Path) -> Path | None:
    """Train loss (the logged step faint; the mean over each logging window, or a running median, bold) and
    eval loss."""
    if not metrics.has("loss") and not metrics.has("eval/loss"):
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    if metrics.has("loss"):
        steps, values = metrics.series["loss"]
        if metrics.has("loss_avg"):
            ax.plot(steps, values, color="tab:blue", alpha=0.3, linewidth=1, label="train loss at the logged step")
            avg_steps, avg_values = metrics.series["loss_avg"]
            ax.plot(avg_steps, avg_values, color="tab:blue", linewidth=2, label="train loss, mean since the previous log")
        elif len(_smooth(values)) and _smooth(values) is not values:
            ax.plot(steps, values, color="tab:blue", alpha=0.3, linewidth=1, label="train loss (per logged step)")
            ax.plot(steps, _smooth(values), color="tab:blue", linewidth=2,
                    label=f"train loss (running median of {SMOOTH_WINDOW})")
        else:
            ax.plot(steps, values, color="tab:blue", linewidth=1.5, label="train loss")
    if metrics.has("eval/loss"):
        steps, values = metrics.series["eval/loss"]
        ax.plot(steps, values, "o-", color="tab:orange", label="eval loss")
    all_values = [v for k in ("loss", "loss_avg", "eval/loss") for v in metrics.series.get(k, ([], []))[1]]
    log = _wide_range(all_values)
    if log:
        ax.set_yscale("log")
    _mark_resumes(ax, metrics)
    return _finish(fig, ax, out_dir / "loss.png", "CTC loss", "loss per target token" + (" (log scale)" if log else ""))


def plot_learning_rate(metrics: RunMetrics, out_dir: Path) -> Path | None:
    keys = metrics.keys("lr")
    if not keys:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    all_values: list[float] = []
    for key, style in zip(keys, ["-", "--", ":", "-."] * 4):  # dashes keep equal curves (same lr) visible
        steps, values = metrics.series[key]
        all_values += values
        group = key.split("/", 1)[1] if "/" in key else "all"
        ax.plot(steps, values, style, linewidth=2, label=f"{group} param group")
    log = _wide_range(all_values)
    if log:
        ax.set_yscale("log")
    else:
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    _mark_resumes(ax, metrics)
    return _finish(fig, ax, out_dir / "learning_rate.png", "Learning rate per param group",
                   "learning rate" + (" (log scale)" if log else ""))


def plot_error_rates(metrics: RunMetrics, out_dir: Path) -> Path | None:
    if not metrics.has("eval/wer") and not metrics.has("eval/cer"):
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, color, style, label in (("eval/wer", "tab:red", "o-", "WER"), ("eval/cer", "tab:green", "s--", "CER")):
        if metrics.has(key):  # different markers and dashes: equal curves (both 100% early on) stay visible
            steps, values = metrics.series[key]
            ax.plot(steps, [100 * v for v in values], style, color=color, label=label)
            ax.annotate(f"{100 * values[-1]:.1f}%", (steps[-1], 100 * values[-1]), textcoords="offset points",
                        xytext=(4, 4), fontsize="small", color=color)
    ax.set_ylim(bottom=0)
    _mark_resumes(ax, metrics)
    return _finish(fig, ax, out_dir / "error_rates.png", "Word and character error rate on the eval set",
                   "error rate (%)")


def plot_throughput(metrics: RunMetrics, out_dir: Path) -> Path | None:
    """Audio seconds per second on top, padding fraction below (the two things batching trades off)."""
    if not metrics.has("audio_sec_per_sec") and not metrics.has("padding_fraction"):
        return None
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    if metrics.has("audio_sec_per_sec"):
        steps, values = metrics.series["audio_sec_per_sec"]
        smooth = _smooth(values)
        if smooth is values:
            top.plot(steps, values, color="tab:purple", linewidth=2, label="mean over each logging window")
        else:
            top.plot(steps, values, color="tab:purple", alpha=0.35, linewidth=1, label="mean over each logging window")
            top.plot(steps, smooth, color="tab:purple", linewidth=2, label=f"running median of {SMOOTH_WINDOW}")
        top.legend(loc="lower right", fontsize="small")
    top.set_ylim(bottom=0)
    top.set_title("Training throughput")
    top.set_ylabel("audio seconds / second\n(all ranks)")
    top.grid(True, alpha=0.3)
    _mark_resumes(top, metrics)
    for key, color, label in (("padding_fraction", "tab:brown", "padding (share of the padded batch audio)"),
                              ("data_wait_fraction", "tab:gray", "time the ranks waited for data")):
        if metrics.has(key):
            steps, values = metrics.series[key]
            bottom.plot(steps, [100 * v for v in values], color=color, linewidth=1.5, label=label)
    bottom.set_ylim(bottom=0)
    _mark_resumes(bottom, metrics)
    return _finish(fig, bottom, out_dir / "throughput.png", "Padding and data wait", "%")


def plot_subsets(eval_result: dict[str, Any], out_dir: Path) -> Path | None:
    """Final WER/CER per subset (speaker, voice...) as horizontal bars, worst at the top."""
    subsets = {k: v for k, v in eval_result.get("subsets", {}).items() if v.get("wer") is not None}
    if len(subsets) < 2:
        return None
    names = sorted(subsets, key=lambda k: subsets[k]["wer"])
    height = max(2.5, 0.35 * len(names) + 1.2)
    fig, ax = plt.subplots(figsize=(7, height))
    y = range(len(names))
    ax.barh([i + 0.2 for i in y], [100 * subsets[n]["wer"] for n in names], height=0.4, color="tab:red", label="WER")
    if all(subsets[n].get("cer") is not None for n in names):
        ax.barh([i - 0.2 for i in y], [100 * subsets[n]["cer"] for n in names], height=0.4, color="tab:green", label="CER")
    ax.set_yticks(list(y), names, fontsize="small")
    ax.set_xlabel("error rate (%)")
    ax.set_title("Final error rate per subset")
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    path = out_dir / "subsets.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- markdown


def _fmt(value: Any, kind: str = "num") -> str:
    if value is None:
        return "–"
    if kind == "pct":
        return f"{100 * value:.2f}%"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def _mean(metrics: RunMetrics, key: str) -> float | None:
    values = metrics.series.get(key, ([], []))[1]
    return sum(values) / len(values) if values else None


def read_summary(run_dir: Path) -> dict[str, Any]:
    """The trainer's RUN_DIR/summary.json (steps, exit code, memory per rank), or {} when absent or unreadable."""
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return summary if isinstance(summary, dict) else {}


def _summary_rows(metrics: RunMetrics, eval_result: dict[str, Any], summary: dict[str, Any]) -> list[tuple[str, str]]:
    steps = [s for k in metrics.series for s in metrics.series[k][0]]
    rows = [
        ("optimizer steps", _fmt(max(steps) if steps else None)),
        ("epochs", _fmt(metrics.last("epoch") if metrics.has("epoch") else metrics.last_record.get("epoch"))),
        ("training time" + (" (summed over restarts)" if metrics.resumed_at else ""),
         _duration(metrics.train_seconds if metrics.train_seconds is not None else metrics.wall_seconds)),
        ("resumes", f"{len(metrics.resumed_at)}" + (f" (continuing at step {', '.join(map(str, metrics.resumed_at))})"
                                                    if metrics.resumed_at else "")),
        ("final train loss" + (" (mean over the last log window)" if metrics.has("loss_avg") else ""),
         _fmt(metrics.last("loss_avg") if metrics.has("loss_avg") else metrics.last("loss"))),
        ("final eval WER", _fmt(eval_result.get("wer"), "pct")),
        ("final eval CER", _fmt(eval_result.get("cer"), "pct")),
        ("final eval loss", _fmt(eval_result.get("loss"))),
        ("mean audio seconds / second", _fmt(_mean(metrics, "audio_sec_per_sec"))),
        ("mean padding fraction", _fmt(_mean(metrics, "padding_fraction"), "pct")),
        ("mean share of time waiting for data", _fmt(_mean(metrics, "data_wait_fraction"), "pct")),
    ]
    if metrics.resumed_at:
        rows.insert(3, ("wall time (downtime between restarts included)", _duration(metrics.wall_seconds)))
    if summary.get("stopped"):
        rows.insert(0, ("state", f"stopped early to be resumed (exit code {summary.get('exit_code')})"))
    precision = summary.get("precision")
    if isinstance(precision, dict):
        rows.insert(0, ("precision", f"{precision.get('mode')} (asked: {precision.get('requested')}; "
                                     f"{precision.get('reason')}; {precision.get('device')})"))
    rows.append(("samples skipped (unreadable or corrupt)", _fmt(len(metrics.skipped_samples))))
    for key, label in (("training_memory_mb", "memory per rank after training (MB)"),
                       ("peak_memory_mb", "peak memory per rank (MB)")):
        if isinstance(summary.get(key), list) and summary[key]:
            rows.append((label, ", ".join(f"{v:.0f}" for v in summary[key] if isinstance(v, (int, float)))))
    skipped_key = next((k for k in ("skipped_total", "skipped_updates", "skipped") if metrics.has(k)), None)
    if skipped_key:
        values = metrics.series[skipped_key][1]
        total = values[-1] if skipped_key != "skipped" else sum(values)
        rows.append(("updates skipped (non-finite loss or gradient)", _fmt(int(total))))
    return rows


def _eval_section(eval_result: dict[str, Any]) -> list[str]:
    lines = ["## Evaluation", ""]
    if eval_result.get("wer") is None and eval_result.get("cer") is None:
        return lines + ["No evaluation was logged for this run.", ""]
    source = eval_result.get("source", "")
    n = eval_result.get("num_samples")
    lines += [f"Final evaluation{f' on {n} utterances' if n else ''} (from `{source}`).", "",
              "| | WER | CER | utterances |", "|---|---|---|---|",
              f"| **all** | **{_fmt(eval_result.get('wer'), 'pct')}** | **{_fmt(eval_result.get('cer'), 'pct')}** | {_fmt(n)} |"]
    subsets = eval_result.get("subsets", {})
    for name in sorted(subsets, key=lambda k: (subsets[k].get("wer") is None, subsets[k].get("wer") or 0)):
        row = subsets[name]
        lines.append(f"| {name} | {_fmt(row.get('wer'), 'pct')} | {_fmt(row.get('cer'), 'pct')} | "
                     f"{_fmt(row.get('num_samples'))} |")
    lines.append("")
    examples = eval_result.get("examples", [])
    if examples:
        lines += ["Examples:", "", "| utterance | reference | hypothesis |", "|---|---|---|"]
        for ex in examples:
            ref = ex.get("ref", ex.get("reference", ""))
            hyp = ex.get("hyp", ex.get("hypothesis", ""))
            tag = ex.get("key") or ex.get("subset") or ""
            lines.append(f"| {tag} | {ref} | {hyp} |")
        lines.append("")
    return lines


def write_report(run_dir: str | Path) -> Path:
    """Write RUN_DIR/report.md (and RUN_DIR/report/*.png) from what the run logged; returns report.md's path."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} does not exist")
    metrics = read_metrics(run_dir / "metrics.jsonl")
    eval_result = read_eval(run_dir, metrics)
    config_text = read_config_text(run_dir)
    if not metrics.series and not eval_result.get("wer") and config_text is None:
        raise FileNotFoundError(f"{run_dir} holds no metrics.jsonl, eval.json or config.yaml: is it a run folder?")

    plot_dir = run_dir / PLOT_DIR
    plot_dir.mkdir(exist_ok=True)
    plots = [
        ("Loss", plot_loss(metrics, plot_dir)),
        ("Error rates", plot_error_rates(metrics, plot_dir)),
        ("Per-subset error rates", plot_subsets(eval_result, plot_dir)),
        ("Learning rate", plot_learning_rate(metrics, plot_dir)),
        ("Throughput and padding", plot_throughput(metrics, plot_dir)),
    ]

    lines = [f"# Run report: {run_dir.resolve().name}", "", "| | |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in _summary_rows(metrics, eval_result, read_summary(run_dir))]
    lines.append("")
    lines += _eval_section(eval_result)
    if metrics.skipped_samples:
        lines += ["## Skipped samples", "", "| shard | key | reason |", "|---|---|---|"]
        lines += [f"| {shard} | {key} | {reason} |" for shard, key, reason in metrics.skipped_samples[:100]]
        lines += [f"({len(metrics.skipped_samples) - 100} more in metrics.jsonl)"] if len(metrics.skipped_samples) > 100 else []
        lines.append("")
    lines += ["## Plots", ""]
    drawn = [(title, path) for title, path in plots if path is not None]
    for title, path in drawn:
        lines += [f"### {title}", "", f"![{title}]({path.relative_to(run_dir).as_posix()})", ""]
    if not drawn:
        lines += ["Nothing was logged to plot (no metrics.jsonl lines yet).", ""]
    lines += ["## Resolved config", ""]
    lines += ["```yaml", config_text.rstrip(), "```", ""] if config_text is not None else ["No config.yaml in the run folder.", ""]

    report = run_dir / "report.md"
    report.write_text("\n".join(lines))
    return report


# ----------------------------------------------------------------------------- several runs


def write_comparison(runs: dict[str, str | Path] | list[str | Path], out_dir: str | Path) -> Path:
    """OUT_DIR/comparison.md + comparison.png: several runs side by side (say, fine-tuned versus trained from
    scratch on the same data): their loss and eval WER/CER over steps, their final numbers, WER per subset.

    `runs` maps a label to a run folder (a list uses the folder names). Returns comparison.md's path.
    """
    if not isinstance(runs, dict):
        runs = {Path(r).resolve().name: r for r in runs}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    loaded = {}
    for label, run_dir in runs.items():
        if not Path(run_dir).is_dir():
            raise FileNotFoundError(f"run folder {run_dir} does not exist")
        metrics = read_metrics(Path(run_dir) / "metrics.jsonl")
        loaded[label] = (metrics, read_eval(Path(run_dir), metrics))

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for (label, (metrics, _)), color in zip(loaded.items(), colors * 3):
        if metrics.has("loss"):
            steps, values = metrics.series["loss"]
            left.plot(steps, _smooth(values), color=color, linewidth=2, label=label)
        for key, style, name in (("eval/wer", "o-", "WER"), ("eval/cer", "s--", "CER")):
            if metrics.has(key):
                steps, values = metrics.series[key]
                right.plot(steps, [100 * v for v in values], style, color=color, label=f"{label} {name}")
    all_losses = [v for m, _ in loaded.values() for v in m.series.get("loss", ([], []))[1]]
    if _wide_range(all_losses):
        left.set_yscale("log")
    left.set(title="Training loss (running median)", xlabel="optimizer step", ylabel="loss per target token")
    right.set(title="Eval error rates", xlabel="optimizer step", ylabel="error rate (%)")
    right.set_ylim(bottom=0)
    for ax in (left, right):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    png = out_dir / "comparison.png"
    fig.savefig(png, dpi=110)
    plt.close(fig)

    lines = ["# Runs compared", "", "| run | steps | final train loss | WER | CER | audio s/s | padding | resumes |",
             "|---|---|---|---|---|---|---|---|"]
    for label, (metrics, ev) in loaded.items():
        steps = max((s for k in metrics.series for s in metrics.series[k][0]), default=None)
        lines.append(f"| {label} | {_fmt(steps)} | {_fmt(metrics.last('loss'))} | {_fmt(ev.get('wer'), 'pct')} | "
                     f"{_fmt(ev.get('cer'), 'pct')} | {_fmt(_mean(metrics, 'audio_sec_per_sec'))} | "
                     f"{_fmt(_mean(metrics, 'padding_fraction'), 'pct')} | {len(metrics.resumed_at)} |")
    subsets = sorted({name for _, ev in loaded.values() for name in ev.get("subsets", {})})
    if subsets:
        lines += ["", "WER per subset:", "", "| subset | " + " | ".join(loaded) + " |",
                  "|---|" + "---|" * len(loaded)]
        for name in subsets:
            cells = [_fmt(ev.get("subsets", {}).get(name, {}).get("wer"), "pct") for _, ev in loaded.values()]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", f"![Runs compared]({png.name})", ""]
    md = out_dir / "comparison.md"
    md.write_text("\n".join(lines))
    return md


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="asr-dist report", description="Write RUN_DIR/report.md with plots.")
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="a run folder (train.run_dir)")
    parser.add_argument("--compare", metavar="OUT_DIR",
                        help="also write OUT_DIR/comparison.md + .png with the runs side by side")
    args = parser.parse_args(argv)
    status = 0
    for run_dir in args.run_dirs:
        try:
            print(f"wrote {write_report(run_dir)}")
        except (FileNotFoundError, ValueError) as e:
            print(f"asr-dist report: {e}")
            status = 1
    if args.compare and status == 0:
        print(f"wrote {write_comparison(args.run_dirs, args.compare)}")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
