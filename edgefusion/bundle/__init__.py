"""The model bundle: the verified folder of graphs and manifest that travels from workstation to robot."""

from edgefusion.bundle.loader import Bundle, default_bundle_path, load_bundle
from edgefusion.bundle.manifest import FORMAT_VERSION
from edgefusion.bundle.writer import write_bundle

__all__ = ["FORMAT_VERSION", "Bundle", "default_bundle_path", "load_bundle", "write_bundle"]
