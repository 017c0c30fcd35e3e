//! The byte-level pre-tokenizer's two parts: the map of each byte to a
//! printable character (so BPE works on text with no control characters or
//! spaces), and GPT-2's split of a text into words, written out by hand
//! because its `\s+(?!\S)` needs a look-ahead the `regex` crate has not.

use std::sync::OnceLock;

/// Byte -> its printable stand-in: the printable Latin-1 bytes stand for
/// themselves, the other 68 take the characters from U+0100 on, in byte order.
pub fn byte_level_alphabet() -> &'static [char; 256] {
    static ALPHABET: OnceLock<[char; 256]> = OnceLock::new();
    ALPHABET.get_or_init(|| {
        let printable = |b: u32| {
            (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b)
        };
        let mut table = ['\0'; 256];
        let mut next = 0x100;
        for (byte, slot) in table.iter_mut().enumerate() {
            let byte = byte as u32;
            let code = if printable(byte) {
                byte
            } else {
                next += 1;
                next - 1
            };
            *slot = char::from_u32(code).unwrap_or('\u{FFFD}');
        }
        table
    })
}

/// The byte a printable stand-in stands for ([`byte_level_alphabet`]).
pub fn byte_of(c: char) -> Option<u8> {
    byte_level_alphabet()
        .iter()
        .position(|&stand_in| stand_in == c)
        .and_then(|byte| u8::try_from(byte).ok())
}

const CONTRACTIONS: [&str; 7] = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d"];

/// `\p{L}` (the regex crate's class: `char::is_alphabetic` also holds for
/// some marks and letter-like numbers).
fn is_letter(c: char) -> bool {
    static LETTER: OnceLock<regex::Regex> = OnceLock::new();
    let letter = LETTER.get_or_init(|| regex::Regex::new(r"^\p{L}$").expect("a valid class"));
    let mut buffer = [0u8; 4];
    letter.is_match(c.encode_utf8(&mut buffer))
}

/// `\p{N}`.
fn is_number(c: char) -> bool {
    c.is_numeric()
}

fn is_other(c: char) -> bool {
    !c.is_whitespace() && !is_letter(c) && !is_number(c)
}

/// The end of the run of chars from `from` that satisfy `class`.
fn run_end(text: &str, from: usize, class: fn(char) -> bool) -> usize {
    text[from..]
        .char_indices()
        .find(|&(_, c)| !class(c))
        .map_or(text.len(), |(at, _)| from + at)
}

/// GPT-2's words: `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+|
/// ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`, tried in that order at each position.
pub fn gpt2_pieces(text: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut at = 0;
    while at < text.len() {
        let end = gpt2_match_end(text, at);
        pieces.push(&text[at..end]);
        at = end;
    }
    pieces
}

fn gpt2_match_end(text: &str, at: usize) -> usize {
    let rest = &text[at..];
    if let Some(contraction) = CONTRACTIONS.iter().find(|c| rest.starts_with(**c)) {
        return at + contraction.len();
    }
    let after_space = if rest.starts_with(' ') { at + 1 } else { at };
    for class in [is_letter as fn(char) -> bool, is_number, is_other] {
        let end = run_end(text, after_space, class);
        if end > after_space {
            return end;
        }
    }
    // white space: the run, less its last character when a non-space follows
    let end = run_end(text, at, char::is_whitespace);
    if end == text.len() {
        return end;
    }
    let last_start = text[at..end]
        .char_indices()
        .last()
        .map_or(at, |(i, _)| at + i);
    if last_start > at {
        last_start
    } else {
        // `\s+` alone: one white-space character before a non-space
        end.max(at + rest.chars().next().map_or(1, char::len_utf8))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_alphabet_is_a_bijection_onto_printable_characters() {
        let alphabet = byte_level_alphabet();
        let mut seen: Vec<char> = alphabet.to_vec();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 256);
        assert_eq!(alphabet[b'a' as usize], 'a');
        // space, the first byte that is not printable after 0x00..0x20
        assert_eq!(alphabet[b' ' as usize], '\u{120}');
        assert_eq!(alphabet[0], '\u{100}');
        assert_eq!(alphabet[0xAD], '\u{143}');
        assert!(alphabet
            .iter()
            .all(|c| !c.is_whitespace() && !c.is_control()));
    }

    #[test]
    fn gpt2_words() {
        assert_eq!(
            gpt2_pieces("Hello world's 42!!"),
            ["Hello", " world", "'s", " 42", "!!"]
        );
        // a run of spaces: all but the last stay together, the last joins the word
        assert_eq!(gpt2_pieces("a   b"), ["a", "  ", " b"]);
        assert_eq!(gpt2_pieces("a \n"), ["a", " \n"]);
        assert_eq!(gpt2_pieces("\nx"), ["\n", "x"]);
        assert_eq!(gpt2_pieces("é1ⅷ"), ["é", "1ⅷ"]);
        assert!(gpt2_pieces("").is_empty());
    }
}
