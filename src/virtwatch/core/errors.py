"""The error taxonomy: every failure an admin can see is an AppError with a code and a hint.

Codes are grouped as in the seed report (domain, system, network, auth, resource,
validation). `classify_libvirt` maps a libvirtError's (code, domain) to our codes as a
pure function; `from_libvirt` and `as_app_error` build AppErrors from exceptions.
"""

from __future__ import annotations

import dataclasses
import enum
import errno
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import libvirt

from virtwatch.core.libvirt.uri import MASK, redact_text, uri_secrets


class Category(enum.StrEnum):
    DOMAIN = "domain"
    SYSTEM = "system"
    NETWORK = "network"
    AUTH = "auth"
    RESOURCE = "resource"
    VALIDATION = "validation"


class Severity(enum.IntEnum):
    INFO = 10
    WARNING = 20
    ERROR = 30
    CRITICAL = 40

    @property
    def label(self) -> str:
        return self.name.lower()


class ErrorCode(enum.StrEnum):
    # domain (a VM or the libvirt connection that reaches it)
    MACHINE_NOT_FOUND = "MACHINE_NOT_FOUND"
    MACHINE_OPERATION_FAILED = "MACHINE_OPERATION_FAILED"
    MACHINE_INVALID_STATE = "MACHINE_INVALID_STATE"
    LIBVIRT_CONNECTION_FAILED = "LIBVIRT_CONNECTION_FAILED"
    LIBVIRT_CONNECTION_LOST = "LIBVIRT_CONNECTION_LOST"
    LIBVIRT_NOT_ANSWERING = "LIBVIRT_NOT_ANSWERING"  # connected, but calls get no reply
    # system
    DATABASE_ERROR = "DATABASE_ERROR"
    EXTERNAL_SERVICE_ERROR = "EXTERNAL_SERVICE_ERROR"
    INTERNAL_ERROR = "INTERNAL_ERROR"
    CANCELLED = "CANCELLED"  # a task or action was cancelled before it finished
    # network
    NETWORK_FILTER_ERROR = "NETWORK_FILTER_ERROR"
    FIREWALL_ERROR = "FIREWALL_ERROR"
    # auth
    UNAUTHORIZED = "UNAUTHORIZED"
    FORBIDDEN = "FORBIDDEN"
    # resource
    RESOURCE_NOT_FOUND = "RESOURCE_NOT_FOUND"
    RESOURCE_CONFLICT = "RESOURCE_CONFLICT"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    TIMEOUT = "TIMEOUT"
    # validation
    VALIDATION_ERROR = "VALIDATION_ERROR"
    INVALID_INPUT = "INVALID_INPUT"

    @property
    def category(self) -> Category:
        return _CATEGORY[self]


_CATEGORY: dict[ErrorCode, Category] = {
    ErrorCode.MACHINE_NOT_FOUND: Category.DOMAIN,
    ErrorCode.MACHINE_OPERATION_FAILED: Category.DOMAIN,
    ErrorCode.MACHINE_INVALID_STATE: Category.DOMAIN,
    ErrorCode.LIBVIRT_CONNECTION_FAILED: Category.DOMAIN,
    ErrorCode.LIBVIRT_CONNECTION_LOST: Category.DOMAIN,
    ErrorCode.LIBVIRT_NOT_ANSWERING: Category.DOMAIN,
    ErrorCode.DATABASE_ERROR: Category.SYSTEM,
    ErrorCode.EXTERNAL_SERVICE_ERROR: Category.SYSTEM,
    ErrorCode.INTERNAL_ERROR: Category.SYSTEM,
    ErrorCode.CANCELLED: Category.SYSTEM,
    ErrorCode.NETWORK_FILTER_ERROR: Category.NETWORK,
    ErrorCode.FIREWALL_ERROR: Category.NETWORK,
    ErrorCode.UNAUTHORIZED: Category.AUTH,
    ErrorCode.FORBIDDEN: Category.AUTH,
    ErrorCode.RESOURCE_NOT_FOUND: Category.RESOURCE,
    ErrorCode.RESOURCE_CONFLICT: Category.RESOURCE,
    ErrorCode.RESOURCE_EXHAUSTED: Category.RESOURCE,
    ErrorCode.TIMEOUT: Category.RESOURCE,
    ErrorCode.VALIDATION_ERROR: Category.VALIDATION,
    ErrorCode.INVALID_INPUT: Category.VALIDATION,
}


@dataclass(eq=False)
class AppError(Exception):
    """A failure described for an admin: what happened, how bad, what to try.

    Immutable once built. Every URI in `message`, `hint` and `context` is redacted at
    construction, so no credential can leave through an AppError. `cause` is the
    original exception (kept out of `repr`: its text may carry an unredacted URI).
    """

    code: ErrorCode
    message: str
    hint: str = ""
    severity: Severity = Severity.ERROR
    context: Mapping[str, str] = field(default_factory=dict)
    transient: bool = False  # worth retrying as-is
    libvirt_code: int | None = None
    libvirt_domain: int | None = None
    cause: BaseException | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        # secrets a URI carries may be quoted outside it (ssh: "Identity file /root/k"):
        # masked wherever they appear; the cause's text is computed once, here
        secrets = uri_secrets(str(self.context.get("uri", "")))

        def clean(text: str) -> str:
            text = redact_text(text)
            for secret in secrets:
                text = text.replace(secret, MASK)
            return text

        cause = "" if self.cause is None else f"{type(self.cause).__name__}: {self.cause}"
        object.__setattr__(self, "_cause_text", one_line(clean(cause)))
        self.message = clean(self.message)
        self.hint = clean(self.hint)
        self.context = {k: redact_text(str(v)) for k, v in self.context.items()}
        Exception.__init__(self, self.message)
        object.__setattr__(self, "_sealed", True)

    def __setattr__(self, name: str, value: object) -> None:
        # not a frozen dataclass: Python itself sets __traceback__/__notes__ on exceptions,
        # so only the fields (a subclass's too) are sealed once built
        if name in type(self).__dataclass_fields__ and self.__dict__.get("_sealed", False):
            raise AttributeError(f"{type(self).__name__} is immutable: cannot set {name!r}")
        object.__setattr__(self, name, value)

    def __reduce__(self) -> tuple[Any, ...]:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}
        # the cause's masked text goes along: rebuilt, the context's URI is redacted
        # already and no longer says which secrets to mask
        return (_rebuild, (type(self), values, self.cause_text))

    def __str__(self) -> str:
        return self.message

    @property
    def category(self) -> Category:
        return self.code.category

    @property
    def cause_text(self) -> str:
        """`Type: text` of the cause, redacted, on one line; "" without a cause."""
        text: str = self.__dict__["_cause_text"]
        return text

    def one_line(self) -> str:
        """`message — hint` for a terminal line or a toast, on one line."""
        return one_line(f"{self.message} — {self.hint}" if self.hint else self.message)

    def as_dict(self) -> dict[str, object]:
        """JSON-safe fields for `--json` output and the store."""
        return {
            "code": self.code.value,
            "category": self.category.value,
            "severity": self.severity.label,
            "message": self.message,
            "hint": self.hint,
            "context": dict(self.context),
            "transient": self.transient,
            "libvirt_code": self.libvirt_code,
            "libvirt_domain": self.libvirt_domain,
            "cause": self.cause_text,
        }


def _rebuild(cls: type[AppError], fields: dict[str, Any], cause_text: str) -> AppError:
    err = cls(**fields)
    object.__setattr__(err, "_cause_text", cause_text)
    return err


# --- libvirt errors -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LibvirtRule:
    """What a libvirt (code, domain, message) means for an admin."""

    code: ErrorCode
    hint: str
    severity: Severity = Severity.ERROR
    transient: bool = False


_E = libvirt
_CONNECTION_DOMAINS = frozenset(
    {_E.VIR_FROM_RPC, _E.VIR_FROM_REMOTE, _E.VIR_FROM_SSH, _E.VIR_FROM_LIBSSH}
)
# RPC messages that can only come from establishing a connection, not from losing one
_CONNECT_FAILURE = re.compile(
    r"failed to connect socket|unable to connect to server|cannot connect|connection refused"
    r"|no route to host|name or service not known|certificate",
    re.IGNORECASE,
)
_LINE_BREAKS = re.compile(r"\s*[\r\n]+\s*")


def one_line(text: str) -> str:
    """`text` with its line breaks folded: ssh passes on several lines of its stderr."""
    return _LINE_BREAKS.sub(" ", text.strip())


# a TLS setup that cannot work: retrying does not make a CA certificate appear
# (libvirt's own words for certificate files and trust; a handshake cut short, or a host
# named "tls01", is an ordinary outage and stays transient)
_TLS_SETUP = re.compile(
    r"cannot read (ca |client |server )?certificate|cannot read (client |server )?private key"
    r"|unable to (import|load) (ca |client |server )?(certificate|private key)"
    r"|certificate [^,;]*\b(expired|not yet active|not trusted|revoked)"
    r"|failed to verify peer's certificate",
    re.IGNORECASE,
)
# ssh's own words, passed on by libvirt's ssh transport when the login fails
_SSH_LOGIN_REFUSED = re.compile(
    r"permission denied \(|host key verification failed|too many authentication failures"
    r"|host key for .* has changed",
    re.IGNORECASE,
)
# the test driver reports state conflicts as internal errors (libvirt 9.0); QEMU uses 55
_TEST_STATE_CONFLICT = re.compile(r"already running|not paused|not running", re.IGNORECASE)

_NOT_FOUND_OTHER = frozenset(
    {
        _E.VIR_ERR_NO_NETWORK,
        _E.VIR_ERR_NO_STORAGE_POOL,
        _E.VIR_ERR_NO_STORAGE_VOL,
        _E.VIR_ERR_NO_NODE_DEVICE,
        _E.VIR_ERR_NO_SECRET,
        _E.VIR_ERR_NO_INTERFACE,
        _E.VIR_ERR_NO_DOMAIN_SNAPSHOT,
        _E.VIR_ERR_NO_DOMAIN_CHECKPOINT,
        _E.VIR_ERR_NO_DOMAIN_METADATA,
        _E.VIR_ERR_NO_NETWORK_PORT,
        _E.VIR_ERR_DEVICE_MISSING,
    }
)
_CONFLICT = frozenset(
    {
        _E.VIR_ERR_DOM_EXIST,
        _E.VIR_ERR_NETWORK_EXIST,
        _E.VIR_ERR_STORAGE_VOL_EXIST,
        _E.VIR_ERR_NETWORK_PORT_EXIST,
        _E.VIR_ERR_MULTIPLE_DOMAINS,
        _E.VIR_ERR_BLOCK_COPY_ACTIVE,
    }
)
_BAD_INPUT = frozenset(
    {
        _E.VIR_ERR_INVALID_ARG,
        _E.VIR_ERR_XML_ERROR,
        _E.VIR_ERR_XML_DETAIL,
        _E.VIR_ERR_XML_INVALID_SCHEMA,
        _E.VIR_ERR_CONFIG_UNSUPPORTED,
        _E.VIR_ERR_INVALID_MAC,
        _E.VIR_ERR_CONF_SYNTAX,
    }
)
_UNSUPPORTED = frozenset(
    {_E.VIR_ERR_NO_SUPPORT, _E.VIR_ERR_OPERATION_UNSUPPORTED, _E.VIR_ERR_ARGUMENT_UNSUPPORTED}
)
_AUTH_CODES = frozenset(
    {_E.VIR_ERR_AUTH_FAILED, _E.VIR_ERR_AUTH_CANCELLED, _E.VIR_ERR_AUTH_UNAVAILABLE}
)

HINT_DAEMON = "is libvirtd running and is the URI right? Try `virsh -c URI list`"
HINT_SSH_LOGIN = (
    "ssh could not log in: virtwatch runs ssh without a terminal, so `ssh USER@HOST` must "
    "work without any prompt: a key in ssh-agent or keyfile= in the URI, and the host key "
    "already in known_hosts"
)
HINT_SSH = (
    "the ssh transport failed: `virsh -c URI list` shows ssh's own words; check the host "
    "name and port, that sshd answers, and that libvirt runs there"
)
HINT_TLS = (
    "TLS could not be set up: libvirt uses TLS for a URI that names a host without a "
    "+transport, so check the scheme's spelling (qemu+ssh://user@host/system), or the CA "
    "and client certificates under /etc/pki"
)
HINT_LOST = (
    "libvirtd dropped the connection (restarted, stopped or unreachable); virtwatch "
    "reconnects on its own. Check that libvirtd is running"
)


def _state_hint(message: str) -> str:
    low = message.lower()
    if "already running" in low:
        return "the VM is already running"
    if "not paused" in low:
        return "the VM is not paused; only a paused VM can be resumed"
    if "not running" in low:
        return "the VM is not running; start it first"
    return "the VM is not in a state that allows this; check its current state"


def classify_libvirt(
    code: int, domain: int, message: str = "", *, opening: bool | None = None, ssh: bool = False
) -> LibvirtRule:
    """The rule for a libvirt error. `opening`: True when it came from opening a
    connection, False from a call on an open one, None to tell from the message; `ssh`:
    the connection's transport is ssh (its failures carry ssh's own message)."""
    if code == _E.VIR_ERR_NO_DOMAIN:
        return LibvirtRule(
            ErrorCode.MACHINE_NOT_FOUND,
            "the VM is not defined on this host; check the name with `virsh list --all`",
            Severity.WARNING,
        )
    if code in _NOT_FOUND_OTHER:
        return LibvirtRule(
            ErrorCode.RESOURCE_NOT_FOUND,
            "it is not defined on this host (any more); refresh and check the name",
            Severity.WARNING,
        )
    if code == _E.VIR_ERR_OPERATION_INVALID or (
        code == _E.VIR_ERR_INTERNAL_ERROR
        and domain == _E.VIR_FROM_TEST
        and _TEST_STATE_CONFLICT.search(message)
    ):
        return LibvirtRule(ErrorCode.MACHINE_INVALID_STATE, _state_hint(message), Severity.WARNING)
    if domain == _E.VIR_FROM_URI:
        return LibvirtRule(
            ErrorCode.LIBVIRT_CONNECTION_FAILED,
            "the URI is malformed; see https://libvirt.org/uri.html, e.g. "
            "qemu:///system or qemu+ssh://user@host/system",
        )
    if code == _E.VIR_ERR_NO_CONNECT:
        return LibvirtRule(
            ErrorCode.LIBVIRT_CONNECTION_FAILED,
            "no libvirt driver handles this URI: check the scheme's spelling (qemu:///system, "
            "qemu+ssh://user@host/system, test:///default) and that its driver is installed",
        )
    if domain == _E.VIR_FROM_AUTH and code not in _AUTH_CODES:
        return LibvirtRule(
            ErrorCode.UNAUTHORIZED,
            "this host asks for credentials and none were given: configure them for this "
            "host (ssh keys or agent, SASL user); they are never shown or stored",
        )
    if domain == _E.VIR_FROM_AUTH or code in _AUTH_CODES:
        return LibvirtRule(
            ErrorCode.UNAUTHORIZED,
            "the credentials were refused: check them for this URI (ssh keys/agent, "
            "SASL user and password, TLS certificates)",
        )
    if code == _E.VIR_ERR_OPERATION_DENIED:
        return LibvirtRule(
            ErrorCode.FORBIDDEN,
            "the connection is read-only (--read-only or the read-only socket); reconnect "
            "read-write as a user allowed to manage VMs",
        )
    if code == _E.VIR_ERR_ACCESS_DENIED or domain in (_E.VIR_FROM_ACCESS, _E.VIR_FROM_POLKIT):
        return LibvirtRule(
            ErrorCode.FORBIDDEN,
            "libvirt's access policy (polkit or ACL) denies this to the connecting user",
        )
    if code == _E.VIR_ERR_OPERATION_TIMEOUT:
        return LibvirtRule(
            ErrorCode.TIMEOUT,
            "another job holds the VM's lock (QEMU may be hung); retry later or check the "
            "QEMU process of this VM",
            Severity.ERROR,
            transient=True,
        )
    if code in (_E.VIR_ERR_AGENT_UNRESPONSIVE, _E.VIR_ERR_AGENT_UNSYNCED):
        return LibvirtRule(
            ErrorCode.TIMEOUT,
            "the guest agent did not answer; is qemu-guest-agent running in the VM?",
            Severity.WARNING,
            transient=True,
        )
    if code == _E.VIR_ERR_INVALID_CONN:
        return LibvirtRule(
            ErrorCode.LIBVIRT_CONNECTION_LOST, HINT_LOST, Severity.CRITICAL, transient=True
        )
    if domain in _CONNECTION_DOMAINS or code in (
        _E.VIR_ERR_SYSTEM_ERROR,
        _E.VIR_ERR_RPC,
        _E.VIR_ERR_SSH,
        _E.VIR_ERR_LIBSSH,
        _E.VIR_ERR_GNUTLS_ERROR,
        _E.VIR_ERR_UNKNOWN_HOST,
        _E.VIR_ERR_NO_SERVER,
    ):
        if (
            domain not in _CONNECTION_DOMAINS
            and code == _E.VIR_ERR_SYSTEM_ERROR
            and opening is not True
        ):
            # a system error inside a driver (a file, a process), not the transport
            return LibvirtRule(
                ErrorCode.MACHINE_OPERATION_FAILED,
                "the hypervisor host refused a system call; see the libvirtd log for details",
            )
        failed = opening if opening is not None else bool(_CONNECT_FAILURE.search(message))
        if failed and _SSH_LOGIN_REFUSED.search(message):
            # a refused login does not get better by retrying: down, not a retry storm
            return LibvirtRule(ErrorCode.UNAUTHORIZED, HINT_SSH_LOGIN, Severity.CRITICAL)
        if failed and not ssh and _TLS_SETUP.search(message):
            return LibvirtRule(ErrorCode.LIBVIRT_CONNECTION_FAILED, HINT_TLS, Severity.CRITICAL)
        if failed:
            return LibvirtRule(
                ErrorCode.LIBVIRT_CONNECTION_FAILED,
                HINT_SSH if ssh else HINT_DAEMON,
                Severity.CRITICAL,
                transient=True,
            )
        return LibvirtRule(
            ErrorCode.LIBVIRT_CONNECTION_LOST, HINT_LOST, Severity.CRITICAL, transient=True
        )
    if code in _BAD_INPUT:
        return LibvirtRule(ErrorCode.INVALID_INPUT, "check the value given")
    if code in _UNSUPPORTED:
        return LibvirtRule(
            ErrorCode.MACHINE_OPERATION_FAILED,
            "this hypervisor or its driver does not support that",
        )
    if code in _CONFLICT:
        return LibvirtRule(
            ErrorCode.RESOURCE_CONFLICT, "something with that name or in that place already exists"
        )
    if code == _E.VIR_ERR_RESOURCE_BUSY:
        return LibvirtRule(
            ErrorCode.RESOURCE_CONFLICT, "the resource is busy; retry later", transient=True
        )
    if code == _E.VIR_ERR_NO_MEMORY:
        return LibvirtRule(
            ErrorCode.RESOURCE_EXHAUSTED,
            "the host ran out of memory; free memory on the hypervisor",
            Severity.CRITICAL,
        )
    if domain == _E.VIR_FROM_NWFILTER or code in (
        _E.VIR_ERR_NO_NWFILTER,
        _E.VIR_ERR_INVALID_NWFILTER,
        _E.VIR_ERR_NO_NWFILTER_BINDING,
    ):
        return LibvirtRule(
            ErrorCode.NETWORK_FILTER_ERROR, "check the VM's network filter (virsh nwfilter-list)"
        )
    if domain in (_E.VIR_FROM_FIREWALL, _E.VIR_FROM_FIREWALLD) or code == _E.VIR_ERR_BUILD_FIREWALL:
        return LibvirtRule(
            ErrorCode.FIREWALL_ERROR, "check the host firewall (firewalld/nftables) and its log"
        )
    if code == _E.VIR_ERR_OPERATION_ABORTED:
        return LibvirtRule(
            ErrorCode.MACHINE_OPERATION_FAILED, "the job was aborted before it finished"
        )
    return LibvirtRule(
        ErrorCode.MACHINE_OPERATION_FAILED,
        "see the libvirtd log (journalctl -u libvirtd or /var/log/libvirt) for details",
    )


def from_libvirt(
    err: libvirt.libvirtError,
    *,
    uri: str | None = None,
    what: str = "",
    vm: str | None = None,
    opening: bool | None = None,
) -> AppError:
    """Map a libvirtError to an AppError with a hint. URIs in the message are redacted.

    Pass `opening=True` from code that opens connections: a transport error there means
    "cannot connect" (LIBVIRT_CONNECTION_FAILED), on an open connection "lost".
    """
    code = err.get_error_code() or 0
    domain = err.get_error_domain() or 0
    raw = one_line(str(err.get_error_message() or err))  # (AppError masks its secrets)
    scheme = uri.split(":", 1)[0].lower() if uri is not None else ""
    rule = classify_libvirt(code, domain, raw, opening=opening, ssh=scheme.endswith("ssh"))
    ctx: dict[str, str] = {"libvirt_code": str(code), "libvirt_domain": str(domain)}
    if uri is not None:
        ctx["uri"] = uri
    if vm is not None:
        ctx["vm"] = vm
    prefix = f"{what}: " if what else ""
    return AppError(
        rule.code,
        prefix + raw,
        rule.hint,
        rule.severity,
        ctx,
        rule.transient,
        code,
        domain,
        err,
    )


# --- any exception --------------------------------------------------------------------


def is_transient(exc: BaseException) -> bool:
    """Worth retrying as-is. Never true for cancellation or anything not an Exception."""
    if not isinstance(exc, Exception):
        return False
    if isinstance(exc, AppError):
        return exc.transient
    if isinstance(exc, libvirt.libvirtError):
        code = exc.get_error_code() or 0
        domain = exc.get_error_domain() or 0
        return classify_libvirt(code, domain, str(exc.get_error_message() or "")).transient
    return isinstance(exc, (TimeoutError, ConnectionError))


def as_app_error(
    exc: BaseException, *, what: str = "", uri: str | None = None, vm: str | None = None
) -> AppError:
    """Any exception as an AppError: itself, a mapped libvirtError, or an internal error."""
    if isinstance(exc, AppError):
        return exc
    if isinstance(exc, libvirt.libvirtError):
        return from_libvirt(exc, uri=uri, what=what, vm=vm)
    ctx: dict[str, str] = {}
    if uri is not None:
        ctx["uri"] = uri
    if vm is not None:
        ctx["vm"] = vm
    prefix = f"{what}: " if what else ""
    if isinstance(exc, TimeoutError):
        return AppError(
            ErrorCode.TIMEOUT,
            f"{prefix}timed out",
            "the host or VM is slow or hung; it is retried if the task allows",
            Severity.ERROR,
            ctx,
            transient=True,
            cause=exc,
        )
    if isinstance(exc, ConnectionError):
        return AppError(
            ErrorCode.EXTERNAL_SERVICE_ERROR,
            f"{prefix}{exc}",
            "the remote end closed or refused the connection",
            Severity.ERROR,
            ctx,
            transient=True,
            cause=exc,
        )
    text = str(exc)
    return AppError(
        ErrorCode.INTERNAL_ERROR,
        f"{prefix}{type(exc).__name__}{': ' + text if text else ''}",
        "this is a bug in virtwatch; the error log has the details",
        Severity.ERROR,
        ctx,
        cause=exc,
    )


def write_error(path: Path | str, err: OSError) -> AppError:
    """A file that could not be written, as one line naming it and the reason."""
    reason = err.strerror or err.__class__.__name__
    codes = {
        errno.ENOSPC: ErrorCode.RESOURCE_EXHAUSTED,
        errno.EACCES: ErrorCode.FORBIDDEN,
        errno.EPERM: ErrorCode.FORBIDDEN,
        errno.EROFS: ErrorCode.FORBIDDEN,
        errno.ENOENT: ErrorCode.RESOURCE_NOT_FOUND,
    }
    return AppError(
        codes.get(err.errno or 0, ErrorCode.FORBIDDEN),
        f"cannot write {path}: {reason}",
        "check that the directory exists and is writable, and that the disk has room",
        Severity.ERROR,
        {"path": str(path)},
        cause=err,
    )
