//! What the transport tests share: a test CA written where the client can read it.

use fpush_testkit::tls::TestPki;

/// A test PKI and its CA certificate as a file (kept while the `Setup` lives).
pub struct Setup {
    pub pki: TestPki,
    pub ca_path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

pub fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new().unwrap();
    let ca_path = dir.path().join("ca.pem");
    pki.write_ca_pem(&ca_path).unwrap();
    Setup {
        pki,
        ca_path,
        _dir: dir,
    }
}
