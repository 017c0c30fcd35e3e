//! The bundle's `tokenizer/tokenizer.json` (the Hugging Face `tokenizers`
//! format the exporter writes) run: text to the token ids the text encoder
//! takes (`tokenizer_json.rs` reads the file). Pure: no files, no ONNX
//! Runtime.
//!
//! Only what byte-level BPE tokenizers of the CLIP family use is read; any
//! other part (a WordPiece model, a normalizer we do not know) is refused by
//! name when the file is read, never guessed at. The steps, in the order
//! `tokenizers` runs them: added tokens split out of the raw text, the
//! normalizer (NFC, whitespace runs to one space, lower case for CLIP), the
//! pre-tokenizers (CLIP's word regex, then the byte-level map), BPE on each
//! piece, truncation, the special tokens around the ids, padding.

use std::collections::HashMap;

use aho_corasick::{AhoCorasick, MatchKind};
use regex::Regex;
use unicode_normalization::UnicodeNormalization as _;

use super::pretokenize::{byte_level_alphabet, byte_of, gpt2_pieces};

/// Why a tokenizer.json cannot be read or a text cannot be tokenized.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TokenizerError(pub String);

pub(super) type Result<T> = std::result::Result<T, TokenizerError>;

pub(super) fn fail<T>(reason: impl Into<String>) -> Result<T> {
    Err(TokenizerError(reason.into()))
}

/// Longest text tokenized, in bytes: a prompt, not a document.
pub const MAX_TEXT_BYTES: usize = 64 << 10;

/// Longest text the normalizers may make of it (NFKC and lower case grow
/// a text by a few times at most).
const MAX_NORMALIZED_BYTES: usize = 16 * MAX_TEXT_BYTES;

/// A token the file lists in `added_tokens`: found in the text as it is,
/// before any other step.
#[derive(Debug, Clone)]
pub(super) struct AddedToken {
    pub(super) content: String,
    pub(super) id: u32,
    /// Matched in the normalized text (true) or in the raw text (false).
    pub(super) normalized: bool,
}

#[derive(Debug, Clone)]
pub(super) enum Normalizer {
    Nfc,
    Nfkc,
    Nfd,
    Nfkd,
    Lowercase,
    Replace { pattern: Pattern, content: String },
    Strip { left: bool, right: bool },
}

#[derive(Debug, Clone)]
pub(super) enum Pattern {
    Literal(String),
    Regex(Regex),
}

#[derive(Debug, Clone)]
pub(super) enum PreTokenizer {
    /// `Split`: `keep_matches` (invert) keeps the matches as pieces and drops
    /// the rest (behavior `Removed`), or keeps both (`Isolated`).
    Split {
        pattern: Pattern,
        invert: bool,
        isolated: bool,
    },
    /// `ByteLevel`: GPT-2's split (with `use_regex`), then each byte as its
    /// printable stand-in.
    ByteLevel { use_regex: bool, prefix_space: bool },
    /// `Whitespace`-free splitting on runs of white space (`WhitespaceSplit`).
    WhitespaceSplit,
}

/// Byte-pair encoding: the vocabulary and the merges by rank.
#[derive(Debug, Clone)]
pub(super) struct Bpe {
    pub(super) vocab: HashMap<String, u32>,
    /// (left id, right id) -> (rank, merged id)
    pub(super) merges: HashMap<(u32, u32), (u32, u32)>,
    pub(super) unk: Option<u32>,
    pub(super) end_of_word_suffix: String,
    pub(super) continuing_subword_prefix: String,
    pub(super) ignore_merges: bool,
}

/// A text tokenized: the ids for the text encoder and what was dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoding {
    /// The ids, with the special tokens and the padding.
    pub ids: Vec<i64>,
    /// The text's own tokens (no special tokens, no padding) that were kept.
    pub text_tokens: usize,
    /// The text's tokens dropped by truncation.
    pub dropped_tokens: usize,
    /// Padding ids at the end.
    pub padding: usize,
    /// Where the text's own ids start in `ids` (after the special tokens).
    pub text_start: usize,
}

impl Encoding {
    /// The text's own ids (no special tokens, no padding).
    pub fn text_ids(&self) -> &[i64] {
        &self.ids[self.text_start..self.text_start + self.text_tokens]
    }
}

/// A tokenizer.json, read.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    pub(super) added: Vec<AddedToken>,
    pub(super) added_raw: AddedMatcher,
    pub(super) added_normalized: AddedMatcher,
    pub(super) normalizers: Vec<Normalizer>,
    pub(super) pre_tokenizers: Vec<PreTokenizer>,
    pub(super) bpe: Bpe,
    /// Ids put before and after the text's (the post-processor's).
    pub(super) prefix: Vec<u32>,
    pub(super) suffix: Vec<u32>,
    /// Truncation: most ids in all, special tokens included.
    pub(super) max_length: Option<usize>,
    /// Padding to a fixed length with this id.
    pub(super) padding: Option<(usize, u32)>,
    pub(super) vocab_size: usize,
}

impl Tokenizer {
    /// Reads a tokenizer.json's text (parsed by `tokenizer_json.rs`).
    pub fn from_json(text: &str) -> Result<Tokenizer> {
        super::tokenizer_json::read(text)
    }

    /// One more than the largest id the tokenizer gives.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// What each id stands for, readable: an added token's text, or a BPE
    /// token's bytes as text (its end-of-word mark dropped; a character
    /// split between tokens shows as U+FFFD); `?` for an unknown id.
    pub fn token_texts(&self, ids: &[i64]) -> Vec<String> {
        let mut by_id: HashMap<u32, &str> = HashMap::new();
        for (token, &id) in &self.bpe.vocab {
            by_id.insert(id, token);
        }
        for added in &self.added {
            by_id.insert(added.id, &added.content);
        }
        ids.iter()
            .map(|&id| {
                let Some(token) = u32::try_from(id).ok().and_then(|id| by_id.get(&id)) else {
                    return "?".to_string();
                };
                if self.added.iter().any(|a| a.content == *token) {
                    return token.to_string();
                }
                let body = token
                    .strip_suffix(self.bpe.end_of_word_suffix.as_str())
                    .filter(|_| !self.bpe.end_of_word_suffix.is_empty())
                    .unwrap_or(token);
                let bytes: Option<Vec<u8>> = body.chars().map(byte_of).collect();
                match bytes {
                    Some(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                    None => body.to_string(),
                }
            })
            .collect()
    }

    /// The length every encoding is padded to, if fixed.
    pub fn padded_length(&self) -> Option<usize> {
        self.padding.map(|(length, _)| length)
    }

    /// `text` as ids: special tokens around, truncated, padded.
    pub fn encode(&self, text: &str) -> Result<Encoding> {
        if text.len() > MAX_TEXT_BYTES {
            return fail(format!(
                "the text is {} bytes; at most {} KiB are tokenized",
                text.len(),
                MAX_TEXT_BYTES >> 10
            ));
        }
        let mut ids: Vec<u32> = Vec::new();
        for (segment, added_id) in self.added_raw.split(text) {
            if let Some(id) = added_id {
                ids.push(id);
                continue;
            }
            let normalized = self.normalize(segment)?;
            for (piece, added_id) in self.added_normalized.split(&normalized) {
                match added_id {
                    Some(id) => ids.push(id),
                    None => {
                        for word in self.pre_tokenize(piece) {
                            self.bpe.encode_word(&word, &mut ids)?;
                        }
                    }
                }
            }
        }
        let specials = self.prefix.len() + self.suffix.len();
        let keep = self
            .max_length
            .map_or(ids.len(), |max| ids.len().min(max - specials));
        let dropped_tokens = ids.len() - keep;
        ids.truncate(keep);
        let mut all: Vec<i64> = self
            .prefix
            .iter()
            .chain(&ids)
            .chain(&self.suffix)
            .map(|&id| i64::from(id))
            .collect();
        let unpadded = all.len();
        if let Some((length, pad_id)) = self.padding {
            if all.len() < length {
                all.resize(length, i64::from(pad_id));
            }
        }
        Ok(Encoding {
            text_start: self.prefix.len(),
            padding: all.len() - unpadded,
            ids: all,
            text_tokens: keep,
            dropped_tokens,
        })
    }

    /// The normalizers in order. A Replace that would grow the text past
    /// [`MAX_NORMALIZED_BYTES`] (a file's regex matching everywhere with a
    /// long replacement) is refused before it is made.
    fn normalize(&self, text: &str) -> Result<String> {
        let mut text = text.to_string();
        for normalizer in &self.normalizers {
            text = match normalizer {
                Normalizer::Nfc => text.nfc().collect(),
                Normalizer::Nfkc => text.nfkc().collect(),
                Normalizer::Nfd => text.nfd().collect(),
                Normalizer::Nfkd => text.nfkd().collect(),
                // per character, as `tokenizers` does (no final-sigma rule)
                Normalizer::Lowercase => text.chars().flat_map(char::to_lowercase).collect(),
                Normalizer::Replace { pattern, content } => {
                    let matches: Vec<(usize, usize)> = match pattern {
                        Pattern::Literal(literal) => text
                            .match_indices(literal.as_str())
                            .map(|(at, m)| (at, at + m.len()))
                            .collect(),
                        Pattern::Regex(regex) => regex
                            .find_iter(&text)
                            .map(|m| (m.start(), m.end()))
                            .collect(),
                    };
                    let removed: usize = matches.iter().map(|(start, end)| end - start).sum();
                    let grown = (text.len() - removed)
                        .saturating_add(matches.len().saturating_mul(content.len()));
                    if grown > MAX_NORMALIZED_BYTES {
                        return fail(format!(
                            "the tokenizer's Replace normalizer would make the text {grown} bytes long (at most {MAX_NORMALIZED_BYTES}); the tokenizer.json is not a usable one"
                        ));
                    }
                    let mut replaced = String::with_capacity(grown);
                    let mut last = 0;
                    for (start, end) in matches {
                        replaced.push_str(&text[last..start]);
                        replaced.push_str(content);
                        last = end;
                    }
                    replaced.push_str(&text[last..]);
                    replaced
                }
                Normalizer::Strip { left, right } => {
                    let mut stripped = text.as_str();
                    if *left {
                        stripped = stripped.trim_start();
                    }
                    if *right {
                        stripped = stripped.trim_end();
                    }
                    stripped.to_string()
                }
            };
        }
        Ok(text)
    }

    /// The words BPE runs on, in order.
    fn pre_tokenize(&self, text: &str) -> Vec<String> {
        let mut pieces = vec![text.to_string()];
        for pre_tokenizer in &self.pre_tokenizers {
            pieces = pieces
                .iter()
                .flat_map(|piece| match pre_tokenizer {
                    PreTokenizer::Split {
                        pattern,
                        invert,
                        isolated,
                    } => split_on(piece, pattern, *invert, *isolated),
                    PreTokenizer::ByteLevel {
                        use_regex,
                        prefix_space,
                    } => {
                        let alphabet = byte_level_alphabet();
                        let text = if *prefix_space && !piece.starts_with(' ') {
                            format!(" {piece}")
                        } else {
                            piece.clone()
                        };
                        let words = if *use_regex {
                            gpt2_pieces(&text)
                        } else {
                            vec![text.as_str()]
                        };
                        words
                            .into_iter()
                            .map(|word| word.bytes().map(|b| alphabet[b as usize]).collect())
                            .collect()
                    }
                    PreTokenizer::WhitespaceSplit => {
                        piece.split_whitespace().map(str::to_string).collect()
                    }
                })
                .filter(|piece: &String| !piece.is_empty())
                .collect();
        }
        pieces
    }
}

/// The added tokens of one kind (matched in the raw text, or in the
/// normalized text), found leftmost and longest first in one pass over the
/// text, as `tokenizers` finds them (Aho-Corasick), whatever their number.
#[derive(Debug, Clone)]
pub(super) struct AddedMatcher {
    automaton: Option<AhoCorasick>,
    ids: Vec<u32>,
}

impl AddedMatcher {
    pub(super) fn new(added: &[AddedToken], normalized: bool) -> Result<AddedMatcher> {
        let tokens: Vec<&AddedToken> = added
            .iter()
            .filter(|a| a.normalized == normalized)
            .collect();
        if tokens.is_empty() {
            return Ok(AddedMatcher {
                automaton: None,
                ids: Vec::new(),
            });
        }
        let automaton = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(tokens.iter().map(|t| t.content.as_bytes()))
            .map_err(|e| TokenizerError(format!("added_tokens: {e}")))?;
        Ok(AddedMatcher {
            automaton: Some(automaton),
            ids: tokens.iter().map(|t| t.id).collect(),
        })
    }

    /// `text` cut at the tokens: (segment, Some(id)) for a token, (segment,
    /// None) for the text between. (A token is valid UTF-8, so a match
    /// starts and ends on character boundaries.)
    fn split<'a>(&self, text: &'a str) -> Vec<(&'a str, Option<u32>)> {
        let Some(automaton) = &self.automaton else {
            return if text.is_empty() {
                Vec::new()
            } else {
                vec![(text, None)]
            };
        };
        let mut out = Vec::new();
        let mut last = 0;
        for found in automaton.find_iter(text) {
            if last < found.start() {
                out.push((&text[last..found.start()], None));
            }
            out.push((
                &text[found.start()..found.end()],
                Some(self.ids[found.pattern().as_usize()]),
            ));
            last = found.end();
        }
        if last < text.len() {
            out.push((&text[last..], None));
        }
        out
    }
}

/// A `Split` pre-tokenizer on one piece.
fn split_on(text: &str, pattern: &Pattern, invert: bool, isolated: bool) -> Vec<String> {
    let matches: Vec<(usize, usize)> = match pattern {
        Pattern::Literal(literal) if literal.is_empty() => Vec::new(),
        Pattern::Literal(literal) => text
            .match_indices(literal.as_str())
            .map(|(at, m)| (at, at + m.len()))
            .collect(),
        Pattern::Regex(regex) => regex
            .find_iter(text)
            .filter(|m| !m.is_empty())
            .map(|m| (m.start(), m.end()))
            .collect(),
    };
    // (start, end, is a match)
    let mut parts = Vec::new();
    let mut last = 0;
    for (start, end) in matches {
        if last < start {
            parts.push((last, start, false));
        }
        parts.push((start, end, true));
        last = end;
    }
    if last < text.len() {
        parts.push((last, text.len(), false));
    }
    parts
        .into_iter()
        // Removed: the pattern's side is dropped (the matches, or with
        // invert everything but them); Isolated keeps both
        .filter(|&(_, _, is_match)| isolated || is_match == invert)
        .map(|(start, end, _)| text[start..end].to_string())
        .collect()
}

impl Bpe {
    /// The best-ranked adjacent pair merged, leftmost first, until no pair
    /// has a merge: a linked list and a heap of candidate pairs (stale ones
    /// skipped when popped), so a long word costs n log n, not n^2.
    fn merge(&self, symbols: &[u32]) -> Vec<u32> {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;

        const NONE: usize = usize::MAX;
        let mut ids = symbols.to_vec();
        let mut next: Vec<usize> = (1..=ids.len()).collect();
        let mut prev: Vec<usize> = (0..ids.len()).map(|i| i.wrapping_sub(1)).collect();
        if let Some(last) = next.last_mut() {
            *last = NONE;
        }
        let mut alive = vec![true; ids.len()];
        // (rank, left position, the pair's ids then, merged id)
        let mut heap = BinaryHeap::new();
        let candidate = |ids: &[u32], left: usize, right: usize| {
            self.merges
                .get(&(ids[left], ids[right]))
                .map(|&(rank, merged)| Reverse((rank, left, ids[left], ids[right], merged)))
        };
        for left in 0..ids.len().saturating_sub(1) {
            heap.extend(candidate(&ids, left, left + 1));
        }
        while let Some(Reverse((_, left, left_id, right_id, merged))) = heap.pop() {
            let right = next[left];
            let stale =
                !alive[left] || right == NONE || ids[left] != left_id || ids[right] != right_id;
            if stale {
                continue;
            }
            ids[left] = merged;
            alive[right] = false;
            next[left] = next[right];
            if next[right] != NONE {
                prev[next[right]] = left;
            }
            if prev[left] != NONE {
                heap.extend(candidate(&ids, prev[left], left));
            }
            if next[left] != NONE {
                heap.extend(candidate(&ids, left, next[left]));
            }
        }
        ids.into_iter()
            .zip(alive)
            .filter_map(|(id, alive)| alive.then_some(id))
            .collect()
    }

    /// Appends the ids of one pre-tokenized word.
    fn encode_word(&self, word: &str, ids: &mut Vec<u32>) -> Result<()> {
        if self.ignore_merges {
            if let Some(&id) = self.vocab.get(word) {
                ids.push(id);
                return Ok(());
            }
        }
        let chars: Vec<char> = word.chars().collect();
        let mut symbols: Vec<u32> = Vec::with_capacity(chars.len());
        for (index, c) in chars.iter().enumerate() {
            let mut token = String::new();
            if index > 0 {
                token.push_str(&self.continuing_subword_prefix);
            }
            token.push(*c);
            if index + 1 == chars.len() {
                token.push_str(&self.end_of_word_suffix);
            }
            match (self.vocab.get(&token), self.unk) {
                (Some(&id), _) => symbols.push(id),
                (None, Some(unk)) => symbols.push(unk),
                (None, None) => {
                    return fail(format!(
                        "{token:?} is not in the vocabulary and the tokenizer has no unk_token"
                    ))
                }
            }
        }
        ids.extend(self.merge(&symbols));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// A CLIP-shaped tokenizer.json over a small vocabulary: every byte's
    /// stand-in alone and with `</w>`, the merges given, the special tokens.
    fn clip_like(merges: &[(&str, &str)]) -> String {
        let alphabet = byte_level_alphabet();
        let mut tokens: Vec<String> = (0..256).map(|b| alphabet[b].to_string()).collect();
        tokens.extend((0..256).map(|b| format!("{}</w>", alphabet[b])));
        tokens.extend(merges.iter().map(|(a, b)| format!("{a}{b}")));
        tokens.push("<|startoftext|>".into());
        tokens.push("<|endoftext|>".into());
        let vocab: serde_json::Map<String, Value> = tokens
            .iter()
            .enumerate()
            .map(|(id, token)| (token.clone(), Value::from(id)))
            .collect();
        let (bos, eos) = (tokens.len() - 2, tokens.len() - 1);
        let bang = vocab["!"].clone();
        serde_json::json!({
            "version": "1.0",
            "truncation": {"direction": "Right", "max_length": 8, "strategy": "LongestFirst", "stride": 0},
            "padding": {"strategy": {"Fixed": 8}, "direction": "Right", "pad_id": bang, "pad_token": "!"},
            "added_tokens": [
                {"id": bang, "content": "!", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
                {"id": bos, "content": "<|startoftext|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
                {"id": eos, "content": "<|endoftext|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
            ],
            "normalizer": {"type": "Sequence", "normalizers": [
                {"type": "NFC"}, {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "}, {"type": "Lowercase"}]},
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": "<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+"}, "behavior": "Removed", "invert": true},
                {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}]},
            "post_processor": {"type": "RobertaProcessing", "sep": ["<|endoftext|>", eos], "cls": ["<|startoftext|>", bos]},
            "model": {"type": "BPE", "dropout": null, "unk_token": "<|endoftext|>", "continuing_subword_prefix": "",
                      "end_of_word_suffix": "</w>", "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                      "vocab": vocab, "merges": merges.iter().map(|(a, b)| vec![*a, *b]).collect::<Vec<_>>()}
        })
        .to_string()
    }

    fn id(tokenizer: &Tokenizer, token: &str) -> i64 {
        i64::from(tokenizer.bpe.vocab[token])
    }

    #[test]
    fn merges_apply_by_rank_and_the_word_end_is_marked() {
        // "th" before "the</w>"; "he</w>" would win over nothing once "th" took the t
        let t = Tokenizer::from_json(&clip_like(&[("t", "h"), ("th", "e</w>"), ("h", "e</w>")]))
            .unwrap();
        let e = t.encode("The  hat").unwrap();
        let (bos, eos, pad) = (
            id(&t, "<|startoftext|>"),
            id(&t, "<|endoftext|>"),
            id(&t, "!"),
        );
        let want = vec![
            bos,
            id(&t, "the</w>"),
            id(&t, "h"),
            id(&t, "a"),
            id(&t, "t</w>"),
            eos,
            pad,
            pad,
        ];
        assert_eq!(e.ids, want);
        assert_eq!((e.text_tokens, e.dropped_tokens, e.padding), (4, 0, 2));
        // "he": rank 2 applies when "th" cannot
        let e = t.encode("he").unwrap();
        assert_eq!(e.ids[1], id(&t, "he</w>"));
    }

    #[test]
    fn punctuation_digits_and_contractions_are_pieces_of_their_own() {
        let t = Tokenizer::from_json(&clip_like(&[])).unwrap();
        // "it's 42," -> it | 's | 4 | 2 | ,
        let e = t.encode("it's 42,").unwrap();
        let want = [
            id(&t, "i"),
            id(&t, "t</w>"),
            id(&t, "'"),
            id(&t, "s</w>"),
            id(&t, "4</w>"),
            id(&t, "2</w>"),
        ];
        assert_eq!(e.ids[1..7], want);
        // truncated: 7 text tokens, 6 kept (8 ids less the two special)
        assert_eq!((e.text_tokens, e.dropped_tokens, e.padding), (6, 1, 0));
        assert_eq!(e.ids.len(), 8);
        assert_eq!(e.ids[7], id(&t, "<|endoftext|>"));
    }

    /// The textbook loop: merge the lowest-ranked pair, leftmost first.
    fn merge_naive(bpe: &Bpe, symbols: &[u32]) -> Vec<u32> {
        let mut symbols = symbols.to_vec();
        loop {
            let best = symbols
                .windows(2)
                .enumerate()
                .filter_map(|(at, pair)| {
                    bpe.merges
                        .get(&(pair[0], pair[1]))
                        .map(|&(rank, merged)| (rank, at, merged))
                })
                .min_by_key(|&(rank, at, _)| (rank, at));
            let Some((_, at, merged)) = best else {
                return symbols;
            };
            symbols[at] = merged;
            symbols.remove(at + 1);
        }
    }

    #[test]
    fn the_heap_merge_is_the_textbook_merge() {
        use rand::{Rng as _, SeedableRng as _};
        // merges over a three-letter alphabet, chained (later merges build on earlier ones)
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut pieces: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let mut merges: Vec<(String, String)> = Vec::new();
        while merges.len() < 40 {
            let left = pieces[rng.random_range(0..pieces.len())].clone();
            let right = pieces[rng.random_range(0..pieces.len())].clone();
            let merged = format!("{left}{right}");
            if merged.len() <= 6 && !pieces.contains(&merged) {
                pieces.push(merged);
                merges.push((left, right));
            }
        }
        let borrowed: Vec<(&str, &str)> = merges
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let t = Tokenizer::from_json(&clip_like(&borrowed)).unwrap();
        let mut shortened = 0;
        for _ in 0..500 {
            let length = rng.random_range(1..40);
            let symbols: Vec<u32> = (0..length)
                .map(|_| t.bpe.vocab[["a", "b", "c"][rng.random_range(0..3)]])
                .collect();
            let merged = t.bpe.merge(&symbols);
            assert_eq!(merged, merge_naive(&t.bpe, &symbols), "{symbols:?}");
            shortened += usize::from(merged.len() < symbols.len());
        }
        // the merges did work: most words lost symbols
        assert!(shortened > 400, "{shortened}");
    }

    #[test]
    fn any_text_tokenizes_to_the_fixed_length() {
        use rand::{Rng as _, SeedableRng as _};
        let t = Tokenizer::from_json(&clip_like(&[("t", "h"), ("th", "e</w>")])).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        // ASCII with controls, Latin-1, combining marks, Greek, CJK, emoji, ZWJ, odd spaces
        let ranges = [
            0x00..0x80,
            0x80..0x100,
            0x300..0x370,
            0x370..0x400,
            0x4E00..0x4E40,
            0x1F400..0x1F440,
            0x2000..0x2030,
        ];
        for _ in 0..2000 {
            let length = rng.random_range(0..30);
            let specials = rng.random_range(0..4);
            let mut text: String = (0..length)
                .filter_map(|_| {
                    let range = ranges[rng.random_range(0..ranges.len())].clone();
                    char::from_u32(rng.random_range(range))
                })
                .collect();
            text.extend(["!", "<|endoftext|>", " "].iter().take(specials).copied());
            let e = t.encode(&text).unwrap();
            assert_eq!(e.ids.len(), 8, "{text:?}");
            assert_eq!(e.text_tokens + 2 + e.padding, 8, "{text:?}");
            assert!(e.ids.iter().all(|&id| (id as usize) < t.vocab_size()));
        }
    }

    #[test]
    fn tokens_read_back_as_text() {
        let t = Tokenizer::from_json(&clip_like(&[("t", "h"), ("th", "e</w>")])).unwrap();
        let e = t.encode("The É!").unwrap();
        let text_ids = e.text_ids();
        // "é" is two bytes in two tokens: each half alone is not UTF-8
        assert_eq!(
            t.token_texts(text_ids),
            ["the", "\u{FFFD}", "\u{FFFD}", "!"]
        );
        assert_eq!(t.token_texts(&e.ids[..1]), ["<|startoftext|>"]);
        assert_eq!(t.token_texts(&[-1, 1 << 40]), ["?", "?"]);
    }

    #[test]
    fn added_tokens_are_cut_from_the_raw_text_first() {
        let t = Tokenizer::from_json(&clip_like(&[])).unwrap();
        let e = t.encode("a!b").unwrap();
        // "!" is the pad token, listed as added: it is found before the
        // word regex would have made it "!</w>"
        assert_eq!(e.ids[1..4], [id(&t, "a</w>"), id(&t, "!"), id(&t, "b</w>")]);
        let e = t.encode("<|endoftext|>").unwrap();
        assert_eq!(e.ids[1], id(&t, "<|endoftext|>"));
    }

    #[test]
    fn non_ascii_text_goes_through_the_byte_map() {
        let t = Tokenizer::from_json(&clip_like(&[])).unwrap();
        let alphabet = byte_level_alphabet();
        // "É" lower-cases to "é" (U+00E9, bytes C3 A9): two symbols
        let e = t.encode("É").unwrap();
        assert_eq!(e.ids[1], id(&t, &alphabet[0xC3].to_string()));
        assert_eq!(e.ids[2], id(&t, &format!("{}</w>", alphabet[0xA9])));
        // NFC: "e" + combining acute is the same as "é"
        assert_eq!(
            t.encode("e\u{301}").unwrap().ids,
            t.encode("é").unwrap().ids
        );
    }

    #[test]
    fn files_this_runtime_cannot_read_are_refused_by_name() {
        let good: Value = serde_json::from_str(&clip_like(&[("t", "h")])).unwrap();
        let with = |pointer: &str, value: Value| {
            let mut json = good.clone();
            *json.pointer_mut(pointer).unwrap() = value;
            Tokenizer::from_json(&json.to_string()).unwrap_err().0
        };
        assert!(with("/model/type", "WordPiece".into()).contains("not BPE"));
        assert!(
            with("/normalizer/normalizers/0/type", "BertNormalizer".into())
                .contains("BertNormalizer")
        );
        assert!(with("/model/merges/0", Value::Null).contains("merge 0 is not two tokens"));
        assert!(with("/model/merges/0", serde_json::json!(["t", "q"])).contains("\"tq\""));
        assert!(with("/added_tokens/0/lstrip", true.into()).contains("lstrip"));
        assert!(with("/truncation/max_length", 1.into()).contains("no room"));
        // a fixed length far beyond any text encoder is refused, not allocated
        assert!(with("/padding/strategy/Fixed", (1u64 << 40).into()).contains("padding to"));
        assert!(Tokenizer::from_json("{")
            .unwrap_err()
            .0
            .contains("not JSON"));
        // a Replace matching everywhere with a long replacement: refused, not grown to gigabytes
        let mut json = good.clone();
        json["normalizer"]["normalizers"][1] = serde_json::json!({"type": "Replace", "pattern": {"Regex": "x*"}, "content": "y".repeat(4096)});
        let t = Tokenizer::from_json(&json.to_string()).unwrap();
        assert!(t
            .encode(&"ab".repeat(1000))
            .unwrap_err()
            .0
            .contains("Replace"));
        assert!(
            t.encode("ab").is_ok(),
            "a short text stays within the bound"
        );
        let long = "a".repeat(MAX_TEXT_BYTES + 1);
        let t = Tokenizer::from_json(&clip_like(&[])).unwrap();
        assert!(t.encode(&long).unwrap_err().0.contains("KiB"));
    }
}
