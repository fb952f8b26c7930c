"""The workstation side (installed as ``edgefusion.export``): needs the ``export`` extra (torch)."""

FUSION_KINDS = ("lmf", "early", "late", "tensor")
