//! xmpp test server (being written)
