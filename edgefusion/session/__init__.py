"""Recorded sessions: what a rig's sensors delivered, kept so that a run can be replayed exactly.

A session folder holds:

- ``camera.db3`` (``camera.bag`` with RealSense SDK <= 2.57): the camera frames the model saw,
  each stream at its modality's resolution (RGB8 and/or Z16, so a RealSense tool opens it too);
  each frame's RealSense timestamp is its time on the runtime's monotonic clock, in milliseconds;
- ``audio.wav``: the microphone's good blocks, 16-bit mono at the audio modality's rate, in order;
- ``events.jsonl``: one JSON object per line, each with ``t`` (monotonic seconds) and ``kind``:
  ``start`` (the session's facts: the ``streams`` recorded, ``sample_rate`` and ``window_s`` of
  the audio, each modality's name, stream and shape), ``window`` (an audio window was handed
  out: it ends at sample ``end`` of audio.wav), ``state`` (a stream's health changed), ``label``
  (the person's intent from then on) and ``tick`` (a result: its label and probabilities, and
  the capture time of the sample of each stream it used). Everything is keyed by stream (the
  hardware), so a session replays into any bundle whose modalities those streams feed;
- ``session.json``: written last, when the recorder closed cleanly. Without it the session was
  cut short (a killed recorder); what was written up to then is still read, and said so.

Frames and windows replay at their recorded times, so a runtime ticking at the recorded tick
times sees exactly the samples the recorded run saw. Replayed into a bundle of other sizes or
rate, frames are resized (the drivers' resize) and audio resampled (soxr) on loading, windows
cut to its length where the recorded ones end; a stream a modality needs that the session
lacks replays as absent throughout, with a warning.

Every field a replay reads is checked on loading (``layout.py``): types, ranges, each writer's
times in order and no event more than ``MAX_GAP_S`` after those before it (a damaged clock would
stretch a real-time replay without end), window ends inside audio.wav; a damaged one is one
error naming ``file:line`` and the field. Files missing, cut short, unreadable to the user or
replaced by folders are one error naming the file (``files.py``).

A folder without an event log holding one RealSense recording and/or one WAV made by other
tools, or such a file, replays too (``foreign.py``).
"""
