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
use serde_json::Value;
use tadsr_edge::bundle::{Bundle, HashCheck};
use tadsr_edge::pipeline::{noise_schedule, RunOptions};
use tadsr_edge::Error;

mod fuzz_support;
use fuzz_support::{config, edit, edited, flipped, note_in_flight, save_crasher};

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

/// Opens a bundle whose manifest is `text` and derives what the runtime
/// derives before loading graphs; returns why a promise was broken.
fn check_manifest(dir: &Path, text: &[u8]) -> Result<(), String> {
    note_in_flight("manifest", "json", text);
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
            let saved = save_crasher("manifest", "json", text);
            format!("{broken} (manifest saved to {})", saved.display())
        }),
        Err(_) => {
            let saved = save_crasher("manifest", "json", text);
            Err(format!("panicked (manifest saved to {})", saved.display()))
        }
    }
}

thread_local! {
    static BUNDLE: tempfile::TempDir = bundle_copy();
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn mutated_json_opens_or_fails_cleanly(edits in proptest::collection::vec(edit(), 1..6)) {
        let text = serde_json::to_vec_pretty(&edited(original(), &edits)).unwrap();
        let result = BUNDLE.with(|dir| check_manifest(dir.path(), &text));
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }

    #[test]
    fn mutated_text_opens_or_fails_cleanly(
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cut in proptest::option::of(any::<usize>()),
    ) {
        let text = flipped(serde_json::to_vec_pretty(&original()).unwrap(), &flips, cut);
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
