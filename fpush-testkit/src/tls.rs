//! tls test server (being written)
