//! Loading refuses damaged or hostile bundles with a message that names the
//! problem: copies of models/tiny, each broken in one way.

use std::path::{Path, PathBuf};

use serde_json::Value;
use tadsr_edge::bundle::verified::VerifiedFiles;
use tadsr_edge::bundle::{Bundle, HashCheck, HashReport};

fn tiny() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tiny")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            if entry.file_name() != "golden" {
                copy_dir(&entry.path(), &target);
            }
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A copy of models/tiny whose manifest is changed by `edit`.
fn broken_copy(edit: impl FnOnce(&mut Value, &Path)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&tiny(), dir.path());
    let manifest_path = dir.path().join("manifest.json");
    let mut manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest_path).unwrap()).unwrap();
    edit(&mut manifest, dir.path());
    std::fs::write(
        &manifest_path,
        serde_json::to_string_pretty(&manifest).unwrap(),
    )
    .unwrap();
    dir
}

fn load_error(dir: &Path) -> String {
    Bundle::open(dir)
        .expect_err("the bundle must be refused")
        .to_string()
}

#[test]
fn the_committed_bundle_is_valid() {
    let bundle = Bundle::open(&tiny()).unwrap();
    assert_eq!(bundle.manifest().format_version, 1);
    assert_eq!(bundle.manifest().schedule.alphas_cumprod.len(), 1000);
}

#[test]
fn graph_forms_come_from_the_provenance() {
    let committed = Bundle::open(&tiny()).unwrap();
    assert_eq!(committed.manifest().group_norm_form(), "rowwise");
    assert_eq!(committed.manifest().attention_form(), "onnx");
    let gpu_forms = broken_copy(|manifest, _| {
        manifest["provenance"]["group_norm"] = "instance".into();
        manifest["provenance"]["attention"] = "fused".into();
    });
    let bundle = Bundle::open(gpu_forms.path()).unwrap();
    assert_eq!(bundle.manifest().group_norm_form(), "instance");
    assert_eq!(bundle.manifest().attention_form(), "fused");
    // bundles written before the options say nothing: the forms they have
    let older = broken_copy(|manifest, _| {
        let provenance = manifest["provenance"].as_object_mut().unwrap();
        provenance.remove("group_norm");
        provenance.remove("attention");
    });
    let bundle = Bundle::open(older.path()).unwrap();
    assert_eq!(bundle.manifest().group_norm_form(), "rowwise");
    assert_eq!(bundle.manifest().attention_form(), "onnx");
    // the CPU warns about the GPU GroupNorm form, and only about it
    let run = |model: &Path| {
        let out = tempfile::tempdir().unwrap();
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_tadsr-edge"))
            .args(["run", "--provider", "cpu", "--model"])
            .arg(model)
            .arg(tiny().join("golden/square.png"))
            .arg("-o")
            .arg(out.path().join("x.png"))
            .output()
            .unwrap();
        assert!(output.status.success());
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let gpu_note = "GroupNorms are in the GPU form";
    assert!(run(gpu_forms.path()).contains(gpu_note));
    assert!(!run(&tiny()).contains(gpu_note));
}

#[test]
fn a_cuda_fused_bundle_is_refused_on_the_cpu_before_onnx_runtime_sees_it() {
    assert_eq!(
        Bundle::open(&tiny()).unwrap().manifest().fusions_form(),
        "none"
    );
    let fused = broken_copy(|manifest, _| {
        manifest["provenance"]["group_norm"] = "instance".into();
        manifest["provenance"]["attention"] = "fused".into();
        manifest["provenance"]["fusions"] = "cuda".into();
    });
    let bundle = Bundle::open(fused.path()).unwrap();
    assert_eq!(bundle.manifest().fusions_form(), "cuda");
    assert!(bundle.manifest().needs_cuda());
    // auto runs it on a GPU where CUDA is usable: the refusal is this machine's only without one
    let info = std::process::Command::new(env!("CARGO_BIN_EXE_tadsr-edge"))
        .args(["info", "--json"])
        .output()
        .unwrap();
    let info: Value = serde_json::from_slice(&info.stdout).unwrap();
    let cuda_usable = info["providers"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "cuda" && p["usable"] == true);
    let providers: &[&str] = if cuda_usable {
        &["cpu"]
    } else {
        &["cpu", "auto"]
    };
    for provider in providers {
        let out = tempfile::tempdir().unwrap();
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_tadsr-edge"))
            .args(["run", "--provider", provider, "--model"])
            .arg(fused.path())
            .arg(tiny().join("golden/square.png"))
            .arg("-o")
            .arg(out.path().join("x.png"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{provider}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{provider}: {stderr}");
        assert!(
            stderr.contains("exported with --fusions cuda") && stderr.contains("--provider cuda"),
            "{provider}: {stderr}"
        );
        assert!(!out.path().join("x.png").exists());
    }
}

#[test]
fn a_damaged_file_fails_its_hash() {
    let dir = broken_copy(|_, root| {
        let unet = root.join("unet/model.onnx");
        let mut bytes = std::fs::read(&unet).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(unet, bytes).unwrap();
    });
    let error = load_error(dir.path());
    assert!(
        error.contains("unet/model.onnx") && error.contains("sha256"),
        "{error}"
    );
}

#[test]
fn remembered_checks_hash_a_file_again_once_it_changed() {
    let bundle_dir = broken_copy(|_, _| {});
    let cache = tempfile::tempdir().unwrap();
    let records = VerifiedFiles::at(cache.path());
    let files = Bundle::open(bundle_dir.path())
        .unwrap()
        .hash_report()
        .hashed;
    assert!(
        files >= 4,
        "every graph, its weights and the prompt: {files}"
    );
    // just copied: hashed, and not recorded while the copy may still settle
    let first = Bundle::open_remembering(bundle_dir.path(), &records).unwrap();
    assert_eq!(
        first.hash_report(),
        HashReport {
            hashed: files,
            remembered: 0
        }
    );
    // a file settles 2 s after it was last changed: wait that out once
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let second = Bundle::open_remembering(bundle_dir.path(), &records).unwrap();
    assert_eq!(
        second.hash_report(),
        HashReport {
            hashed: files,
            remembered: 0
        }
    );
    let third = Bundle::open_remembering(bundle_dir.path(), &records).unwrap();
    assert_eq!(
        third.hash_report(),
        HashReport {
            hashed: 0,
            remembered: files
        }
    );
    // Full and Skip ignore the records
    let full = Bundle::open_with(bundle_dir.path(), HashCheck::Full).unwrap();
    assert_eq!(full.hash_report().hashed, files);
    let skipped = Bundle::open_with(bundle_dir.path(), HashCheck::Skip).unwrap();
    assert_eq!(skipped.hash_report(), HashReport::default());

    // one byte of the UNet changed in place, its modification time set back
    // and its size unchanged: its change time gives it away
    let unet = bundle_dir.path().join("unet/model.onnx");
    let modified = std::fs::metadata(&unet).unwrap().modified().unwrap();
    let mut bytes = std::fs::read(&unet).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&unet, &bytes).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&unet)
        .unwrap()
        .set_modified(modified)
        .unwrap();
    let error = Bundle::open_remembering(bundle_dir.path(), &records)
        .expect_err("a damaged file is hashed again")
        .to_string();
    assert!(
        error.contains("unet/model.onnx") && error.contains("sha256"),
        "{error}"
    );
    // put right: it is hashed again, the other files are still trusted
    bytes[0] ^= 0xff;
    std::fs::write(&unet, &bytes).unwrap();
    let mended = Bundle::open_remembering(bundle_dir.path(), &records).unwrap();
    assert_eq!(
        mended.hash_report(),
        HashReport {
            hashed: 1,
            remembered: files - 1
        }
    );
}

#[test]
fn paths_may_not_leave_the_bundle() {
    for escape in ["../elsewhere/model.onnx", "/etc/passwd"] {
        let dir = broken_copy(|m, _| m["components"]["unet"]["file"] = Value::from(escape));
        let error = load_error(dir.path());
        assert!(error.contains("leaves the bundle"), "{escape}: {error}");
    }
}

#[cfg(unix)]
#[test]
fn a_symlink_out_of_the_bundle_is_refused() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::copy(
        tiny().join("unet/model.onnx"),
        outside.path().join("model.onnx"),
    )
    .unwrap();
    let target = outside.path().join("model.onnx");
    let dir = broken_copy(|_, root| {
        std::fs::remove_file(root.join("unet/model.onnx")).unwrap();
        std::os::unix::fs::symlink(&target, root.join("unet/model.onnx")).unwrap();
    });
    let error = load_error(dir.path());
    assert!(error.contains("out of the bundle"), "{error}");
}

#[test]
fn a_newer_format_version_is_refused_with_advice() {
    let dir = broken_copy(|m, _| m["format_version"] = Value::from(2));
    let error = load_error(dir.path());
    assert!(
        error.contains("format_version 2") && error.contains("re-export"),
        "{error}"
    );
}

#[test]
fn latent_channels_must_match_the_ports() {
    let dir = broken_copy(|m, _| m["latent_channels"] = Value::from(5));
    let error = load_error(dir.path());
    assert!(
        error.contains("4 channels") && error.contains("latent_channels is 5"),
        "{error}"
    );
}

#[test]
fn a_renamed_graph_output_is_caught() {
    let dir = broken_copy(|m, _| {
        m["components"]["unet"]["outputs"][0]["name"] = Value::from("noise_pred")
    });
    let error = load_error(dir.path());
    assert!(error.contains("residual"), "{error}");
}

#[test]
fn a_wrong_dtype_is_caught() {
    let dir = broken_copy(|m, _| {
        m["components"]["vae_encoder"]["inputs"][1]["dtype"] = Value::from("float32")
    });
    let error = load_error(dir.path());
    assert!(
        error.contains("timestep") && error.contains("int64"),
        "{error}"
    );
}

#[test]
fn a_missing_manifest_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let error = load_error(dir.path());
    assert!(error.contains("manifest.json"), "{error}");
}

#[test]
fn a_malformed_manifest_says_so() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("manifest.json"), "{ not json").unwrap();
    let error = load_error(dir.path());
    assert!(error.contains("malformed"), "{error}");
}

/// Every manifest field with a closed set of values refuses an unknown
/// value when the bundle is opened, naming the field and the values allowed
/// (an unknown color fix once became adain without a word).
#[test]
fn an_unknown_value_of_a_closed_field_is_refused_by_name() {
    type Edit = fn(&mut Value);
    let cases: [(Edit, &str, &[&str]); 5] = [
        (
            |m| m["defaults"]["color_fix"] = Value::from("sepia"),
            "defaults.color_fix",
            &["adain", "wavelet", "none"],
        ),
        (
            |m| m["precision"] = Value::from("fp64"),
            "precision",
            &["fp32", "fp16", "int8-qdq"],
        ),
        (
            |m| m["components"]["vae_decoder"]["latent_input"] = Value::from("halved"),
            "latent_input",
            &["scaled", "unscaled"],
        ),
        (
            |m| m["components"]["unet"]["inputs"][0]["dtype"] = Value::from("bfloat16"),
            "dtype",
            &["float32", "float16", "int64"],
        ),
        (
            |m| m["schedule"]["type"] = Value::from("cosine"),
            "schedule.type",
            &["scaled_linear"],
        ),
    ];
    for (edit, field, allowed) in cases {
        let dir = broken_copy(|m, _| edit(m));
        let error = load_error(dir.path());
        assert!(error.contains(field), "{field}: {error}");
        for value in allowed {
            assert!(error.contains(value), "{field}: {error}");
        }
    }
}
