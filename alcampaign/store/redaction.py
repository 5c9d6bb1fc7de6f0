"""The one redaction of secrets and local paths, for everything the project shows.

The HTTP API and the dashboard (every route), the report and the server's logs pass
what they show through :func:`redact` (documents) or :func:`redact_text` (free text),
so a secret that reached a stored document (a connection string in a config, an
environment entry, a key file pasted into oracle settings) is not served anywhere.
It goes by key *and* by value:

* **keys**: the value of a credential-like key (``password``, ``passwd``, ``pwd``,
  ``passphrase``, ``*_pw``, ``secret``, ``token``, ``credential(s)``, ``api_key``,
  ``private_key``, ``auth*``, ``*uri``, ``cookie``, ``session``) is replaced whole,
  and so is everything under an environment-like key (``env``, ``environ``,
  ``environment``, ``env_vars``...), whatever its entries are called;
* **values**: in any string, the user and password of a URI
  (``mongodb://alice:PW@host/db`` -> ``mongodb://***redacted***@host/db``), the value
  of a secret-named URL query parameter (``?token=...``), and a PEM private-key block;
* **paths**: a string that is an absolute file path is shown relative to ``root``
  (the campaign's folder; the served app uses the folder it was started in) when it
  lies below it, else as ``.../<file name>``, so neither user names nor the layout of
  the machine are shown.

Nothing here imports other layers: the report and the server call it.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import PurePath, PurePosixPath, PureWindowsPath
from typing import Any

REDACTED = "***redacted***"
# Keys whose values are never shown (matched case-insensitively anywhere in the key).
SECRET_KEY = re.compile(
    r"pass(word|wd|phrase)?$|pwd|(^|_)pw$|secret|token|credential|api_?key|private_?key"
    r"|^auth($|_|orization)|_auth$|^uri$|_uri$|cookie|^session",
    re.I,
)
# Keys under which everything is an environment (names and values both withheld).
ENV_KEY = re.compile(r"^(env|environ|environment|env_?vars?|environment_?variables)$", re.I)
_URI_USER = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://)[^/\s@?#]+@")
_QUERY_SECRET = re.compile(
    r"([?&;](?:password|passwd|pwd|pass|token|secret|api_?key|access_?key|auth)=)[^&;#\s]*",
    re.I,
)
_PEM = re.compile(
    r"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----.*?(-----END \1PRIVATE KEY-----|$)", re.S
)
_ABS_PATH = re.compile(r"^(/|~[/\\]|[A-Za-z]:[\\/])[^\n]*$")


def redact_text(text: str, root: str | os.PathLike | None = None) -> str:
    """``text`` with URI credentials, secret query parameters and private-key blocks
    replaced, and shown relative to ``root`` if the whole string is an absolute path.

    Parameters
    ----------
    text
        Any string (a document value, a log line).
    root
        Folder that absolute paths are shown relative to (``None``: only their name).
    """
    if "://" in text:
        text = _URI_USER.sub(lambda m: m.group(1) + REDACTED + "@", text)
    if "=" in text:
        text = _QUERY_SECRET.sub(lambda m: m.group(1) + REDACTED, text)
    if "PRIVATE KEY" in text:
        text = _PEM.sub(REDACTED, text)
    if text[:1] in ("/", "~") or text[1:3] in (":\\", ":/"):
        if _ABS_PATH.match(text):
            return relative_path(text, root)
    return text


def relative_path(path: str, root: str | os.PathLike | None = None) -> str:
    """An absolute path as shown: relative to ``root`` below it, else ``.../name``."""
    flavour: type[PurePath] = PureWindowsPath if path[1:3] in (":\\", ":/") else PurePosixPath
    p = flavour(path)
    if root is not None:
        try:
            rel = p.relative_to(flavour(os.fspath(root)))
        except ValueError:
            pass
        else:
            return rel.as_posix() if str(rel) != "." else "."
    return ".../" + p.name if p.name else "..."


def redact(obj: Any, root: str | os.PathLike | None = None) -> Any:
    """A copy of ``obj`` (JSON-like: dicts, lists, scalars) with secrets withheld and
    absolute paths shown relative to ``root`` (see the module docstring).

    Parameters
    ----------
    obj
        A document, a list of them, or any value in one.
    root
        Folder that absolute paths are shown relative to (``None``: only their name).

    Examples
    --------
    >>> redact({"db_url": "mongodb://alice:hunter2@db.example/campaigns", "n": 3})
    {'db_url': 'mongodb://***redacted***@db.example/campaigns', 'n': 3}
    >>> redact({"env": {"SLURM_ACCOUNT": "x"}, "pwd": "hunter2"})
    {'env': '***redacted***', 'pwd': '***redacted***'}
    """
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if isinstance(k, str) and (SECRET_KEY.search(k) or ENV_KEY.match(k)):
                out[k] = REDACTED if v is not None else None
            else:
                out[k] = redact(v, root)
        return out
    if isinstance(obj, list | tuple):
        return [redact(v, root) for v in obj]
    if isinstance(obj, str):
        return redact_text(obj, root)
    if isinstance(obj, PurePath):
        return redact_text(str(obj), root)
    return obj


class RedactingFilter(logging.Filter):
    """A logging filter that passes every record's message through :func:`redact_text`
    (URI credentials, secret query parameters, key blocks; paths inside a longer
    message are left as they are).

    Parameters
    ----------
    root
        Folder that a message consisting of one absolute path is shown relative to.
    """

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        super().__init__()
        self.root = root

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's message (always keeps the record)."""
        message = record.getMessage()
        cleaned = redact_text(message, self.root)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        return True


def install_log_redaction(
    names: tuple[str, ...] = ("uvicorn", "uvicorn.error", "uvicorn.access", "alcampaign"),
    root: str | os.PathLike | None = None,
) -> RedactingFilter:
    """Add one :class:`RedactingFilter` to the named loggers (and their handlers, so
    records propagated from child loggers are filtered too); returns the filter."""
    filt = RedactingFilter(root)
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactingFilter) for f in logger.filters):
            logger.addFilter(filt)
        for handler in logger.handlers:
            if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                handler.addFilter(filt)
    return filt
