"""Opening a Zenoh session from ``[output.zenoh]``, for the sink and for ``edgefusion listen``."""

from __future__ import annotations

import json
import re

from edgefusion.bus.config import ZenohSection
from edgefusion.errors import EdgefusionError

INSTALL = "pip install eclipse-zenoh (the zenoh extra), or set [output.zenoh] enabled = false"


def import_zenoh():
    try:
        import zenoh
    except ImportError:
        raise EdgefusionError(f"[output.zenoh] needs the eclipse-zenoh package: {INSTALL}") from None
    return zenoh


def zenoh_config(section: ZenohSection):
    """The session's config: mode, endpoints and multicast scouting as configured, and nothing
    else changed from Zenoh's defaults (a fleet's router config lives with the router)."""
    zenoh = import_zenoh()
    config = zenoh.Config()
    config.insert_json5("mode", json.dumps(section.mode))
    config.insert_json5("connect/endpoints", json.dumps(list(section.connect)))
    if section.listen:
        config.insert_json5("listen/endpoints", json.dumps(list(section.listen)))
    config.insert_json5("scouting/multicast/enabled", json.dumps(section.scouting and section.mode == "peer"))
    return config


def reason(err: BaseException) -> str:
    """Zenoh's error text without the Rust source location it ends with."""
    text = str(err.args[0] if isinstance(err, Exception) and err.args else err)
    return re.sub(r"\s+at /\S+\.rs:\d+\.?$", "", text).strip().rstrip("!. ")


def open_session(section: ZenohSection, who: str):
    """A session, or OSError saying why not in one line (no router reachable, an endpoint that
    cannot be listened on): the caller decides whether that is fatal or retried."""
    zenoh = import_zenoh()
    try:
        return zenoh.open(zenoh_config(section))
    except zenoh.ZError as err:
        where = ", ".join(section.connect) or "the LAN"
        raise OSError(f"{who}: Zenoh session ({section.mode}, {where}) not opened: {reason(err)}") from None
