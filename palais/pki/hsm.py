"""The evidence key on an HSM, reached through PKCS#11 (python-pkcs11).

The private key never leaves the token; its certificate and chain are read
from a PEM file, and ``open_pkcs11_key`` refuses a token key that is not
the certificate's (it signs a probe and verifies it with the certificate).

One session per key, kept open between signatures (opening and logging in
costs more than signing), and one lock per PKCS#11 library around every
call into it: python-pkcs11 initialises the library with ``C_Initialize
(NULL)``, which by the standard promises that no two threads call it at
once, and re-initialising (below) invalidates every session of the process.

A failure to sign raises ``EvidenceUnavailable`` and drops the session; the
next signature opens a new one and, if that fails too, re-initialises the
library first: SoftHSM, like many libraries, only sees tokens as they were
at ``C_Initialize``, so a token back in service is used again without a
restart. A PIN the token refuses is not tried again, so that retries do not
lock the token.

The PIN is never written in the configuration: ``pin_from`` reads it from
the environment or from a file only its owner may read.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import stat
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import pkcs11
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11._pkcs11 import lib as Pkcs11Library
from pkcs11.exceptions import (
    MultipleObjectsReturned,
    MultipleTokensReturned,
    NoSuchKey,
    NoSuchToken,
    PinExpired,
    PinIncorrect,
    PinInvalid,
    PinLenRange,
    PinLocked,
    PKCS11Error,
)
from pkcs11.types import SignMixin

from palais.pki.signing import (
    EvidenceUnavailable,
    load_certificates,
    signature_algorithm,
    verify_signature,
)

__all__ = [
    "HsmConfigError",
    "Pkcs11Key",
    "open_pkcs11_key",
    "pin_from",
]

log = logging.getLogger("palais.pki.hsm")

_UNAVAILABLE_TEXT: Final = "The evidence service cannot sign now, please try again later"

# Errors that mean the PIN itself is wrong: retrying them brings the token
# closer to locking the user PIN, so they are never retried.
_PIN_ERRORS: Final = (PinIncorrect, PinInvalid, PinLenRange, PinLocked, PinExpired)


class HsmConfigError(ValueError):
    """The module, token, key, PIN or certificate is unusable; raised at open."""


def pin_from(setting: str) -> str:
    """The PIN that ``setting`` names: ``env:VARNAME`` or ``file:/path``.

    A PIN file must be readable by its owner only. Error messages never
    repeat the setting's value, in case someone wrote the PIN itself there.
    """
    scheme, sep, target = setting.partition(":")
    if not sep or not target or scheme not in ("env", "file"):
        raise HsmConfigError(
            "the HSM PIN setting must be env:VARNAME or file:/path (the PIN itself is never "
            "written in the configuration)"
        )
    if scheme == "env":
        pin = os.environ.get(target)
        if not pin:
            raise HsmConfigError(f"the HSM PIN variable {target} is not set in the environment")
        return pin
    return _read_pin_file(Path(target))


def _read_pin_file(path: Path) -> str:
    try:
        # The mode is checked on the open file (fstat), so it is that of the
        # file read, after any symlink, and cannot change in between.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as error:
        raise HsmConfigError(f"cannot read the HSM PIN file {path}: {error.strerror}") from error
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise HsmConfigError(f"the HSM PIN file {path} is not a regular file")
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            raise HsmConfigError(
                f"the HSM PIN file {path} has mode {mode:04o}: it must be readable by its "
                f"owner only (chmod 600 {path})"
            )
        content = handle.read()
    # Editors end files with a newline; a PIN never does.
    pin = content.decode("utf-8").rstrip("\r\n")
    if not pin:
        raise HsmConfigError(f"the HSM PIN file {path} is empty")
    return pin


@dataclass(eq=False)
class _Module:
    """A PKCS#11 library as loaded in this process, shared by every key on it."""

    path: str
    library: Pkcs11Library
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Incremented at each re-initialisation: sessions opened before it are
    # gone, and their handle numbers may already belong to someone else.
    generation: int = 0
    # The open key of each token, by label. PKCS#11 logs an application in
    # once per token, and one key's logout would log the others out: a
    # token is opened by one Pkcs11Key at a time.
    keys: weakref.WeakValueDictionary[str, Pkcs11Key] = field(
        default_factory=weakref.WeakValueDictionary
    )

    def reinitialize(self) -> None:
        """C_Finalize then C_Initialize; the caller holds ``lock``."""
        self.generation += 1
        # A library that lost its device may fail to finalise: initialise anyway.
        with contextlib.suppress(PKCS11Error):
            self.library.finalize()
        self.library.initialize()


_modules: dict[str, _Module] = {}
_modules_lock: Final = threading.Lock()


def _module(path: str) -> _Module:
    # One entry per file, not per spelling: loading the same library twice
    # under two names would call C_Initialize twice and fail.
    real = os.path.realpath(path)
    with _modules_lock:
        module = _modules.get(real)
        if module is None:
            try:
                library = pkcs11.lib(real)
            except PKCS11Error as error:
                raise HsmConfigError(
                    f"cannot load the PKCS#11 module {path}: {_describe(error)}"
                ) from error
            module = _modules[real] = _Module(real, library)
        return module


def _describe(error: PKCS11Error) -> str:
    # python-pkcs11 raises most return values with no message: the class
    # name (PinIncorrect, TokenNotPresent...) is the information.
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


@dataclass(frozen=True)
class _Where:
    """What a key is looked up by, and how to name it in messages."""

    module: str
    token: str
    key_label: str

    def __str__(self) -> str:
        return f"key {self.key_label!r} on token {self.token!r} ({self.module})"


class _ConnectError(Exception):
    """Opening a session failed; ``pin_refused`` if retrying could lock the PIN."""

    def __init__(self, message: str, *, pin_refused: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.pin_refused = pin_refused


@dataclass(frozen=True)
class _Connection:
    session: pkcs11.Session
    key: SignMixin
    key_type: KeyType  # read here, under the lock, like every attribute


def _connect(module: _Module, where: _Where, pin: str) -> _Connection:
    """A logged-in session and the private key; the caller holds ``module.lock``."""
    library = module.library
    try:
        token = library.get_token(token_label=where.token)
    except NoSuchToken as error:
        labels = sorted(t.label for t in library.get_tokens() if t.label)
        raise _ConnectError(
            f"no token labelled {where.token!r} in {where.module} "
            f"(tokens there: {', '.join(map(repr, labels)) or 'none'})"
        ) from error
    except MultipleTokensReturned as error:
        raise _ConnectError(f"several tokens labelled {where.token!r} in {where.module}") from error
    try:
        session = token.open(user_pin=pin)
    except _PIN_ERRORS as error:
        raise _ConnectError(
            f"token {where.token!r} refused the PIN ({_describe(error)})", pin_refused=True
        ) from error
    try:
        key = _find_key(session, where)
        key_type = key.key_type
    except BaseException:
        _close_quietly(session)
        raise
    return _Connection(session, key, key_type)


def _find_key(session: pkcs11.Session, where: _Where) -> SignMixin:
    try:
        key = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=where.key_label)
    except NoSuchKey as error:
        labels = sorted(
            str(obj[Attribute.LABEL])
            for obj in session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY})
        )
        raise _ConnectError(
            f"no private key labelled {where.key_label!r} on token {where.token!r} "
            f"(private keys there: {', '.join(map(repr, labels)) or 'none'})"
        ) from error
    except MultipleObjectsReturned as error:
        raise _ConnectError(
            f"several private keys labelled {where.key_label!r} on token {where.token!r}"
        ) from error
    if not isinstance(key, SignMixin):
        # python-pkcs11 gives a key its sign() only if the token says CKA_SIGN.
        raise _ConnectError(f"{where} may not sign (CKA_SIGN is false)")
    return key


def _close_quietly(session: pkcs11.Session) -> None:
    # Closing is cleanup after a failure or at shutdown: the session may
    # already be gone with its token, and that must not hide the real error.
    with contextlib.suppress(PKCS11Error):
        session.close()


def _connect_afresh(module: _Module, where: _Where, pin: str) -> _Connection:
    """``_connect``, and if that fails for another reason than the PIN, re-initialise the
    library and try once more; the caller holds ``module.lock``."""
    try:
        return _connect(module, where, pin)
    except _ConnectError as error:
        if error.pin_refused:
            raise
    except PKCS11Error:
        pass
    # The library may hold a stale view of its tokens (a token created,
    # removed and put back, a device reset), or a login that a lost session
    # left behind: start it afresh. The keys of its other tokens notice the
    # new generation and reopen their sessions before their next signature.
    module.reinitialize()
    return _connect(module, where, pin)


class Pkcs11Key:
    """An evidence key on a PKCS#11 token; thread-safe. Make one with ``open_pkcs11_key``."""

    def __init__(
        self,
        module: _Module,
        where: _Where,
        pin: str,
        certificates: Sequence[x509.Certificate],
        session: pkcs11.Session,
        key: SignMixin,
    ) -> None:
        self._module = module
        self._where = where
        self._pin = pin
        self._certificate = certificates[0]
        self._chain = tuple(certificates[1:])
        self._algorithm = signature_algorithm(self._certificate)
        # Guarded by module.lock, like every call into the library.
        self._session: pkcs11.Session | None = session
        self._key: SignMixin | None = key
        self._generation = module.generation
        self._pin_refused: str | None = None
        self._closed = False

    @property
    def certificate(self) -> x509.Certificate:
        return self._certificate

    @property
    def chain(self) -> Sequence[x509.Certificate]:
        return self._chain

    @property
    def token(self) -> str:
        return self._where.token

    @property
    def key_label(self) -> str:
        return self._where.key_label

    def __repr__(self) -> str:
        return f"<Pkcs11Key {self._where}>"

    def sign(self, data: bytes) -> bytes:
        """SHA-256 signature of ``data``: DER ECDSA-Sig-Value, or PKCS#1 v1.5 for RSA."""
        if self._algorithm == "ecdsa":
            # Hashed here so that only 32 bytes cross to the token, whatever
            # the size of what is signed.
            payload, mechanism = hashlib.sha256(data).digest(), Mechanism.ECDSA
        else:
            payload, mechanism = data, Mechanism.SHA256_RSA_PKCS
        with self._module.lock:
            key = self._usable_key()
            try:
                raw = key.sign(payload, mechanism=mechanism)
            except PKCS11Error as error:
                self._drop_session(close=True)
                reason = f"{self._where} failed to sign: {_describe(error)}"
                log.warning("evidence key out of service: %s", reason)
                raise EvidenceUnavailable(_UNAVAILABLE_TEXT, reason=reason) from error
        return _der_ecdsa(raw) if self._algorithm == "ecdsa" else raw

    def close(self) -> None:
        """Log out and close the session; ``sign`` raises ``EvidenceUnavailable`` after."""
        with self._module.lock:
            self._closed = True
            self._drop_session(close=True)
            if self._module.keys.get(self._where.token) is self:
                del self._module.keys[self._where.token]

    def _usable_key(self) -> SignMixin:
        """The key of a live session, reconnecting if needed; holds module.lock."""
        if self._closed:
            raise EvidenceUnavailable(_UNAVAILABLE_TEXT, reason=f"{self._where} was closed")
        if self._pin_refused is not None:
            raise EvidenceUnavailable(_UNAVAILABLE_TEXT, reason=self._pin_refused)
        if self._generation != self._module.generation:
            # Another key re-initialised the library: our handles are void,
            # and closing them could close a session that is not ours.
            self._drop_session(close=False)
        if self._key is not None:
            return self._key
        try:
            self._reconnect()
        except (_ConnectError, PKCS11Error) as error:
            reason = error.message if isinstance(error, _ConnectError) else _describe(error)
            if isinstance(error, _ConnectError) and error.pin_refused:
                self._pin_refused = (
                    f"{self._where}: {reason}; not retried, so as not to lock the token: "
                    "restart with the right PIN"
                )
                reason = self._pin_refused
            else:
                reason = f"cannot reopen a session for {self._where}: {reason}"
            raise EvidenceUnavailable(_UNAVAILABLE_TEXT, reason=reason) from error
        assert self._key is not None
        log.info("evidence key: new session for %s", self._where)
        return self._key

    def _reconnect(self) -> None:
        connection = _connect_afresh(self._module, self._where, self._pin)
        self._session, self._key = connection.session, connection.key
        self._generation = self._module.generation

    def _drop_session(self, *, close: bool) -> None:
        session, self._session, self._key = self._session, None, None
        if session is not None and close:
            _close_quietly(session)


def _der_ecdsa(raw: bytes) -> bytes:
    """PKCS#11's r||s (two integers of the curve's size) as a DER ECDSA-Sig-Value."""
    half = len(raw) // 2
    if not raw or len(raw) != 2 * half:
        raise EvidenceUnavailable(
            _UNAVAILABLE_TEXT,
            reason=f"the token returned a malformed ECDSA signature ({len(raw)} bytes)",
        )
    return encode_dss_signature(
        int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big")
    )


_KEY_TYPES: Final = {"ecdsa": KeyType.EC, "rsa": KeyType.RSA}


def open_pkcs11_key(
    module: str, token: str, key_label: str, pin: str, certificate: Path
) -> Pkcs11Key:
    """The private key ``key_label`` of token ``token``, with the certificate and chain of
    ``certificate`` (PEM: the key's certificate first, then its intermediates).

    Raises ``HsmConfigError`` naming what is wrong: the module, the token, the PIN, the key
    label, or a key that is not the certificate's.
    """
    try:
        certificates = load_certificates(certificate)
    except (OSError, ValueError) as error:
        raise HsmConfigError(
            f"cannot read the evidence certificate {certificate}: {error}"
        ) from error
    if not certificates:
        raise HsmConfigError(f"no certificate in {certificate}")
    try:
        algorithm = signature_algorithm(certificates[0])
    except ValueError as error:
        raise HsmConfigError(f"{certificate}: {error}") from error
    where = _Where(module, token, key_label)
    loaded = _module(module)
    with loaded.lock:
        existing = loaded.keys.get(token)
        if existing is not None:
            raise HsmConfigError(
                f"token {token!r} is already open in this process ({existing!r}): PKCS#11 "
                "logs a process in once per token, so close that key before opening another"
            )
        try:
            connection = _connect_afresh(loaded, where, pin)
        except _ConnectError as error:
            raise HsmConfigError(error.message) from error
        except PKCS11Error as error:
            raise HsmConfigError(f"cannot open {where}: {_describe(error)}") from error
        hsm_key = Pkcs11Key(loaded, where, pin, certificates, connection.session, connection.key)
        loaded.keys[token] = hsm_key
    try:
        _check_matches(hsm_key, where, connection.key_type, algorithm, certificate)
    except BaseException:
        hsm_key.close()
        raise
    return hsm_key


def _check_matches(
    hsm_key: Pkcs11Key, where: _Where, key_type: KeyType, algorithm: str, certificate: Path
) -> None:
    cert = hsm_key.certificate
    subject = cert.subject.rfc4514_string()
    if key_type != _KEY_TYPES[algorithm]:
        raise HsmConfigError(
            f"{where} is an {key_type.name} key but the "
            f"certificate {subject!r} in {certificate} is for an {algorithm.upper()} key"
        )
    probe = b"palais evidence key probe " + secrets.token_bytes(16)
    try:
        signature = hsm_key.sign(probe)
    except EvidenceUnavailable as error:
        raise HsmConfigError(f"{where} cannot sign: {error.reason}") from error
    if not verify_signature(cert, signature, probe):
        raise HsmConfigError(
            f"{where} is not the key of the certificate {subject!r} in {certificate}: "
            "a signature by the token does not verify with the certificate's public key"
        )
