"""Print how to reach a running demo instance (used by `make run`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(root: Path) -> None:
    demo = json.loads((root / "demo.json").read_text(encoding="utf-8"))
    ports = demo["ports"]
    r = root.resolve()
    a1 = demo["identities"]["avocat1"]
    g1 = demo["identities"]["greffier1"]
    d = demo["dossiers"][0]
    print(f"""
Palais demo instance in {r}
  SMTPS (implicit TLS) 127.0.0.1:{ports["smtps"]}   submission (STARTTLS) :{ports["submission"]}
  IMAPS 127.0.0.1:{ports["imaps"]}   court systems :{ports["court"]}   HTTPS :{ports["https"]}

Send a message into dossier {d["number"]} as avocat1 with curl:
  printf 'Subject: [{d["number"]}] Conclusions\\r\\n\\r\\nBonjour\\r\\n' > /tmp/msg.eml
  curl --cacert {r / demo["ca"]} --cert {r / a1["cert"]} --key {r / a1["key"]} \\
       "smtps://;AUTH=EXTERNAL@localhost:{ports["smtps"]}/client" \\
       --mail-from {a1["address"]} --mail-rcpt {d["address"]} -T /tmp/msg.eml

Read it as greffier1 over IMAP:
  curl --cacert {r / demo["ca"]} --cert {r / g1["cert"]} --key {r / g1["key"]} \\
       --login-options AUTH=EXTERNAL -u '{g1["address"]}:' "imaps://localhost:{ports["imaps"]}/INBOX;UID=1"

Thunderbird: import the identity as a PKCS#12 file
  openssl pkcs12 -export -in {r / a1["cert"]} -inkey {r / a1["key"]} -out avocat1.p12
  (Settings > Privacy & Security > Certificates > Your Certificates > Import; trust {r / demo["ca"]}
  under Authorities), then add an account {a1["address"]}: IMAP localhost:{ports["imaps"]} SSL/TLS,
  SMTP localhost:{ports["smtps"]} SSL/TLS, authentication "TLS Certificate".
""")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
