"""Point parameters: the validated record of one grid point and its canonical hash.

The names and defaults are the contract of docs/science/quantities.md; they are also config keys,
CLI keys and cube coordinates.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ktsweep.model.inputs import NEUTRAL as NEUTRAL_INPUTS
from ktsweep.model.inputs import check_inputs
from ktsweep.model.spectrum_files import SpectrumFileError, load_spectrum

TARGETS = ("gaussian", "lowdim", "power")
SCHEDULES = ("geometric", "tail_geometric", "constant")
DEFAULT_GAMMA0: dict[str, float] = {"scale": 0.5}
DEFAULT_D = 1000
"""The semantic dimension when a point does not give one (the one place this default lives)."""
MAX_D = 10_000
"""Largest d: per-mode state is O(d) per point and the exact moments O(d) per step."""
MAX_SAMPLES = 2**40
"""Largest N and n: beyond it step counts stop being exact in float64 schedules."""
MAX_AMPLITUDE = 1e6
"""Largest |amplitude| of the lowdim target: its energies a²·λ_i and the Monte Carlo labels
(float32 by default, up to 3.4e38) stay far from overflow for every N, n and d allowed."""
MAX_SIGMA2 = 1e12
"""Largest label-noise variance σ², for the same reason (Monte Carlo labels σ·ε in float32)."""
MAX_BETA = 16.0
"""Largest source exponent β of the power target: c_i² = i^β reaches 10^64 at d = 10^4, and
i^(β/2) must stay finite in float32 Monte Carlo draws (10^32 < 3.4e38)."""

Gamma0 = float | dict[str, Any]


class ParameterError(ValueError):
    """A point parameter is missing, unknown or out of range; the message names it."""


@dataclass(frozen=True)
class Point:
    """One grid point (docs/science/quantities.md), defaults resolved (None: the default)."""

    alpha_t: float
    alpha_s: float
    N: int | float  # math.inf: the limit N → ∞ (exact engine only)
    n: int | float  # math.inf: the limit n → ∞ (exact engine only)
    sigma2: float
    d: int = DEFAULT_D
    r_t: int | None = None
    r_s: int | None = None
    target: str = "gaussian"
    k_dagger: int | None = None
    amplitude: float = 1.0
    beta: float = 0.0
    batch_t: int = 1
    batch_s: int = 1
    schedule_t: str = "geometric"
    schedule_s: str = "geometric"
    horizon_t: int | None = None
    horizon_s: int | None = None
    gamma0_t: Gamma0 = field(default_factory=lambda: dict(DEFAULT_GAMMA0))
    gamma0_s: Gamma0 = field(default_factory=lambda: dict(DEFAULT_GAMMA0))
    inputs: str = NEUTRAL_INPUTS  # law of each coordinate of z (ktsweep.model.inputs)
    inputs_nu: float | None = None  # student_t degrees of freedom
    spectrum_t: str | None = None  # eigenvalue file of the teacher (alpha_t: its fitted decay)
    spectrum_s: str | None = None  # eigenvalue file of the student (alpha_s: its fitted decay)
    # geometry (docs/science/geometry.md); neutral values give today's aligned model
    angle: float = 0.0  # degrees: student eigenbasis rotated on mode pairs (1,2), (3,4), ...
    mixing_seed: int | None = None  # Haar-random orthogonal mixing of the student's basis
    mixing_dim: int | None = None  # the mixing acts on the first mixing_dim directions (d)
    alpha_target: float | None = None  # target energy i^-alpha_target in the semantic basis

    # -- derived sizes -------------------------------------------------------------
    @property
    def rank_t(self) -> int:
        return self.d if self.r_t is None else self.r_t

    @property
    def rank_s(self) -> int:
        return self.d if self.r_s is None else self.r_s

    @property
    def aligned(self) -> bool:
        """True when the student's eigenbasis is the teacher's (no rotation, no mixing)."""
        return self.angle == 0.0 and self.mixing_seed is None

    @property
    def steps_t(self) -> int | float:
        """SGD steps of the teacher (N samples, batch_t); math.inf when N is."""
        return _steps(self.N, self.batch_t)

    @property
    def steps_direct(self) -> int | float:
        """SGD steps of the direct student (N samples, batch_s); math.inf when N is."""
        return _steps(self.N, self.batch_s)

    @property
    def steps_s(self) -> int | float:
        """SGD steps of the T2S and ceiling students (n samples, batch_s); math.inf when n is."""
        return _steps(self.n, self.batch_s)

    @property
    def steps_max(self) -> int:
        """Most SGD steps of any of the point's four runs (sets its learning-curve checkpoints)."""
        return steps_run(self.N, self.n, self.batch_t, self.batch_s)

    @property
    def plan_t(self) -> int | float:
        """Steps the teacher's schedule is planned for (its horizon, else the steps run)."""
        return self.steps_t if self.horizon_t is None else self.horizon_t

    @property
    def plan_s(self) -> int | float:
        """Steps the students' schedules are planned for (horizon_s, else the steps run)."""
        return self.steps_s if self.horizon_s is None else self.horizon_s

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def replace(self, **changes: Any) -> Point:
        return make_point({**self.as_dict(), **changes})

    @property
    def key(self) -> str:
        """Canonical hash of the parameter values (see :func:`point_hash`)."""
        return point_hash(self)


def _steps(samples: int | float, batch: int) -> int | float:
    return math.inf if math.isinf(samples) else -(-int(samples) // batch)


def steps_run(N: float, n: float, batch_t: int, batch_s: int) -> int:
    """Most SGD steps of the finite runs of a point: teacher (N/batch_t), direct student
    (N/batch_s), T2S and ceiling students (n/batch_s); an infinite sample count (the limit)
    has no checkpoints. The one checkpoint rule: ``ktsweep point`` and a sweep take
    learning-curve checkpoints up to this count."""
    runs = ((N, batch_t), (N, batch_s), (n, batch_s))
    return max((-(-int(m) // b) for m, b in runs if math.isfinite(m)), default=0)


PARAMETERS: tuple[str, ...] = tuple(f.name for f in fields(Point))


def default(name: str) -> Any:
    """The value a point takes for parameter ``name`` when none is given (its field's
    default: the one place defaults are stated)."""
    return {f.name: f.default for f in fields(Point)}[name]
REQUIRED: tuple[str, ...] = ("alpha_t", "alpha_s", "N", "n", "sigma2")
INT_PARAMS = (
    "N", "n", "d", "r_t", "r_s", "k_dagger", "batch_t", "batch_s", "horizon_t", "horizon_s",
    "mixing_seed", "mixing_dim",
)
SPECTRUM_PARAMS = ("spectrum_t", "spectrum_s")
FLOAT_PARAMS = ("alpha_t", "alpha_s", "sigma2", "amplitude", "beta", "inputs_nu", "angle",
                "alpha_target")
GEOMETRY_NEUTRAL: dict[str, Any] = {"angle": 0.0, "mixing_seed": None, "mixing_dim": None,
                                    "alpha_target": None}
"""The geometry parameters at the values that give the aligned model (part of
:data:`HASH_NEUTRAL`)."""
MAX_ANGLE = 90.0
"""Largest rotation angle in degrees: 90 swaps each pair, larger angles repeat (up to signs,
which neither the moments nor the risks see)."""


def _fail(name: str, value: Any, allowed: str) -> ParameterError:
    return ParameterError(f"parameter {name!r} = {value!r} is invalid: {allowed}")


def _as_float(name: str, value: Any) -> float:
    if isinstance(value, bool):
        raise _fail(name, value, "expected a number")
    if isinstance(value, str):  # YAML 1.1 reads 1e4 as a string; accept numeric strings
        try:
            value = float(value)
        except ValueError:
            raise _fail(name, value, "expected a number") from None
    if not isinstance(value, int | float):
        raise _fail(name, value, "expected a number")
    out = float(value)
    if not math.isfinite(out):
        raise _fail(name, value, "expected a finite number")
    return out


def _as_count(name: str, value: Any) -> int | float:
    """A sample count: a positive integer, or ``inf`` (YAML ``.inf`` or the string) for the
    limit of infinitely many samples."""
    if isinstance(value, str) and value.strip().lower() in ("inf", ".inf", "+inf", "infinity"):
        return math.inf
    if isinstance(value, float) and value == math.inf:
        return math.inf
    return _as_int(name, value)


def _as_int(name: str, value: Any) -> int:
    f = _as_float(name, value)
    if f != int(f):
        raise _fail(name, value, "expected an integer")
    return int(f)


def gamma0_map(value: Mapping[str, Any], name: str = "gamma0") -> dict[str, Any]:
    """Check a γ0 map, ``{scale: c}`` (γ0 = c / tr Σ) or ``{tune: [g1, g2, …]}``."""
    if set(value) == {"scale"}:
        c = _as_float(name, value["scale"])
        if c <= 0:
            raise _fail(name, value, "{scale: c} needs c > 0 (gamma0 = c / tr(Sigma))")
        return {"scale": c}
    if set(value) == {"tune"}:
        cands = value["tune"]
        if not isinstance(cands, list | tuple) or not cands:
            raise _fail(name, value, "{tune: [...]} needs a non-empty list of step sizes")
        vals = [_as_float(name, c) for c in cands]
        if any(v <= 0 for v in vals):
            raise _fail(name, value, "every tuned step size must be > 0")
        return {"tune": sorted(set(vals))}
    raise _fail(name, dict(value), "a gamma0 map is {scale: c} or {tune: [g1, g2, ...]} (keys "
                f"given: {', '.join(map(str, value)) or 'none'})")


def _check_gamma0(name: str, value: Any) -> Gamma0:
    if value is None:
        return dict(DEFAULT_GAMMA0)
    if isinstance(value, Mapping):
        return gamma0_map(value, name)
    g = _as_float(name, value)
    if g <= 0:
        raise _fail(name, value, "a step size must be > 0")
    return g


COUPLED: tuple[frozenset[str], ...] = (
    frozenset({"alpha_t", "spectrum_t", "d"}),
    frozenset({"alpha_s", "spectrum_s", "d"}),
    frozenset({"d", "spectrum_t", "spectrum_s", "r_t", "r_s", "target", "k_dagger", "angle",
               "mixing_seed", "mixing_dim"}),
    frozenset({"N", "batch_t", "horizon_t"}),
    frozenset({"n", "batch_s", "horizon_s"}),
    frozenset({"inputs", "inputs_nu"}),
)
"""The groups of parameters that :func:`make_point` checks together; every other check reads
one parameter alone. A grid is therefore valid iff each value of every parameter is valid with
the others at any valid value, and every combination within each group is (the planner's
:func:`ktsweep.sweep.layout.validate_config` walks exactly that, never the whole product; a
test holds it to the whole product on random grids)."""


def make_point(values: Mapping[str, Any]) -> Point:
    """Validate a mapping of parameter values and return the resolved :class:`Point`.

    Raises :class:`ParameterError` naming the first offending key and its allowed range.
    """
    unknown = sorted(set(values) - set(PARAMETERS))
    if unknown:
        raise ParameterError(
            f"unknown parameter {unknown[0]!r}; known parameters are: {', '.join(PARAMETERS)}"
        )
    files = {f"alpha_{m}": values.get(f"spectrum_{m}") for m in "ts"}
    missing = [k for k in REQUIRED if values.get(k) is None and files.get(k) is None]
    if missing:
        raise ParameterError(f"parameter {missing[0]!r} is required (no default)")
    v: dict[str, Any] = {}
    for name in PARAMETERS:
        raw = values.get(name)
        if raw is None:
            v[name] = None
        elif name in ("N", "n"):
            v[name] = _as_count(name, raw)
        elif name in INT_PARAMS:
            v[name] = _as_int(name, raw)
        elif name in FLOAT_PARAMS:
            v[name] = _as_float(name, raw)
        else:
            v[name] = raw
    measured = _measured_spectra(v)
    for name in ("alpha_t", "alpha_s"):
        if v[name] <= 0:
            raise _fail(name, v[name], "spectral decay must be > 0")
    for name in ("N", "n"):
        if not (1 <= v[name] <= MAX_SAMPLES or v[name] == math.inf):
            raise _fail(name, values.get(name), f"sample count must be in 1..2^40 ({MAX_SAMPLES}) "
                        "or inf (the limit, exact engine)")
    if not 0 <= v["sigma2"] <= MAX_SIGMA2:
        raise _fail("sigma2", v["sigma2"], f"noise variance must be in 0..{MAX_SIGMA2:g}")
    d = v["d"]
    if d is None:  # a measured spectrum sets d to its length (the shorter one if two)
        d = min([m.values.size for m in measured.values()], default=DEFAULT_D)
    if not 1 <= d <= MAX_D:
        raise _fail("d", values.get("d"), f"dimension must be in 1..{MAX_D}")
    for key, m in measured.items():
        if d > m.values.size:
            raise _fail("d", d, f"{key} file {m.path!r} holds {m.values.size} eigenvalues, "
                        f"fewer than d: set d <= {m.values.size} or leave d out (it then "
                        "defaults to the file's length)")
    v["d"] = d
    for name in ("r_t", "r_s"):
        if v[name] is not None and not 1 <= v[name] <= d:
            raise _fail(name, v[name], f"rank must be in 1..d (d = {d})")
    target = v["target"] if v["target"] is not None else "gaussian"
    if target not in TARGETS:
        raise _fail("target", target, f"one of {', '.join(TARGETS)}")
    v["target"] = target
    if target == "lowdim" and v["k_dagger"] is None:
        raise ParameterError("parameter 'k_dagger' is required when target = lowdim")
    if v["k_dagger"] is not None and not 1 <= v["k_dagger"] <= d:
        raise _fail("k_dagger", v["k_dagger"], f"support size must be in 1..d (d = {d})")
    v["amplitude"] = 1.0 if v["amplitude"] is None else v["amplitude"]
    if not abs(v["amplitude"]) <= MAX_AMPLITUDE:
        raise _fail("amplitude", v["amplitude"], f"|amplitude| must be at most "
                    f"{MAX_AMPLITUDE:g} (larger targets overflow the float32 Monte Carlo)")
    v["beta"] = 0.0 if v["beta"] is None else v["beta"]
    if not 0 <= v["beta"] <= MAX_BETA:
        raise _fail("beta", v["beta"], f"source exponent must be in 0..{MAX_BETA:g}")
    for name in ("batch_t", "batch_s"):
        v[name] = 1 if v[name] is None else v[name]
        if v[name] < 1:
            raise _fail(name, v[name], "batch size must be >= 1")
    for name in ("schedule_t", "schedule_s"):
        v[name] = "geometric" if v[name] is None else v[name]
        if v[name] not in SCHEDULES:
            raise _fail(name, v[name], f"one of {', '.join(SCHEDULES)}")
    steps = {"horizon_t": _steps(v["N"], v["batch_t"]), "horizon_s": _steps(v["n"], v["batch_s"])}
    for name, run in steps.items():
        if v[name] is not None and math.isinf(run):
            raise _fail(name, v[name], f"an infinite run ({'N' if name[-1] == 't' else 'n'} = "
                        "inf) is planned for its own infinite horizon: drop the horizon")
        if v[name] is not None and v[name] < run:
            raise _fail(name, v[name], f"planned horizon must be >= the steps run ({run})")
    for name in ("gamma0_t", "gamma0_s"):
        v[name] = _check_gamma0(name, v[name])
    try:
        v["inputs"], v["inputs_nu"] = check_inputs(v["inputs"], v["inputs_nu"])
    except ValueError as err:
        raise ParameterError(str(err)) from None
    _check_geometry(v, d)
    return Point(**v)


TARGET_PARAMETERS: dict[str, tuple[str, ...]] = {"k_dagger": ("lowdim",),
                                                 "amplitude": ("lowdim",), "beta": ("power",)}
"""Parameters that only some targets read (the others ignore them)."""


def unused_settings(given: Mapping[str, Any], points_targets: set[str]) -> list[str]:
    """Messages for parameters given (``given``: name -> value) that no target among
    ``points_targets`` reads, and for α ≤ 1, which lies outside every theorem (the rates
    need α > 1); warnings, not errors: the point is still evaluated."""
    out = []
    for name, targets in TARGET_PARAMETERS.items():
        if name in given and given[name] is not None and not points_targets & set(targets):
            out.append(f"parameter {name!r} = {given[name]!r} is ignored: only the "
                       f"{' / '.join(targets)} target reads it (target: "
                       f"{', '.join(sorted(points_targets))})")
    for name in ("alpha_t", "alpha_s"):
        value = given.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool) and value <= 1:
            out.append(f"{name} = {value:g} <= 1 lies outside the theory (every theorem "
                       "assumes a decay α > 1; the trace of the spectrum grows with d): "
                       "evaluated, but no rate is predicted")
    return out


HASH_NEUTRAL: dict[str, Any] = {"inputs": NEUTRAL_INPUTS, "inputs_nu": None,
                                "spectrum_t": None, "spectrum_s": None, **GEOMETRY_NEUTRAL}
"""Later parameters and the value at which :func:`point_hash` leaves each out."""


def _measured_spectra(v: dict[str, Any]) -> dict[str, Any]:
    """Load the point's spectrum files; α of a model with a file is the file's fitted decay
    (a given α must equal it: the file decides)."""
    out = {}
    for m in "ts":
        key, alpha = f"spectrum_{m}", f"alpha_{m}"
        if v[key] is None:
            continue
        if not isinstance(v[key], str):
            raise _fail(key, v[key], "expected the path of an eigenvalue file (.npy, .csv, .txt)")
        try:
            spec = load_spectrum(v[key])
        except SpectrumFileError as err:
            raise ParameterError(f"parameter {key!r}: {err}") from None
        if v[alpha] is not None and v[alpha] != spec.fit.alpha:
            raise _fail(alpha, v[alpha], f"{key} is given, so {alpha} is fitted from it "
                        f"({spec.fit.alpha!r}); drop {alpha}")
        v[alpha] = spec.fit.alpha
        out[key] = spec
    return out


def _check_geometry(v: dict[str, Any], d: int) -> None:
    """Validate (in place) the geometry parameters of docs/science/geometry.md."""
    v["angle"] = 0.0 if v["angle"] is None else v["angle"]
    if not 0.0 <= v["angle"] <= MAX_ANGLE:
        raise _fail("angle", v["angle"], f"rotation angle in degrees must be in 0..{MAX_ANGLE:g} "
                    "(0: the aligned model; 90 swaps the modes of each pair)")
    if v["angle"] and d < 2:
        raise _fail("angle", v["angle"], "a rotation of mode pairs needs d >= 2")
    if v["mixing_seed"] is not None and v["mixing_seed"] < 0:
        raise _fail("mixing_seed", v["mixing_seed"], "a seed must be >= 0 (leave it out for "
                    "no mixing)")
    if v["mixing_dim"] is not None:
        if v["mixing_seed"] is None:
            raise _fail("mixing_dim", v["mixing_dim"], "mixing_dim needs mixing_seed (the "
                        "mixing it sizes); give both or neither")
        if not 2 <= v["mixing_dim"] <= d:
            raise _fail("mixing_dim", v["mixing_dim"], f"mixed directions must be in 2..d "
                        f"(d = {d})")
    elif v["mixing_seed"] is not None:
        v["mixing_dim"] = d
    if v["alpha_target"] is not None and v["alpha_target"] < 0:
        raise _fail("alpha_target", v["alpha_target"], "target energy decay must be >= 0 "
                    "(leave it out for the target in teacher coordinates)")


def _canonical(value: Any) -> Any:
    """Spelling-independent form: every number becomes a float repr, mappings sort keys."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return repr(float(value))
    if isinstance(value, Mapping):
        return {str(k): _canonical(value[k]) for k in sorted(value)}
    if isinstance(value, list | tuple):
        return [_canonical(x) for x in value]
    raise TypeError(f"cannot hash value of type {type(value).__name__}")


def point_hash(point: Point | Mapping[str, Any]) -> str:
    """Stable 16-hex-digit hash of a point's resolved parameter values.

    Independent of key order, of int/float spelling and of the process; defaults are
    resolved first so that spelling a default out does not change the hash. Parameters
    added after the first cubes (:data:`HASH_NEUTRAL`) are left out at their neutral value,
    so a point of the paper's model keeps the hash (cube key, Monte Carlo seeds) it had.
    """
    p = point if isinstance(point, Point) else make_point(point)
    values = p.as_dict()
    for name, neutral in HASH_NEUTRAL.items():
        if values[name] == neutral:
            del values[name]
    for key in SPECTRUM_PARAMS:  # a file counts by its bytes, not its path
        if key in values:
            values[key] = "sha256:" + load_spectrum(values[key]).sha256
    values["r_t"], values["r_s"] = p.rank_t, p.rank_s
    values["horizon_t"], values["horizon_s"] = p.plan_t, p.plan_s
    text = json.dumps(_canonical(values), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from any parts (base seed, point hash, stream name, ...)."""
    text = "/".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1
