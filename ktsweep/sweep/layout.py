"""Config → grid: validation, the point set, its chunking into jobs, and the sweep layout.

The layout is everything the later stages need, derived deterministically from the config:
axes and their coordinate values, fixed parameters, methods and their settings, the chunk
table (each chunk an N-D block of the grid = one Snakemake job = one zarr chunk), the
learning-curve steps and the mode count. It serialises to JSON so jobs receive it whole.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import jsonschema
import numpy as np
import yaml

from ktsweep.engines.dispatch import MCSettings
from ktsweep.model.params import PARAMETERS, REQUIRED, ParameterError, Point, make_point
from ktsweep.model.quantities import SCHEMA_VERSION
from ktsweep.model.spectra import checkpoint_steps

CHUNK_WIDTH = 5
"""Chunk ids are c00000, c00001, … (zero-padded so they sort)."""


class ConfigError(ValueError):
    """The sweep config is invalid; the message names the key and what is allowed."""


def schema() -> dict[str, Any]:
    text = resources.files("ktsweep").joinpath("sweep/schemas/config.schema.yaml").read_text()
    return yaml.safe_load(text)


def _fill_defaults(cfg: dict[str, Any], sch: dict[str, Any]) -> None:
    """Insert schema defaults for missing keys (recursively through objects with defaults)."""
    for key, sub in sch.get("properties", {}).items():
        if key not in cfg and "default" in sub:
            cfg[key] = copy.deepcopy(sub["default"])
        if isinstance(cfg.get(key), dict) and "properties" in sub:
            _fill_defaults(cfg[key], sub)


def _path(err: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in err.absolute_path) or "(top level)"


def _infinite(value: Any) -> Any:
    """``inf`` spelt as text (or YAML .inf) → math.inf; anything else unchanged."""
    if isinstance(value, str) and value.strip().lower() in ("inf", ".inf", "+inf", "infinity"):
        return math.inf
    return value


def validate_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Schema-check, fill defaults and check the semantics; returns a normalised copy."""
    cfg = copy.deepcopy(dict(config))
    sch = schema()
    errors = sorted(jsonschema.Draft202012Validator(sch).iter_errors(cfg),
                    key=lambda e: (len(e.absolute_path), str(e.absolute_path)))
    if errors:
        err = errors[0]
        where = _path(err)
        if err.validator == "additionalProperties" or err.validator == "propertyNames":
            allowed = (PARAMETERS if where.split(".")[0] in ("grid", "fixed", "mc", "jobs")
                       and err.validator == "propertyNames"
                       else list(_subschema(sch, err.absolute_path).get("properties", {})))
            raise ConfigError(f"config key {where!r}: {err.message}; allowed keys: "
                              f"{', '.join(allowed)}")
        raise ConfigError(f"config key {where!r}: {err.message}")
    _fill_defaults(cfg, sch)
    grid, fixed = cfg["grid"], cfg["fixed"]
    for name in ("N", "n"):  # the limit: YAML .inf or the string inf, one float spelling
        if name in grid:
            grid[name] = [_infinite(v) for v in grid[name]]
        if name in fixed:
            fixed[name] = _infinite(fixed[name])
    tie = cfg["tie"]
    both = sorted(set(grid) & set(fixed) | set(tie) & (set(grid) | set(fixed)))
    if both:
        raise ConfigError(f"parameter {both[0]!r} is given twice (grid, fixed, tie); keep it "
                          "in one place")
    for name, axis in tie.items():
        if axis not in grid:
            raise ConfigError(f"config key 'tie.{name}': {axis!r} is not a grid axis "
                              f"(axes: {', '.join(grid)})")
    missing = [k for k in REQUIRED if k not in grid and k not in fixed and k not in tie]
    if missing:
        raise ConfigError(f"parameter {missing[0]!r} is required: give it in grid or fixed")
    for axis, values in grid.items():
        keys = [_label(v) for v in values]
        if len(set(keys)) != len(keys):
            raise ConfigError(f"config key 'grid.{axis}': values must be unique, got {values}")
    for section in ("subgrid", "stride"):
        for axis, val in cfg["mc"][section].items():
            if axis not in grid:
                raise ConfigError(f"config key 'mc.{section}.{axis}': {axis!r} is not a grid "
                                  f"axis (axes: {', '.join(grid)})")
            if section == "subgrid":
                bad = [v for v in val if _label(v) not in {_label(x) for x in grid[axis]}]
                if bad:
                    raise ConfigError(f"config key 'mc.subgrid.{axis}': {bad} not in "
                                      f"grid.{axis} = {grid[axis]}")
    for axis in cfg["jobs"]["chunks"]:
        if axis not in grid:
            raise ConfigError(f"config key 'jobs.chunks.{axis}': {axis!r} is not a grid axis")
    _check_points(grid, fixed, tie)
    return cfg


def _subschema(sch: dict[str, Any], path) -> dict[str, Any]:
    node = sch
    for p in path:
        node = node.get("properties", {}).get(p, node.get("additionalProperties", {}))
    return node


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
    """Every point of the product must be a valid point (errors name the point)."""
    names = list(grid)
    try:
        for combo in itertools.product(*grid.values()):
            make_point(point_values(fixed, dict(zip(names, combo, strict=True)), tie))
    except ParameterError as err:
        where = ", ".join(f"{k}={v!r}" for k, v in zip(names, combo, strict=True))
        raise ConfigError(f"grid point ({where}): {err}") from None


def load_config(path: str) -> dict[str, Any]:
    """Read a YAML config file and validate it (:class:`ConfigError` on any problem)."""
    try:
        with open(path) as fh:
            cfg = yaml.safe_load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path!r} does not exist") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path!r} is not valid YAML: {err}") from None
    if not isinstance(cfg, dict):
        raise ConfigError(f"config file {path!r} must hold a mapping of keys")
    return validate_config(cfg)


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

    config: dict[str, Any]
    axes: dict[str, list[Any]] = field(init=False)
    shape: tuple[int, ...] = field(init=False)
    chunks: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.axes = dict(self.config["grid"])
        self.shape = tuple(len(v) for v in self.axes.values())
        self.chunks = _auto_chunks(self.shape, self.config["jobs"]["points_per_job"],
                                   self.config["jobs"]["chunks"], list(self.axes))

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Layout:
        return cls(validate_config(config))

    @classmethod
    def from_json(cls, text: str) -> Layout:
        """Rebuild a layout written by :meth:`to_json` (already validated, not re-checked)."""
        return cls(json.loads(text))

    def to_json(self) -> str:
        """The resolved config as JSON; key order kept (grid order = cube dimension order)."""
        return json.dumps(self.config, indent=1)

    # -- identity ------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.config["name"]

    @property
    def fixed(self) -> dict[str, Any]:
        return self.config["fixed"]

    @property
    def methods(self) -> tuple[str, ...]:
        return tuple(self.config["methods"])

    @property
    def estimators(self) -> tuple[str, ...]:
        """Methods with per-point risks (the cube's ``method`` dimension)."""
        return tuple(m for m in ("exact", "mc") if m in self.methods)

    @property
    def mc_settings(self) -> MCSettings:
        m = self.config["mc"]
        return MCSettings(m["replicates"], m["seed"], m["device"], m["dtype"], m["fixed_target"],
                          m["require_device"])

    def result_key(self) -> str:
        """Hash of everything that changes a point's numbers (not the axes or the chunking).

        Two layouts with equal keys can share results point by point.
        """
        c = self.config
        mc = {k: v for k, v in c["mc"].items() if k not in ("subgrid", "stride", "device",
                                                             "require_device")}
        ident = {"fixed": c["fixed"], "tie": c["tie"], "mc": mc, "outputs": c["outputs"],
                 "axes": list(self.axes), "schema": SCHEMA_VERSION}
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]

    def layout_key(self) -> str:
        """Hash of the whole resolved config: changes whenever any job would differ."""
        text = f"{SCHEMA_VERSION}:{self.to_json()}"
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
        return make_point(point_values(self.fixed, self.values_at(index), self.config["tie"]))

    def chunk_points(self, chunk: str | int) -> tuple[list[tuple[int, ...]], list[Point]]:
        """Global grid indices and points of a chunk, in C order of the block."""
        sl = self.chunk_slices(chunk)
        idx = list(itertools.product(*(range(s.start, s.stop) for s in sl)))
        return idx, [self.point_at(i) for i in idx]

    def iter_points(self) -> Iterator[tuple[tuple[int, ...], Point]]:
        for idx in itertools.product(*(range(s) for s in self.shape)):
            yield idx, self.point_at(idx)

    def mc_selected(self, index: tuple[int, ...]) -> bool:
        """Whether Monte Carlo runs at this grid index (``mc.subgrid`` / ``mc.stride``)."""
        if "mc" not in self.methods:
            return False
        sub, stride = self.config["mc"]["subgrid"], self.config["mc"]["stride"]
        for (axis, values), i in zip(self.axes.items(), index, strict=True):
            if axis in sub and _label(values[i]) not in {_label(v) for v in sub[axis]}:
                return False
            if axis in stride and i % stride[axis]:
                return False
        return True

    # -- derived dimensions ----------------------------------------------------------
    def _param_values(self, name: str) -> list[Any]:
        name = self.config["tie"].get(name, name)
        return list(self.axes[name]) if name in self.axes else [self.fixed.get(name)]

    @property
    def d_max(self) -> int:
        return int(max(1000 if v is None else v for v in self._param_values("d")))

    @property
    def max_steps(self) -> int:
        """Largest step count of any teacher or student run in the grid."""
        best = 0
        names = ("N", "n", "batch_t", "batch_s")
        for combo in itertools.product(*(self._param_values(k) for k in names)):
            N, n, bt, bs = (1 if v is None else int(float(v)) for v in combo)
            best = max(best, -(-N // bt), -(-n // bs), -(-N // bs))
        return best

    @property
    def steps(self) -> np.ndarray:
        return checkpoint_steps(self.max_steps, self.config["outputs"]["checkpoints_per_decade"])
