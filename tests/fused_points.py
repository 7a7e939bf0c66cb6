"""The feature points and settings shared by tests/test_fused.py and tests/test_fused_gpu.py
(a module of its own: the GPU test must not import numba through test_fused)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ktsweep.model.quantities import RISKS

SEED = 20261206
REPLICATES = 4000
CHECKPOINTS = np.array([0, 1, 3, 10, 30, 100, 150, 300, 600], dtype=np.int64)
COMPARED = RISKS + ("der", "w2s_ratio", "pgr")
BASE: dict[str, Any] = {"d": 16, "sigma2": 0.1}
POINTS: dict[str, dict[str, Any]] = {
    "kd_gaussian_geometric": {"alpha_t": 1.0, "alpha_s": 1.5, "N": 400, "n": 600},
    "lowdim_batches_4_2": {"alpha_t": 1.5, "alpha_s": 1.0, "N": 400, "n": 600, "sigma2": 0.5,
                           "target": "lowdim", "k_dagger": 5, "amplitude": 0.5, "batch_t": 4,
                           "batch_s": 2},
    "power_batch_3_tail_geometric": {"alpha_t": 1.1, "alpha_s": 1.3, "N": 600, "n": 450,
                                     "sigma2": 0.3, "target": "power", "beta": 0.5,
                                     "batch_t": 3, "batch_s": 3, "schedule_t": "tail_geometric",
                                     "schedule_s": "tail_geometric"},
    "rank_deficient_constant_long_plan": {"alpha_t": 1.2, "alpha_s": 1.4, "N": 300, "n": 500,
                                          "r_s": 10, "schedule_s": "constant",
                                          "gamma0_s": 0.05, "schedule_t": "tail_geometric",
                                          "horizon_s": 1500, "horizon_t": 900},
    "tuned_w2s": {"alpha_t": 2.0, "alpha_s": 1.5, "N": 300, "n": 400,
                  "gamma0_t": {"tune": [0.05, 0.15, 0.3]}, "gamma0_s": {"tune": [0.05, 0.2]}},
    "rotated_gaussian": {"alpha_t": 1.2, "alpha_s": 1.6, "N": 300, "n": 500, "angle": 30.0},
    "mixed_lowdim_rank_t": {"alpha_t": 1.5, "alpha_s": 1.2, "N": 300, "n": 400,
                                  "target": "lowdim", "k_dagger": 4, "mixing_seed": 3,
                                  "mixing_dim": 8, "r_t": 12},
    "rotated_rademacher_batch_2": {"alpha_t": 1.3, "alpha_s": 1.6, "N": 400, "n": 400,
                                   "inputs": "rademacher", "angle": 45.0, "batch_t": 2,
                                   "batch_s": 2},
    "uniform_power": {"alpha_t": 1.4, "alpha_s": 1.4, "N": 300, "n": 300, "target": "power",
                      "beta": 1.0, "inputs": "uniform"},
    "student_t_semantic_target": {"alpha_t": 1.2, "alpha_s": 1.5, "N": 300, "n": 400,
                                  "inputs": "student_t", "inputs_nu": 9.0,
                                  "alpha_target": 1.3},
}
"""Every feature of the fused kernels: each target kind, batches (shared and separate passes),
every schedule and planned horizons, tuned γ0, rank deficiency, the rotated and the mixed
student (Gaussian inputs: drawn in the student's basis; Rademacher: rotated in the kernel),
each input law, a target set in the semantic basis."""
