"""Config → grid: the semantic checks, the point set, its chunking into jobs, and the layout.

The layout is everything the later stages need, derived deterministically from a validated
:class:`~ktsweep.sweep.config.SweepConfig`: axes and their coordinate values, fixed parameters,
methods and their settings, the chunk table (each chunk an N-D block of the grid = one Snakemake
job = one zarr chunk), the learning-curve checkpoints, the Monte Carlo mask and the mode count.
It serialises to JSON so jobs receive it whole.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from ktsweep.engines import cost
from ktsweep.engines.cost import mc_bytes
from ktsweep.model import params
from ktsweep.model.estimators import MCSettings, risk_estimators
from ktsweep.model.params import (
    COUPLED,
    PARAMETERS,
    REQUIRED,
    SPECTRUM_PARAMS,
    ParameterError,
    Point,
    make_point,
    steps_run,
    unused_settings,
)
from ktsweep.model.quantities import SCHEMA_VERSION
from ktsweep.model.spectra import checkpoint_steps
from ktsweep.model.spectrum_files import load_spectrum
from ktsweep.sweep.config import ConfigError, SweepConfig, locate, parse, read_yaml

CHUNK_WIDTH = 5
"""Chunk ids are c00000, c00001, … (zero-padded so they sort)."""


def validate_config(config: Mapping[str, Any] | SweepConfig) -> SweepConfig:
    """Type-check, fill defaults and check the semantics (:class:`ConfigError` on failure)."""
    cfg = config if isinstance(config, SweepConfig) else parse(config)
    grid, fixed, tie = cfg.grid, cfg.fixed, cfg.tie
    for name in grid:
        if name in fixed:
            raise ConfigError(f"parameter {name!r} is given twice (grid, fixed, tie); keep it "
                              "in one place", ("fixed", name))
    for name in tie:
        if name in grid or name in fixed:
            raise ConfigError(f"parameter {name!r} is given twice (grid, fixed, tie); keep it "
                              "in one place", ("tie", name))
    for name, axis in tie.items():
        if axis not in grid:
            raise ConfigError(f"config key 'tie.{name}': {axis!r} is not a grid axis "
                              f"(axes: {', '.join(grid)})", ("tie", name))
    given = set(grid) | set(fixed) | set(tie)
    missing = [k for k in REQUIRED if k not in given  # a spectrum file gives its own alpha
               and not (k.startswith("alpha_") and f"spectrum_{k[-1]}" in given)]
    if missing:
        raise ConfigError(f"parameter {missing[0]!r} is required: give it in grid or fixed",
                          ("fixed",))
    for axis, values in grid.items():
        _check_unique(f"grid.{axis}", values, ("grid", axis))
    for owner, section in (("mc", "subgrid"), ("mc", "stride"), ("outputs", "subgrid")):
        for axis, val in getattr(getattr(cfg, owner), section).items():
            where = (owner, section, axis)
            key = f"{owner}.{section}.{axis}"
            if axis not in grid:
                raise ConfigError(f"config key {key!r}: {axis!r} is not a grid axis "
                                  f"(axes: {', '.join(grid)})", where)
            if section == "subgrid":
                _check_unique(key, val, where)
                known = {_label(x) for x in grid[axis]}
                bad = [v for v in val if _label(v) not in known]
                if bad:
                    raise ConfigError(f"config key {key!r}: {bad} not in grid.{axis} = "
                                      f"{grid[axis]}", where)
    for axis in cfg.jobs.chunks:
        if axis not in grid:
            raise ConfigError(f"config key 'jobs.chunks.{axis}': {axis!r} is not a grid axis "
                              f"(axes: {', '.join(grid)})", ("jobs", "chunks", axis))
    _check_points(grid, fixed, tie)
    layout = Layout(cfg)
    _check_size(layout)
    _check_mc_samples(layout)
    _check_memory(layout)
    return cfg


TASK_SECONDS = 2.0
"""Nominal seconds of work an automatic dask task holds."""
MAX_POINTS_PER_TASK = 4096
"""Largest automatic stack of points in one task (one engine call)."""
MAX_POINTS_PER_JOB = 1_000_000
"""Largest chunk an automatic job size makes (its block stays within a few GB)."""
MAX_JOB_MB = 256_000
"""Largest memory request an estimated job makes (beyond it, no node would run it)."""
JOB_BASE_MB = 1000
"""Memory of a chunk job before its data: the interpreter, numpy, torch, dask, zarr."""
MAX_JOBS = 100_000
"""Most chunk jobs of one sweep: Snakemake holds its whole job graph in memory, about
:data:`JOB_BYTES` a job, before it submits the first one."""
JOB_BYTES = 22_000
"""Snakemake's memory per chunk job while it plans (measured: 1.07 GB for 50 000 jobs in
``snakemake -n``)."""


def planning_bytes(layout: Layout) -> int:
    """Estimated memory Snakemake needs to plan the sweep's jobs (the workflow's own share;
    ``ktsweep plan`` states it)."""
    return layout.n_chunks * JOB_BYTES


def _check_size(layout: Layout) -> None:
    """Refuse a grid whose job graph would not fit a workstation before anything is built."""
    if layout.n_chunks > MAX_JOBS:
        per_job = math.prod(layout.chunks)
        raise ConfigError(
            f"config key 'grid': {layout.n_points} points in {layout.n_chunks} jobs of about "
            f"{per_job} points; Snakemake would need about "
            f"{planning_bytes(layout) / 2**30:.1f} GiB to plan more than {MAX_JOBS} jobs; "
            f"raise jobs.points_per_job to at least {-(-layout.n_points // MAX_JOBS)} or "
            "split the sweep", ("jobs",) if "points_per_job" in layout.config.jobs.
            model_fields_set else ("grid",))


def _check_mc_samples(layout: Layout) -> None:
    """Monte Carlo cannot run infinitely many samples: N or n = inf must lie outside its
    sub-grid (the cube could never be completed)."""
    if "mc" not in layout.methods:
        return
    for name in ("N", "n"):
        axis = layout.tie.get(name, name)
        values = layout.axes.get(axis, [layout.fixed.get(name)])
        for i, v in enumerate(values):
            if not (isinstance(v, int | float) and math.isinf(v)) and str(v).strip().lower() \
                    not in ("inf", ".inf", "+inf", "infinity"):
                continue
            selected = layout.mc_mask.any() if axis not in layout.axes else bool(
                np.take(layout.mc_mask, i, axis=list(layout.axes).index(axis)).any())
            if selected:
                where = ("mc", "subgrid") if axis in layout.axes else ("fixed", name)
                raise ConfigError(
                    f"{name} = inf with Monte Carlo: it cannot simulate infinitely many "
                    f"samples (the exact engine's limit); keep inf out of its sub-grid, e.g. "
                    f"mc: {{subgrid: {{{axis}: [the finite values]}}}}", where)


def config_warnings(layout: Layout) -> list[str]:
    """Settings no point of the sweep reads (a parameter its targets ignore) and decays
    α <= 1 (outside the theory): warnings, printed when the workflow or ``ktsweep plan``
    starts."""
    given = {**layout.fixed}
    for name, values in layout.axes.items():
        given[name] = values[0]
    for name, axis in layout.tie.items():
        given[name] = layout.axes[axis][0]
    targets = {str(t) for t in layout._param_values("target")} - {"None"} or {"gaussian"}
    out = unused_settings({k: v for k, v in given.items() if k not in ("alpha_t", "alpha_s")},
                          targets)
    for name in ("alpha_t", "alpha_s"):
        low = sorted({float(v) for v in layout._param_values(name)
                      if isinstance(v, int | float) and v <= 1})
        if low:
            out += unused_settings({name: low[0]}, targets)
    return out


def mc_task_bytes(layout: Layout) -> int:
    """Estimated peak memory of the largest Monte Carlo task of a sweep (0 without mc)."""
    if "mc" not in layout.methods:
        return 0
    mc = layout.config.mc
    batch = max(max(layout.param_counts("batch_t")), max(layout.param_counts("batch_s")))
    curves = len(layout.checkpoints) if layout.config.outputs.curves else 0
    return mc_bytes(layout.d_max, batch, mc.replicates, 4 if mc.dtype == "float32" else 8,
                    curves, min(layout.task_points("mc"), int(layout.mc_mask.sum())))


DERIVED_FROM: dict[str, tuple[str, ...]] = {
    "d": ("spectrum_t", "spectrum_s"), "alpha_t": ("spectrum_t",),
    "alpha_s": ("spectrum_s",), "mixing_dim": ("d", "mixing_seed", "spectrum_t", "spectrum_s"),
}
"""Parameters whose resolved value follows others when it is not given (make_point's
defaults): d from the spectrum files' lengths, alpha from the file's fit, the mixing's
dimension from d."""
TEXT_PARAMS = ("target", "schedule_t", "schedule_s", "inputs", "spectrum_t", "spectrum_s")
"""Parameters whose values are text."""


def _check_memory(layout: Layout) -> None:
    """A job runs ``jobs.threads`` tasks at once: their Monte Carlo memory must fit
    ``jobs.mem_mb``, or, where the request is estimated, :data:`MAX_JOB_MB` (no node offers
    more); checked before anything is allocated."""
    need = mc_task_bytes(layout) * layout.config.jobs.threads
    given = layout.config.jobs.mem_mb
    have = (given if given is not None else MAX_JOB_MB) * 2**20
    if need > have:
        mc = layout.config.mc
        limit = f"jobs.mem_mb = {given}" if given is not None else \
            f"the largest job ktsweep requests ({MAX_JOB_MB} MB)"
        raise ConfigError(
            f"config key 'mc.replicates': a job's Monte Carlo tasks need about "
            f"{need / 2**20:.0f} MB ({layout.config.jobs.threads} threads x up to "
            f"{layout.task_points('mc')} points x {mc.replicates} replicates x "
            f"d = {layout.d_max}, {mc.dtype}) but {limit}; lower mc.replicates, "
            "jobs.points_per_task or jobs.threads, or raise jobs.mem_mb",
            ("mc", "replicates") if "replicates" in layout.config.mc.model_fields_set
            else ("jobs",))


def _check_unique(key: str, values: Sequence[Any], path: tuple) -> None:
    """Values equal after conversion (``64``, ``"64"``, ``6.4e1``) are one value."""
    seen: dict[str, int] = {}
    for i, v in enumerate(values):
        label = _label(v)
        if label in seen:
            raise ConfigError(f"config key {key!r}: values must be unique, but items "
                              f"{seen[label]} and {i} are both {v!r} (after reading numbers)",
                              (*path, i))
        seen[label] = i


def _label(value: Any) -> str:
    """A coordinate label: numbers stay numbers elsewhere; mappings/strings become text."""
    if isinstance(value, Mapping):
        return json.dumps({k: value[k] for k in sorted(value)}, separators=(",", ":"))
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int | float):
        return repr(float(value))
    return str(value)


def point_values(fixed: Mapping[str, Any], axis_values: Mapping[str, Any],
                 tie: Mapping[str, str]) -> dict[str, Any]:
    """The full parameter mapping of one point: fixed, axis values, then tied parameters."""
    values = {**fixed, **axis_values}
    for name, axis in tie.items():
        values[name] = axis_values[axis]
    return values


def _check_points(grid: Mapping[str, list], fixed: Mapping[str, Any],
                  tie: Mapping[str, str]) -> None:
    """Every point of the product must be a valid point (errors name the point and key).

    Walks each axis value once (the other axes at their first value) and, for each group of
    parameters checked together (:data:`~ktsweep.model.params.COUPLED`), the product of the
    axes that set them: O(axis values + group products), never the whole grid, so a 10^7-point
    grid plans in seconds. The combinations walked are those a point could fail on."""
    names = list(grid)
    setter = {name: tie.get(name, name) for name in PARAMETERS}
    combos: list[dict[str, int]] = [{}]
    for axis, values in grid.items():
        combos += [{axis: i} for i in range(1, len(values))]
    for group in COUPLED:
        axes = sorted({setter[p] for p in group if setter[p] in grid})
        if len(axes) > 1:
            combos += [dict(zip(axes, idx, strict=True)) for idx in
                       itertools.product(*(range(len(grid[a])) for a in axes))]
    seen: set[tuple[int, ...]] = set()
    for combo in combos:
        idx = tuple(combo.get(a, 0) for a in names)
        if idx in seen:
            continue
        seen.add(idx)
        axis_values = {a: grid[a][i] for a, i in zip(names, idx, strict=True)}
        try:
            make_point(point_values(fixed, axis_values, tie))
        except ParameterError as err:
            where = ", ".join(f"{k}={v!r}" for k, v in axis_values.items())
            raise ConfigError(f"grid point ({where}): {err}" if len(seen) > 1 else f"{err}",
                              _param_path(str(err), grid, fixed, tie)) from None


def _param_path(message: str, grid: Mapping, fixed: Mapping, tie: Mapping) -> tuple:
    """The config key a point error is about (the first parameter its message names)."""
    for name in (*grid, *fixed, *tie):
        if f"'{name}'" in message:
            section = "grid" if name in grid else "fixed" if name in fixed else "tie"
            return (section, name)
    return ()


def load_config(path: str | Path) -> SweepConfig:
    """Read a YAML config file and validate it; errors name the file and line."""
    data, lines = read_yaml(path)
    try:
        return validate_config(data)
    except ConfigError as err:
        raise locate(err, str(path), lines) from None


def config_for_workflow(config: Mapping[str, Any], configfiles: Sequence[str]) -> SweepConfig:
    """The workflow's config, its files re-read for duplicate keys and line numbers.

    Snakemake has already parsed the files (letting a duplicated key win) and applied
    ``--config`` overrides; the files are read again to refuse duplicates and to locate errors
    of the merged config (in the last file that has the key), which is what is validated.
    """
    files = [(str(f), read_yaml(f)[1]) for f in configfiles]
    try:
        return validate_config(config)
    except ConfigError as err:
        for source, lines in reversed(files):
            if any(err.path[:k] in lines for k in range(len(err.path), 0, -1)):
                raise locate(err, source, lines) from None
        raise (locate(err, *files[-1]) if files else err) from None


def coordinate(values: list[Any]) -> np.ndarray:
    """Axis coordinate array: float for numeric axes, text labels otherwise."""
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return np.array(values, dtype=np.float64)
    return np.array([_label(v) if not isinstance(v, str) else v for v in values], dtype=object)


def _auto_chunks(shape: tuple[int, ...], target: int, fixed: Mapping[str, int],
                 names: list[str]) -> tuple[int, ...]:
    """Chunk shape with about ``target`` points, filled from the last axis backwards."""
    out = [1] * len(shape)
    budget = target
    for i in reversed(range(len(shape))):
        if names[i] in fixed:
            out[i] = min(shape[i], fixed[names[i]])
            budget = max(1, budget // out[i])
    for i in reversed(range(len(shape))):
        if names[i] in fixed:
            continue
        out[i] = max(1, min(shape[i], budget))
        budget = max(1, budget // out[i])
    return tuple(out)


@dataclass
class Layout:
    """A validated sweep: grid axes, fixed values, settings and the chunk table."""

    config: SweepConfig
    axes: dict[str, list[Any]] = field(init=False)
    shape: tuple[int, ...] = field(init=False)
    chunks: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.axes = {a: list(v) for a, v in self.config.grid.items()}
        self.shape = tuple(len(v) for v in self.axes.values())
        self.chunks = _auto_chunks(self.shape, self.points_per_job, self.config.jobs.chunks,
                                   list(self.axes))

    # -- cost and job size ---------------------------------------------------------------
    SAMPLE = 256
    """Grid points the mean cost of a point is estimated on (evenly spaced, deterministic)."""

    @cached_property
    def seconds_by_method(self) -> dict[str, float]:
        """Mean nominal seconds of one core per point for each method (Monte Carlo's mean
        over the points where it runs), over up to :attr:`SAMPLE` evenly spaced points:
        deterministic, so a chunking sized from it (and the cube key) never depends on a
        timing (:mod:`ktsweep.engines.cost`)."""
        flat = np.unique(np.linspace(0, self.n_points - 1, min(self.SAMPLE, self.n_points))
                         .astype(np.int64))
        totals = {m: 0.0 for m in self.methods}
        counts = {m: 0 for m in self.methods}
        replicates = self.config.mc.replicates
        for i in flat:
            index = tuple(int(k) for k in np.unravel_index(int(i), self.shape))
            work = cost.Work.of(self.point_at(index))
            for m in self.methods:
                if m == "mc":
                    if self.mc_selected(index):
                        totals[m] += cost.mc_seconds(work, replicates)
                        counts[m] += 1
                elif m == "exact" or "exact" not in self.methods:
                    totals[m] += cost.exact_seconds(work)
                    counts[m] += 1
        return {m: totals[m] / counts[m] if counts[m] else 0.0 for m in self.methods}

    @cached_property
    def seconds_per_point(self) -> float:
        """Mean nominal seconds of one core per grid point, every method and the per-point
        overhead included (Monte Carlo weighted by the share of points where it runs)."""
        mc_share = float(self.mc_mask.mean()) if "mc" in self.methods else 0.0
        return cost.POINT_OVERHEAD + sum(
            s * (mc_share if m == "mc" else 1.0) for m, s in self.seconds_by_method.items())

    @property
    def points_per_job(self) -> int:
        """``jobs.points_per_job``, or for ``auto`` as many points as fill ``jobs.minutes`` of
        a job's threads by the nominal cost model."""
        jobs = self.config.jobs
        if jobs.points_per_job != "auto":
            return int(jobs.points_per_job)
        budget = jobs.minutes * 60.0 * jobs.threads
        return int(max(1, min(MAX_POINTS_PER_JOB, budget // self.seconds_per_point)))

    @property
    def points_per_task(self) -> int:
        """The largest task of any method (what a job's memory is sized for)."""
        return max(self.task_points(m) for m in self.methods)

    def task_points(self, method: str) -> int:
        """``jobs.points_per_task``, or for ``auto`` as many points of ``method`` as
        :data:`TASK_SECONDS` of the nominal cost model (dask's and the staging's cost per
        task then stay a few per cent), at most :data:`MAX_POINTS_PER_TASK`."""
        given = self.config.jobs.points_per_task
        if given != "auto":
            return int(given)
        per = self.seconds_by_method.get(method, 0.0) + cost.POINT_OVERHEAD
        return int(max(1, min(MAX_POINTS_PER_TASK, TASK_SECONDS // per)))

    @property
    def job_runtime(self) -> int:
        """Wall minutes a chunk job requests: ``jobs.runtime``, or three times the cost
        model's estimate for the largest chunk plus 5 minutes (slower nodes, start-up)."""
        if self.config.jobs.runtime is not None:
            return self.config.jobs.runtime
        minutes = math.prod(self.chunks) * self.seconds_per_point / 60.0 / self.config.jobs.threads
        return int(math.ceil(3.0 * minutes + 5.0))

    @property
    def job_mem_mb(self) -> int:
        """Memory a chunk job requests in MB: ``jobs.mem_mb``, or a base for the interpreter
        and dask, three copies of the chunk's block (read, computed, encoded) and the Monte
        Carlo tasks of its threads, rounded up to 100 MB."""
        if self.config.jobs.mem_mb is not None:
            return self.config.jobs.mem_mb
        from ktsweep.sweep.store import variables

        extra = {"estimator": len(self.estimators), "mode": self.d_max,
                 "step": len(self.checkpoints)}
        per_point = sum(np.dtype(s.dtype).itemsize * math.prod(extra[d] for d in s.dims)
                        for s in variables(self).values())
        block = 3 * per_point * math.prod(self.chunks)
        need = JOB_BASE_MB * 2**20 + block + mc_task_bytes(self) * self.config.jobs.threads
        return int(100 * math.ceil(need / 2**20 / 100))

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | SweepConfig) -> Layout:
        return cls(validate_config(config))

    @classmethod
    def from_file(cls, path: str | Path) -> Layout:
        """The layout of a YAML config file (errors name the file and line)."""
        return cls(load_config(path))

    @classmethod
    def from_json(cls, text: str) -> Layout:
        """Rebuild a layout written by :meth:`to_json` (types re-checked, points not)."""
        return cls(parse(json.loads(text)))

    def with_execution(self, **settings: Any) -> Layout:
        """This layout with other execution settings (``device``, ``require_device``,
        ``points_per_task``, ``scheduler``, ``processes``; None keeps the layout's own): how a
        job runs, never what it computes, so the cube key is unchanged."""
        cfg = self.config
        where = {"device": "mc", "require_device": "mc", "points_per_task": "jobs",
                 "scheduler": "dask", "processes": "dask"}
        updates: dict[str, dict[str, Any]] = {}
        for name, value in settings.items():
            if value is not None:
                updates.setdefault(where[name], {})[name] = value
        if not updates:
            return self
        sections = {sec: getattr(cfg, sec).model_copy(update=vals)
                    for sec, vals in updates.items()}
        return Layout(cfg.model_copy(update=sections))

    def to_json(self) -> str:
        """The resolved config as JSON; key order kept (grid order = cube dimension order)."""
        return json.dumps(self.config.to_dict(), indent=1)

    # -- identity ------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.config.name

    @property
    def fixed(self) -> dict[str, Any]:
        return self.config.fixed

    @property
    def tie(self) -> dict[str, str]:
        return self.config.tie

    @property
    def methods(self) -> tuple[str, ...]:
        return tuple(self.config.methods)

    @property
    def estimators(self) -> tuple[str, ...]:
        """Methods with per-point risks (the cube's ``estimator`` dimension)."""
        return risk_estimators(self.methods)

    @property
    def mc_settings(self) -> MCSettings:
        return self.config.mc.settings()

    def result_key(self) -> str:
        """Hash of everything that changes a point's numbers (not the axes or the chunking).

        Two layouts with equal keys can share results point by point.
        """
        c = self.config.to_dict()
        ident = {"fixed": c["fixed"], "tie": c["tie"], "mc": self.config.mc.result_fields(),
                 "outputs": c["outputs"], "axes": list(self.axes), "schema": SCHEMA_VERSION}
        files = self.spectrum_files()
        if files:  # a changed file changes every number: a fresh cube
            ident["spectrum_files"] = files
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]

    def spectrum_files(self) -> dict[str, str]:
        """SHA-256 of every spectrum file the config names (path → digest)."""
        paths = [self.fixed.get(k) for k in SPECTRUM_PARAMS]
        paths += [v for k in SPECTRUM_PARAMS for v in self.config.grid.get(k, [])]
        return {p: load_spectrum(p).sha256 for p in sorted({p for p in paths
                                                            if isinstance(p, str)})}

    def layout_key(self) -> str:
        """Hash of the whole resolved config: changes whenever any job would differ."""
        text = f"{SCHEMA_VERSION}:{self.to_json()}"
        if self.spectrum_files():
            text += json.dumps(self.spectrum_files(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    # -- sizes ---------------------------------------------------------------------
    @property
    def n_points(self) -> int:
        return math.prod(self.shape)

    @property
    def chunk_grid(self) -> tuple[int, ...]:
        return tuple(-(-s // c) for s, c in zip(self.shape, self.chunks, strict=True))

    @property
    def n_chunks(self) -> int:
        return math.prod(self.chunk_grid)

    def chunk_ids(self) -> list[str]:
        return [f"c{i:0{CHUNK_WIDTH}d}" for i in range(self.n_chunks)]

    def chunk_slices(self, chunk: str | int) -> tuple[slice, ...]:
        """The block of grid indices covered by a chunk id."""
        idx = int(chunk[1:]) if isinstance(chunk, str) else int(chunk)
        if not 0 <= idx < self.n_chunks:
            raise ValueError(f"chunk {chunk!r} does not exist (0..{self.n_chunks - 1})")
        pos = np.unravel_index(idx, self.chunk_grid)
        return tuple(slice(int(p) * c, min((int(p) + 1) * c, s))
                     for p, c, s in zip(pos, self.chunks, self.shape, strict=True))

    def values_at(self, index: tuple[int, ...]) -> dict[str, Any]:
        return {a: v[i] for (a, v), i in zip(self.axes.items(), index, strict=True)}

    def point_at(self, index: tuple[int, ...]) -> Point:
        return make_point(point_values(self.fixed, self.values_at(index), self.tie))

    def chunk_points(self, chunk: str | int) -> tuple[list[tuple[int, ...]], list[Point]]:
        """Global grid indices and points of a chunk, in C order of the block.

        The grid was validated when it was planned, so a chunk job does not validate its
        points again: each is the grid's first point with the resolved values of its axes put
        in (:attr:`resolved_axes`), unless an axis feeds a default another parameter derives
        from it (d, a spectrum file, the mixing), where every point is resolved in full."""
        sl = self.chunk_slices(chunk)
        idx = list(itertools.product(*(range(s.start, s.stop) for s in sl)))
        resolved = self.resolved_axes
        if resolved is None:
            return idx, [self.point_at(i) for i in idx]
        base = self.point_at((0,) * len(self.shape))
        names = list(self.axes)
        points = []
        for index in idx:
            changes: dict[str, Any] = {}
            for axis, i in zip(names, index, strict=True):
                changes.update(resolved[axis][i])
            points.append(dataclasses.replace(base, **changes))
        return idx, points

    @cached_property
    def resolved_axes(self) -> dict[str, list[dict[str, Any]]] | None:
        """For each axis and value: the resolved parameters it sets (itself and the parameters
        tied to it), read off the validated point that differs from the first in that axis
        alone; None where an axis sets a parameter another's default derives from
        (:data:`DERIVED_FROM`: a spectrum file, the mixing, d under a mixing), since then a
        value's resolution depends on the other axes."""
        feeding = {"spectrum_t", "spectrum_s", "mixing_seed"}  # what alpha, d, mixing follow
        if self._param_values("mixing_seed") != [None]:
            feeding.add("d")  # the mixing's dimension follows d
        if {self.tie.get(p, p) for p in feeding} & set(self.axes):
            return None
        out: dict[str, list[dict[str, Any]]] = {}
        for k, axis in enumerate(self.axes):
            names = [axis, *(p for p, a in self.tie.items() if a == axis)]
            values = []
            for i in range(len(self.axes[axis])):
                index = [0] * len(self.shape)
                index[k] = i
                point = self.point_at(tuple(index))
                values.append({n: getattr(point, n) for n in names})
            out[axis] = values
        return out

    def iter_points(self) -> Iterator[tuple[tuple[int, ...], Point]]:
        for idx in itertools.product(*(range(s) for s in self.shape)):
            yield idx, self.point_at(idx)

    @cached_property
    def mc_mask(self) -> np.ndarray:
        """Boolean grid mask: where Monte Carlo runs (``mc.subgrid`` and ``mc.stride``).

        The one definition of the Monte Carlo sub-grid: the runner, the plan, the store's
        summary and the analysis all read it. It is the outer product of one mask per axis
        (:meth:`mc_keep`).
        """
        mask = np.full(self.shape, "mc" in self.methods, dtype=bool)
        for k, axis in enumerate(self.axes):
            shape = [1] * len(self.shape)
            shape[k] = len(self.axes[axis])
            mask &= self.mc_keep(axis).reshape(shape)
        mask.flags.writeable = False
        return mask

    def mc_keep(self, axis: str) -> np.ndarray:
        """The values of one axis where Monte Carlo runs (its sub-grid and stride)."""
        values = self.axes[axis]
        sub, stride = self.config.mc.subgrid, self.config.mc.stride
        keep = np.ones(len(values), dtype=bool)
        if axis in sub:
            wanted = {_label(v) for v in sub[axis]}
            keep &= np.array([_label(v) in wanted for v in values])
        if axis in stride:
            keep &= np.arange(len(values)) % stride[axis] == 0
        return keep

    def walk(self, names: Sequence[str]) -> Iterator[tuple[Point, int, int]]:
        """Every distinct combination of the parameters ``names`` over the grid: a point
        carrying it (the other axes at their first values), how many grid points share it and
        how many of those run Monte Carlo. O(product of the axes that set ``names``), so a
        cost or a count that reads only some parameters never walks the whole grid."""
        axes = list(self.axes)
        setters = sorted({self.tie.get(n, n) for n in names} & set(axes),
                         key=axes.index)
        others = [a for a in axes if a not in setters]
        rest = math.prod(len(self.axes[a]) for a in others)
        runs_mc = "mc" in self.methods
        mc_rest = math.prod(int(self.mc_keep(a).sum()) for a in others) if runs_mc else 0
        keeps = {a: self.mc_keep(a) for a in setters}
        for idx in itertools.product(*(range(len(self.axes[a])) for a in setters)):
            at = dict.fromkeys(axes, 0)
            at.update(zip(setters, idx, strict=True))
            index = tuple(at[a] for a in axes)
            mc = mc_rest if runs_mc and all(keeps[a][i] for a, i in zip(setters, idx,
                                                                          strict=True)) else 0
            yield self.point_at(index), rest, mc

    def parameter_coords(self) -> dict[str, tuple[tuple[str, ...], np.ndarray]]:
        """Every point parameter that is not a grid axis, resolved as the points hold it, as
        a coordinate: (its dimensions, its values). A fixed parameter is a scalar; one tied to
        an axis, or whose default follows other parameters (``d`` from spectrum files, a
        fitted ``alpha_*``, ``mixing_dim``), varies along the axes that set it. Numbers are
        float64 (NaN where the point leaves the parameter unset), text is text ("" unset).
        The γ0 parameters are left out: the steps each run used are the cube's ``gamma0_*``
        variables. So the cube carries everything analysis needs to know about a point."""
        axes = list(self.axes)
        out: dict[str, tuple[tuple[str, ...], np.ndarray]] = {}
        for name in PARAMETERS:
            if name in self.axes or name in ("gamma0_t", "gamma0_s"):
                continue
            deps = {name, *DERIVED_FROM.get(name, ())}
            dims = tuple(a for a in axes if a in {self.tie.get(p, p) for p in deps})
            sizes = [len(self.axes[a]) for a in dims]
            text = name in TEXT_PARAMS
            values = np.empty(sizes, dtype=object) if text else np.full(sizes, np.nan)
            for idx in itertools.product(*(range(k) for k in sizes)):
                at = dict.fromkeys(axes, 0)
                at.update(zip(dims, idx, strict=True))
                v = getattr(self.point_at(tuple(at[a] for a in axes)), name)
                values[idx] = ("" if v is None else str(v)) if text else (
                    np.nan if v is None else float(v))
            out[name] = (dims, values)
        return out

    @cached_property
    def outputs_mask(self) -> np.ndarray:
        """Boolean grid mask: where the cube keeps per-mode risks and learning curves
        (``outputs.subgrid``; everywhere without one)."""
        mask = np.ones(self.shape, dtype=bool)
        sub = self.config.outputs.subgrid
        for k, (axis, values) in enumerate(self.axes.items()):
            if axis in sub:
                wanted = {_label(v) for v in sub[axis]}
                shape = [1] * len(self.shape)
                shape[k] = len(values)
                mask &= np.array([_label(v) in wanted for v in values]).reshape(shape)
        mask.flags.writeable = False
        return mask

    def mc_selected(self, index: tuple[int, ...]) -> bool:
        """Whether Monte Carlo runs at this grid index (see :attr:`mc_mask`)."""
        return bool(self.mc_mask[tuple(index)])

    # -- derived dimensions ----------------------------------------------------------
    def _param_values(self, name: str) -> list[Any]:
        name = self.tie.get(name, name)
        return list(self.axes[name]) if name in self.axes else [self.fixed.get(name)]

    def param_counts(self, name: str) -> list[int]:
        """The values integer parameter ``name`` takes in the grid, its default where unset."""
        return [int(float(params.default(name) if v is None else v))
                for v in self._param_values(name)]

    @property
    def d_max(self) -> int:
        if self._param_values("d") == [None] and self.spectrum_files():
            return max(p.d for _, p in self.iter_points())  # d from the files' lengths
        return max(self.param_counts("d"))

    @property
    def max_steps(self) -> int:
        """Largest step count of any run in the grid (the rule of :func:`steps_run`): the
        largest finite sample counts over the smallest batches (every count is monotone)."""
        def finite(name: str) -> list[float]:
            return [float(v) for v in self._param_values(name)
                    if v is not None and math.isfinite(float(v))] or [0.0]

        return steps_run(max(finite("N")), max(finite("n")), min(self.param_counts("batch_t")),
                         min(self.param_counts("batch_s")))

    @property
    def checkpoints(self) -> np.ndarray:
        """Learning-curve checkpoints of the whole sweep (the cube's ``step`` coordinate)."""
        return checkpoint_steps(self.max_steps, self.config.outputs.checkpoints_per_decade)
