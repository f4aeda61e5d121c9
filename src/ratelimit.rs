//! ratelimit (being written)
