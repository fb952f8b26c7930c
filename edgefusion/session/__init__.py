"""Recorded sessions: what a rig's sensors delivered, kept so that a run can be replayed exactly.

A session folder holds:

- ``camera.db3`` (``camera.bag`` with RealSense SDK <= 2.57): the camera frames the model saw,
  at the model's resolution (RGB8 and Z16, so a RealSense tool opens it too); each frame's
  RealSense timestamp is its time on the runtime's monotonic clock, in milliseconds;
- ``audio.wav``: the microphone's good blocks, 16-bit mono at the model's rate, in order;
- ``events.jsonl``: one JSON object per line, each with ``t`` (monotonic seconds) and ``kind``:
  ``start`` (the session's facts), ``window`` (an audio window was handed out: it ends at
  sample ``end`` of audio.wav), ``state`` (a sensor's health changed), ``label`` (the person's
  intent from then on) and ``tick`` (a result: its label and probabilities);
- ``session.json``: written last, when the recorder closed cleanly. Without it the session was
  cut short (a killed recorder); what was written up to then is still read, and said so.

Frames and windows replay at their recorded times, so a runtime ticking at the recorded tick
times sees exactly the samples the recorded run saw.
"""
