//! Cutting text a user reads (a message body, a sender's name) without breaking what they see.

use unicode_segmentation::UnicodeSegmentation;

/// The largest cut point at or below `max` bytes in `text` that splits no extended grapheme
/// cluster: nothing a reader sees as one symbol (a letter with its accents, a flag, an emoji
/// sequence joined by zero-width joiners) is cut in two.
pub fn cut_point(text: &str, max: usize) -> usize {
    if text.len() <= max {
        return text.len();
    }
    text.grapheme_indices(true)
        .map(|(at, _)| at)
        .take_while(|&at| at <= max)
        .last()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_keep_flags_emoji_sequences_and_accents_whole() {
        let flags = "\u{1F1E9}\u{1F1EA}".repeat(3);
        for max in 0..flags.len() {
            assert_eq!(cut_point(&flags, max) % 8, 0, "{max}");
        }
        let family = "a\u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467}";
        for max in 1..family.len() {
            assert_eq!(cut_point(family, max), 1, "{max}");
        }
        assert_eq!(cut_point("e\u{301}e\u{301}", 4), 3);
        assert_eq!(cut_point("abc", 2), 2);
        assert_eq!(cut_point("abc", 9), 3);
    }
}
