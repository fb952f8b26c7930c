"""INT8 calibration sets (every presence pattern covered) and the rig's audio-video time offset."""
