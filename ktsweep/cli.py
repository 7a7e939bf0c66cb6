"""The ktsweep command line: evaluate one point, plan or run a sweep, analyse a cube."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
import yaml

from ktsweep.engines.dispatch import METHODS, run
from ktsweep.model.params import ParameterError, make_point
from ktsweep.model.spectra import checkpoint_steps
from ktsweep.sweep.config import MCConfig, OutputsConfig


class UsageError(Exception):
    """Bad command-line input; printed without a traceback, exit status 2."""


def parse_assignments(items: Sequence[str]) -> dict[str, Any]:
    """KEY=VALUE words → dict, each VALUE read as YAML (so ``'{scale: 0.3}'`` works)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{item!r} is not KEY=VALUE (e.g. alpha_t=1.5)")
        try:
            out[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError as err:
            raise UsageError(f"value of {key!r} is not valid YAML: {err}") from None
    return out


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return [_jsonable(x) for x in v.tolist()] if v.ndim else _jsonable(v.item())
    if isinstance(v, float | np.floating):
        f = float(v)
        return f if math.isfinite(f) else None
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    return v


def point_record(results: dict[str, dict[str, np.ndarray]], steps: np.ndarray) -> dict[str, Any]:
    """Flatten per-method results for one point into one JSON-ready mapping.

    With one method the keys are the quantity names; with several, each is prefixed by its
    method (``exact_risk_t2s``, ``mc_risk_t2s_se``) except bound quantities, which are unique.
    """
    record: dict[str, Any] = {"step": steps}
    methods = list(results)
    prefixed = len([m for m in methods if m != "bound"]) > 1
    statuses = []
    for m in methods:
        for k, v in results[m].items():
            if k.startswith(("gamma0_", "tune_edge_")):  # per point, not per method
                record[k] = v[0]
            elif k == "status":
                statuses.append(str(v[0]))
                if prefixed:
                    record[f"{m}_status"] = str(v[0])
            else:
                record[f"{m}_{k}" if prefixed and m != "bound" else k] = v[0]
    record["status"] = "diverged" if "diverged" in statuses else "ok"
    return {k: _jsonable(v) for k, v in record.items()}


def tune_edge_warnings(record: dict[str, Any]) -> list[str]:
    """One message per run whose tuned γ0 sits at an end of its ``{tune: [...]}`` list."""
    runs = {"t": ("teacher", "gamma0_t"), "s": ("T2S student", "gamma0_s"),
            "direct": ("direct student", "gamma0_direct"),
            "ceiling": ("ceiling student", "gamma0_ceiling")}
    out = []
    for suffix, (who, key) in runs.items():
        if record.get(f"tune_edge_{suffix}") == 1.0:
            out.append(f"the {who}'s tuned {key} = {record.get(key)} is at an end of its tune "
                       "list; the best step may lie outside it (widen the list)")
    return out


def cmd_point(args: argparse.Namespace) -> int:
    try:
        point = make_point(parse_assignments(args.assignments))
    except ParameterError as err:
        raise UsageError(str(err)) from None
    methods = list(METHODS) if args.method == "all" else [args.method]
    settings = _mc_config(args).settings()
    steps = checkpoint_steps(point.steps_max, _per_decade(args))
    if "mc" in methods:
        _check_mc_memory(point, settings, len(steps))
    record = point_record(run([point], methods, steps, settings), steps)
    for warning in tune_edge_warnings(record):
        print(f"warning: {warning}", file=sys.stderr)
    if args.json:
        print(json.dumps(record))
        return 0
    print(f"point {point.key}: " + " ".join(f"{k}={v}" for k, v in point.as_dict().items()
                                              if v is not None))
    for k, v in record.items():
        if not isinstance(v, list):
            print(f"  {k:28s} {v}")
    return 0


def _check_mc_memory(point, settings, checkpoints: int) -> None:
    """Refuse a Monte Carlo point that would not fit this machine's memory (before allocating)."""
    import os

    from ktsweep.engines.dispatch import mc_bytes

    need = mc_bytes(point.d, max(point.batch_t, point.batch_s), settings.replicates,
                    4 if settings.dtype == "float32" else 8, checkpoints)
    have = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if need > have:
        raise UsageError(f"--replicates {settings.replicates} at d = {point.d} needs about "
                         f"{need / 2**30:.1f} GiB for Monte Carlo, more than this machine's "
                         f"{have / 2**30:.1f} GiB; lower --replicates or d")


def _option_error(err, options: dict[str, str]) -> UsageError:
    """A pydantic error on a config model built from options, named by its option."""
    e = err.errors(include_url=False)[0]
    field = str(e["loc"][0]) if e["loc"] else ""
    return UsageError(f"{options.get(field, field)} {e['input']!r}: {e['msg']}")


def _mc_config(args: argparse.Namespace) -> MCConfig:
    """The Monte Carlo flags checked by the config's own rules (one set of limits, defaults)."""
    from pydantic import ValidationError

    flags = {"replicates": "--replicates", "seed": "--seed", "device": "--device",
             "dtype": "--dtype"}
    given = {k: getattr(args, k) for k in flags if getattr(args, k) is not None}
    try:
        return MCConfig(**given)
    except ValidationError as err:
        raise _option_error(err, flags) from None


def _per_decade(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    if args.checkpoints_per_decade is None:
        return OutputsConfig().checkpoints_per_decade
    try:
        return OutputsConfig(checkpoints_per_decade=args.checkpoints_per_decade
                             ).checkpoints_per_decade
    except ValidationError as err:
        raise _option_error(err, {"checkpoints_per_decade": "--checkpoints-per-decade"}
                            ) from None


def _layout_arg(text: str):
    """A layout from a JSON file written by init-cube, a JSON string, or a YAML config path."""
    from pathlib import Path

    from ktsweep.sweep.config import ConfigError
    from ktsweep.sweep.layout import Layout

    try:
        if text.lstrip().startswith("{"):
            return Layout.from_config(json.loads(text))
        path = Path(text)
        if path.suffix == ".json":
            return Layout.from_json(path.read_text())
        return Layout.from_file(text)
    except (ConfigError, OSError, json.JSONDecodeError) as err:
        raise UsageError(str(err)) from None


def cmd_init_cube(args: argparse.Namespace) -> int:
    from ktsweep.sweep.store import init_cube

    layout = _layout_arg(args.layout)
    what = init_cube(layout, args.cube)
    print(f"cube {args.cube}: {what}; {layout.n_points} points in {layout.n_chunks} chunks")
    if args.marker:
        _write_atomic(args.marker, layout.to_json())
    return 0


def _write_atomic(path: str, text: str) -> None:
    import os
    from pathlib import Path

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, p)


def cmd_run_chunk(args: argparse.Namespace) -> int:
    import logging

    from ktsweep.sweep.runner import run_chunk
    from ktsweep.sweep.store import StoreError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    layout = _layout_arg(args.layout)
    if args.chunk not in layout.chunk_ids():
        raise UsageError(f"chunk {args.chunk!r} does not exist: this sweep has chunks "
                         f"c{0:05d}..c{layout.n_chunks - 1:05d}")
    try:
        summary = run_chunk(layout, args.chunk, args.cube, threads=args.threads,
                            scheduler=args.scheduler, report=lambda s: print(s, flush=True))
    except StoreError as err:
        raise UsageError(str(err)) from None
    if args.marker:
        _write_atomic(args.marker, json.dumps(summary, indent=1))
    return 0


def cmd_summarize(args: argparse.Namespace) -> int:
    from ktsweep.sweep.runner import summarize

    layout = _layout_arg(args.layout)
    summary = summarize(layout, args.cube, args.markers)
    _write_atomic(args.out, json.dumps(summary, indent=1))
    print(json.dumps({k: v for k, v in summary.items() if k != "chunks"}))
    return 0 if not summary["missing"] else 1


def cmd_plan(args: argparse.Namespace) -> int:
    from ktsweep.sweep.costs import plan

    layout = _layout_arg(args.config)
    info = plan(layout, calibrate_here=not args.no_calibration)
    if args.json:
        print(json.dumps(info, indent=1))
    else:
        from ktsweep.sweep.costs import format_plan

        print(format_plan(info))
    return 0


def cmd_fits(args: argparse.Namespace) -> int:
    from ktsweep.analysis.fits import fit_cube, write_fits
    from ktsweep.sweep.store import StoreError, open_cube

    try:
        df = fit_cube(open_cube(args.cube))
    except StoreError as err:
        raise UsageError(str(err)) from None
    write_fits(df, args.csv, args.md)
    counts = df.groupby("verdict").size().to_dict() if len(df) else {}
    print(f"{len(df)} fits written to {args.csv} and {args.md}: "
          + (", ".join(f"{k} {v}" for k, v in counts.items()) or "nothing to fit"))
    return 0


def cmd_figures(args: argparse.Namespace) -> int:
    from ktsweep.analysis.figures import make_figures
    from ktsweep.sweep.store import StoreError, open_cube

    try:
        paths = make_figures(open_cube(args.cube), args.outdir)
    except StoreError as err:
        raise UsageError(str(err)) from None
    print(f"{len(paths)} figures written to {args.outdir}: "
          + ", ".join(p.name for p in paths))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ktsweep", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("point", help="evaluate one grid point",
                       description="Evaluate one point: KEY=VALUE pairs (values read as "
                                   "YAML) of the parameters in docs/science/quantities.md.")
    p.add_argument("assignments", nargs="+", metavar="KEY=VALUE")
    p.add_argument("--method", choices=[*METHODS, "all"], default="exact")
    mc = MCConfig.model_fields
    p.add_argument("--replicates", type=int, help=f"default {mc['replicates'].default}")
    p.add_argument("--seed", type=int, help=f"default {mc['seed'].default}")
    p.add_argument("--device", choices=["cpu", "cuda", "auto"],
                   help=f"default {mc['device'].default}")
    p.add_argument("--dtype", choices=["float32", "float64"],
                   help=f"default {mc['dtype'].default}")
    p.add_argument("--checkpoints-per-decade", type=int, help="default "
                   f"{OutputsConfig.model_fields['checkpoints_per_decade'].default}")
    p.add_argument("--json", action="store_true", help="print one flat JSON object")
    p.set_defaults(func=cmd_point)

    p = sub.add_parser("plan", help="say what a sweep will do before running it")
    p.add_argument("config", help="config YAML (or a layout JSON)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-calibration", action="store_true",
                   help="skip the short timing run that estimates compute")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("init-cube", help="create or extend the result cube for a layout")
    p.add_argument("layout", help="config YAML, layout JSON file, or inline JSON")
    p.add_argument("--cube", required=True)
    p.add_argument("--marker", help="write the layout JSON here when done")
    p.set_defaults(func=cmd_init_cube)

    p = sub.add_parser("run-chunk", help="compute one chunk (one Snakemake job)")
    p.add_argument("layout", help="layout JSON written by init-cube (or a config)")
    p.add_argument("chunk", help="chunk id, e.g. c00003")
    p.add_argument("--cube", required=True)
    p.add_argument("--threads", type=_positive_int, default=1,
                   help="dask workers of the local cluster")
    p.add_argument("--scheduler", default=None,
                   help="address of an existing dask scheduler (overrides the config)")
    p.add_argument("--marker", help="write the job summary JSON here when done")
    p.set_defaults(func=cmd_run_chunk)

    p = sub.add_parser("summarize", help="check the cube is complete and summarise the jobs")
    p.add_argument("layout")
    p.add_argument("--cube", required=True)
    p.add_argument("--markers", nargs="*", default=[])
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_summarize)

    p = sub.add_parser("fits", help="fit the power-law exponents of a cube against "
                       "docs/science/rates.md")
    p.add_argument("cube", help="result cube (zarr directory)")
    p.add_argument("--csv", required=True, help="write the fit table here (CSV)")
    p.add_argument("--md", required=True, help="write the readable report here (Markdown)")
    p.set_defaults(func=cmd_fits)

    p = sub.add_parser("figures", help="draw the figures the cube's grid supports (PNG)")
    p.add_argument("cube", help="result cube (zarr directory)")
    p.add_argument("--outdir", required=True, help="directory for <figure>.png")
    p.set_defaults(func=cmd_figures)
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UsageError as err:
        print(f"ktsweep {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
