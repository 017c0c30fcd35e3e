//! The optimized-graph cache through the real binary on models/tiny (CPU):
//! the first run writes one complete entry per graph, later runs read them
//! and write the same bytes as a run without the cache; a damaged entry is
//! dropped and the run still right; `TADSR_EDGE_GRAPH_CACHE=0` writes none.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{folder_names, path_str, run_with_timeout, small_rgb, tadsr_command, Ran};

/// The ONNX Runtime library the binary finds with the real environment
/// (the tests move XDG_CACHE_HOME, where the set-up records it).
fn onnxruntime_library() -> String {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tadsr-edge"));
    command.args(["info", "--json"]);
    let info = run_with_timeout(command, Duration::from_secs(60));
    let report: serde_json::Value =
        serde_json::from_str(info.stdout.lines().next().expect("a JSON line")).expect("JSON");
    report["onnxruntime"]["library"]
        .as_str()
        .expect("info names the library")
        .to_string()
}

fn run(cache: &Path, input: &Path, output: &Path, cache_on: bool) -> Ran {
    let mut command = tadsr_command(&[
        "run",
        path_str(input),
        "-o",
        path_str(output),
        "--process-size",
        "0",
        "--threads",
        "1",
        "-q",
    ]);
    command.env("XDG_CACHE_HOME", cache);
    command.env("ORT_DYLIB_PATH", onnxruntime_library());
    command.env("TADSR_EDGE_GRAPH_CACHE", if cache_on { "1" } else { "0" });
    let ran = run_with_timeout(command, Duration::from_secs(120));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    ran
}

fn entries(cache: &Path) -> Vec<String> {
    let graphs = cache.join("tadsr-edge").join("graphs");
    if graphs.is_dir() {
        folder_names(&graphs)
    } else {
        Vec::new()
    }
}

#[test]
fn cached_graphs_give_the_same_image_and_a_damaged_entry_is_replaced() {
    if std::fs::read_to_string("/proc/cpuinfo").is_err() {
        eprintln!("SKIP: no /proc/cpuinfo, the cache is off on this system");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let input = dir.path().join("in.png");
    small_rgb().save(&input).unwrap();
    let out = |name: &str| dir.path().join(name);

    run(&cache, &input, &out("plain.png"), false);
    assert!(entries(&cache).is_empty(), "the cache is off: no entry");

    run(&cache, &input, &out("first.png"), true);
    let written = entries(&cache);
    // vae_encoder, unet, vae_decoder (the tiled-VAE graphs open only for
    // tiled images); no temporary folder left
    assert_eq!(written.len(), 3, "{written:?}");
    assert!(
        written.iter().all(|name| !name.starts_with('.')),
        "{written:?}"
    );
    for name in &written {
        let entry = cache.join("tadsr-edge/graphs").join(name);
        assert!(entry.join("model.onnx").is_file(), "{name}");
    }

    run(&cache, &input, &out("cached.png"), true);
    assert_eq!(entries(&cache), written, "read, not written again");
    let plain = std::fs::read(out("plain.png")).unwrap();
    assert_eq!(std::fs::read(out("first.png")).unwrap(), plain);
    assert_eq!(std::fs::read(out("cached.png")).unwrap(), plain);

    // a damaged cached graph: dropped, the bundle's graph used, re-cached
    let damaged = cache
        .join("tadsr-edge/graphs")
        .join(&written[0])
        .join("model.onnx");
    std::fs::write(&damaged, b"not an ONNX graph").unwrap();
    run(&cache, &input, &out("after-damage.png"), true);
    assert_eq!(std::fs::read(out("after-damage.png")).unwrap(), plain);
    assert_ne!(
        std::fs::read(&damaged).ok().as_deref(),
        Some(&b"not an ONNX graph"[..]),
        "the damaged entry is gone"
    );
    run(&cache, &input, &out("again.png"), true);
    assert_eq!(std::fs::read(out("again.png")).unwrap(), plain);
    assert!(
        std::fs::metadata(&damaged).unwrap().len() > 1000,
        "re-cached"
    );
    assert_eq!(entries(&cache).len(), 3, "{:?}", entries(&cache));
}
