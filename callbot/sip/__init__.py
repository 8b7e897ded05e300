"""SIP calls: bots that phones and PBXs can call, and that can call them (docs/howto/sip.md).

The stack is baresip-python (`pip install 'callbot[sip]'`), imported only by `stack.py`;
importing this package works without it, and using SIP then raises a `SipError` saying what
to install.
"""

from ..errors import SipError
from .call import SipCall
from .endpoint import SipSettings, is_sip_uri

__all__ = ["SipCall", "SipError", "SipSettings", "is_sip_uri"]
