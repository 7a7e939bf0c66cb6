"""ktsweep: parameter sweeps of the spectral theory of knowledge transfer (arXiv 2606.01292)."""

from ktsweep.model.params import ParameterError, Point, make_point, point_hash

__all__ = ["Point", "ParameterError", "make_point", "point_hash"]
__version__ = "0.1.0"
