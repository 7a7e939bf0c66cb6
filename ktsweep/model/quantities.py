"""Names, descriptions and derived ratios of the per-point quantities (docs/science/quantities.md).

Every engine returns a mapping name → array with a leading point dimension; this module
is the one place that says which names exist and what they mean.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

RISKS = ("risk_teacher", "risk_direct", "risk_t2s", "risk_ceiling")
RATIOS = ("der", "pgr", "w2s_ratio")
SCALARS = RISKS + RATIOS
MODE_RISKS = ("mode_teacher", "mode_direct", "mode_t2s", "mode_ceiling")
CURVES = ("curve_teacher", "curve_t2s")
STEP_SIZES = ("gamma0_t", "gamma0_s", "gamma0_direct", "gamma0_ceiling")
TUNE_EDGES = ("tune_edge_t", "tune_edge_s", "tune_edge_direct", "tune_edge_ceiling")
"""Per run: 1 when ``{tune: [...]}`` chose an end of its list, 0 inside, NaN when not tuned."""


def step_size_variable(name: str, axes: Iterable[str]) -> str:
    """The cube variable holding the step size a run used: ``name``, or ``name_used`` when
    ``name`` (``gamma0_t``, ``gamma0_s``) is also a grid axis, whose coordinate holds the
    requested value (a number or a γ0 map)."""
    return f"{name}_used" if name in set(axes) else name



STATUS = ("missing", "ok", "diverged")
"""Status codes as stored in the cube: index = code."""

PGR_RTOL = 1e-12
SCHEMA_VERSION = 4
"""Version of the cube's variable set: bump it whenever an estimator adds, drops or changes
the meaning of an output, so old cubes are set aside and recomputed, never mixed."""

_HALF = "excess risk with the 1/2 factor, (1/2)||u - theta*||^2, noise floor excluded"
LONG_NAMES: dict[str, str] = {
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
    "tune_edge_t": "1 if the teacher's tuned gamma0 is at an end of its list (optimum may be "
                   "outside), 0 inside, NaN if not tuned",
    "tune_edge_s": "1 if the T2S student's tuned gamma0 is at an end of its list, 0 inside, "
                   "NaN if not tuned",
    "tune_edge_direct": "1 if the direct student's tuned gamma0 is at an end of its list, "
                        "0 inside, NaN if not tuned",
    "tune_edge_ceiling": "1 if the ceiling student's tuned gamma0 is at an end of its list, "
                         "0 inside, NaN if not tuned",
    "status": "0 missing (not computed), 1 ok, 2 diverged (some run's risk passed "
              "DIVERGED_FACTOR x its start; only the runs depending on it are NaN)",
}


def with_ratios(out: dict[str, np.ndarray], suffix: str = "") -> dict[str, np.ndarray]:
    """Add der, pgr and w2s_ratio computed from the four risks (in place, returned)."""
    rt, rd, rs, rc = (np.asarray(out[k + suffix], dtype=np.float64) for k in RISKS)
    with np.errstate(all="ignore"):
        out["der" + suffix] = rd / rs
        out["w2s_ratio" + suffix] = rs / rt
        gap = rt - rc
        tiny = np.abs(gap) <= PGR_RTOL * np.maximum(np.abs(rt), np.abs(rc))
        out["pgr" + suffix] = np.where(tiny, np.nan, (rt - rs) / np.where(tiny, 1.0, gap))
    return out


def assemble(n: int, parts: Iterable[tuple[Sequence[int], dict[str, np.ndarray]]]
             ) -> dict[str, np.ndarray]:
    """Results computed for subsets of n points, reassembled in input order.

    Per-mode arrays (``mode_*``) of parts with a smaller ``d`` are padded with NaN to the
    widest; points a part did not cover read NaN (numbers) or "" (text).
    """
    parts = list(parts)
    width = {k: max(v.shape[1] for _, r in parts for kk, v in r.items() if kk == k)
             for _, r in parts for k in r if k.startswith("mode_")}
    out: dict[str, np.ndarray] = {}
    for idx, res in parts:
        for k, v in res.items():
            if k in width and v.shape[1] < width[k]:
                v = np.concatenate([v, np.full((v.shape[0], width[k] - v.shape[1]), np.nan)],
                                   axis=1)
            text = v.dtype.kind == "U"
            if k not in out:
                out[k] = np.full((n,) + v.shape[1:], "" if text else np.nan,
                                 dtype=v.dtype if text else np.float64)
            elif text and v.dtype.itemsize > out[k].dtype.itemsize:
                out[k] = out[k].astype(v.dtype)
            out[k][np.asarray(idx, dtype=int)] = v
    return out
