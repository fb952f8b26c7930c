"""INT8 calibration sets (every presence pattern covered) and, later, sensor time-offset calibration."""
