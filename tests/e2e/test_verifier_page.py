"""/verifier in a real headless browser (Debian's chromium and chromedriver, selenium 4).

Receipts come from a real instance (avocat1 sends with an attachment,
greffier1 reads it, avocat1 fetches its receipts over IMAP). The page is
the one `palais serve` mounts on the instance's HTTPS listener, with the
evidence anchor of its settings and its evidence key making the PDF.

The browser uploads the files through the form's file inputs, reads the
verdict, downloads the printable receipt, and checks a tampered receipt.
"""

from __future__ import annotations

import base64
import http.client
import ssl
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

from palais.gateway.verifier_page import MAX_UPLOAD
from tests.e2e.instance import Instance, create_instance

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ATTACHMENT = b"%PDF-1.4\n% bordereau de pieces\n" + bytes(range(256)) * 2
# Markup in the subject reaches the evidence and so the verdict page: it
# must show as text.
SUBJECT_TAIL = "Bordereau <i>urgent</i> & pièces"


@dataclass
class Files:
    inst: Instance
    original: Path
    receipts: list[Path]
    tampered: Path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Files]:
    root = tmp_path_factory.mktemp("verifier-page")
    inst = create_instance(root / "i")
    inst.start()
    try:
        original, receipts = inst.exchange_with_receipts(
            SUBJECT_TAIL, "Bonjour,\nle bordereau est joint.\n", ATTACHMENT, "bordereau.pdf"
        )
        assert len(receipts) == 2
        (root / "original.eml").write_bytes(original)
        paths = []
        for n, data in enumerate(receipts, start=1):
            (root / f"accuse-{n}.eml").write_bytes(data)
            paths.append(root / f"accuse-{n}.eml")
        # One byte of the signed French text changed (quoted-printable "Dossier").
        first = receipts[0]
        at = first.index(b"Dossier :")
        (root / "accuse-modifie.eml").write_bytes(first[:at] + b"d" + first[at + 1 :])
        yield Files(inst, root / "original.eml", paths, root / "accuse-modifie.eml")
    finally:
        inst.stop()


@pytest.fixture(scope="module")
def port(files: Files) -> int:
    """The instance's own HTTPS listener: `palais serve` serves /verifier."""
    return files.inst.port("https")


@dataclass
class Browser:
    driver: Any  # selenium's WebDriver
    downloads: Path


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is absent (Debian package chromium)")

    profile = tmp_path_factory.mktemp("chromium-profile")
    downloads = tmp_path_factory.mktemp("downloads")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--ignore-certificate-errors",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    options.add_experimental_option(
        "prefs",
        {"download.default_directory": str(downloads), "download.prompt_for_download": False},
    )
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield Browser(driver, downloads)
    finally:
        driver.quit()


@dataclass(frozen=True)
class Verdict:
    """What the verdict page shows, read in one go."""

    text: str
    status: str | None
    steps: dict[str | None, str | None]  # data-code -> class (passed, failed...)
    step_texts: dict[str | None, str]
    page: str
    printable: bool
    italics: int  # <i> elements in the details (markup taken as markup)


def _read(driver: Any) -> Verdict:
    verdict = driver.find_element(By.ID, "verdict")
    steps = driver.find_elements(By.CSS_SELECTOR, "ol.steps li")
    return Verdict(
        text=verdict.text,
        status=verdict.get_attribute("data-status"),
        steps={s.get_attribute("data-code"): s.get_attribute("class") for s in steps},
        step_texts={s.get_attribute("data-code"): s.text for s in steps},
        page=driver.find_element(By.TAG_NAME, "body").text,
        printable=bool(driver.find_elements(By.ID, "printable")),
        italics=len(driver.find_elements(By.CSS_SELECTOR, "dl i")),
    )


def _submit(browser: Browser, port: int, receipt: Path, original: Path | None) -> Verdict:

    driver = browser.driver
    driver.get(f"https://localhost:{port}/verifier")
    assert "Vérifier un accusé de réception" in driver.title
    driver.find_element(By.ID, "receipt").send_keys(str(receipt))
    if original is not None:
        driver.find_element(By.ID, "original").send_keys(str(original))
    button = driver.find_element(By.CSS_SELECTOR, "form[action='/verifier'] button[type=submit]")
    button.click()
    # The click only starts the navigation: wait for the form page to go and
    # the verdict page to come, loaded whole. Its elements are then read in
    # one go, again if the document was replaced while they were read
    # (ChromeDriver: "Node with given id does not belong to the document").
    wait = WebDriverWait(driver, 30, ignored_exceptions=(WebDriverException,))
    wait.until(expected_conditions.staleness_of(button))
    wait.until(expected_conditions.presence_of_element_located((By.ID, "verdict")))
    wait.until(lambda d: d.execute_script("return document.readyState") == "complete")
    verdict: Verdict = wait.until(_read)
    return verdict


def test_a_good_receipt_with_its_original_is_valid(
    browser: Browser, port: int, files: Files
) -> None:

    for receipt in files.receipts:
        verdict = _submit(browser, port, receipt, files.original)
        assert "Accusé de réception valide" in verdict.text
        assert "Receipt valid" in verdict.text
        assert verdict.status == "0"
        outcomes = verdict.steps
        assert outcomes["message"] == outcomes["attachments"] == "passed"
        assert outcomes["signature"] == outcomes["chain"] == "passed"
        assert files.inst.dossier["number"] in verdict.page
        assert "bordereau.pdf" in verdict.page
        # The subject's markup is text, not markup.
        assert SUBJECT_TAIL in verdict.page
        assert verdict.italics == 0


def test_the_printable_receipt_downloads(browser: Browser, port: int, files: Files) -> None:

    assert _submit(browser, port, files.receipts[0], None).printable
    browser.driver.find_element(By.ID, "printable").click()
    deadline = time.monotonic() + 30
    pdfs: list[Path] = []
    while time.monotonic() < deadline:
        pdfs = [p for p in browser.downloads.glob("*.pdf") if p.stat().st_size > 0]
        if pdfs:
            break
        time.sleep(0.1)
    assert len(pdfs) == 1, list(browser.downloads.iterdir())
    assert pdfs[0].name.startswith("accuse-")
    assert pdfs[0].read_bytes().startswith(b"%PDF")


def test_a_tampered_receipt_is_not_valid(browser: Browser, port: int, files: Files) -> None:

    verdict = _submit(browser, port, files.tampered, files.original)
    assert "non valide" in verdict.text
    assert "Receipt not valid" in verdict.text
    assert verdict.status == "4"
    assert verdict.steps["digest"] == "failed"
    digest = verdict.step_texts["digest"]
    assert "modifié" in digest and "altered" in digest
    # No printable receipt for a receipt that does not verify.
    assert not verdict.printable


def test_another_original_is_refused(browser: Browser, port: int, files: Files) -> None:
    verdict = _submit(browser, port, files.receipts[0], files.receipts[1])
    assert "non valide" in verdict.text
    # Its attachments (the signature, the evidence) are not the bordereau: 7.
    assert verdict.status == "7"


# -- the same route without a browser: limits and refusals -------------------------


def _post(port: int, path: str, fields: dict[str, bytes]) -> tuple[int, dict[str, str], bytes]:
    boundary = uuid.uuid4().hex
    body = (
        b"".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="f.eml"\r\n'
            f"Content-Type: message/rfc822\r\n\r\n".encode()
            + value
            + b"\r\n"
            for name, value in fields.items()
        )
        + f"--{boundary}--\r\n".encode()
    )
    return _request(port, "POST", path, body, f"multipart/form-data; boundary={boundary}")


def _request(
    port: int, method: str, path: str, body: bytes | None = None, content_type: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    connection = http.client.HTTPSConnection("localhost", port, context=context, timeout=60)
    try:
        headers = {"Content-Type": content_type} if content_type else {}
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def test_the_receipt_is_checked_byte_for_byte_as_uploaded(port: int, files: Files) -> None:
    status, headers, body = _post(
        port, "/verifier", {"receipt": files.receipts[1].read_bytes(), "original": b""}
    )
    assert status == 200
    assert 'data-status="0"' in body.decode()
    assert headers["Cache-Control"] == "no-store"
    assert "default-src 'none'" in headers["Content-Security-Policy"]


def test_an_upload_over_the_limit_is_413(port: int) -> None:
    status, _, body = _post(port, "/verifier", {"receipt": b"x" * (MAX_UPLOAD + 1)})
    assert status == 413
    assert "trop volumineux" in body.decode() and "too large" in body.decode()


def test_the_printable_receipt_is_made_only_from_a_valid_receipt(port: int, files: Files) -> None:
    good = base64.b64encode(files.receipts[0].read_bytes())
    status, headers, body = _post(port, "/verifier/accuse.pdf", {"receipt_b64": good})
    assert status == 200
    assert headers["Content-Type"] == "application/pdf"
    assert headers["Content-Disposition"].startswith('attachment; filename="accuse-')
    assert body.startswith(b"%PDF")
    bad = base64.b64encode(files.tampered.read_bytes())
    status, headers, body = _post(port, "/verifier/accuse.pdf", {"receipt_b64": bad})
    assert status == 422
    assert headers["Content-Type"].startswith("text/html")
    status, _, _ = _post(port, "/verifier/accuse.pdf", {"receipt_b64": b"not base64!"})
    assert status == 400


def test_refusals_carry_no_detail(port: int) -> None:
    assert _request(port, "GET", "/verifier/accuse.pdf")[0] == 405
    assert _request(port, "GET", "/verifier/ailleurs")[0] == 404
    status, _, body = _request(port, "POST", "/verifier", b"receipt=x", "text/plain")
    assert status == 400
    assert b"Traceback" not in body and b"Error" not in body
    status, _, _ = _post(port, "/verifier", {"original": b"x"})
    assert status == 400
