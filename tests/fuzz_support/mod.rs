//! What the JSON fuzz targets share (tests/fuzz_manifest.rs,
//! tests/fuzz_tokenizer.rs): hostile values, edits of a JSON document by
//! path, the proptest configuration, and where inputs that broke a property
//! are kept (`$FUZZ_CRASHERS_DIR/<target>/`, see scripts/fuzz.sh). Each
//! target uses what it needs.
#![allow(dead_code)]

use std::path::PathBuf;

use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::Value;

/// Values that break assumptions.
pub fn hostile_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        Just(Value::from(0)),
        Just(Value::from(-1)),
        Just(Value::from(1)),
        Just(Value::from(u32::MAX)),
        Just(Value::from(u64::MAX)),
        Just(Value::from(i64::MIN)),
        Just(Value::from(1e300)),
        Just(Value::from(-0.0)),
        Just(Value::from(1e-300)),
        Just(Value::from(1_000_000_000_000u64)),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        Just(Value::from("")),
        Just(Value::from("..")),
        Just(Value::from("/etc/passwd")),
        Just(Value::from("../../manifest.json")),
        Just(Value::from("unet/model.onnx")),
        Just(Value::from("a\nb")),
        ".{0,24}".prop_map(Value::from),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            proptest::collection::btree_map(".{0,8}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

#[derive(Debug, Clone)]
pub enum Edit {
    /// Replace the node found by following `path` (indices into each
    /// object's keys / array's items, modulo their count).
    Replace(Vec<usize>, Value),
    Remove(Vec<usize>),
    /// Add a key to the object at `path`.
    Add(Vec<usize>, String, Value),
}

pub fn edit() -> impl Strategy<Value = Edit> {
    let path = proptest::collection::vec(any::<usize>(), 0..6);
    prop_oneof![
        (path.clone(), hostile_value()).prop_map(|(p, v)| Edit::Replace(p, v)),
        path.clone().prop_map(Edit::Remove),
        (path, ".{0,12}", hostile_value()).prop_map(|(p, k, v)| Edit::Add(p, k, v)),
    ]
}

/// The node at `path` (stops early at leaves) and, for removal, its parent.
pub fn node_mut<'a>(value: &'a mut Value, path: &[usize]) -> &'a mut Value {
    let Some((first, rest)) = path.split_first() else {
        return value;
    };
    let is_leaf = match &*value {
        Value::Object(map) => map.is_empty(),
        Value::Array(items) => items.is_empty(),
        _ => true,
    };
    if is_leaf {
        return value;
    }
    match value {
        Value::Object(map) => {
            let key = map.keys().nth(first % map.len()).unwrap().clone();
            node_mut(map.get_mut(&key).unwrap(), rest)
        }
        Value::Array(items) => {
            let n = items.len();
            node_mut(&mut items[first % n], rest)
        }
        _ => unreachable!(),
    }
}

pub fn apply(manifest: &mut Value, edit: &Edit) {
    match edit {
        Edit::Replace(path, new) => *node_mut(manifest, path) = new.clone(),
        Edit::Remove(path) => {
            if let Some((last, parent_path)) = path.split_last() {
                match node_mut(manifest, parent_path) {
                    Value::Object(map) if !map.is_empty() => {
                        let key = map.keys().nth(last % map.len()).unwrap().clone();
                        map.remove(&key);
                    }
                    Value::Array(items) if !items.is_empty() => {
                        let n = items.len();
                        items.remove(last % n);
                    }
                    _ => {}
                }
            }
        }
        Edit::Add(path, key, new) => {
            if let Value::Object(map) = node_mut(manifest, path) {
                map.insert(key.clone(), new.clone());
            }
        }
    }
}

/// `document` with `edits` applied in order.
pub fn edited(mut document: Value, edits: &[Edit]) -> Value {
    for e in edits {
        apply(&mut document, e);
    }
    document
}

/// Byte flips of a text: each `(at, value)` sets the byte at `at` modulo
/// the length; then the text is cut at `cut` modulo the length, if given.
pub fn flipped(mut text: Vec<u8>, flips: &[(usize, u8)], cut: Option<usize>) -> Vec<u8> {
    for (at, value) in flips {
        let n = text.len();
        text[at % n] = *value;
    }
    if let Some(cut) = cut {
        let n = text.len();
        text.truncate(cut % n);
    }
    text
}

pub fn crashers_dir() -> PathBuf {
    std::env::var_os("FUZZ_CRASHERS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fuzz-crashers"))
}

/// Under scripts/fuzz.sh, the input of the case in progress, so that one
/// that aborts the process (not a panic: an allocation failure, a stack
/// overflow) is left on disk. The script removes these after a good round.
pub fn note_in_flight(target: &str, extension: &str, input: &[u8]) {
    if std::env::var_os("FUZZ_CRASHERS_DIR").is_some() {
        let dir = crashers_dir().join(target);
        let _ = std::fs::create_dir_all(&dir);
        let name = format!("in-flight-{:?}.{extension}", std::thread::current().id()).replace(
            |c: char| !c.is_ascii_alphanumeric() && c != '.' && c != '-',
            "",
        );
        let _ = std::fs::write(dir.join(name), input);
    }
}

/// Saves an input that broke a property, named by its content.
pub fn save_crasher(target: &str, extension: &str, text: &[u8]) -> PathBuf {
    let hash = text.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    });
    let dir = crashers_dir().join(target);
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(format!("{hash:016x}.{extension}"));
    let _ = std::fs::write(&path, text);
    path
}

/// Cases per property: `PROPTEST_CASES`, else `default`.
pub fn config(default: u32) -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(default);
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}
