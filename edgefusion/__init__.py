"""edgefusion: multimodal fusion models on robots that keep working when a sensor fails.

Importing the package loads nothing heavy: hardware and accelerator libraries are imported
inside their adapters, so ``import edgefusion`` works on any machine.
"""

__version__ = "0.1.0"
