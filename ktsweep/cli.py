"""The ktsweep command line: evaluate one point, plan or run a sweep, analyse a cube."""

from __future__ import annotations

import argparse
import difflib
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from ktsweep.engines.dispatch import run
from ktsweep.model.cubespec import BOUND_FLAGS, BOUND_NAMES
from ktsweep.model.estimators import METHODS
from ktsweep.model.params import (
    PARAMETERS,
    ParameterError,
    Point,
    make_point,
    unused_settings,
)
from ktsweep.model.quantities import RATIOS, RISKS, STEP_SIZES
from ktsweep.model.spectra import checkpoint_steps
from ktsweep.sweep.config import MCConfig, OutputsConfig

if TYPE_CHECKING:
    from pydantic import ValidationError

    from ktsweep.model.estimators import MCSettings
    from ktsweep.sweep.layout import Layout
    from ktsweep.sweep.progress import Progress


class UsageError(Exception):
    """Bad command-line input; printed without a traceback, exit status 2."""


def parse_assignments(items: Sequence[str]) -> dict[str, Any]:
    """KEY=VALUE words → dict, each VALUE read as YAML (so ``'{scale: 0.3}'`` works); a key
    given twice is an error (the first would be dropped silently)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"{item!r} is not KEY=VALUE (e.g. alpha_t=1.5)")
        if key in out:
            raise UsageError(f"parameter {key!r} is given twice ({key}={out[key]!r} and "
                             f"{item}); give it once")
        try:
            out[key] = yaml.safe_load(raw)
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


def point_record(results: dict[str, dict[str, np.ndarray]], steps: np.ndarray,
                 arrays: Sequence[str] = ("mode", "curve")) -> dict[str, Any]:
    """Flatten per-method results for one point into one JSON-ready mapping.

    With one method the keys are the quantity names; with several, each is prefixed by its
    method (``exact_risk_t2s``, ``mc_risk_t2s_se``) except bound quantities, which are unique.
    Per-mode (``mode_*``) and per-step (``curve_*``, with ``step``) arrays are kept only for
    the kinds named in ``arrays``.
    """
    record: dict[str, Any] = {"step": steps} if "curve" in arrays else {}
    methods = list(results)
    prefixed = len([m for m in methods if m != "bound"]) > 1
    statuses = []
    for m in methods:
        for k, v in results[m].items():
            kind = k.split("_", 1)[0]
            if kind in ("mode", "curve") and kind not in arrays:
                continue
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


TABLE_ROWS = (*RISKS, *RATIOS)
"""The per-estimator quantities of the readable ``ktsweep point`` table, in this order."""


def point_table(results: dict[str, dict[str, np.ndarray]]) -> str:
    """The readable view of one point's results: a row per quantity, a column per estimator
    (Monte Carlo as mean ± standard error), then γ0 per run and the bound quantities.

    PGR is marked undefined where the ceiling is not below the teacher (there is no gap to
    recover; docs/science/quantities.md), and a diverged estimator says so in its column."""
    methods = [m for m in results if m != "bound"]

    def cell(m: str, k: str) -> str:
        res = results[m]
        v = float(res[k][0])
        if not math.isfinite(v) and str(res["status"][0]) == "diverged":
            return "diverged"  # this run, or the teacher it learns from, diverged
        se = res.get(f"{k}_se")
        text = (f"{v:.6g}" + (f" ± {float(se[0]):.2g}" if se is not None else "")
                if math.isfinite(v) else "undefined")
        if k == "pgr" and not res["risk_ceiling"][0] < res["risk_teacher"][0]:
            text += " (no gap: ceiling not below teacher)"
        return text

    rows = [["", *methods], *([k, *(cell(m, k) for m in methods)] for k in TABLE_ROWS)]
    widths = [max(len(r[c]) for r in rows) + 2 for c in range(len(rows[0]))]
    lines = ["".join(text.ljust(w) for text, w in zip(r, widths, strict=True)).rstrip()
             for r in rows]
    first = results[methods[0]] if methods else results["bound"]
    steps = [f"{k} = {float(first[k][0]):.6g}" for k in STEP_SIZES if k in first
             and math.isfinite(float(first[k][0]))]
    if steps:
        lines.append("step sizes used: " + ", ".join(steps))
    if "bound" in results:
        lines.append("bounds (docs/science/bounds.md):")
        for k in BOUND_NAMES:
            value = float(results["bound"][k][0])
            if k in BOUND_FLAGS:
                text = "undetermined" if math.isnan(value) else ("yes" if value else "no")
            else:
                text = f"{value:.6g}"
            lines.append(f"  {k:26s} {text}")
    return "\n".join(lines)


def divergence_hint(point: Point, record: dict[str, Any]) -> str:
    """Why a point diverged, in numbers: the largest initial step whose first SGD step is
    stable in expectation for the teacher's and the student's spectrum, beside the steps the
    point used (docs/science/limits.md §1)."""
    from ktsweep.engines.onestep import largest_stable_step
    from ktsweep.model.inputs import fourth_moment
    from ktsweep.model.spectra import student_spectrum, teacher_spectrum

    psi = fourth_moment(point.inputs, point.inputs_nu)
    runs = [("teacher", "gamma0_t", teacher_spectrum(point), point.batch_t),
            ("students", "gamma0_s", student_spectrum(point), point.batch_s)]
    parts = []
    for who, key, lam, batch in runs:
        limit = largest_stable_step(lam, batch, psi)
        used = record.get(key)
        over = used is not None and used >= limit
        parts.append(f"{who}: {key} < {limit:.4g} is stable" + (
            f" (this point used {used:.4g})" if used is not None else "")
            + (" <- too large" if over else ""))
    return ("the point diverged; the largest stable initial steps for its spectra are: "
            + "; ".join(parts) + " (lower the step; a step just below the edge can still cross "
            "the divergence limit on its way)")


def _suggest(name: str, known: Sequence[str]) -> str:
    """' (did you mean X?)' for a misspelt name, else ''."""
    close = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def cmd_point(args: argparse.Namespace) -> int:
    given = parse_assignments(args.assignments)
    for key in given:
        if key not in PARAMETERS:
            raise UsageError(f"unknown parameter {key!r}{_suggest(key, PARAMETERS)}; known "
                             f"parameters are: {', '.join(PARAMETERS)}")
    try:
        point = make_point(given)
    except ParameterError as err:
        raise UsageError(str(err)) from None
    methods = list(METHODS) if args.method == "all" else [args.method]
    if "mc" in methods and not (math.isfinite(point.N) and math.isfinite(point.n)):
        raise UsageError("Monte Carlo cannot run infinitely many samples (N or n = inf is the "
                         "exact engine's limit): use --method exact, or give finite N and n")
    settings = _mc_config(args).settings()
    steps = checkpoint_steps(point.steps_max, _per_decade(args))
    if "mc" in methods:
        _check_mc_memory(point, settings, len(steps))
    for warning in unused_settings(given, {point.target}):
        print(f"warning: {warning}", file=sys.stderr)
    results = _run_with_progress(point, methods, steps, settings)
    arrays = [k for k, on in (("mode", args.modes), ("curve", args.curves)) if on]
    record = point_record(results, steps, arrays)
    for warning in tune_edge_warnings(record):
        print(f"warning: {warning}", file=sys.stderr)
    if record["status"] == "diverged":
        print(f"warning: {divergence_hint(point, record)}", file=sys.stderr)
    if args.json:
        print(json.dumps(record))
        return 0
    print(f"point {point.key}: " + " ".join(f"{k}={v}" for k, v in point.as_dict().items()
                                              if v is not None))
    print(point_table(results))
    for kind in arrays:
        for k, v in record.items():
            if k.split("_", 1)[0] == kind or (kind == "curve" and k == "step"):
                print(f"{k}: {v}")
    return 0


def _run_with_progress(point: Point, methods: list[str], steps: np.ndarray,
                       settings: MCSettings) -> dict[str, dict[str, np.ndarray]]:
    """Run the methods of one point with a progress bar on stderr (shown after 2 s, on a
    terminal): exact and bound as one step (they share one computation), Monte Carlo by its
    SGD steps. The results are those of one ``run`` call: every method is deterministic."""
    from tqdm import tqdm

    from ktsweep.engines import mc

    out: dict[str, dict[str, np.ndarray]] = {}
    quiet = not sys.stderr.isatty()  # a bar in a log file or a pipe is only noise
    analytic = [m for m in methods if m != "mc"]
    if analytic:
        with tqdm(total=1, desc=" + ".join(analytic), file=sys.stderr, delay=2,
                  bar_format="{desc}: {elapsed}", leave=False, disable=quiet):
            out.update(run([point], analytic, steps, settings))
    if "mc" in methods:
        with tqdm(total=mc.work_steps([point]), desc=f"mc ({settings.replicates} replicates)",
                  unit="step", unit_scale=True, file=sys.stderr, delay=2, leave=False,
                  disable=quiet) as bar, mc.reporting(bar.update):
            out.update(run([point], ["mc"], steps, settings))
    return {m: out[m] for m in methods}


def _check_mc_memory(point: Point, settings: MCSettings, checkpoints: int) -> None:
    """Refuse a Monte Carlo point that would not fit this machine's memory (before allocating)."""
    import os

    from ktsweep.engines.cost import mc_bytes

    need = mc_bytes(point.d, max(point.batch_t, point.batch_s), settings.replicates,
                    4 if settings.dtype == "float32" else 8, checkpoints)
    have = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if need > have:
        raise UsageError(f"--replicates {settings.replicates} at d = {point.d} needs about "
                         f"{need / 2**30:.1f} GiB for Monte Carlo, more than this machine's "
                         f"{have / 2**30:.1f} GiB; lower --replicates or d")


def _option_error(err: ValidationError, options: dict[str, str]) -> UsageError:
    """A pydantic error on a config model built from options, named by its option."""
    e = err.errors(include_url=False)[0]
    field = str(e["loc"][0]) if e["loc"] else ""
    return UsageError(f"{options.get(field, field)} {e['input']!r}: {e['msg']}")


def _mc_config(args: argparse.Namespace) -> MCConfig:
    """The Monte Carlo flags checked by the config's own rules (one set of limits, defaults)."""
    from pydantic import ValidationError

    flags = {"replicates": "--replicates", "seed": "--seed", "device": "--device",
             "dtype": "--dtype", "kernel": "--kernel"}
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


def _cube_layout(cube: str) -> Layout:
    """The layout a cube was created for (its ``ktsweep_config`` attribute)."""
    from ktsweep.sweep.store import StoreError, layout_of

    try:
        return layout_of(cube)
    except (StoreError, ValueError, KeyError, TypeError) as err:
        raise UsageError(f"cube {cube}: {err} (the workflow's init_cube rule creates it)"
                         ) from None


def _config_file(path: str) -> Layout:
    from ktsweep.sweep.config import ConfigError
    from ktsweep.sweep.layout import Layout

    try:
        return Layout.from_file(path)
    except (ConfigError, OSError) as err:
        raise UsageError(str(err)) from None


def cmd_run_chunk(args: argparse.Namespace) -> int:
    import logging

    from ktsweep.sweep.runner import run_chunk
    from ktsweep.sweep.store import StoreError

    # The job log is for the user: progress lines from the runner, warnings and errors from
    # the libraries, not dask's start-up and shutdown chatter (its INFO records).
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    import distributed  # noqa: F401  (its import configures the "distributed" logger at INFO)

    logging.getLogger("distributed").setLevel(logging.WARNING)
    layout = _cube_layout(args.cube).with_execution(
        device=args.device, require_device=args.require_device,
        points_per_task=args.points_per_task, scheduler=args.scheduler,
        processes=args.processes)
    if args.chunk not in layout.chunk_ids():
        raise UsageError(f"chunk {args.chunk!r} does not exist: this sweep has chunks "
                         f"c{0:05d}..c{layout.n_chunks - 1:05d}")
    try:
        run_chunk(layout, args.chunk, args.cube, threads=args.threads,
                  report=lambda s: print(s, flush=True))
    except StoreError as err:
        raise UsageError(str(err)) from None
    return 0


def cmd_summarize(args: argparse.Namespace) -> int:
    from ktsweep.sweep.integrity import write_json_atomic
    from ktsweep.sweep.runner import summarize
    from ktsweep.sweep.store import StoreError

    layout = _cube_layout(args.cube)
    try:
        summary = summarize(layout, args.cube, args.link)
    except StoreError as err:
        raise UsageError(str(err)) from None
    write_json_atomic(Path(args.out), summary)
    print(json.dumps({k: v for k, v in summary.items() if k != "chunks"}))
    if summary["missing"]:
        print(f"cube {layout.name}: incomplete, missing "
              + ", ".join(f"{m} {n}" for m, n in summary["missing"].items()))
        return 1
    print(f"cube {layout.name}: {summary['points']} points verified and published at "
          f"{args.link or args.cube}")
    return 0


def _cubes_of(target: str) -> list:
    """Cubes named by a results folder (its linked cube, else every cube in cubes/) or path."""
    p = Path(target)
    if (p / "zarr.json").exists() or p.suffix == ".zarr":
        return [p]
    if (p / "cube.zarr").is_symlink() and (p / "cube.zarr").exists():
        return [(p / "cube.zarr").resolve()]
    found = sorted(c for c in (p / "cubes").glob("*.zarr") if not c.name.startswith(".")
                   and c.name.count(".") == 1)  # set-aside cubes carry a second suffix
    if not found:
        raise UsageError(f"no cube under {p}: give results/NAME or a cube path")
    return found


def cmd_check(args: argparse.Namespace) -> int:
    """Inspect cubes against their records: every file hashed (``--quick``: only files whose
    size or mtime changed), damage named by variable and chunk; ``--repair`` resets it."""
    from ktsweep.sweep.store import StoreError, health, repair

    bad = 0
    folder = Path(args.target)
    if (folder / "cube.json").exists() and not (folder / "cube.zarr").exists():
        bad += 1
        print(f"{folder}/cube.zarr is missing although cube.json says the sweep finished; "
              "rerun the same snakemake command to publish it again")
    for cube in _cubes_of(args.target):
        try:
            found = health(cube, full=not args.quick)
        except StoreError as err:
            print(f"{cube}: unreadable: {err}")
            bad += 1
            continue
        status = "damaged" if not found.ok else "ok"
        print(f"{cube}: {status}; {len(found.uncommitted)} chunks not computed yet")
        for problem in found.problems():
            print(f"  {problem}")
        if not found.ok:
            bad += 1
            if not args.repair:
                print("  run `ktsweep check ... --repair`, then the same snakemake command, "
                      "to recompute what is damaged")
        if args.repair or (found.ok and found.stale):  # new times, same content: recorded
            for line in repair(cube, found):
                print(f"  repaired: {line}")
    return 1 if bad else 0


def _progress_of(target: str) -> Progress:
    from ktsweep.sweep.config import ConfigError
    from ktsweep.sweep.progress import locate, measure

    try:
        layout, cube = locate(target)
    except (ConfigError, OSError, ValueError) as err:
        raise UsageError(str(err)) from None
    return measure(layout, cube)


def cmd_status(args: argparse.Namespace) -> int:
    """One line per sweep: evaluations done / total per method, chunks, ETA."""
    prog = _progress_of(args.target)
    print(prog.line())
    if args.json:
        print(json.dumps({"name": prog.name, "cube": str(prog.cube), "total": prog.total,
                          "done": prog.done, "chunks": prog.chunks,
                          "committed": prog.committed, "running": prog.running,
                          "seconds_per_evaluation": prog.seconds_per_eval,
                          "eta_seconds": prog.eta_s, "complete": prog.complete}))
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    """Reprint the status line every few seconds until the sweep is complete (or Ctrl-C)."""
    import time

    tty = sys.stdout.isatty()
    try:
        while True:
            prog = _progress_of(args.target)
            line = f"{time.strftime('%H:%M:%S')} {prog.line()}"
            print(f"\r\033[K{line}" if tty else line, end="" if tty else "\n", flush=True)
            if prog.complete:
                break
            time.sleep(args.every)
    except KeyboardInterrupt:
        pass
    if tty:
        print()
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    """List cubes and leftovers not in use; remove them only on confirmation."""
    from ktsweep.sweep.store import collectable, remove_collectable

    root = Path(args.target)
    live, candidates = collectable(root)
    if not candidates:
        print(f"nothing to collect under {root}")
        return 0
    for path, size in candidates:
        print(f"{size / 1e6:10.2f} MB  {path}")
    print(f"(in use, kept: {live})" if live else "(no cube in use: results/NAME/cube.zarr "
          "is not linked yet)")
    if not args.yes:
        answer = input(f"remove these {len(candidates)} entries? [y/N] ") if sys.stdin.isatty() \
            else ""
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing removed (pass --yes to remove without asking)")
            return 0
    remove_collectable([path for path, _ in candidates])
    print(f"removed {len(candidates)} entries")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from ktsweep.sweep.costs import plan

    layout = _config_file(args.config)
    info = plan(layout, calibrate_here=not args.no_calibration)
    if args.json:
        print(json.dumps(info, indent=1))
    else:
        from ktsweep.sweep.costs import format_plan

        print(format_plan(info))
    return 0


def cmd_fits(args: argparse.Namespace) -> int:
    from ktsweep.analysis.fits import fit_cube, frame, write_fits
    from ktsweep.sweep.store import StoreError, open_cube

    try:
        fits = fit_cube(open_cube(args.cube))
    except StoreError as err:
        raise UsageError(str(err)) from None
    write_fits(fits, args.csv, args.md)
    df = frame(fits)
    counts = df["verdict"].value_counts().to_dict()
    print(f"{len(df)} fits written to {args.csv} and {args.md}: "
          + (", ".join(f"{k} {v}" for k, v in counts.items()) or "nothing to fit"))
    return 0


def cmd_claims(args: argparse.Namespace) -> int:
    from ktsweep.analysis.claims import evaluate_claims, write_claims
    from ktsweep.analysis.fits import fit_cube, read_fits
    from ktsweep.sweep.store import StoreError, open_cube

    try:
        ds = open_cube(args.cube)
    except StoreError as err:
        raise UsageError(str(err)) from None
    if args.fits:
        try:
            fits = read_fits(args.fits, ds)
        except (OSError, ValueError) as err:
            raise UsageError(f"cannot read the fit table {args.fits}: {err} (write it with "
                             "'ktsweep fits', or leave --fits out to fit here)") from None
    else:
        fits = fit_cube(ds)
    df = evaluate_claims(ds, fits)
    write_claims(df, args.md, args.csv)
    counts = df["verdict"].value_counts().to_dict()
    print(f"{len(df)} claims written to {args.md}: "
          + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


def cmd_claim_table(args: argparse.Namespace) -> int:
    from ktsweep.analysis.claims import combine, combined_markdown, read_claims

    tables = {}
    for path in args.claims:
        name = Path(path).parent.name
        if name in tables:
            raise UsageError(f"two claim tables of sweep '{name}' ({path}): give each sweep's "
                             "results/NAME/claims.csv once")
        try:
            tables[name] = read_claims(path)
        except (OSError, ValueError) as err:
            raise UsageError(f"cannot read the claim table {path}: {err} (write it with "
                             "'ktsweep claims' or the workflow's claims rule)") from None
    df = combine(tables)
    Path(args.md).parent.mkdir(parents=True, exist_ok=True)
    Path(args.md).write_text(combined_markdown(df, args.provenance))
    counts = df["verdict"].value_counts().to_dict()
    print(f"{len(df)} claims over {len(tables)} sweeps written to {args.md}: "
          + ", ".join(f"{k} {v}" for k, v in counts.items()))
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
    p.add_argument("--kernel", choices=["torch", "fused", "auto"],
                   help=f"Monte Carlo kernel (docs/science/montecarlo.md); default "
                        f"{mc['kernel'].default}")
    p.add_argument("--checkpoints-per-decade", type=int, help="default "
                   f"{OutputsConfig.model_fields['checkpoints_per_decade'].default}")
    p.add_argument("--json", action="store_true", help="print one flat JSON object")
    p.add_argument("--modes", action="store_true", help="also print the per-mode risks "
                   "(mode_*, d numbers each)")
    p.add_argument("--curves", action="store_true", help="also print the learning curves "
                   "(curve_* at the checkpoint steps in step)")
    p.set_defaults(func=cmd_point)

    p = sub.add_parser("plan", help="say what a sweep will do before running it")
    p.add_argument("config", help="config YAML")
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-calibration", action="store_true",
                   help="skip the short timing run that estimates compute")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("run-chunk", help="compute one chunk (one Snakemake job)")
    p.add_argument("cube", help="the content-addressed cube (its config is read from it)")
    p.add_argument("chunk", help="chunk id, e.g. c00003")
    p.add_argument("--threads", type=_positive_int, default=1,
                   help="dask workers of the local cluster")
    p.add_argument("--scheduler", default=None,
                   help="address of an existing dask scheduler (overrides the config)")
    p.add_argument("--processes", action="store_true",
                   help="local dask workers are processes instead of threads")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None,
                   help="Monte Carlo device (default: the config the cube was made with)")
    p.add_argument("--require-device", action="store_true", default=None,
                   help="with --device cuda, fail instead of falling back to the CPU")
    p.add_argument("--points-per-task", type=_task_size, default=None,
                   help="largest stack of points in one dask task, or auto")
    p.set_defaults(func=cmd_run_chunk)

    p = sub.add_parser("summarize", help="verify the cube, check it is complete, publish it")
    p.add_argument("cube", help="the content-addressed cube")
    p.add_argument("--link", help="symlink to point at the cube once complete")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_summarize)

    p = sub.add_parser("check", help="verify a cube: every chunk of every variable, by name")
    p.add_argument("target", help="results/NAME (its cubes) or a cube path")
    p.add_argument("--quick", action="store_true",
                   help="hash only the files whose size or time differ from their records "
                   "(the default hashes every file, so it also finds a same-size swap)")
    p.add_argument("--repair", action="store_true",
                   help="reset damaged chunks so the next run recomputes them, restore "
                   "damaged metadata from its recorded copies")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("status", help="points done / total per method and an ETA of a sweep",
                       description="Progress of a sweep, read from its cube's commit records "
                       "and staged tasks: works during a run, from any shell.")
    p.add_argument("target", help="results/NAME, or the sweep's config file (resolved "
                   "against ./results like snakemake does)")
    p.add_argument("--json", action="store_true", help="also print the counts as JSON")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("watch", help="follow a running sweep: its status line, refreshed")
    p.add_argument("target", help="results/NAME or the sweep's config file")
    p.add_argument("--every", type=float, default=5.0, help="seconds between refreshes")
    p.set_defaults(func=cmd_watch)

    p = sub.add_parser("gc", help="list cubes not in use and remove them on confirmation")
    p.add_argument("target", help="results/NAME")
    p.add_argument("--yes", action="store_true", help="remove without asking")
    p.set_defaults(func=cmd_gc)

    p = sub.add_parser("fits", help="fit the power-law exponents of a cube against "
                       "docs/science/rates.md")
    p.add_argument("cube", help="result cube (zarr directory)")
    p.add_argument("--csv", required=True, help="write the fit table here (CSV)")
    p.add_argument("--md", required=True, help="write the readable report here (Markdown)")
    p.set_defaults(func=cmd_fits)

    p = sub.add_parser("claims", help="the table of the paper's claims this cube tests: "
                       "measured, verdict, reason")
    p.add_argument("cube", help="result cube (zarr directory)")
    p.add_argument("--fits", help="the cube's fits.csv ('ktsweep fits'); fitted here if left "
                   "out")
    p.add_argument("--md", required=True, help="write the claim table here (Markdown)")
    p.add_argument("--csv", help="also write it here (CSV)")
    p.set_defaults(func=cmd_claims)

    p = sub.add_parser("claim-table", help="one verdict per claim over several sweeps' "
                       "claims.csv (the project's claim table, make claim-table)")
    p.add_argument("claims", nargs="+", help="results/NAME/claims.csv of each sweep")
    p.add_argument("--md", required=True, help="write the combined table here (Markdown)")
    p.add_argument("--provenance", default="", help="a sentence saying when and from what "
                   "it was made (commit, date)")
    p.set_defaults(func=cmd_claim_table)

    p = sub.add_parser("figures", help="draw the figures the cube's grid supports (PNG)")
    p.add_argument("cube", help="result cube (zarr directory)")
    p.add_argument("--outdir", required=True, help="directory for <figure>.png")
    p.set_defaults(func=cmd_figures)
    return parser


def _task_size(text: str) -> int | str:
    return "auto" if text == "auto" else _positive_int(text)


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
