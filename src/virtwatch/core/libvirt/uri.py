"""Redaction of libvirt URIs: no credential reaches a log line, the screen or the store."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit

MASK = "***"
_MIN_SECRET_LEN = 4
# the words that name a secret or where one lives: the one vocabulary of what is masked,
# in a URI's query and in any record or document (see `is_secret_key`)
SECRET_WORDS = frozenset(
    {"password", "passwd", "pass", "secret", "token", "credential"}  # a key that says so
    | {"keyfile", "pkipath", "known_hosts", "auth"}  # libvirt's remote URI parameters
)
_SECRET_IN_KEY = re.compile("|".join(sorted(SECRET_WORDS, key=len, reverse=True)), re.I)
# a URI inside a sentence: trailing punctuation ("cannot connect to URI: ...") is not part
_URI_IN_TEXT = re.compile(r"[a-z][a-z0-9+.-]*://[^\s'\"]*[^\s'\".,:;)]", re.IGNORECASE)


def redact_uri(uri: str) -> str:
    """Return `uri` with any password and secret-bearing query values masked.

    The user name stays (admins need to see who they connect as); a password never does.
    """
    try:
        parts = urlsplit(uri)
    except ValueError:
        return MASK
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{MASK}@{hostport}" if ":" in userinfo else f"{user}@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_is_secret_param(k) for k, _ in pairs):  # else: the admin's spelling
            masked = [(k, MASK if _is_secret_param(k) else v) for k, v in pairs]
            query = urlencode(masked, safe="/*:@,")
    if netloc == parts.netloc and query == parts.query:
        return uri  # nothing secret; keep the admin's spelling (qemu:///system stays so)
    # build by hand: urlunsplit drops the empty authority of 'qemu:///system'
    out = f"{parts.scheme}://{netloc}{parts.path}"
    if query:
        out += f"?{query}"
    if parts.fragment:
        out += f"#{parts.fragment}"
    return out


def uri_secrets(uri: str) -> list[str]:
    """The secret parts of `uri` (its password, secret-bearing query values) as they may
    be quoted elsewhere in a message: ssh says "Identity file /root/k not accessible"."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return []
    found = [v for k, v in parse_qsl(parts.query) if _is_secret_param(k)]
    if parts.password:
        found.append(parts.password)
    # a very short value would mask letters all over a message (inside the URI itself
    # it is masked whatever its length)
    long_enough = {v for v in found if len(v) >= _MIN_SECRET_LEN}
    return sorted(long_enough, key=len, reverse=True)  # a longer secret before its prefix


def is_secret_key(key: str) -> bool:
    """Whether the value under `key` (a column, a context field, a setting) is masked: the
    key contains a secret word ("db_password", "apiToken", "Credentials")."""
    return _SECRET_IN_KEY.search(key) is not None


def _is_secret_param(name: str) -> bool:
    """A URI query parameter is one of libvirt's own names: matched whole, so that
    `known_hosts_verify=normal` or `sshauth=agent` stay readable."""
    return name.lower() in SECRET_WORDS


def redact_text(text: str) -> str:
    """Redact every URI found inside free text (libvirt error messages carry whole URIs)."""
    return _URI_IN_TEXT.sub(lambda m: redact_uri(m.group(0)), text)


def is_local(uri: str) -> bool:
    """True for a URI that reaches the hypervisor on this machine (no host part)."""
    return not urlsplit(uri).hostname


def driver_of(uri: str) -> str:
    """'qemu+ssh://h/system' -> 'qemu'."""
    return urlsplit(uri).scheme.split("+", 1)[0]
