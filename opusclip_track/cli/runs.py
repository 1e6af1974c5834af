"""`opusclip-track runs list|show|compare`: read runs back from their local stores (no torch is imported).

    opusclip-track runs list                                  # every run under runs/, nested ones too
    opusclip-track runs show RUN [--json | --csv] [--out FILE]
    opusclip-track runs compare RUN RUN ... [--keys 'video/*,val/loss'] [--json | --csv] [--out FILE]

RUN is a run directory, a run's name, its path under `--log-dir` (`sweeps/lr/trial-003`) or an unambiguous prefix
of one; an ambiguous prefix is one line listing the candidates and exit status 1. `show` and `compare` read each
key's summary (`RunStore.summary()`: count, first and last step, last value, min, max), never the whole history,
so they answer at once on a run of millions of scalars. A run whose store cannot be read (a zero-byte or corrupt
`run.db`) is listed as unreadable with the reason; `show` and `compare` on it exit 1 with a one-line message.
`show` also lists the run's alerts (`tracker.alert` and the alert rules), the latest `_SHOWN_ALERTS` of them.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from opusclip_track._text import format_number, format_table, plain_json
from opusclip_track.records import ALERT_EVENT
from opusclip_track.report.data import match_keys
from opusclip_track.store import (
    KeySummary,
    RunStore,
    config_diff,
    find_run,
    health_problems,
    list_runs,
    open_run,
    run_settings,
)

__all__ = ["add_runs_parser"]

_SUMMARY_FIELDS = [f.name for f in dataclasses.fields(KeySummary)]
_SHOWN_ALERTS = 20  # the latest ones; --json has every one (the rules' cool-down keeps them few)


def add_runs_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `runs` command (with `list`, `show`, `compare`) to an argparse subparsers object; returns it."""
    runs = subparsers.add_parser("runs", help="list, show and compare runs from their local stores",
                                 description=__doc__.split("\n\n")[0])
    runs.add_argument("--log-dir", type=Path, default=Path("runs"), help="where the runs are (default: runs)")
    verbs = runs.add_subparsers(dest="verb", required=True, metavar="{list,show,compare}")
    verbs.add_parser("list", help="every run (nested folders too), newest first").set_defaults(func=_cmd_list)
    show = verbs.add_parser("show", help="status, error, health, alerts and every scalar's summary of one run")
    show.add_argument("run", help="run directory, name, path under --log-dir, or a unique prefix")
    _add_export(show)
    show.set_defaults(func=_cmd_show)
    compare = verbs.add_parser("compare", help="last values of several runs side by side, and their config diff")
    compare.add_argument("runs", nargs="+", help="run directories, names, paths under --log-dir, or unique prefixes")
    compare.add_argument("--keys", help="comma-separated scalar keys or globs, e.g. 'video/*,val/loss' "
                                        "(default: every key)")
    _add_export(compare)
    compare.set_defaults(func=_cmd_compare)
    return runs


def _add_export(parser: argparse.ArgumentParser) -> None:
    formats = parser.add_mutually_exclusive_group()
    formats.add_argument("--json", action="store_true", help="print (or write) JSON instead of tables")
    formats.add_argument("--csv", action="store_true", help="print (or write) the scalar table as CSV")
    parser.add_argument("--out", type=Path, metavar="FILE", help="write the --json/--csv output here, not to stdout")


# ---- list ----------------------------------------------------------------------------------------------------
def _cmd_list(args: argparse.Namespace) -> int:
    rows = []
    for run_dir in list_runs(args.log_dir):
        name = _display_name(run_dir, args.log_dir)
        try:
            with open_run(run_dir) as store:
                meta = store.meta()
                scalars = sum(s.count for s in store.summary().values())
            rows.append([name, str(meta.get("experiment_name") or ""), str(meta.get("group") or ""),
                         str(meta.get("status")), _time(meta.get("created_at")), str(scalars)])
        except (ValueError, OSError) as error:  # one bad run (corrupt store, damaged meta) must not hide the others
            reason = str(error.__cause__ or error).splitlines()[0]
            rows.append([name, "", "", f"UNREADABLE: {reason}", "", ""])
    if not rows:
        print(f"no runs under {args.log_dir}")
        return 0
    print(format_table(["run", "experiment", "group", "status", "created", "scalars"], rows, align="<<<<<>"))
    return 0


# ---- show ----------------------------------------------------------------------------------------------------
def _cmd_show(args: argparse.Namespace) -> int:
    _check_export(args)
    run_dir = find_run(args.log_dir, args.run)
    with open_run(run_dir) as store:
        info = _run_info(store, run_dir, args.log_dir)
        summary = store.summary()
        config = store.config()
        alerts = [{"step": e["step"], "wall_time": e["wall_time"], **(e["data"] or {})}
                  for e in store.events(ALERT_EVENT)]
    if args.json:
        data = {**info, "config": config, "alerts": alerts,
                "scalars": {k: dataclasses.asdict(s) for k, s in summary.items()}}
        return _emit(args, _json(data))
    if args.csv:
        return _emit(args, _csv(["key", *_SUMMARY_FIELDS],
                                [[k, *dataclasses.astuple(s)] for k, s in summary.items()]))
    rows = [[k, str(s.last_step), format_number(s.last_value), str(s.count)] for k, s in summary.items()]
    lines = _describe(info) + _alert_lines(alerts)
    lines.append(format_table(["key", "last step", "last value", "points"], rows, align="<>>>")
                 if rows else "no scalars")
    print("\n".join(lines))
    return 0


def _describe(info: Mapping[str, Any]) -> list[str]:
    """The lines above `show`'s table: name and path, experiment, status and times, error, health."""
    lines = [f"run {info['run']}  ({info['path']})",
             f"experiment {info['experiment'] or '-'}  group {info['group'] or '-'}  status {info['status']}  "
             f"created {_time(info['created_at']) or '-'}  finished {_time(info['finished_at']) or '-'}"]
    if info["error"]:
        lines.append(f"error: {info['error']}")
    problems = info["health_problems"]
    if problems is None:
        lines.append("health: not recorded (the run has not closed: still running, or killed)")
    else:
        lines.append(f"health: {len(problems)} problem(s): {', '.join(problems)}" if problems else "health: ok")
    return lines


def _alert_lines(alerts: Sequence[Mapping[str, Any]]) -> list[str]:
    """`alerts: 2` then one line per alert (time, step, level, title: text), the latest `_SHOWN_ALERTS`."""
    if not alerts:
        return ["alerts: none"]
    shown = alerts[-_SHOWN_ALERTS:]
    more = f" (the latest {len(shown)}; --json lists all)" if len(shown) < len(alerts) else ""
    lines = [f"alerts: {len(alerts)}{more}"]
    for alert in shown:
        text = " ".join(str(alert.get("text", "")).split())  # one line each, whatever the text holds
        step = "-" if alert["step"] is None else alert["step"]
        level = str(alert.get("level", "?")).upper()
        lines.append(f"  {_time(alert['wall_time'], seconds_too=True)}  step {step}  {level:<5}  "
                     f"{alert.get('title', 'alert')}: {text}")
    return lines


# ---- compare -------------------------------------------------------------------------------------------------
def _cmd_compare(args: argparse.Namespace) -> int:
    _check_export(args)
    runs: dict[str, dict[str, Any]] = {}
    for name in args.runs:
        run_dir = find_run(args.log_dir, name)
        with open_run(run_dir) as store:
            info = _run_info(store, run_dir, args.log_dir)
            runs[info["run"]] = {"info": info, "summary": store.summary(), "settings": run_settings(store)}
    available = sorted({k for run in runs.values() for k in run["summary"]})
    keys = _chosen_keys(args.keys, available)
    diff = config_diff({name: run["settings"] for name, run in runs.items()}).all()
    names = list(runs)
    if args.json:
        scalars = {k: {n: _summary_dict(runs[n]["summary"].get(k)) for n in names} for k in keys}
        return _emit(args, _json({"runs": [runs[n]["info"] for n in names], "keys": keys, "scalars": scalars,
                                  "config_diff": diff}))
    last = [[k, *(_last(runs[n]["summary"].get(k)) for n in names)] for k in keys]
    if args.csv:
        return _emit(args, _csv(["key", *names], [[k, *(_raw(runs[n]["summary"].get(k)) for n in names)]
                                                  for k in keys]))
    lines = ["  ".join(f"{n}: {runs[n]['info']['status']}" for n in names),
             format_table(["key (last value)", *names], last, align="<" + ">" * len(names)) if keys
             else "no scalars"]
    if diff:
        rows = [[k, *(format_number(v.get(n), missing="(unset)") for n in names)] for k, v in diff.items()]
        lines += ["", f"config diff ({len(diff)} keys differ)", format_table(["key", *names], rows)]
    else:
        lines += ["", "config: the same in every run"]
    print("\n".join(lines))
    return 0


def _chosen_keys(text: str | None, available: Sequence[str]) -> list[str]:
    """The keys `--keys` names (exact or globs, in the order given); every pattern must match some key."""
    if not text:
        return list(available)
    patterns = [p.strip() for p in text.split(",") if p.strip()]
    unmatched = [p for p in patterns if not match_keys(available, [p])]
    if unmatched:
        shown = ", ".join(available[:20]) + (f", ... ({len(available)} in all)" if len(available) > 20 else "")
        raise ValueError(f"--keys: expected scalar keys or globs of these runs, received {', '.join(unmatched)!r}, "
                         f"which match none (keys: {shown or 'none'})")
    return match_keys(available, patterns)


# ---- shared --------------------------------------------------------------------------------------------------
def _run_info(store: RunStore, run_dir: Path, log_dir: Path) -> dict[str, Any]:
    meta = store.meta()
    health = meta.get("health")
    return {"run": _display_name(run_dir, log_dir), "path": str(run_dir),
            "experiment": meta.get("experiment_name"), "group": meta.get("group"), "status": meta.get("status"),
            "error": meta.get("error"), "created_at": meta.get("created_at"), "finished_at": meta.get("finished_at"),
            "health_problems": health_problems(health) if isinstance(health, dict) else None}


def _display_name(run_dir: Path, log_dir: Path) -> str:
    """The run's path under `log_dir` (`sweeps/lr/trial-003`), or the directory as given when outside it."""
    try:
        return run_dir.resolve().relative_to(log_dir.resolve()).as_posix()
    except ValueError:
        return str(run_dir)


def _summary_dict(summary: KeySummary | None) -> dict[str, Any] | None:
    return None if summary is None else dataclasses.asdict(summary)


def _last(summary: KeySummary | None) -> str:
    return "" if summary is None else format_number(summary.last_value)


def _raw(summary: KeySummary | None) -> Any:
    return "" if summary is None else summary.last_value


def _time(seconds: Any, *, seconds_too: bool = False) -> str:
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S" if seconds_too else "%Y-%m-%d %H:%M", time.localtime(float(seconds)))


def _json(data: Any) -> str:
    return json.dumps(plain_json(data), indent=2, allow_nan=False, default=str) + "\n"


def _csv(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _check_export(args: argparse.Namespace) -> None:
    if args.out is not None and not (args.json or args.csv):
        raise ValueError(f"--out: expected --json or --csv with it (the format to write), received only "
                         f"--out {args.out}")


def _emit(args: argparse.Namespace, text: str) -> int:
    """Print `text`, or write it to `--out` (creating its folder) and say where."""
    if args.out is None:
        sys.stdout.write(text)
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}")
    return 0
