//! apns test server (being written)
