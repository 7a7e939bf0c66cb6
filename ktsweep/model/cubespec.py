"""The cube specification: every variable's name, dims, dtype, long name, units and flags.

Engines return arrays keyed by these names; the store creates the cube from
:func:`variables`, the runner fills it, the CLI and analysis read it. Status codes are
:class:`Status` everywhere between the engine's result and the file.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import numpy as np

from ktsweep.model.estimators import ESTIMATORS
from ktsweep.model.quantities import (
    CURVES,
    GEOMETRY,
    MODE_RISKS,
    RATIOS,
    RISKS,
    SPECTRUM_FITS,
    STEP_SIZES,
    TUNE_EDGES,
    step_size_variable,
)


class Status(IntEnum):
    """State of one (point, estimator) cell of the cube, as stored in ``status``."""

    MISSING = 0
    OK = 1
    DIVERGED = 2

    @classmethod
    def codes(cls, values: Iterable[Any]) -> np.ndarray:
        """Engine statuses (``Status``, codes or names such as ``"ok"``) → int8 codes."""
        out = []
        for v in values:
            if isinstance(v, str | np.str_):
                out.append(cls[str(v).upper()])
            else:
                out.append(cls(int(v)))
        return np.array(out, dtype=np.int8)


class BoundStatus(IntEnum):
    """State of a point's bound quantities, as stored in ``bound_status``."""

    MISSING = 0
    COMPUTED = 1


RUNS = ("teacher", "direct", "ceiling")
BOUND_VALUES: tuple[str, ...] = tuple(
    [f"bound_{s}_{r}" for r in RUNS for s in ("upper", "lower")]
    + [f"kstar_{s}_{r}" for r in RUNS for s in ("upper", "lower")]
    + ["bound_t2s", "bound_t2s_delta", "kstar_t2s"]
    + ["bound_t2s_term1", "bound_t2s_term2", "bound_t2s_term3"]
    + ["bound_t2s_student_var", "bound_t2s_reduced"]
)
VERDICTS: tuple[str, ...] = (*(f"sandwich_{r}" for r in RUNS), "bound_t2s_holds")
"""Flags comparing a bound with the exact risk: undetermined where that risk diverged."""
BOUND_FLAGS: tuple[str, ...] = (*VERDICTS, *(f"scope_{r}" for r in RUNS), "step_condition")
"""Yes/no findings of the bound estimator, stored as int8 with flag attributes."""


class Flag(IntEnum):
    """Codes of the bound estimator's yes/no findings (``BOUND_FLAGS``) in the cube."""

    NO = 0
    YES = 1
    UNDETERMINED = 2

    @classmethod
    def codes(cls, values: np.ndarray) -> np.ndarray:
        """Engine flags (1.0 / 0.0, NaN: no verdict) → int8 codes; anything else is an error."""
        v = np.asarray(values, dtype=np.float64)
        ok = np.isnan(v) | (v == 0) | (v == 1)
        if not ok.all():
            raise ValueError(f"flag values must be 0, 1 or NaN, got {v[~ok][:3]}")
        return np.where(np.isnan(v), cls.UNDETERMINED, v).astype(np.int8)
BOUND_NAMES: tuple[str, ...] = BOUND_VALUES + BOUND_FLAGS
STATUS_VARS = ("status", "bound_status")
"""Variables that commit a point: written last, after every other value is durable."""

RISK_UNITS = "1/2 convention"
"""The ``units`` of every risk: excess risks carry the ½ factor (xarray's plots label a risk
axis 'T2S excess risk [1/2 convention]')."""
RISK_NOTE = "risks carry the 1/2 factor: (1/2)||u - theta*||^2 (noise floor excluded)"
_HALF = "excess risk with the 1/2 factor, (1/2)||u - theta*||^2, noise floor excluded"
_RUN_LABEL = {"teacher": "teacher", "direct": "direct student", "t2s": "T2S",
              "ceiling": "ceiling student"}
LABELS: dict[str, str] = {
    **{f"risk_{r}": f"{w} excess risk" for r, w in _RUN_LABEL.items()},
    **{f"mode_{r}": f"{r if r != 't2s' else 'T2S'} per-mode excess risk" for r in _RUN_LABEL},
    **{f"curve_{r}": f"{w} learning curve" for r, w in _RUN_LABEL.items()},
    "der": "data-efficiency ratio der",
    "pgr": "performance gap recovered",
    "w2s_ratio": "W2S ratio T2S / teacher",
    "gamma0_t": "teacher initial step",
    "gamma0_s": "T2S initial step",
    "gamma0_direct": "direct student initial step",
    "gamma0_ceiling": "ceiling initial step",
    "gamma0_t_used": "teacher initial step",
    "gamma0_s_used": "T2S initial step",
    **{f"tune_edge_{r}": f"{w} tuned step at a list end"
       for r, w in (("t", "teacher"), ("s", "T2S"), ("direct", "direct student"),
                    ("ceiling", "ceiling"))},
    **{f"spectrum_alpha_{m}": f"{w} fitted decay" for m, w in (("t", "teacher"),
                                                               ("s", "student"))},
    **{f"spectrum_alpha_se_{m}": f"{w} fitted decay s.e." for m, w in (("t", "teacher"),
                                                                       ("s", "student"))},
    **{f"spectrum_fit_{e}_{m}": f"{w} decay fit {e} index"
       for e in ("first", "last") for m, w in (("t", "teacher"), ("s", "student"))},
    "status": "point status",
    "bound_status": "bound status",
    "bound_t2s": "Theorem 1 transfer bound",
    "alignment_bias": "Lemma 2 alignment bias",
    "alignment_bias_closed": "Lemma 2 bias, closed form",
    "bound_t2s_term1": "transfer bound term (I)",
    "bound_t2s_term2": "transfer bound term (II)",
    "bound_t2s_term3": "transfer bound term (III)",
    "bound_t2s_student_var": "student variance in term (II)",
    "bound_t2s_reduced": "transfer bound w/o student var.",
    "bound_t2s_delta": "transfer bound's delta",
    "kstar_t2s": "transfer bound student cutoff",
    "bound_t2s_holds": "T2S risk within its bound",
    "step_condition": "step condition holds",
    **{f"scope_{r}": f"{r} run in the proofs' scope" for r in RUNS},
    **{f"sandwich_{r}": f"{r} risk within its bounds" for r in RUNS},
    **{f"bound_{s}_{r}": f"{s} bound, {_RUN_LABEL[r]}" for r in RUNS
       for s in ("upper", "lower")},
    **{f"kstar_{s}_{r}": f"{s} bound cutoff k*, {_RUN_LABEL[r]}" for r in RUNS
       for s in ("upper", "lower")},
}
"""The ``long_name`` of each variable: a short label (xarray's plots wrap it at 30
characters with the units); the full definition is its ``description``."""
RISK_VALUED: tuple[str, ...] = (
    "bound_t2s", "bound_t2s_term1", "bound_t2s_term2", "bound_t2s_term3",
    "bound_t2s_student_var", "bound_t2s_reduced", "alignment_bias", "alignment_bias_closed",
    *(f"bound_{s}_{r}" for r in RUNS for s in ("upper", "lower")))
"""Variables besides the risks that are excess risks (bounds, their terms, Lemma 2's bias)."""
DESCRIPTIONS: dict[str, str] = {
    "risk_teacher": f"teacher {_HALF}",
    "risk_direct": f"direct student (N true noisy labels) {_HALF}",
    "risk_t2s": f"teacher-to-student student (n teacher labels) {_HALF}",
    "risk_ceiling": f"ceiling student (n true noisy labels) {_HALF}",
    "der": "data-efficiency ratio risk_direct / risk_t2s (KD gain > 1)",
    "pgr": "performance gap recovered (risk_teacher - risk_t2s) / (risk_teacher - risk_ceiling)",
    "w2s_ratio": "risk_t2s / risk_teacher (weak-to-strong iff < 1)",
    "mode_teacher": f"teacher per-mode {_HALF}",
    "mode_direct": f"direct student per-mode {_HALF}",
    "mode_t2s": f"T2S student per-mode {_HALF}",
    "mode_ceiling": f"ceiling student per-mode {_HALF}",
    "curve_teacher": f"teacher {_HALF} after `step` SGD steps",
    "curve_t2s": f"T2S student {_HALF} after `step` SGD steps",
    "gamma0_t": "initial step size used by the teacher",
    "gamma0_s": "initial step size used by the T2S student",
    "gamma0_direct": "initial step size used by the direct student",
    "gamma0_ceiling": "initial step size used by the ceiling student",
    "gamma0_t_used": "initial step size used by the teacher (gamma0_t is a grid axis)",
    "gamma0_s_used": "initial step size used by the T2S student (gamma0_s is a grid axis)",
    **{f"tune_edge_{r}": f"whether the {w} tuned gamma0 is at an end of its list (yes: the "
       "optimum may lie outside it; undetermined: gamma0 was not tuned)"
       for r, w in (("t", "teacher's"), ("s", "T2S student's"), ("direct", "direct student's"),
                    ("ceiling", "ceiling student's"))},
    **{f"spectrum_alpha_{m}": f"{w} spectral decay alpha fitted on its spectrum file (NaN: "
       "power law)" for m, w in (("t", "teacher"), ("s", "student"))},
    **{f"spectrum_alpha_se_{m}": f"standard error of the {w}'s fitted alpha"
       for m, w in (("t", "teacher"), ("s", "student"))},
    **{f"spectrum_fit_{e}_{m}": f"{e} eigenvalue index (1-based) of the {w}'s alpha fit"
       for e in ("first", "last") for m, w in (("t", "teacher"), ("s", "student"))},
    "status": "state of the point for this estimator (see flag_meanings); diverged: some run's "
              "risk passed DIVERGED_FACTOR x its start, only the runs depending on it are NaN",
    "bound_status": "state of the point's bound quantities (see flag_meanings)",
    "bound_t2s": "Theorem 1 transfer upper bound on risk_t2s (min over delta)",
    "alignment_bias": "Lemma 2 static alignment bias (1/2) E||Pi_S Pi_T^perp w*||^2 from the "
                      "projectors (docs/science/geometry.md)",
    "alignment_bias_closed": "closed form of alignment_bias for the pair rotation (NaN with a "
                             "Haar mixing)",
    "bound_t2s_term1": "Theorem 1 term (I) at the minimising delta: the teacher's error passed "
                       "on, (1/2) sum_head a_T + 2 delta^2 sum_tail a_T",
    "bound_t2s_term2": "Theorem 1 term (II) at the minimising delta: the student's own error, "
                       "(1/2) sum_head a_S + sum_tail (a_S - P_S^2 E u_T^2) + (1 + 2 delta^2) "
                       "sum_tail e",
    "bound_t2s_term3": "Theorem 1 term (III): the static alignment bias (= alignment_bias)",
    "bound_t2s_student_var": "the student's own SGD variance inside term (II) at the minimising "
                             "delta, (1/2) sum_head v + sum_tail v, v = a_S - P_S^2 E u_T^2 "
                             "(docs/science/theorem5.md)",
    "bound_t2s_reduced": "min over delta of the transfer bound without bound_t2s_student_var: "
                         "what Theorem 5's proof minimises, plus the student's bias (not a "
                         "bound; docs/science/theorem5.md)",
    "bound_t2s_delta": "delta minimising the transfer bound",
    "kstar_t2s": "student cutoff k*_S(delta) of the transfer bound",
    "bound_t2s_holds": "whether exact risk_t2s <= bound_t2s",
    "step_condition": "whether every gamma0 satisfies the proofs' step-size condition",
    **{f"scope_{r}": f"whether the {r} run is in the proofs' scope (batch 1, geometric, "
       "planned for the run)" for r in RUNS},
    **{f"sandwich_{r}": f"whether bound_lower_{r} <= exact risk_{r} <= bound_upper_{r}"
       for r in RUNS},
    **{f"bound_{s}_{r}": f"{s} bound on the {r} excess risk (docs/science/bounds.md)"
       for r in RUNS for s in ("upper", "lower")},
    **{f"kstar_{s}_{r}": f"cutoff k* of the {s} bound on the {r} run (docs/science/bounds.md)"
       for r in RUNS for s in ("upper", "lower")},
}


@dataclass(frozen=True)
class VarSpec:
    """One cube variable: dims after the grid axes, dtype, fill value and attributes."""

    name: str
    dims: tuple[str, ...]
    dtype: str
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def fill(self) -> Any:
        return 0 if self.dtype == "int8" else np.nan


def _flags(enum: type[IntEnum]) -> dict[str, Any]:
    return {"flag_values": [int(e) for e in enum],
            "flag_meanings": " ".join(e.name.lower() for e in enum)}




def attrs_of(name: str) -> dict[str, Any]:
    """Attributes of a variable: ``long_name`` (a short label), ``units`` where it has one
    (risks and bounds: :data:`RISK_UNITS`; ratios, flags and counts are dimensionless) and
    ``description`` (the definition, with the docs page). ``_se`` names describe the
    standard error of their base."""
    se = name.endswith("_se")
    base = name[:-3] if se else name
    attrs: dict[str, Any] = {
        "long_name": f"{LABELS[base]} s.e." if se else LABELS[base],
        "description": (f"Monte Carlo standard error of {DESCRIPTIONS[base]}" if se
                        else DESCRIPTIONS[base]) + f" ({DOCS_PAGE})",
    }
    if base.startswith(("risk_", "mode_", "curve_")) or base in RISK_VALUED:
        attrs["units"] = RISK_UNITS
        attrs["note"] = RISK_NOTE
    if name == "status":
        attrs.update(_flags(Status))
    elif name == "bound_status":
        attrs.update(_flags(BoundStatus))
    elif name in VERDICTS or name in TUNE_EDGES:
        attrs.update(_flags(Flag))
    elif name in BOUND_FLAGS:
        attrs.update({"flag_values": [int(Flag.NO), int(Flag.YES)], "flag_meanings": "no yes"})
    return attrs


DOCS_PAGE = "docs/science/quantities.md"
"""Where every cube variable and point parameter is defined."""

PARAMETER_LABELS: dict[str, tuple[str, str | None]] = {
    "alpha_t": ("teacher spectral decay α_T", None),
    "alpha_s": ("student spectral decay α_S", None),
    "N": ("teacher samples N", None),
    "n": ("student samples n", None),
    "sigma2": ("label noise variance σ²", None),
    "d": ("dimension d", None),
    "r_t": ("teacher rank r_T", None),
    "r_s": ("student rank r_S", None),
    "target": ("target", None),
    "k_dagger": ("target modes k†", None),
    "amplitude": ("target amplitude", None),
    "beta": ("source exponent β", None),
    "batch_t": ("teacher batch size", None),
    "batch_s": ("student batch size", None),
    "schedule_t": ("teacher step schedule", None),
    "schedule_s": ("student step schedule", None),
    "horizon_t": ("teacher schedule horizon", "steps"),
    "horizon_s": ("student schedule horizon", "steps"),
    "gamma0_t": ("teacher initial step γ0_T", None),
    "gamma0_s": ("student initial step γ0_S", None),
    "inputs": ("input law", None),
    "inputs_nu": ("student-t degrees of freedom", None),
    "spectrum_t": ("teacher spectrum file", None),
    "spectrum_s": ("student spectrum file", None),
    "angle": ("student basis rotation", "degree"),
    "mixing_seed": ("Haar mixing seed", None),
    "mixing_dim": ("Haar mixing dimension", None),
    "alpha_target": ("target energy decay", None),
}
"""Per point parameter: the ``long_name`` and ``units`` of its coordinate in the cube."""


def coordinate_attrs(name: str, axis: bool) -> dict[str, Any]:
    """Attributes of a point parameter's coordinate (a grid ``axis`` or a parameter the
    points share or tie)."""
    label, units = PARAMETER_LABELS[name]
    attrs: dict[str, Any] = {"long_name": label, "description": (
        f"{'grid axis' if axis else 'point parameter'} {name} ({DOCS_PAGE})")}
    if units:
        attrs["units"] = units
    return attrs


def variables(methods: Iterable[str], modes: bool, curves: bool, axes: Iterable[str] = ()
              ) -> dict[str, VarSpec]:
    """Every variable of a cube computed with ``methods`` (and per-mode / curve outputs) over
    grid ``axes`` (a step size that is an axis is stored as ``<name>_used``)."""
    methods, axes = tuple(methods), tuple(axes)
    est = any(m in methods for m in ESTIMATORS)
    specs: list[tuple[str, tuple[str, ...], str]] = []
    if est:
        specs += [(k, ("estimator",), "float64") for k in RISKS + RATIOS]
        specs.append(("status", ("estimator",), "int8"))
        if modes:
            specs += [(k, ("estimator", "mode"), "float32") for k in MODE_RISKS]
        if curves:
            specs += [(k, ("estimator", "step"), "float32") for k in CURVES]
    if est:
        specs += [(k, (), "float64") for k in GEOMETRY]
    if est or "bound" in methods:
        specs += [(step_size_variable(k, axes), (), "float64") for k in STEP_SIZES]
        specs += [(k, (), "int8") for k in TUNE_EDGES]
        specs += [(k, (), "float64") for k in SPECTRUM_FITS]
    if "mc" in methods:
        specs += [(f"{k}_se", (), "float64") for k in RISKS + RATIOS]
        if modes:
            specs += [(f"{k}_se", ("mode",), "float32") for k in MODE_RISKS]
        if curves:
            specs += [(f"{k}_se", ("step",), "float32") for k in CURVES]
    if "bound" in methods:
        specs += [(k, (), "float64") for k in BOUND_VALUES]
        specs += [(k, (), "int8") for k in BOUND_FLAGS]
        specs.append(("bound_status", (), "int8"))
    return {n: VarSpec(n, dims, dtype, attrs_of(n)) for n, dims, dtype in specs}
