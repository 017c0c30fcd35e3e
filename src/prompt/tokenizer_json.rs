//! Reading `tokenizer.json` into a [`Tokenizer`]: every part checked and
//! anything this runtime does not run refused by name.

use std::collections::HashMap;

use regex::Regex;
use serde_json::Value;

use super::tokenizer::{
    fail, AddedMatcher, AddedToken, Bpe, Normalizer, Pattern, PreTokenizer, Result, Tokenizer,
    TokenizerError,
};

/// Most vocabulary entries or merges read (CLIP has 49408 and 48894).
const MAX_ENTRIES: usize = 1 << 20;

/// Longest fixed length padded to (a prompt embedding has at most 4096
/// tokens, as `--prompt-embeds` files).
const MAX_PADDED_IDS: u64 = 4096;

fn string_field<'a>(value: &'a Value, key: &str, what: &str) -> Result<&'a str> {
    match value.get(key) {
        Some(Value::String(text)) => Ok(text),
        _ => fail(format!("{what}: \"{key}\" is missing or not a string")),
    }
}

fn bool_field(value: &Value, key: &str) -> bool {
    value.get(key).and_then(Value::as_bool).unwrap_or(false)
}

fn id_value(value: &Value, what: &str) -> Result<u32> {
    value
        .as_u64()
        .and_then(|id| u32::try_from(id).ok())
        .map_or_else(|| fail(format!("{what} is not a token id")), Ok)
}

fn pattern(value: &Value, what: &str) -> Result<Pattern> {
    if let Some(Value::String(text)) = value.get("String") {
        return Ok(Pattern::Literal(text.clone()));
    }
    if let Some(Value::String(text)) = value.get("Regex") {
        return Regex::new(text).map(Pattern::Regex).or_else(|e| {
            fail(format!(
                "{what}: the regular expression {text:?} is not one this runtime reads ({e})"
            ))
        });
    }
    fail(format!(
        "{what}: pattern {value} is neither String nor Regex"
    ))
}

/// The items of a `Sequence` (under `key`), or the value alone.
fn sequence<'a>(value: &'a Value, key: &str) -> Vec<&'a Value> {
    match (value.get("type").and_then(Value::as_str), value.get(key)) {
        (Some("Sequence"), Some(Value::Array(items))) => items.iter().collect(),
        _ => vec![value],
    }
}

fn read_normalizer(value: &Value) -> Result<Normalizer> {
    let kind = string_field(value, "type", "normalizer")?;
    Ok(match kind {
        "NFC" => Normalizer::Nfc,
        "NFKC" => Normalizer::Nfkc,
        "NFD" => Normalizer::Nfd,
        "NFKD" => Normalizer::Nfkd,
        "Lowercase" => Normalizer::Lowercase,
        "Replace" => Normalizer::Replace {
            pattern: pattern(
                value.get("pattern").unwrap_or(&Value::Null),
                "normalizer Replace",
            )?,
            content: string_field(value, "content", "normalizer Replace")?.to_string(),
        },
        "Strip" => Normalizer::Strip {
            left: bool_field(value, "strip_left"),
            right: bool_field(value, "strip_right"),
        },
        other => return fail(format!("normalizer {other} is not one this runtime reads")),
    })
}

fn read_pre_tokenizer(value: &Value) -> Result<PreTokenizer> {
    let kind = string_field(value, "type", "pre_tokenizer")?;
    Ok(match kind {
        "Split" => {
            let behavior = string_field(value, "behavior", "pre_tokenizer Split")?;
            let isolated = match behavior {
                "Removed" => false,
                "Isolated" => true,
                other => {
                    return fail(format!(
                        "pre_tokenizer Split behavior {other} is not one this runtime reads (Removed, Isolated)"
                    ))
                }
            };
            PreTokenizer::Split {
                pattern: pattern(
                    value.get("pattern").unwrap_or(&Value::Null),
                    "pre_tokenizer Split",
                )?,
                invert: bool_field(value, "invert"),
                isolated,
            }
        }
        "ByteLevel" => PreTokenizer::ByteLevel {
            use_regex: value
                .get("use_regex")
                .and_then(Value::as_bool)
                .unwrap_or(true),
            prefix_space: bool_field(value, "add_prefix_space"),
        },
        "WhitespaceSplit" => PreTokenizer::WhitespaceSplit,
        other => {
            return fail(format!(
                "pre_tokenizer {other} is not one this runtime reads"
            ))
        }
    })
}

fn read_bpe(model: &Value) -> Result<Bpe> {
    let kind = string_field(model, "type", "model")?;
    if kind != "BPE" {
        return fail(format!(
            "model type {kind} is not BPE; this runtime reads byte-level BPE tokenizers (CLIP's)"
        ));
    }
    if !matches!(model.get("dropout"), None | Some(Value::Null)) {
        return fail("model: BPE dropout is set; a tokenizer for inference has none");
    }
    if bool_field(model, "byte_fallback") {
        return fail("model: byte_fallback is not read by this runtime");
    }
    let Some(Value::Object(entries)) = model.get("vocab") else {
        return fail("model: \"vocab\" is missing or not a map of token to id");
    };
    if entries.len() > MAX_ENTRIES {
        return fail(format!("model: over {MAX_ENTRIES} vocabulary entries"));
    }
    let mut vocab = HashMap::with_capacity(entries.len());
    for (token, id) in entries {
        vocab.insert(token.clone(), id_value(id, &format!("vocab[{token:?}]"))?);
    }
    let Some(Value::Array(merge_list)) = model.get("merges") else {
        return fail("model: \"merges\" is missing or not a list");
    };
    if merge_list.len() > MAX_ENTRIES {
        return fail(format!("model: over {MAX_ENTRIES} merges"));
    }
    let optional_string = |key: &str| {
        model
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let continuing_subword_prefix = optional_string("continuing_subword_prefix");
    let end_of_word_suffix = optional_string("end_of_word_suffix");
    let mut merges = HashMap::with_capacity(merge_list.len());
    for (rank, merge) in merge_list.iter().enumerate() {
        // "a b" (older files) or ["a", "b"]
        let (left, right) = match merge {
            Value::String(text) => match text.split_once(' ') {
                Some((left, right)) => (left.to_string(), right.to_string()),
                None => return fail(format!("model: merge {rank} {text:?} is not two tokens")),
            },
            Value::Array(pair) if pair.len() == 2 => match (pair[0].as_str(), pair[1].as_str()) {
                (Some(left), Some(right)) => (left.to_string(), right.to_string()),
                _ => return fail(format!("model: merge {rank} is not two tokens")),
            },
            _ => return fail(format!("model: merge {rank} is not two tokens")),
        };
        let id_of = |token: &str| {
            vocab.get(token).copied().map_or_else(
                || {
                    fail(format!(
                        "model: merge {rank} names {token:?}, which is not in the vocabulary"
                    ))
                },
                Ok,
            )
        };
        let right_body = right
            .strip_prefix(continuing_subword_prefix.as_str())
            .unwrap_or(&right);
        let merged = format!("{left}{right_body}");
        let entry = (id_of(&left)?, id_of(&right)?);
        let value = (rank as u32, id_of(&merged)?);
        // the first (best-ranked) listing of a pair wins
        merges.entry(entry).or_insert(value);
    }
    let unk = match model.get("unk_token") {
        None | Some(Value::Null) => None,
        Some(Value::String(token)) => Some(*vocab.get(token).ok_or_else(|| {
            TokenizerError(format!(
                "model: unk_token {token:?} is not in the vocabulary"
            ))
        })?),
        Some(other) => return fail(format!("model: unk_token {other} is not a string")),
    };
    Ok(Bpe {
        vocab,
        merges,
        unk,
        end_of_word_suffix,
        continuing_subword_prefix,
        ignore_merges: bool_field(model, "ignore_merges"),
    })
}

/// The post-processor's special ids before and after the text.
fn read_post_processor(value: &Value) -> Result<(Vec<u32>, Vec<u32>)> {
    if value.is_null() {
        return Ok((Vec::new(), Vec::new()));
    }
    let kind = string_field(value, "type", "post_processor")?;
    let token_id = |key: &str| -> Result<u32> {
        match value.get(key) {
            Some(Value::Array(pair)) if pair.len() == 2 => {
                id_value(&pair[1], &format!("post_processor {key}"))
            }
            _ => fail(format!(
                "post_processor {kind}: \"{key}\" is not [token, id]"
            )),
        }
    };
    match kind {
        "RobertaProcessing" | "BertProcessing" => {
            Ok((vec![token_id("cls")?], vec![token_id("sep")?]))
        }
        "TemplateProcessing" => {
            let Some(Value::Array(single)) = value.get("single") else {
                return fail("post_processor TemplateProcessing: \"single\" is missing");
            };
            let specials = value.get("special_tokens");
            let special_ids = |name: &str| -> Result<Vec<u32>> {
                let ids = specials
                    .and_then(|s| s.get(name))
                    .and_then(|s| s.get("ids"))
                    .and_then(Value::as_array)
                    .ok_or_else(|| {
                        TokenizerError(format!(
                            "post_processor TemplateProcessing: special token {name:?} is not listed"
                        ))
                    })?;
                ids.iter()
                    .map(|id| id_value(id, "post_processor TemplateProcessing id"))
                    .collect()
            };
            let (mut before, mut after, mut seen_text) = (Vec::new(), Vec::new(), false);
            for piece in single {
                if let Some(special) = piece.get("SpecialToken") {
                    let ids =
                        special_ids(string_field(special, "id", "post_processor SpecialToken")?)?;
                    if seen_text {
                        after.extend(ids)
                    } else {
                        before.extend(ids)
                    }
                } else if piece.get("Sequence").is_some() {
                    seen_text = true;
                } else {
                    return fail(format!(
                        "post_processor TemplateProcessing: piece {piece} is not read"
                    ));
                }
            }
            Ok((before, after))
        }
        other => fail(format!(
            "post_processor {other} is not one this runtime reads"
        )),
    }
}

/// Reads a tokenizer.json's text.
pub(super) fn read(text: &str) -> Result<Tokenizer> {
    let root: Value =
        serde_json::from_str(text).map_err(|e| TokenizerError(format!("not JSON: {e}")))?;
    let bpe = read_bpe(root.get("model").unwrap_or(&Value::Null))?;
    let mut added = Vec::new();
    if let Some(Value::Array(tokens)) = root.get("added_tokens") {
        for token in tokens {
            let content = string_field(token, "content", "added_tokens")?.to_string();
            for flag in ["single_word", "lstrip", "rstrip"] {
                if bool_field(token, flag) {
                    return fail(format!(
                        "added token {content:?} sets {flag}, which this runtime does not read"
                    ));
                }
            }
            if content.is_empty() {
                return fail("added_tokens: an empty token");
            }
            added.push(AddedToken {
                id: id_value(token.get("id").unwrap_or(&Value::Null), "added token id")?,
                normalized: bool_field(token, "normalized"),
                content,
            });
        }
    }
    let normalizers = match root.get("normalizer") {
        None | Some(Value::Null) => Vec::new(),
        Some(value) => sequence(value, "normalizers")
            .into_iter()
            .map(read_normalizer)
            .collect::<Result<_>>()?,
    };
    let pre_tokenizers = match root.get("pre_tokenizer") {
        None | Some(Value::Null) => Vec::new(),
        Some(value) => sequence(value, "pretokenizers")
            .into_iter()
            .map(read_pre_tokenizer)
            .collect::<Result<_>>()?,
    };
    let (prefix, suffix) = read_post_processor(root.get("post_processor").unwrap_or(&Value::Null))?;
    let max_length = match root.get("truncation") {
        None | Some(Value::Null) => None,
        Some(truncation) => {
            if truncation.get("direction").and_then(Value::as_str) == Some("Left") {
                return fail("truncation from the left is not read by this runtime");
            }
            let length = truncation
                .get("max_length")
                .and_then(Value::as_u64)
                .ok_or_else(|| TokenizerError("truncation: max_length is missing".into()))?;
            Some(length as usize)
        }
    };
    let padding = match root.get("padding") {
        None | Some(Value::Null) => None,
        Some(padding) => {
            if padding.get("direction").and_then(Value::as_str) == Some("Left") {
                return fail("padding on the left is not read by this runtime");
            }
            let Some(length) = padding
                .get("strategy")
                .and_then(|s| s.get("Fixed"))
                .and_then(Value::as_u64)
            else {
                return fail(
                    "padding: only a fixed length is read (the text encoder takes a fixed number of ids)",
                );
            };
            if length == 0 || length > MAX_PADDED_IDS {
                return fail(format!(
                    "padding to {length} ids; a text encoder takes 1 to {MAX_PADDED_IDS} (CLIP's: 77)"
                ));
            }
            let pad_id = id_value(
                padding.get("pad_id").unwrap_or(&Value::Null),
                "padding pad_id",
            )?;
            Some((length as usize, pad_id))
        }
    };
    if let Some(max) = max_length {
        if max < prefix.len() + suffix.len() {
            return fail(format!(
                "truncation max_length {max} leaves no room for the {} special tokens",
                prefix.len() + suffix.len()
            ));
        }
    }
    let vocab_size = bpe
        .vocab
        .values()
        .chain(added.iter().map(|a| &a.id))
        .max()
        .map_or(0, |max| *max as usize + 1);
    Ok(Tokenizer {
        added_raw: AddedMatcher::new(&added, false)?,
        added_normalized: AddedMatcher::new(&added, true)?,
        added,
        normalizers,
        pre_tokenizers,
        bpe,
        prefix,
        suffix,
        max_length,
        padding,
        vocab_size,
    })
}
