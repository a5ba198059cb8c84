"""Object ids in OpenAI's formats (`resp_` + 32 hex, `msg_…`, `fc_…`, `rs_…`)."""

from __future__ import annotations

import uuid


def new_id(prefix: str) -> str:
    """`prefix` + 32 random hex digits: unique without coordination between edge replicas."""
    return prefix + uuid.uuid4().hex
