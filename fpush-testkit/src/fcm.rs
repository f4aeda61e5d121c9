//! fcm test server (being written)
