"""The user-error type of the harness and the one "did you mean" helper every message uses."""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable

__all__ = ["DataError", "HarnessError", "TrialFailed", "db_url", "did_you_mean", "os_reason", "redact_url", "scrub",
           "split_userinfo"]


class HarnessError(Exception):
    """An error the user caused (bad spec, missing file, ...): the CLI prints it and exits with status 2."""


class DataError(HarnessError):
    """A dataset could not be built: bad root, missing or corrupt files, bad task."""


def os_reason(exc: OSError) -> str:
    """What went wrong with a file, in lower case, as a one-line error says it (``no space left
    on device``, ``file too large``)."""
    return (exc.strerror or os.strerror(exc.errno or 0) or type(exc).__name__).lower()


def did_you_mean(name: object, known: Iterable[str], *, prefix: str = "", cutoff: float = 0.6) -> str:
    """``"; did you mean 'x'?"`` naming the known name closest to ``name`` (``prefix`` + it),
    or ``""`` when nothing is close."""
    close = difflib.get_close_matches(str(name), list(known), n=1, cutoff=cutoff)
    return f"; did you mean '{prefix}{close[0]}'?" if close else ""


#: query parameters whose value is a password (case-insensitive)
SECRET_PARAMS = ("password", "passwd", "pwd")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_HOST_END = r"(?:\[[^\]\s]*\]|[^\s/?#@:'\"]*)(?::\d*)?(?=[/?#\s'\"),;]|$)"  # host[:port], then the path or the end
_QUERY_SECRET = re.compile(r"([?&;](?:%s)=)([^&]*)" % "|".join(SECRET_PARAMS), re.IGNORECASE)
_QUERY_SECRET_TEXT = re.compile(r"([?&;](?:%s)=)([^&\s'\")]*)" % "|".join(SECRET_PARAMS), re.IGNORECASE)
#: every password a URL given to :func:`redact_url` or :func:`split_userinfo` carried (as written,
#: percent-decoded and percent-encoded): :func:`scrub` hides them wherever they turn up
_SECRETS: set[str] = set()
_MIN_SECRET = 4  # shorter secrets are hidden inside URLs only (hiding every "abc" of a message garbles it)


def _remember(secret: str | None) -> None:
    if not secret:
        return
    from urllib.parse import quote, unquote

    forms = {secret, unquote(secret), quote(secret, safe=""), quote(unquote(secret), safe="")}
    forms |= set(re.split(r"[@:/?#&\s]+", secret))  # the pieces a misparsed URL quotes in its error
    _SECRETS.update(form for form in forms if len(form) >= _MIN_SECRET)


def _userinfo_end(rest: str, *, in_text: bool = False, strict: bool = False) -> int | None:
    """The index of the ``@`` that ends the user info of ``rest`` (a URL after ``scheme://``),
    or None. A password may hold ``@``, ``:``, ``/`` or spaces: the user info runs to the last
    ``@`` followed by a host (and port) and the path or the end; one whose user info holds no
    ``/``, ``?`` or ``#`` is preferred (an ``@`` in the path or the query then stays there),
    and in a message (``in_text``) first one without spaces. Where in doubt, more is hidden;
    ``strict`` (to connect) takes no user info holding ``?`` or ``#``: that ``@`` is the query's."""
    if rest.startswith("/"):  # no authority (sqlite:////abs/path, file:///...)
        return None
    ends = [m.start() for m in re.finditer("@", rest) if re.match(_HOST_END, rest[m.start() + 1:])]
    if not ends:
        return None
    clean = [i for i in ends if not re.search(r"[/?#]", rest[:i])]
    tight = [i for i in clean if not re.search(r"\s", rest[:i])] if in_text else []
    if strict:
        found = clean or [i for i in ends if not re.search(r"[?#]", rest[:i])]
        return found[-1] if found else None
    return (tight or clean or ends)[-1]


def split_userinfo(url: str) -> tuple[str, str | None, str | None]:
    """``(url without its user info, user, password)`` of a URL ``scheme://user:password@host...``
    (user info up to the last ``@``, the password after the first ``:``; both as written, not
    percent-decoded); ``(url, None, None)`` without user info. What connects: a ``?`` or ``#``
    in a password must be percent-encoded (``%3F``, ``%23``), ``@``, ``:``, ``/`` and spaces need not."""
    m = _SCHEME.match(url)
    if not m:
        return url, None, None
    rest = url[m.end():]
    at = _userinfo_end(rest, strict=True)
    if at is None:
        return url, None, None
    user, sep, password = rest[:at].partition(":")
    _remember(password if sep else None)
    return url[:m.end()] + rest[at + 1:], user, password if sep else None


def redact_url(text: str) -> str:
    """``text`` with the password of every URL in it hidden: ``scheme://user:***@host``, and the
    value of ``password=``, ``passwd=``, ``pwd=`` query parameters (``?password=***``).

    The URL is parsed, not matched on its first ``@``: the user info runs to the last ``@``
    before the host, so a password may hold ``@``, ``:`` or spaces. ``text`` may be one URL or a
    longer message with URLs in it (then a query password ends at a space or a quote too).
    Every password seen here is remembered, and hidden by :func:`scrub` wherever it turns up."""
    if not text:
        return text
    one_url = bool(_SCHEME.match(text)) and "\n" not in text and len(_SCHEME.findall(text)) == 1
    text = scrub(text)
    starts = [m.start() for m in _SCHEME.finditer(text)]
    if not starts:
        return _QUERY_SECRET_TEXT.sub(r"\1***", text)
    out = [text[:starts[0]]]
    for i, start in enumerate(starts):
        part = text[start:starts[i + 1] if i + 1 < len(starts) else len(text)]
        out.append(_redact_one(part, whole=one_url))
    return "".join(out)


def _redact_one(url: str, *, whole: bool) -> str:
    url = (_QUERY_SECRET if whole else _QUERY_SECRET_TEXT).sub(
        lambda m: (_remember(m.group(2)), m.group(1) + ("***" if m.group(2) else ""))[1], url)
    m = _SCHEME.match(url)
    rest = url[m.end():]
    at = _userinfo_end(rest, in_text=not whole)
    if at is None:
        return url
    user, sep, password = rest[:at].partition(":")
    if not sep:
        return url
    _remember(password)
    return f"{url[:m.end()]}{user}:***@{rest[at + 1:]}"


def scrub(text: str) -> str:
    """``text`` with every password :func:`redact_url` or :func:`split_userinfo` has seen
    replaced by ``***`` (for messages that quote a password outside its URL)."""
    for secret in sorted(_SECRETS, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, "***")
    return text


def db_url(url: str) -> str:
    """A database URL as SQLAlchemy reads it: in the user info (up to the last ``@``, see
    :func:`split_userinfo`) an ``@`` of the password, and an ``@``, ``:`` or ``/`` of the user, are
    percent-encoded (SQLAlchemy ends the password at the first ``@`` and decodes ``%XX``); in the
    query every ``@``, and a password parameter's ``+`` (else read as a space), are."""
    bare, user, password = split_userinfo(url)
    scheme, sep, rest = bare.partition("://")
    if not sep:
        return url
    head, q, query = rest.partition("?")
    if q:  # SQLAlchemy reads the query with parse_qsl ('+' is a space) after the user name, which an '@' ends
        query = re.sub(r"((?:^|[&;])(?:%s)=)([^&]*)" % "|".join(SECRET_PARAMS),
                       lambda m: m.group(1) + m.group(2).replace("+", "%2B"), query,
                       flags=re.IGNORECASE).replace("@", "%40")
    rest = head + q + query
    if user is None:
        return f"{scheme}://{rest}"
    user = user.replace("@", "%40").replace(":", "%3A").replace("/", "%2F")
    info = user if password is None else f"{user}:{password.replace('@', '%40')}"
    return f"{scheme}://{info}@{rest}"


class TrialFailed(Exception):
    """Training diverged (a non-finite loss): the trial failed, not the harness.

    Defined here, below the model and the trainer, because both raise it (the model's
    :class:`~harness.models.vit.EncodingContractError` is one); ``harness.training.train``
    re-exports it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
