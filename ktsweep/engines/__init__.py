"""The estimators of a point: exact moments, Monte Carlo SGD, analytic bounds, one dispatcher."""
