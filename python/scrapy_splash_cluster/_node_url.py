"""Node URLs with credentials in them: split, masked, turned into a header.

The same rule as the core's (``src/core/config.rs``): everything from
``://`` to the last ``@`` is the credentials, so that a password holding
``/ ? # @`` unencoded stays whole, and the parts are percent-decoded and
nothing else (``+`` stays ``+``, ``&`` stays ``&``). A password is never
shown: where a URL is echoed, it is ``***``.
"""

from __future__ import annotations

import base64
from urllib.parse import unquote

__all__ = ["basic_authorization", "mask_password", "split_credentials"]


def split_credentials(url: str) -> tuple[str | None, str]:
    """``scheme://user:pass@rest`` as the credentials as written (None when
    there are none) and ``scheme://rest``."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not sep or not at:
        return None, url
    return userinfo, f"{scheme}://{host}"


def mask_password(url: str) -> str:
    """The URL with its password replaced by ``***``."""
    userinfo, rest = split_credentials(url)
    if userinfo is None:
        return url
    user, colon, _ = userinfo.partition(":")
    scheme, _, host = rest.partition("://")
    return f"{scheme}://{user}{':***' if colon else ''}@{host}"


def basic_authorization(userinfo: str) -> str:
    """The ``Authorization`` value for ``user:password`` as written in a URL."""
    user, _, password = userinfo.partition(":")
    token = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode()
    return f"Basic {token}"
