"""Analysis of a finished cube: labelled views, exponent fits, figures, report captions."""
