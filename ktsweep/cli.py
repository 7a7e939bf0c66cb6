"""The ``ktsweep`` command line: evaluate one point, plan or run a sweep, analyse a cube."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
import yaml

from .estimators import METHODS, MCSettings, run
from .params import ParameterError, make_point
from .spectra import checkpoint_steps


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
            if k.startswith("gamma0_"):
                record[k] = v[0]
            elif k == "status":
                statuses.append(str(v[0]))
                if prefixed:
                    record[f"{m}_status"] = str(v[0])
            else:
                record[f"{m}_{k}" if prefixed and m != "bound" else k] = v[0]
    record["status"] = "diverged" if "diverged" in statuses else "ok"
    return {k: _jsonable(v) for k, v in record.items()}


def cmd_point(args: argparse.Namespace) -> int:
    try:
        point = make_point(parse_assignments(args.assignments))
    except ParameterError as err:
        raise UsageError(str(err)) from None
    methods = list(METHODS) if args.method == "all" else [args.method]
    steps = checkpoint_steps(max(point.steps_t, point.steps_s), args.checkpoints_per_decade)
    settings = MCSettings(args.replicates, args.seed, args.device, args.dtype)
    record = point_record(run([point], methods, steps, settings), steps)
    if args.json:
        print(json.dumps(record))
        return 0
    print(f"point {point.key}: " + " ".join(f"{k}={v}" for k, v in point.as_dict().items()
                                              if v is not None))
    for k, v in record.items():
        if not isinstance(v, list):
            print(f"  {k:28s} {v}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ktsweep", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("point", help="evaluate one grid point",
                       description="Evaluate one point: KEY=VALUE pairs of model.md §3 "
                                   "(values read as YAML).")
    p.add_argument("assignments", nargs="+", metavar="KEY=VALUE")
    p.add_argument("--method", choices=[*METHODS, "all"], default="exact")
    p.add_argument("--replicates", type=_positive_int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default="auto")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--checkpoints-per-decade", type=_positive_int, default=10)
    p.add_argument("--json", action="store_true", help="print one flat JSON object")
    p.set_defaults(func=cmd_point)
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
