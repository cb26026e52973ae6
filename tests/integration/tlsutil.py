"""Throw-away certificates for the TLS tests, made with the `openssl` command
at test time (none is committed).

    ca = make_ca(tmp_path)                        # a CA: ca.cert, ca.key
    leaf = make_cert(ca, "localhost")             # signed by ca
    leaf.cert, leaf.key                           # paths (str)
    leaf.serial                                   # hex, as openssl prints it
    ctx = client_context(ca)                      # ssl.SSLContext trusting ca

make_cert's sans default to DNS:localhost and IP:127.0.0.1, so a client that
checks the host name can connect to 127.0.0.1. Keys are P-256 (fast to make).
The TLS tests of other clients (Node, the browser, the benchmark) make their
certificates with this module too."""

import itertools
import os
import ssl
import subprocess
from pathlib import Path

_serials = itertools.count(0x1000 + (os.getpid() % 0x1000) * 0x100)


class Cert:
    """A certificate and its key on disk. ca is the issuing Cert (None for
    a CA itself)."""

    def __init__(self, name, cert, key, serial, ca=None, directory=None):
        self.name = name
        self.cert = str(cert)
        self.key = str(key)
        self.serial = serial
        self.ca = ca
        self.dir = Path(directory) if directory else Path(cert).parent

    def __repr__(self):
        return f"Cert({self.name!r}, serial {self.serial})"


def _run(args, cwd):
    r = subprocess.run(["openssl", *args], cwd=str(cwd), capture_output=True,
                       text=True, timeout=30)
    if r.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed:\n{r.stderr}")
    return r.stdout


def _key(path, cwd):
    _run(["genpkey", "-algorithm", "EC", "-pkeyopt",
          "ec_paramgen_curve:P-256", "-out", str(path)], cwd)


def make_ca(tmpdir, name="test-ca"):
    """A self-signed CA in tmpdir (valid for a day)."""
    d = Path(tmpdir)
    d.mkdir(parents=True, exist_ok=True)
    key = d / f"{name}.key"
    cert = d / f"{name}.crt"
    serial = f"{next(_serials):X}"
    _key(key, d)
    _run(["req", "-x509", "-new", "-key", str(key), "-out", str(cert),
          "-days", "1", "-subj", f"/CN={name}", "-set_serial",
          f"0x{serial}", "-addext", "basicConstraints=critical,CA:TRUE",
          "-addext", "keyUsage=critical,keyCertSign,cRLSign"], d)
    return Cert(name, cert, key, serial, None, d)


def make_cert(ca, name, sans=("DNS:localhost", "IP:127.0.0.1"), days=1,
              key=None):
    """A certificate for CN=name signed by ca, with the subjectAltNames
    sans, in ca's directory. key: reuse an existing key file (to make a
    second certificate for the same key); a new key by default."""
    d = ca.dir
    serial = f"{next(_serials):X}"
    stem = f"{name}-{serial}"
    key_path = Path(key) if key else d / f"{stem}.key"
    csr = d / f"{stem}.csr"
    cert = d / f"{stem}.crt"
    ext = d / f"{stem}.ext"
    if not key:
        _key(key_path, d)
    ext.write_text("basicConstraints=CA:FALSE\n"
                   "keyUsage=critical,digitalSignature\n"
                   "extendedKeyUsage=serverAuth,clientAuth\n"
                   f"subjectAltName={','.join(sans)}\n")
    _run(["req", "-new", "-key", str(key_path), "-out", str(csr), "-subj",
          f"/CN={name}"], d)
    _run(["x509", "-req", "-in", str(csr), "-CA", ca.cert, "-CAkey", ca.key,
          "-set_serial", f"0x{serial}", "-days", str(days), "-out",
          str(cert), "-extfile", str(ext)], d)
    return Cert(name, cert, key_path, serial, ca, d)


def client_context(ca=None, minimum=None, maximum=None, cert=None):
    """An ssl.SSLContext for a client that trusts ca (None: trusts nothing,
    so every handshake fails verification), optionally pinned to TLS
    versions and presenting cert."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca is not None:
        ctx.load_verify_locations(ca.cert)
    if minimum is not None:
        ctx.minimum_version = minimum
    if maximum is not None:
        ctx.maximum_version = maximum
    if cert is not None:
        ctx.load_cert_chain(cert.cert, cert.key)
    return ctx


def serial_of(der):
    """The serial (hex, upper case, as in Cert.serial) of a DER certificate,
    such as ssl.SSLSocket.getpeercert(binary_form=True) returns."""
    out = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout",
                          "-serial"], input=der, capture_output=True,
                         timeout=30, check=True).stdout.decode()
    return out.strip().split("=", 1)[1].lstrip("0") or "0"
