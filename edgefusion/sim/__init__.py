"""Simulation infrastructure, apart from the drivers: the simulated rig (scenes and speech made in
process), the virtual rig (the same scenario fed through the real drivers' libraries), and the
private PulseAudio server the virtual rig and the audio tests play into."""
