//! Property tests (the fuzz target `tokenizer` of scripts/fuzz.sh): a
//! bundle's tokenizer.json and the `--prompt` text are both outside input.
//! The tokenizer the exporter writes for the tiny test CLIP
//! (tests/fixtures/tokenizer/tiny-clip.json), mutated as JSON (values
//! replaced by hostile ones, keys dropped or added) and as text, must read as
//! a tokenizer or fail with a `TokenizerError`; a tokenizer that reads must
//! tokenize any text to an encoding or an error: never a panic, never an
//! allocation beyond the text's size or the padded length.
//!
//! `PROPTEST_CASES=N` sets the cases; an input that broke a property is
//! saved under `$FUZZ_CRASHERS_DIR` to be kept in
//! tests/fixtures/crashers/tokenizer/ (the JSON, then the text after a line
//! `--- text ---`).

use std::path::PathBuf;

use proptest::prelude::*;
use serde_json::Value;
use tadsr_edge::prompt::Tokenizer;

mod fuzz_support;
use fuzz_support::{config, edit, edited, flipped, note_in_flight, save_crasher};

const TEXT_MARK: &[u8] = b"\n--- text ---\n";

fn original_text() -> String {
    std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer/tiny-clip.json"),
    )
    .unwrap()
}

fn original() -> Value {
    serde_json::from_str(&original_text()).unwrap()
}

/// Texts that stress each step: white space, added tokens, contractions,
/// digits, scripts, emoji, controls.
const TEXTS: [&str; 6] = [
    "",
    "The cat and the dog, on grass!",
    " <|startoftext|>it's\t\n 42 <|endoftext|>!! ",
    "Crème brûlée, ΟΔΟΣ, 東京, 🐱\u{200d}🐶",
    "\u{0}\u{7f}\u{85}\u{2028}e\u{301}",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
];

/// Reads `json` and tokenizes `texts`; why a promise was broken, if one was.
fn check(json: &[u8], texts: &[&str]) -> Result<(), String> {
    let mut input = json.to_vec();
    for text in texts {
        input.extend_from_slice(TEXT_MARK);
        input.extend_from_slice(text.as_bytes());
    }
    note_in_flight("tokenizer", "json", &input);
    let caught = std::panic::catch_unwind(|| -> Result<(), String> {
        let Ok(json) = std::str::from_utf8(json) else {
            return Ok(()); // the bundle reads tokenizer.json as UTF-8 text first
        };
        let Ok(tokenizer) = Tokenizer::from_json(json) else {
            return Ok(());
        };
        for text in texts {
            let Ok(encoding) = tokenizer.encode(text) else {
                continue;
            };
            let length = encoding.ids.len();
            if let Some(padded) = tokenizer.padded_length() {
                if length < padded {
                    return Err(format!("{length} ids, padding to {padded} promised"));
                }
            }
            if encoding.text_start + encoding.text_tokens + encoding.padding > length {
                return Err(format!("counts past the end of {length} ids: {encoding:?}"));
            }
            // a text's ids are bounded by its bytes (each byte one symbol at
            // most), the special tokens and the padding
            let bound = text.len() + 2 * 4096 + tokenizer.padded_length().unwrap_or(0);
            if length > bound {
                return Err(format!("{length} ids for {} bytes of text", text.len()));
            }
            let _ = tokenizer.token_texts(&encoding.ids);
        }
        Ok(())
    });
    match caught {
        Ok(result) => result.map_err(|broken| {
            let saved = save_crasher("tokenizer", "json", &input);
            format!("{broken} (input saved to {})", saved.display())
        }),
        Err(_) => {
            let saved = save_crasher("tokenizer", "json", &input);
            Err(format!("panicked (input saved to {})", saved.display()))
        }
    }
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn mutated_json_reads_or_fails_cleanly(edits in proptest::collection::vec(edit(), 1..6)) {
        let text = serde_json::to_vec(&edited(original(), &edits)).unwrap();
        let result = check(&text, &TEXTS);
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }

    #[test]
    fn mutated_text_reads_or_fails_cleanly(
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cut in proptest::option::of(any::<usize>()),
    ) {
        let text = flipped(original_text().into_bytes(), &flips, cut);
        let result = check(&text, &TEXTS[..3]);
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }

    #[test]
    fn any_text_tokenizes_to_77_ids(text in "\\PC{0,300}", controls in "[\\x00-\\x1f\\s]{0,8}") {
        let tokenizer = Tokenizer::from_json(&original_text()).unwrap();
        let text = format!("{controls}{text}{controls}");
        let encoding = tokenizer.encode(&text).map_err(|e| TestCaseError::fail(e.0))?;
        prop_assert_eq!(encoding.ids.len(), 77, "{:?}", text);
        prop_assert!(encoding.ids.iter().all(|&id| (id as usize) < tokenizer.vocab_size()));
        let result = check(original_text().as_bytes(), &[&text]);
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }
}

#[test]
fn the_original_tokenizer_reads_and_pads_to_77() {
    check(original_text().as_bytes(), &TEXTS).unwrap();
    let tokenizer = Tokenizer::from_json(&original_text()).unwrap();
    assert_eq!(tokenizer.padded_length(), Some(77));
    assert_eq!(tokenizer.encode("the cat").unwrap().ids.len(), 77);
}

/// A saved input's parts: the JSON, then each text.
fn split_at_marks(input: &[u8]) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    let mut rest = input;
    while let Some(at) = rest.windows(TEXT_MARK.len()).position(|w| w == TEXT_MARK) {
        parts.push(&rest[..at]);
        rest = &rest[at + TEXT_MARK.len()..];
    }
    parts.push(rest);
    parts
}

/// Every input a fuzz run found is kept here and must stay fixed.
#[test]
fn kept_crashers_stay_fixed() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/crashers/tokenizer");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        let input = std::fs::read(&path).unwrap();
        let mut parts = split_at_marks(&input);
        let json = parts.remove(0);
        let texts: Vec<String> = parts
            .iter()
            .map(|t| String::from_utf8_lossy(t).into_owned())
            .collect();
        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
        if let Err(broken) = check(json, &texts) {
            panic!("{}: {broken}", path.display());
        }
    }
}
