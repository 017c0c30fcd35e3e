//! Property tests (the fuzz target `manifest` of scripts/fuzz.sh): the model
//! bundle's manifest parser. The committed models/tiny manifest, mutated as
//! JSON (values replaced by hostile ones, keys dropped) and as text, must
//! give a bundle or a typed [`Error::Bundle`] from `Bundle::open_with`, and
//! then everything the runtime derives from it before loading a graph (the
//! noise schedule, the run options) must be `Ok` or a typed error: never a
//! panic, never a huge allocation.
//!
//! `PROPTEST_CASES=N` sets the cases; a panicking manifest is saved under
//! `$FUZZ_CRASHERS_DIR` to be kept in tests/fixtures/crashers/manifest/.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::Value;
use tadsr_edge::bundle::{Bundle, HashCheck};
use tadsr_edge::pipeline::{noise_schedule, RunOptions};
use tadsr_edge::Error;

fn tiny() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/tiny")
}

fn original() -> Value {
    serde_json::from_str(&std::fs::read_to_string(tiny().join("manifest.json")).unwrap()).unwrap()
}

/// A copy of models/tiny (graphs included, so the manifest's paths resolve)
/// whose manifest each case replaces.
fn bundle_copy() -> tempfile::TempDir {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), target).unwrap();
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    copy(&tiny(), dir.path());
    dir
}

/// Values that break assumptions.
fn hostile_value() -> impl Strategy<Value = Value> {
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
enum Edit {
    /// Replace the node found by following `path` (indices into each
    /// object's keys / array's items, modulo their count).
    Replace(Vec<usize>, Value),
    Remove(Vec<usize>),
    /// Add a key to the object at `path`.
    Add(Vec<usize>, String, Value),
}

fn edit() -> impl Strategy<Value = Edit> {
    let path = proptest::collection::vec(any::<usize>(), 0..6);
    prop_oneof![
        (path.clone(), hostile_value()).prop_map(|(p, v)| Edit::Replace(p, v)),
        path.clone().prop_map(Edit::Remove),
        (path, ".{0,12}", hostile_value()).prop_map(|(p, k, v)| Edit::Add(p, k, v)),
    ]
}

/// The node at `path` (stops early at leaves) and, for removal, its parent.
fn node_mut<'a>(value: &'a mut Value, path: &[usize]) -> &'a mut Value {
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

fn apply(manifest: &mut Value, edit: &Edit) {
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

fn crashers_dir() -> PathBuf {
    std::env::var_os("FUZZ_CRASHERS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fuzz-crashers"))
}

/// Under scripts/fuzz.sh, the input of the case in progress, so that one
/// that aborts the process (not a panic: an allocation failure, a stack
/// overflow) is left on disk. The script removes these after a good round.
fn note_in_flight(input: &[u8]) {
    if std::env::var_os("FUZZ_CRASHERS_DIR").is_some() {
        let dir = crashers_dir().join("manifest");
        let _ = std::fs::create_dir_all(&dir);
        let name = format!("in-flight-{:?}.json", std::thread::current().id()).replace(
            |c: char| !c.is_ascii_alphanumeric() && c != '.' && c != '-',
            "",
        );
        let _ = std::fs::write(dir.join(name), input);
    }
}

fn save_crasher(text: &[u8]) -> PathBuf {
    let hash = text.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    });
    let dir = crashers_dir().join("manifest");
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(format!("{hash:016x}.json"));
    let _ = std::fs::write(&path, text);
    path
}

/// Opens a bundle whose manifest is `text` and derives what the runtime
/// derives before loading graphs; returns why a promise was broken.
fn check_manifest(dir: &Path, text: &[u8]) -> Result<(), String> {
    note_in_flight(text);
    std::fs::write(dir.join("manifest.json"), text).unwrap();
    let caught = std::panic::catch_unwind(|| -> Result<(), String> {
        let bundle = match Bundle::open_with(dir, HashCheck::Skip) {
            Ok(bundle) => bundle,
            Err(Error::Bundle { .. }) => return Ok(()),
            Err(other) => return Err(format!("not a bundle error: {other:?}")),
        };
        let schedule = match noise_schedule(&bundle) {
            Ok(schedule) => schedule,
            Err(Error::Bundle { .. }) => return Ok(()),
            Err(other) => return Err(format!("schedule: not a bundle error: {other:?}")),
        };
        let options = RunOptions::from_bundle(&bundle);
        match options.check(&schedule) {
            Ok(()) | Err(Error::InvalidOption(_)) => {}
            Err(other) => return Err(format!("options: unexpected error {other:?}")),
        }
        for name in ["vae_encoder", "unet", "vae_decoder"] {
            let component = bundle.component(name);
            bundle
                .resolve(&component.file)
                .map_err(|e| format!("a validated bundle's {name} does not resolve: {e}"))?;
        }
        Ok(())
    });
    match caught {
        Ok(result) => result.map_err(|broken| {
            let saved = save_crasher(text);
            format!("{broken} (manifest saved to {})", saved.display())
        }),
        Err(_) => {
            let saved = save_crasher(text);
            Err(format!("panicked (manifest saved to {})", saved.display()))
        }
    }
}

fn config(default: u32) -> Config {
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

thread_local! {
    static BUNDLE: tempfile::TempDir = bundle_copy();
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn mutated_json_opens_or_fails_cleanly(edits in proptest::collection::vec(edit(), 1..6)) {
        let mut manifest = original();
        for e in &edits {
            apply(&mut manifest, e);
        }
        let text = serde_json::to_vec_pretty(&manifest).unwrap();
        let result = BUNDLE.with(|dir| check_manifest(dir.path(), &text));
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }

    #[test]
    fn mutated_text_opens_or_fails_cleanly(
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cut in proptest::option::of(any::<usize>()),
    ) {
        let mut text = serde_json::to_vec_pretty(&original()).unwrap();
        for (at, value) in &flips {
            let n = text.len();
            text[at % n] = *value;
        }
        if let Some(cut) = cut {
            let n = text.len();
            text.truncate(cut % n);
        }
        let result = BUNDLE.with(|dir| check_manifest(dir.path(), &text));
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }
}

#[test]
fn the_original_manifest_opens() {
    let text = serde_json::to_vec_pretty(&original()).unwrap();
    BUNDLE.with(|dir| {
        check_manifest(dir.path(), &text).unwrap();
        Bundle::open_with(dir.path(), HashCheck::Skip).expect("the unchanged manifest opens");
    });
}

#[test]
fn a_huge_schedule_is_refused_without_allocating_it() {
    let mut manifest = original();
    manifest["schedule"]["num_train_timesteps"] = Value::from(1_000_000_000_000u64);
    manifest["schedule"]["alphas_cumprod"] = Value::Array(vec![]);
    let text = serde_json::to_vec(&manifest).unwrap();
    BUNDLE.with(|dir| {
        std::fs::write(dir.path().join("manifest.json"), &text).unwrap();
        let bundle = Bundle::open_with(dir.path(), HashCheck::Skip).unwrap();
        let error = noise_schedule(&bundle).unwrap_err().to_string();
        assert!(error.contains("num_train_timesteps"), "{error}");
    });
}

#[test]
fn a_listed_schedule_over_the_cap_is_refused_too() {
    let mut manifest = original();
    let steps = 200_000;
    manifest["schedule"]["num_train_timesteps"] = Value::from(steps);
    manifest["schedule"]["alphas_cumprod"] = Value::Array(
        (0..steps)
            .map(|i| Value::from(1.0 - i as f64 / (steps as f64 + 1.0)))
            .collect(),
    );
    let text = serde_json::to_vec(&manifest).unwrap();
    BUNDLE.with(|dir| {
        std::fs::write(dir.path().join("manifest.json"), &text).unwrap();
        let bundle = Bundle::open_with(dir.path(), HashCheck::Skip).unwrap();
        let error = noise_schedule(&bundle).unwrap_err().to_string();
        assert!(error.contains("over 100000"), "{error}");
    });
}

/// What stands where manifest.json or a graph should be is checked before it
/// is read: a FIFO (an open would wait for a writer for ever), a symlink out
/// of the folder (e.g. to /dev/zero: read for ever), a file far too large.
#[test]
fn a_manifest_or_graph_that_is_not_a_bundle_file_is_refused_at_once() {
    let fifo = |path: &Path| {
        let _ = std::fs::remove_file(path);
        assert!(std::process::Command::new("mkfifo")
            .arg(path)
            .status()
            .unwrap()
            .success());
    };
    type Damage<'a> = &'a dyn Fn(&Path);
    let cases: [(&str, Damage, &str); 4] = [
        (
            "fifo manifest",
            &|dir| fifo(&dir.join("manifest.json")),
            "FIFO",
        ),
        (
            "manifest leading out",
            &|dir| {
                std::fs::remove_file(dir.join("manifest.json")).unwrap();
                std::os::unix::fs::symlink("/dev/zero", dir.join("manifest.json")).unwrap();
            },
            "leads out of the bundle",
        ),
        (
            "huge manifest",
            &|dir| {
                let file = std::fs::File::create(dir.join("manifest.json")).unwrap();
                file.set_len(3 << 30).unwrap(); // sparse: no disk used
            },
            "over 16 MiB",
        ),
        (
            "fifo graph",
            &|dir| fifo(&dir.join("unet/model.onnx")),
            "FIFO",
        ),
    ];
    for (name, damage, expected) in cases {
        let dir = bundle_copy();
        damage(dir.path());
        let error = match Bundle::open(dir.path()) {
            Ok(_) => panic!("{name}: opened"),
            Err(error) => error.to_string(),
        };
        assert!(error.contains(expected), "{name}: {error}");
    }
}

/// Every manifest a fuzz run found is kept here and must stay fixed.
#[test]
fn kept_crashers_stay_fixed() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/crashers/manifest");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        let text = std::fs::read(&path).unwrap();
        BUNDLE.with(|bundle| {
            if let Err(broken) = check_manifest(bundle.path(), &text) {
                panic!("{}: {broken}", path.display());
            }
        });
    }
}
