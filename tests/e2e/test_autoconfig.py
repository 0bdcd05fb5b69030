"""Thunderbird autoconfiguration: every value one Thunderbird accepts, for every address domain.

Thunderbird reads the document with ``readFromXML`` (comm-central,
mail/components/accountcreation/modules/readFromXML.sys.mjs; the same lists
since the reader moved there from readFromXML.jsm): a value outside its
lists makes it drop the server, and a document left with no incoming or no
outgoing server is dropped whole. The lists below are copied from it.
"""

from __future__ import annotations

import imaplib
import re
import smtplib
import urllib.parse
import xml.etree.ElementTree as ET
from email.message import EmailMessage

import pytest

from tests.e2e.instance import Instance

# readFromXML.sys.mjs: iO.type = Sanitizer.enum(iX["@type"], [...])
INCOMING_TYPES = ("pop3", "imap", "nntp", "exchange")
# readFromXML.sys.mjs: oX["@type"] != "smtp" throws outgoing_not_smtp.error
OUTGOING_TYPES = ("smtp",)
# readFromXML.sys.mjs: Sanitizer.translate(socketType, {plain, SSL, STARTTLS}),
# the same for incoming and outgoing servers.
SOCKET_TYPES = ("plain", "SSL", "STARTTLS")
# readFromXML.sys.mjs: readAuthentication(iX.$authentication, ..., {...}) for
# <incomingServer>. "plain" and "secure" are marked "@deprecated TODO remove".
INCOMING_AUTHENTICATION = (
    "password-cleartext",
    "plain",
    "password-encrypted",
    "secure",
    "GSSAPI",
    "NTLM",
    "OAuth2",
)
# readFromXML.sys.mjs: readAuthentication(oX.$authentication, ..., {...}) for
# <outgoingServer>.
OUTGOING_AUTHENTICATION = (
    "none",
    "client-IP-address",
    "smtp-after-pop",
    "password-cleartext",
    "plain",
    "password-encrypted",
    "secure",
    "GSSAPI",
    "NTLM",
    "OAuth2",
)
# Sanitizer.sys.mjs hostname(): letters, digits, "-" and "." (or a %PLACEHOLDER%).
HOSTNAME = re.compile(r"[A-Za-z0-9.-]+")
# The people who set up a mail client (court systems send from their own software).
PEOPLE = ("avocat1", "avocat2", "collaborateur1", "greffier1", "magistrat1")


def autoconfig(instance: Instance, address: str | None) -> tuple[int, str]:
    query = "" if address is None else "?emailaddress=" + urllib.parse.quote(address)
    out = instance.curl_https("/.well-known/autoconfig/mail/config-v1.1.xml" + query)
    assert out.returncode == 0, out.stderr
    body, code = out.stdout.rsplit("\n", 1)
    return int(code), body


def check_server(server: ET.Element, types: tuple[str, ...], auths: tuple[str, ...]) -> None:
    assert server.get("type") in types
    hostname = server.findtext("hostname") or ""
    assert HOSTNAME.fullmatch(hostname), hostname
    assert 1 <= int(server.findtext("port") or "0") <= 65535
    sockets = [e.text for e in server.findall("socketType")]
    assert sockets and all(s in SOCKET_TYPES for s in sockets), sockets
    methods = [e.text for e in server.findall("authentication")]
    assert methods and all(m in auths for m in methods), methods
    assert server.findtext("username") == "%EMAILADDRESS%"


def people_domains(instance: Instance) -> set[str]:
    return {instance.address(who).rpartition("@")[2] for who in PEOPLE}


@pytest.mark.parametrize("who", PEOPLE)
def test_every_value_is_one_thunderbird_accepts(instance: Instance, who: str) -> None:
    address = instance.address(who)
    domain = address.rpartition("@")[2]
    code, body = autoconfig(instance, address)
    assert code == 200, body
    root = ET.fromstring(body)
    assert root.tag == "clientConfig" and root.get("version") == "1.1"
    provider = root.find("emailProvider")
    assert provider is not None
    assert provider.get("id") == domain
    assert HOSTNAME.fullmatch(domain)
    announced = {e.text for e in provider.findall("domain")}
    assert people_domains(instance) <= announced, announced
    incoming = provider.findall("incomingServer")
    outgoing = provider.findall("outgoingServer")
    assert incoming and outgoing
    for server in incoming:
        check_server(server, INCOMING_TYPES, INCOMING_AUTHENTICATION)
    for server in outgoing:
        check_server(server, OUTGOING_TYPES, OUTGOING_AUTHENTICATION)
    # Implicit TLS on the listeners' ports.
    assert incoming[0].findtext("port") == str(instance.port("imaps"))
    assert outgoing[0].findtext("port") == str(instance.port("smtps"))
    assert {e.text for e in provider.iter("socketType")} == {"SSL"}


def test_without_an_address_every_domain_is_announced(instance: Instance) -> None:
    code, body = autoconfig(instance, None)
    assert code == 200, body
    provider = ET.fromstring(body).find("emailProvider")
    assert provider is not None
    announced = [e.text for e in provider.findall("domain")]
    assert len(announced) == len(set(announced))
    assert people_domains(instance) <= set(announced)


def test_an_address_of_another_domain_is_not_configured_here(instance: Instance) -> None:
    code, body = autoconfig(instance, "someone@example.org")
    assert code == 404
    assert "no mail service here" in body


def test_what_thunderbird_does_with_it_works(instance: Instance) -> None:
    """The document's choices, carried out as Thunderbird would: IMAP LOGIN
    with the address and whatever password (``password-cleartext``; the
    server offers no AUTH=PLAIN), SMTP without AUTH (``none``), both on
    implicit TLS with the card certificate presented in the handshake."""
    code, body = autoconfig(instance, instance.address("avocat1"))
    assert code == 200
    provider = ET.fromstring(body).find("emailProvider")
    assert provider is not None
    imap_port = int(provider.findtext("incomingServer/port") or "0")
    smtp_port = int(provider.findtext("outgoingServer/port") or "0")
    address = instance.address("avocat1")
    context = instance.client_context("avocat1")

    imap = imaplib.IMAP4_SSL("localhost", imap_port, ssl_context=context, timeout=10)
    try:
        assert "AUTH=PLAIN" not in imap.capabilities
        assert imap.login(address, "anything")[0] == "OK"
        assert imap.select("INBOX")[0] == "OK"
    finally:
        imap.logout()

    msg = EmailMessage()
    msg["From"] = address
    msg["To"] = instance.dossier["address"]
    msg["Subject"] = f"[{instance.dossier['number']}] autoconfig"
    msg.set_content("Bonjour")
    with smtplib.SMTP_SSL("localhost", smtp_port, context=context, timeout=10) as s:
        assert s.send_message(msg) == {}
