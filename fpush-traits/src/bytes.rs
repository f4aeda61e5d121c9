//! Byte-by-byte checks of tokens, made the way the push path can afford them.

/// Whether `test` holds for every byte of `bytes`.
///
/// Every byte is looked at, whatever the answer so far: with no branch per byte the loop runs on
/// vectors. Every push's token passes such a check and nearly every one passes it, so stopping
/// at the first bad byte would save nothing.
#[inline(always)]
pub fn every_byte(bytes: &[u8], test: impl Fn(u8) -> bool) -> bool {
    bytes.iter().fold(true, |all, &b| all & test(b))
}

#[cfg(test)]
mod tests {
    use super::every_byte;

    #[test]
    fn one_byte_failing_anywhere_fails_the_whole() {
        let digit = |b: u8| b.is_ascii_digit();
        assert!(every_byte(b"", digit));
        assert!(every_byte(b"0123456789", digit));
        for at in 0..10 {
            let mut bytes = *b"0123456789";
            bytes[at] = b'x';
            assert!(!every_byte(&bytes, digit), "{at}");
        }
    }
}
