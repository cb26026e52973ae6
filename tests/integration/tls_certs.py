"""A throw-away CA and a server certificate for 127.0.0.1, made with the
openssl command at test time (nothing is committed). Used by
test_tls_node.py; one function, so that another helper can replace it.
"""

import subprocess
from pathlib import Path
from types import SimpleNamespace


def make_certs(outdir, cn="127.0.0.1"):
    """Makes, in outdir, ca.pem (the CA's certificate), server.pem and
    server.key (ECDSA P-256, signed by the CA, SAN IP:127.0.0.1 and
    DNS:localhost, valid two days). Returns them as str paths: .ca, .cert,
    .key, .ca_key."""
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    p = SimpleNamespace(ca=str(out / "ca.pem"), ca_key=str(out / "ca.key"),
                        cert=str(out / "server.pem"), key=str(out / "server.key"))
    csr, ext = out / "server.csr", out / "server.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                   "basicConstraints=critical,CA:FALSE\n"
                   "keyUsage=critical,digitalSignature\n"
                   "extendedKeyUsage=serverAuth\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    for cmd in (
            ["openssl", "req", "-x509", *ec, "-keyout", p.ca_key, "-out", p.ca,
             "-days", "2", "-subj", "/CN=moonroom test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
            ["openssl", "req", *ec, "-keyout", p.key, "-out", str(csr), "-subj", f"/CN={cn}"],
            ["openssl", "x509", "-req", "-in", str(csr), "-CA", p.ca, "-CAkey", p.ca_key,
             "-CAcreateserial", "-out", p.cert, "-days", "2", "-extfile", str(ext)]):
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, timeout=30)
        assert r.returncode == 0, f"{' '.join(cmd)}:\n{r.stdout}"
    return p
