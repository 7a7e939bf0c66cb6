"""What every benchmark reports about the machine it ran on (so ratios can be compared)."""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

import numpy as np
import torch


def machine_info(torch_threads: int, load_start: float) -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch_threads,
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "load_average_1m_at_start": load_start,
        "load_average_1m_at_end": os.getloadavg()[0],
    }
