"""Splash sessions: one cookie jar per ``session_id``, kept in the crawler.

As scrapy-splash's SplashCookiesMiddleware does: the jar's cookies go to
Splash as the ``cookies`` argument (HAR format) and the ``cookies`` a script
returns update the jar. Because the jar lives in the crawler and not on a
node, a session survives any node: its requests may land on different nodes,
and a node that restarts loses nothing.

Sessions apply to the execute endpoint (``SplashRequest`` sets
``session_id="default"`` there), as in scrapy-splash; ``new_session_id``
forks a session: the answer's cookies go to the new jar, which starts as a
copy of the old one.

What a long crawl holds: only sessions that have cookies. Expired cookies
are cleared each time a session's answer comes back, and a jar left empty is
dropped (a session without cookies needs none), so a crawl of many
short-lived sessions does not grow with their number.

With ``JOBDIR`` the jars live in ``spider.state`` (as scrapy-splash kept its
argument cache there), so a paused crawl resumes with its sessions.
"""

from __future__ import annotations

import calendar
import contextlib
import copy
import logging
import time
from http.cookiejar import Cookie, CookieJar
from typing import Any
from urllib.parse import urlsplit

from scrapy import Request, signals
from scrapy.crawler import Crawler
from scrapy.http import Response

from scrapy_splash_cluster._call import SESSION_COOKIES_KEY, is_splash_request
from scrapy_splash_cluster.response import SplashJsonResponse

__all__ = [
    "JARS_STATE_KEY",
    "SessionJar",
    "SplashCookiesMiddleware",
    "cookie_to_har",
    "har_to_cookie",
]

logger = logging.getLogger(__name__)

_HAR_TIME = "%Y-%m-%dT%H:%M:%SZ"
# Where the jars live in spider.state (pickled into JOBDIR by Scrapy).
JARS_STATE_KEY = "_splash_cookie_jars"


class SessionJar(CookieJar):
    """A CookieJar that pickles (a plain one holds a lock), so that
    ``spider.state`` can keep it across a pause."""

    def __getstate__(self) -> dict[str, Any]:
        return {"cookies": list(self), "policy": self._policy}

    def __setstate__(self, state: dict[str, Any]) -> None:
        CookieJar.__init__(self, state["policy"])
        for cookie in state["cookies"]:
            self.set_cookie(cookie)


def har_to_cookie(har: dict[str, Any]) -> Cookie:
    """A cookie in HAR form (as Splash sends and takes them) as a Cookie."""
    expires = None
    if har.get("expires"):
        expires = calendar.timegm(time.strptime(har["expires"], _HAR_TIME))
    domain = har.get("domain", "")
    path = har.get("path", "")
    return Cookie(
        version=0,
        name=har["name"],
        value=har["value"],
        port=None,
        port_specified=False,
        domain=domain,
        domain_specified=bool(domain),
        domain_initial_dot=domain.startswith("."),
        path=path,
        path_specified=bool(path),
        secure=bool(har.get("secure", False)),
        expires=expires,
        discard=False,
        comment=har.get("comment"),
        comment_url=None,
        rest={"HttpOnly": har.get("httpOnly")},
        rfc2109=False,
    )


def cookie_to_har(cookie: Cookie) -> dict[str, Any]:
    """A Cookie in HAR form."""
    har: dict[str, Any] = {"name": cookie.name, "value": cookie.value, "secure": cookie.secure}
    if cookie.path_specified:
        har["path"] = cookie.path
    if cookie.domain_specified:
        har["domain"] = cookie.domain
    if cookie.expires:
        har["expires"] = time.strftime(_HAR_TIME, time.gmtime(cookie.expires))
    http_only = cookie.get_nonstandard_attr("HttpOnly")
    if http_only is not None:
        har["httpOnly"] = bool(http_only)
    return har


def _key(cookie: Cookie) -> tuple[str, str, str]:
    return (cookie.domain, cookie.path, cookie.name)


def _update_jar(jar: CookieJar, returned: list[dict[str, Any]], sent: list[dict[str, Any]]) -> None:
    """Sets the cookies the script returned; removes those it was sent and did
    not return (the script or the site deleted them)."""
    kept = set()
    for har in returned:
        cookie = har_to_cookie(har)
        jar.set_cookie(cookie)
        kept.add(_key(cookie))
    for har in sent:
        cookie = har_to_cookie(har)
        if _key(cookie) not in kept:
            with contextlib.suppress(KeyError):  # already gone
                jar.clear(cookie.domain, cookie.path, cookie.name)


class SplashCookiesMiddleware:
    """Keeps a cookie jar per Splash session, on the crawler's side."""

    def __init__(self, debug: bool = False, crawler: Crawler | None = None) -> None:
        # session_id -> its jar; only sessions with cookies are here.
        self.jars: dict[str, SessionJar] = {}
        self.debug = debug
        if crawler is not None:
            crawler.signals.connect(self._spider_opened, signal=signals.spider_opened)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> SplashCookiesMiddleware:
        return cls(debug=crawler.settings.getbool("SPLASH_COOKIES_DEBUG"), crawler=crawler)

    def _spider_opened(self, spider: Any) -> None:
        # Scrapy's SpiderState (with JOBDIR) has loaded spider.state by now:
        # its receiver was connected first.
        if not hasattr(spider, "state"):
            spider.state = {}
        jars = spider.state.setdefault(JARS_STATE_KEY, {})
        jars.update(self.jars)
        self.jars = jars

    def _keep(self, session_id: str, jar: SessionJar) -> None:
        jar.clear_expired_cookies()
        if len(jar):
            self.jars[session_id] = jar
        else:
            self.jars.pop(session_id, None)

    def process_request(self, request: Request) -> None:
        if not is_splash_request(request):
            return
        options = request.meta["splash"]
        session_id = options.get("session_id")
        if session_id is None or "cookies" in (options.get("args") or {}):
            return
        jar = self.jars.get(session_id) or SessionJar()
        new_session_id = options.get("new_session_id")
        if new_session_id is not None and new_session_id not in self.jars:
            fork = SessionJar()
            for cookie in jar:
                fork.set_cookie(copy.copy(cookie))
            self._keep(new_session_id, fork)
        for har in self._request_cookies(request):
            jar.set_cookie(har_to_cookie(har))
        self._keep(session_id, jar)
        cookies = [cookie_to_har(c) for c in jar]
        # Kept out of meta["splash"]["args"], so that the fingerprint (and
        # the cache key) of a page does not change with the session's state.
        request.meta[SESSION_COOKIES_KEY] = cookies
        if self.debug and cookies:
            logger.debug(
                "Sending cookies to %s:\n%s",
                request,
                "\n".join(f"Cookie: {c['name']}={c['value']}" for c in cookies),
            )

    def process_response(self, request: Request, response: Response) -> Response:
        if not isinstance(response, SplashJsonResponse) or not is_splash_request(request):
            return response
        if not isinstance(response.data, dict) or "cookies" not in response.data:
            return response
        options = request.meta["splash"]
        session_id = options.get("new_session_id", options.get("session_id"))
        if session_id is None:
            return response
        jar = self.jars.get(session_id) or SessionJar()
        sent = request.meta.get(SESSION_COOKIES_KEY) or options.get("args", {}).get("cookies", [])
        _update_jar(jar, response.data["cookies"] or [], sent)
        self._keep(session_id, jar)
        if self.debug and response.data["cookies"]:
            logger.debug(
                "Received cookies from %s:\n%s",
                response,
                "\n".join(
                    f"Set-Cookie: {c['name']}={c['value']}" for c in response.data["cookies"]
                ),
            )
        response.cookiejar = jar
        return response

    @staticmethod
    def _request_cookies(request: Request) -> list[dict[str, Any]]:
        """Scrapy's per-request cookies (``Request(cookies=...)``), scoped to
        the page's host when they name no domain."""
        raw = request.cookies
        items = (
            [{"name": k, "value": v} for k, v in raw.items()]
            if isinstance(raw, dict)
            else list(raw or [])
        )
        host = urlsplit(request.url).hostname or ""
        return [{"domain": host, "path": "/", **item} for item in items]
