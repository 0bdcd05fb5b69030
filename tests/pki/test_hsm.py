"""The evidence key on a PKCS#11 token (SoftHSM2), and the PIN setting."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import pkcs11
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from palais.pki import certbuilder
from palais.pki.hsm import HsmConfigError, Pkcs11Key, open_pkcs11_key, pin_from
from palais.pki.signing import EvidenceKey, EvidenceUnavailable, load_certificates
from tests.pki.softhsm import SoftHsmToken, add_softhsm_token, make_softhsm_token


class OpenKey(Protocol):
    def __call__(
        self,
        *,
        module: str | None = None,
        token: str | None = None,
        key_label: str | None = None,
        pin: str | None = None,
        certificate: Path | None = None,
    ) -> Pkcs11Key: ...


@pytest.fixture
def softhsm_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SoftHsmToken:
    """A token of this test's own (skips the test if SoftHSM2 is not installed)."""
    return make_softhsm_token(tmp_path / "softhsm", monkeypatch)


@pytest.fixture
def open_key(softhsm_token: SoftHsmToken) -> Iterator[OpenKey]:
    """open_pkcs11_key with the token's settings unless overridden; closes what it opened.

    Closing matters across tests: the PKCS#11 library stays loaded, and a
    session left logged in would outlive its test.
    """
    opened: list[Pkcs11Key] = []

    def open_(
        *,
        module: str | None = None,
        token: str | None = None,
        key_label: str | None = None,
        pin: str | None = None,
        certificate: Path | None = None,
    ) -> Pkcs11Key:
        t = softhsm_token
        key = open_pkcs11_key(
            module if module is not None else t.module,
            token if token is not None else t.token,
            key_label if key_label is not None else t.key_label,
            pin if pin is not None else t.pin,
            certificate if certificate is not None else t.certificate,
        )
        opened.append(key)
        return key

    yield open_
    for key in opened:
        key.close()


def _verifies(key: EvidenceKey, signature: bytes, data: bytes) -> bool:
    public = key.certificate.public_key()
    try:
        if isinstance(public, ec.EllipticCurvePublicKey):
            public.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        else:
            assert isinstance(public, rsa.RSAPublicKey)
            public.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
    except Exception:
        return False
    return True


# --- signatures ---------------------------------------------------------------------------


def test_ec_signatures_verify_with_the_certificate(
    open_key: OpenKey,
    softhsm_token: SoftHsmToken,
) -> None:
    key: EvidenceKey = open_key()
    assert key.certificate == load_certificates(softhsm_token.certificate)[0]
    assert key.chain == ()
    for data in (b"", b"receipt", os.urandom(100_000)):
        signature = key.sign(data)
        # DER ECDSA-Sig-Value, not PKCS#11's raw r||s (64 bytes for P-256).
        assert signature[0] == 0x30 and len(signature) != 64
        assert _verifies(key, signature, data)
        assert not _verifies(key, signature, data + b"!")


def test_rsa_signatures_verify_with_the_certificate(
    open_key: OpenKey,
    softhsm_token: SoftHsmToken,
    tmp_path: Path,
) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    softhsm_token.import_key(private, label="evidence-rsa", key_id="02")
    certificate = softhsm_token.issue(private, tmp_path / "rsa.pem")

    key = open_key(key_label="evidence-rsa", certificate=certificate)
    signature = key.sign(b"receipt")
    assert len(signature) == 256
    assert _verifies(key, signature, b"receipt")
    assert not _verifies(key, signature, b"receipt!")


def test_chain_is_read_after_the_certificate(
    open_key: OpenKey,
    softhsm_token: SoftHsmToken,
    tmp_path: Path,
) -> None:
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(
        softhsm_token.certificate.read_bytes()
        + softhsm_token.ca.cert.public_bytes(serialization.Encoding.PEM)
    )
    key = open_key(certificate=bundle)
    assert key.certificate == load_certificates(softhsm_token.certificate)[0]
    assert key.chain == (softhsm_token.ca.cert,)


def test_eight_threads_sign_at_once(open_key: OpenKey) -> None:
    key = open_key()
    per_thread = 40
    results: list[tuple[bytes, bytes]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(8)
    results_lock = threading.Lock()

    def worker(n: int) -> None:
        try:
            start.wait()
            for i in range(per_thread):
                data = f"receipt {n}-{i}".encode()
                signature = key.sign(data)
                with results_lock:
                    results.append((data, signature))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert len(results) == 8 * per_thread
    assert all(_verifies(key, signature, data) for data, signature in results)


# --- refused at open ----------------------------------------------------------------------


def test_wrong_pin_is_refused_at_open(open_key: OpenKey, softhsm_token: SoftHsmToken) -> None:
    with pytest.raises(HsmConfigError, match="refused the PIN") as caught:
        open_key(pin="0000wrong")
    assert softhsm_token.token in str(caught.value)
    assert "0000wrong" not in str(caught.value)


def test_wrong_key_label_is_refused_at_open_naming_the_keys_there(open_key: OpenKey) -> None:
    with pytest.raises(
        HsmConfigError,
        match=r"no private key labelled 'signing' on token .*\(private keys there: 'evidence'\)",
    ):
        open_key(key_label="signing")


def test_wrong_token_label_is_refused_at_open(
    open_key: OpenKey,
    softhsm_token: SoftHsmToken,
) -> None:
    with pytest.raises(HsmConfigError, match=r"no token labelled 'elsewhere' in .*tokens there: "):
        open_key(token="elsewhere")


def test_missing_module_is_refused_at_open(open_key: OpenKey, tmp_path: Path) -> None:
    with pytest.raises(HsmConfigError, match="cannot load the PKCS#11 module"):
        open_key(module=str(tmp_path / "libnothing.so"))


def test_a_certificate_of_another_key_is_refused_at_open(
    open_key: OpenKey,
    softhsm_token: SoftHsmToken,
    tmp_path: Path,
) -> None:
    other = softhsm_token.issue(certbuilder.new_key(), tmp_path / "other.pem")
    with pytest.raises(
        HsmConfigError,
        match=r"key 'evidence' on token .* is not the key of the certificate .*other\.pem",
    ):
        open_key(certificate=other)


def test_a_certificate_of_another_key_type_is_refused_at_open(
    open_key: OpenKey,
    softhsm_token: SoftHsmToken,
    tmp_path: Path,
) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other = softhsm_token.issue(private, tmp_path / "rsa.pem")
    with pytest.raises(HsmConfigError, match=r"is an EC key but the certificate .* RSA key"):
        open_key(certificate=other)


# --- out of service, and back -------------------------------------------------------------


def test_a_removed_token_makes_evidence_unavailable_until_it_is_back(
    open_key: OpenKey,
    softhsm_token: SoftHsmToken,
    tmp_path: Path,
) -> None:
    key = open_key()
    assert _verifies(key, key.sign(b"before"), b"before")

    directory = softhsm_token.token_directory
    aside = tmp_path / "aside"
    directory.rename(aside)
    with pytest.raises(EvidenceUnavailable) as caught:
        key.sign(b"while removed")
    assert softhsm_token.token in caught.value.reason
    assert caught.value.kind.permanent is False
    # Still out: the next attempt reopens, finds no token, and says so.
    with pytest.raises(EvidenceUnavailable, match="cannot reopen a session"):
        key.sign(b"still removed")

    aside.rename(directory)
    assert _verifies(key, key.sign(b"after"), b"after")
    assert _verifies(key, key.sign(b"after, again"), b"after, again")


def test_a_session_closed_underneath_is_reopened(open_key: OpenKey) -> None:
    key = open_key()
    assert _verifies(key, key.sign(b"before"), b"before")
    # What an HSM restart or a logout by another tool does to our session.
    session = key._session
    assert session is not None
    session.close()

    with pytest.raises(EvidenceUnavailable, match="failed to sign"):
        key.sign(b"closed underneath")
    assert _verifies(key, key.sign(b"after"), b"after")


def test_a_library_reinitialised_underneath_is_reopened(
    open_key: OpenKey,
    softhsm_token: SoftHsmToken,
) -> None:
    key = open_key()
    assert _verifies(key, key.sign(b"before"), b"before")
    # Every session of the process is gone, as after a device reset.
    library = pkcs11.lib(os.path.realpath(softhsm_token.module))
    library.reinitialize()

    with pytest.raises(EvidenceUnavailable):
        key.sign(b"reset underneath")
    assert _verifies(key, key.sign(b"after"), b"after")


def test_keys_on_two_tokens_of_one_library_survive_each_others_recovery(
    open_key: OpenKey, softhsm_token: SoftHsmToken, tmp_path: Path
) -> None:
    other = add_softhsm_token(softhsm_token, tmp_path / "other.pem")
    first = open_key()
    second = open_key(token=other.token, pin=other.pin, certificate=other.certificate)

    softhsm_token.token_directory.rename(tmp_path / "aside")
    with pytest.raises(EvidenceUnavailable):
        first.sign(b"removed")
    (tmp_path / "aside").rename(softhsm_token.token_directory)
    # first re-initialises the library to find its token again...
    assert _verifies(first, first.sign(b"back"), b"back")
    # ...which voids second's session too: second reopens before it signs
    # (no failure), and must not close first's new session, whose handle
    # may be the number its own old one had.
    assert _verifies(second, second.sign(b"back"), b"back")
    assert _verifies(first, first.sign(b"still"), b"still")


def test_a_token_is_opened_by_one_key_at_a_time(
    open_key: OpenKey, softhsm_token: SoftHsmToken, tmp_path: Path
) -> None:
    first = open_key()
    second_private = certbuilder.new_key()
    softhsm_token.import_key(second_private, label="second", key_id="02")
    second_certificate = softhsm_token.issue(second_private, tmp_path / "second.pem")
    # One login per token and process: a second key's logout would log the first out.
    with pytest.raises(HsmConfigError, match=r"token .* is already open in this process"):
        open_key(key_label="second", certificate=second_certificate)
    assert _verifies(first, first.sign(b"unharmed"), b"unharmed")
    first.close()
    second = open_key(key_label="second", certificate=second_certificate)
    assert _verifies(second, second.sign(b"second"), b"second")


def test_threads_see_signatures_or_unavailable_through_an_outage(
    open_key: OpenKey,
    softhsm_token: SoftHsmToken,
    tmp_path: Path,
) -> None:
    key = open_key()
    stop = threading.Event()
    unexpected: list[BaseException] = []
    bad_signatures: list[bytes] = []

    def worker() -> None:
        while not stop.is_set():
            try:
                if not _verifies(key, key.sign(b"busy"), b"busy"):
                    bad_signatures.append(b"busy")
            except EvidenceUnavailable:
                pass
            except BaseException as error:
                unexpected.append(error)
                return

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    directory = softhsm_token.token_directory
    try:
        for _ in range(3):
            directory.rename(tmp_path / "aside")
            threading.Event().wait(0.05)
            (tmp_path / "aside").rename(directory)
            threading.Event().wait(0.05)
    finally:
        stop.set()
        for thread in threads:
            thread.join()

    assert unexpected == [] and bad_signatures == []
    assert _verifies(key, key.sign(b"after"), b"after")


def test_a_refused_pin_is_not_retried(
    open_key: OpenKey,
    softhsm_token: SoftHsmToken,
) -> None:
    key = open_key()
    # As if the PIN had been changed on the token since the gateway started.
    key._pin = "0000wrong"
    session = key._session
    assert session is not None
    session.close()
    with pytest.raises(EvidenceUnavailable):
        key.sign(b"closed underneath")
    with pytest.raises(EvidenceUnavailable, match=r"refused the PIN.*not retried"):
        key.sign(b"with the wrong PIN")
    # Each attempt brings a real token closer to locking the PIN: even with
    # the right PIN back, the key stays out until an operator restarts it.
    key._pin = softhsm_token.pin
    with pytest.raises(EvidenceUnavailable, match="not retried"):
        key.sign(b"again")


def test_a_closed_key_does_not_sign(open_key: OpenKey) -> None:
    key = open_key()
    key.close()
    with pytest.raises(EvidenceUnavailable, match="closed"):
        key.sign(b"after close")


# --- the PIN setting ----------------------------------------------------------------------


def test_pin_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PALAIS_TEST_HSM_PIN", "482913")
    assert pin_from("env:PALAIS_TEST_HSM_PIN") == "482913"


def test_pin_from_an_unset_variable_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PALAIS_TEST_HSM_PIN", raising=False)
    with pytest.raises(HsmConfigError, match="PALAIS_TEST_HSM_PIN is not set"):
        pin_from("env:PALAIS_TEST_HSM_PIN")


def test_pin_from_an_owner_only_file(tmp_path: Path) -> None:
    path = tmp_path / "pin"
    certbuilder.atomic_write(path, b"482913\n", 0o600)
    assert pin_from(f"file:{path}") == "482913"
    path.chmod(0o400)
    assert pin_from(f"file:{path}") == "482913"


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620])
def test_pin_file_open_to_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "pin"
    certbuilder.atomic_write(path, b"482913\n", mode)
    with pytest.raises(HsmConfigError, match=f"mode {mode:04o}.*owner only") as caught:
        pin_from(f"file:{path}")
    assert "482913" not in str(caught.value)


def test_pin_file_missing_or_empty_is_refused(tmp_path: Path) -> None:
    with pytest.raises(HsmConfigError, match="cannot read the HSM PIN file"):
        pin_from(f"file:{tmp_path / 'absent'}")
    empty = tmp_path / "empty"
    certbuilder.atomic_write(empty, b"\n", 0o600)
    with pytest.raises(HsmConfigError, match="is empty"):
        pin_from(f"file:{empty}")


def test_pin_file_mode_is_the_target_s_through_a_symlink(tmp_path: Path) -> None:
    # Secret volumes (Kubernetes, systemd credentials) are symlinks: follow
    # them, but judge the file that is read.
    target = tmp_path / "pin"
    certbuilder.atomic_write(target, b"482913", 0o600)
    link = tmp_path / "link"
    link.symlink_to(target)
    assert pin_from(f"file:{link}") == "482913"
    target.chmod(0o644)
    with pytest.raises(HsmConfigError, match="mode 0644"):
        pin_from(f"file:{link}")


@pytest.mark.parametrize("setting", ["482913", "pin:482913", "env:", "file:", "ENV:X"])
def test_a_pin_written_in_the_setting_is_refused_without_repeating_it(setting: str) -> None:
    with pytest.raises(HsmConfigError, match="env:VARNAME or file:/path") as caught:
        pin_from(setting)
    assert "482913" not in str(caught.value)
