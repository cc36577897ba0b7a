"""The error taxonomy: every failure an admin can see is an AppError with a code and a hint.

Codes are grouped as in the seed report (domain, system, network, auth, resource,
validation). `from_libvirt` maps libvirtError (code, domain) to our codes.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

import libvirt

from virtwatch.core.uri import redact_text


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
    # domain
    MACHINE_NOT_FOUND = "MACHINE_NOT_FOUND"
    MACHINE_OPERATION_FAILED = "MACHINE_OPERATION_FAILED"
    MACHINE_INVALID_STATE = "MACHINE_INVALID_STATE"
    LIBVIRT_CONNECTION_FAILED = "LIBVIRT_CONNECTION_FAILED"
    LIBVIRT_CONNECTION_LOST = "LIBVIRT_CONNECTION_LOST"
    # system
    DATABASE_ERROR = "DATABASE_ERROR"
    EXTERNAL_SERVICE_ERROR = "EXTERNAL_SERVICE_ERROR"
    INTERNAL_ERROR = "INTERNAL_ERROR"
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
    ErrorCode.DATABASE_ERROR: Category.SYSTEM,
    ErrorCode.EXTERNAL_SERVICE_ERROR: Category.SYSTEM,
    ErrorCode.INTERNAL_ERROR: Category.SYSTEM,
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


@dataclass(frozen=True, eq=False)
class AppError(Exception):
    """A failure described for an admin: what happened, how bad, what to try."""

    code: ErrorCode
    message: str
    hint: str = ""
    severity: Severity = Severity.ERROR
    context: Mapping[str, str] = field(default_factory=dict)
    transient: bool = False  # worth retrying as-is
    libvirt_code: int | None = None
    libvirt_domain: int | None = None

    def __post_init__(self) -> None:
        Exception.__init__(self, self.message)

    def __str__(self) -> str:
        return self.message

    def one_line(self) -> str:
        """`message (hint)` for a terminal line or a toast."""
        return f"{self.message} — {self.hint}" if self.hint else self.message


# libvirt error codes by number; libvirt.py exposes these, names kept for readability
_NO_CONNECT = libvirt.VIR_ERR_NO_CONNECT
_SYSTEM_ERROR = libvirt.VIR_ERR_SYSTEM_ERROR
_RPC_DOMAIN = libvirt.VIR_FROM_RPC


def from_libvirt(
    err: libvirt.libvirtError, *, uri: str | None = None, what: str = "", vm: str | None = None
) -> AppError:
    """Map a libvirtError to an AppError with a hint. Messages are redacted of URIs."""
    code = err.get_error_code() or 0
    domain = err.get_error_domain() or 0
    raw = redact_text(str(err.get_error_message() or err))
    ctx: dict[str, str] = {"libvirt_code": str(code), "libvirt_domain": str(domain)}
    if uri is not None:
        ctx["uri"] = redact_text(uri)
    if vm is not None:
        ctx["vm"] = vm
    prefix = f"{what}: " if what else ""

    def make(
        ec: ErrorCode, hint: str, sev: Severity = Severity.ERROR, *, transient: bool = False
    ) -> AppError:
        return AppError(ec, prefix + raw, hint, sev, ctx, transient, code, domain)

    if code == libvirt.VIR_ERR_NO_DOMAIN:
        return make(
            ErrorCode.MACHINE_NOT_FOUND,
            "the VM is not defined on this host; check the name with `virsh list --all`",
            Severity.WARNING,
        )
    if code == libvirt.VIR_ERR_OPERATION_INVALID:
        return make(
            ErrorCode.MACHINE_INVALID_STATE,
            "the VM is not in a state that allows this; check its current state",
            Severity.WARNING,
        )
    if domain == libvirt.VIR_FROM_URI:
        return make(
            ErrorCode.INVALID_INPUT,
            "the URI is malformed; see https://libvirt.org/uri.html, e.g. "
            "qemu:///system or qemu+ssh://user@host/system",
        )
    if domain == libvirt.VIR_FROM_AUTH or code in (
        libvirt.VIR_ERR_AUTH_FAILED,
        libvirt.VIR_ERR_AUTH_CANCELLED,
        libvirt.VIR_ERR_AUTH_UNAVAILABLE,
    ):
        return make(
            ErrorCode.UNAUTHORIZED,
            "check the credentials for this URI (ssh keys/agent, SASL user, TLS certs)",
        )
    if code in (libvirt.VIR_ERR_OPERATION_DENIED, libvirt.VIR_ERR_ACCESS_DENIED):
        return make(
            ErrorCode.FORBIDDEN,
            "the connection is read-only or policy denies it; reconnect read-write as a "
            "user allowed to manage VMs",
        )
    if code == libvirt.VIR_ERR_OPERATION_TIMEOUT:
        return make(
            ErrorCode.TIMEOUT,
            "the VM's job lock is held (QEMU may be hung); retry later or check the QEMU process",
            transient=True,
        )
    if code == libvirt.VIR_ERR_INVALID_CONN or domain == _RPC_DOMAIN:
        return make(
            ErrorCode.LIBVIRT_CONNECTION_LOST,
            "libvirtd dropped the connection; virtwatch reconnects on its own. "
            "Check that libvirtd is running",
            Severity.CRITICAL,
            transient=True,
        )
    if code in (_NO_CONNECT, _SYSTEM_ERROR) or domain == libvirt.VIR_FROM_REMOTE:
        return make(
            ErrorCode.LIBVIRT_CONNECTION_FAILED,
            "is libvirtd running and is the URI right? Try `virsh -c URI list`",
            Severity.CRITICAL,
            transient=True,
        )
    if code in (
        libvirt.VIR_ERR_INVALID_ARG,
        libvirt.VIR_ERR_XML_ERROR,
        libvirt.VIR_ERR_CONFIG_UNSUPPORTED,
    ):
        return make(ErrorCode.INVALID_INPUT, "check the value given")
    return make(
        ErrorCode.MACHINE_OPERATION_FAILED,
        "see the libvirtd log (journalctl -u libvirtd or /var/log/libvirt) for details",
    )
