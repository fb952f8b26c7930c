"""The hardware-in-the-loop suite's machinery: the rigs it runs on (virtual or a real RealSense and
microphone, with the faults each can cause), a loop run it measures, the figures its tests record,
the machine's facts, and the report (JUnit XML, Markdown, HTML, plots) a robot team files.

The tests themselves are in the repository's ``hw_tests/``; ``edgefusion hil`` runs them with this
package's pytest plugin (``edgefusion.hil.plugin``) and writes the report. Nothing here imports a
hardware library at import time.
"""
