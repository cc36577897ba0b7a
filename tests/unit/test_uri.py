from __future__ import annotations

import pytest

from virtwatch.core.uri import is_local, redact_text, redact_uri


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("qemu:///system", "qemu:///system"),
        ("test:///default", "test:///default"),
        ("qemu+ssh://admin@hv1/system?no_tty=1", "qemu+ssh://admin@hv1/system?no_tty=1"),
        ("qemu+ssh://admin:s3cret@hv1:2222/system", "qemu+ssh://admin:***@hv1:2222/system"),
        (
            "qemu+libssh2://u@h/system?keyfile=/root/.ssh/id_ed25519&known_hosts=/k",
            "qemu+libssh2://u@h/system?keyfile=***&known_hosts=***",
        ),
        ("qemu+tls://h/system?pkipath=/etc/pki/x", "qemu+tls://h/system?pkipath=***"),
    ],
)
def test_redact_uri(uri: str, expected: str) -> None:
    assert redact_uri(uri) == expected


def test_password_never_survives_in_text() -> None:
    msg = "unable to connect to 'qemu+tcp://bob:hunter2@10.0.0.5/system': refused"
    out = redact_text(msg)
    assert "hunter2" not in out
    assert "bob:***@10.0.0.5" in out


def test_locality() -> None:
    assert is_local("qemu:///system")
    assert is_local("qemu+unix:///system?socket=/x")
    assert not is_local("qemu+ssh://h/system")
