"""The model: point parameters and their hash, spectra, targets and schedules, rates."""
