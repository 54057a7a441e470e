"""Secrets kept out of every log record: RPC URLs' credentials, paths and API keys.

RPC URLs often carry a secret (`https://user:password@host/v2/<key>?apikey=<key>`), and the
libraries we call log request URLs (httpx logs each one at INFO), so one
`logging.basicConfig(level=logging.INFO)` in a notebook would print them. Every URL our code
is given is registered here (`hide_url`); from the first registration on, a log-record factory
wrapping the current one runs `SecretFilter` on each record of any logger — ours, httpx's,
httpcore's, aiohttp's, openai's, the user's — and rewrites the parts that hold a registered
secret, leaving every other record, and the user's handlers, levels and formats, untouched.
"""

from __future__ import annotations

import base64
import logging
import re
import threading
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

__all__ = ["SecretFilter", "hide_url", "redact", "redact_url"]

HIDDEN = "***"
# A fragment shorter than this (a 2-letter password, a "/v1" path) is hidden only inside the
# longer forms that contain it: hiding it alone would mangle unrelated log text.
_SHORTEST_FRAGMENT = 4

_lock = threading.Lock()
_replacements: dict[str, str] = {}  # secret text -> what is shown instead
_pattern: re.Pattern[str] | None = None  # every secret, longest first
_installed = False


def redact_url(url: str) -> str:
    """`scheme://host[:port]/…` with any path, query or credentials hidden."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    tail = "/…" if (parts.path.strip("/") or parts.query) else ""
    return f"{parts.scheme}://{host}{port}{tail}"


def _url_secrets(url: str) -> dict[str, str]:
    """The texts of `url` that hold a secret, each with what is shown in its place."""
    parts = urlsplit(url)
    shown = redact_url(url)
    if shown == url:
        return {}
    found = {url: shown, url.rstrip("/"): shown}
    try:  # the spelling httpx logs (it normalises the URL)
        import httpx

        found[str(httpx.URL(url))] = shown
    except Exception:  # an URL httpx cannot parse is not one it will log
        pass
    fragments: list[str] = []
    if parts.username is not None or parts.password is not None:
        userinfo = parts.netloc.rpartition("@")[0]
        found[userinfo + "@"] = HIDDEN + "@"
        credentials = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
        found[base64.b64encode(credentials.encode()).decode()] = HIDDEN  # the Basic auth header
        fragments += [userinfo, credentials, parts.password or "", unquote(parts.password or "")]
    if parts.path.strip("/"):
        fragments += [parts.path, unquote(parts.path), *parts.path.strip("/").split("/")]
    if parts.query:
        fragments.append(parts.query)
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            fragments += [f"{name}={value}", value]
    for fragment in fragments:
        if len(fragment) >= _SHORTEST_FRAGMENT:
            found.setdefault(fragment, HIDDEN)
    return found


def hide_url(url: str) -> None:
    """Keep `url`'s secrets (credentials, path, query) out of every log record from now on;
    a URL without any is left alone."""
    secrets = _url_secrets(url)
    if not secrets:
        return
    global _pattern
    with _lock:
        if secrets.keys() <= _replacements.keys():
            return
        _replacements.update(secrets)
        ordered = sorted(_replacements, key=len, reverse=True)
        _pattern = re.compile("|".join(re.escape(s) for s in ordered))
        _install()


def redact(text: str) -> str:
    """`text` with every registered secret hidden."""
    pattern = _pattern
    if pattern is None:
        return text
    return pattern.sub(lambda m: _replacements[m.group(0)], text)


class SecretFilter(logging.Filter):
    """Rewrites a record's message, exception text and stack so no registered secret is in
    them; never drops a record. Installed for every logger by `hide_url`; it may be added to a
    handler too."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _pattern is None:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: logging reports it where it is formatted
            return True
        hidden = redact(message)
        if hidden != message:
            record.msg, record.args = hidden, ()
        if record.exc_info and not record.exc_text:
            text = logging.Formatter().formatException(record.exc_info)
            if redact(text) != text:
                record.exc_text = redact(text)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


_FILTER = SecretFilter()


def _install() -> None:
    """Run `SecretFilter` on every record created from now on (once per process), by wrapping
    the log-record factory in place — loggers created later (httpcore makes one per module)
    are covered, and no logger's or handler's configuration changes."""
    global _installed
    if _installed:
        return
    make_record = logging.getLogRecordFactory()

    def make_redacted_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        _FILTER.filter(record)
        return record

    logging.setLogRecordFactory(make_redacted_record)
    _installed = True
