from __future__ import annotations

import pytest

from virtwatch.core.libvirt.uri import (
    SECRET_WORDS,
    is_local,
    is_secret_key,
    redact_text,
    redact_uri,
    uri_secrets,
)


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
        # no secret in the query: the admin's own spelling, not re-encoded
        ("qemu+ssh://h/system?command=/opt/ssh:x&socket=/run/a,b", None),
        (
            "qemu+ssh://h:2/system?command=/opt/ssh:x&keyfile=/k",
            "qemu+ssh://h:2/system?command=/opt/ssh:x&keyfile=***",
        ),
    ],
)
def test_redact_uri(uri: str, expected: str | None) -> None:
    assert redact_uri(uri) == (uri if expected is None else expected)


def test_password_never_survives_in_text() -> None:
    msg = "unable to connect to 'qemu+tcp://bob:hunter2@10.0.0.5/system': refused"
    out = redact_text(msg)
    assert "hunter2" not in out
    assert "bob:***@10.0.0.5" in out


def test_punctuation_after_a_uri_in_text_is_not_part_of_it() -> None:
    msg = "cannot connect to qemu+ssh://root@h:2222/system?command=/opt/ssh: Cannot recv data"
    assert redact_text(msg) == msg
    msg = "cannot connect to qemu+tcp://u:pw@h/system: refused (see qemu:///system)."
    assert redact_text(msg) == (
        "cannot connect to qemu+tcp://u:***@h/system: refused (see qemu:///system)."
    )


def test_locality() -> None:
    assert is_local("qemu:///system")
    assert is_local("qemu+unix:///system?socket=/x")
    assert not is_local("qemu+ssh://h/system")


def test_uri_secrets_are_what_a_message_may_quote_elsewhere() -> None:
    uri = "qemu+libssh2://u:pw123@h/system?keyfile=/root/k&known_hosts=/root/kh&no_tty=1"
    assert uri_secrets(uri) == ["/root/kh", "/root/k", "pw123"]
    assert uri_secrets("qemu:///system") == []
    assert uri_secrets("qemu+tcp://[broken/system") == []
    assert uri_secrets("qemu+tcp://u:abc@h/system?keyfile=") == []  # too short to mask


def test_one_vocabulary_masks_uri_parameters_and_record_keys() -> None:
    for word in SECRET_WORDS:
        assert is_secret_key(word)
        assert is_secret_key(f"db_{word.upper()}")  # any key that contains one
        assert redact_uri(f"qemu+ssh://h/system?{word}=abcdef") == f"qemu+ssh://h/system?{word}=***"
    assert is_secret_key("apiToken")
    assert is_secret_key("Credentials")
    assert not is_secret_key("uri")
    assert not is_secret_key("vm_name")
    # a URI parameter is a libvirt name, matched whole: these say how, not what
    kept = "qemu+ssh://h/system?known_hosts_verify=normal&sshauth=agent"
    assert redact_uri(kept) == kept
