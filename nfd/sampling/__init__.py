"""Sampling: functions drawn from a trained model and evaluated on grids of any resolution (``nfd sample``)."""
