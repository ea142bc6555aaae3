"""A store URL as messages and tags show it: without the credentials it may carry.

MLflow tracking URIs and Optuna storage URLs alike (``postgresql://user:secret@host/db``)
reach error lines, log files and study attributes; their user-info part never does.
"""

from __future__ import annotations


def redacted(url: str) -> str:
    """`url` with its user-info hidden: scheme://user:secret@host/db -> scheme://***@host/db.

    The whole user-info goes (a token may stand in the user's place: https://TOKEN@host). It
    ends at the last '@' before the query, as SQLAlchemy reads it, so a password holding an
    unescaped '@' or '/' is hidden too. A URL without user-info, a file path, or a
    ``sqlite:///`` path with an '@' in it is returned as it is."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    user_info, at, _ = rest.split("?", 1)[0].split("#", 1)[0].rpartition("@")
    if not at or "/" in user_info.split(":", 1)[0]:  # no user-info, or the '@' is in a path
        return url
    return f"{scheme}://***@{rest[len(user_info) + 1 :]}"
