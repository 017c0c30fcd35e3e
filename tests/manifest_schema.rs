//! The runtime against the manifest contract, docs/manifest.schema.json (the
//! exporter validates every manifest it writes against the same file, see
//! export/tests/test_manifest_schema.py). Copies of models/tiny with edited
//! manifests go through `Bundle::open_with(dir, false)`:
//! (a) models/tiny's manifest is accepted;
//! (b) every key the schema requires, removed, makes loading fail, except the
//!     keys listed in `runtime_tolerates` (each with its reason; the list is
//!     checked both ways, so it stays exact);
//! (c) for every closed value set (`enum`, `const`) of the schema, each value
//!     is accepted and one outside the set is refused, or the entry in
//!     `closed_sets` says why the runtime does not read that field.
//!
//! The schema walk follows `$ref` (to `#/$defs/...`), `allOf`, `properties`
//! and `items`; `oneOf` appears only under `provenance`, which the runtime
//! does not read.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use tadsr_edge::bundle::{Bundle, HashCheck};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn schema() -> Value {
    read_json(&repo().join("docs/manifest.schema.json"))
}

fn tiny_manifest() -> Value {
    read_json(&repo().join("models/tiny/manifest.json"))
}

/// models/tiny plus an optional `text_encoder` component (graph file: a
/// copy of the UNet's; `open_with(_, false)` reads no graph), its tokenizer
/// and an external data file, so that the walk also reaches the keys the
/// tiny bundle lacks.
fn with_text_encoder(mut manifest: Value) -> Value {
    let sha = "0".repeat(64);
    manifest["components"]["text_encoder"] = json!({
        "file": "text_encoder/model.onnx", "sha256": sha,
        "external_data": [{"file": "text_encoder/model.onnx.data", "sha256": sha}],
        "tokenizer": {"file": "tokenizer/tokenizer.json", "sha256": sha, "max_length": 77},
        "inputs": [{"name": "input_ids", "dtype": "int64", "shape": ["batch", 77], "layout": "NL"}],
        "outputs": [{"name": "last_hidden_state", "dtype": "float32", "shape": ["batch", 77, 32], "layout": "NLD"}]
    });
    manifest
}

/// The tiny bundle's files once (golden/ left out, text encoder files added);
/// every case hard-links them into a folder of its own.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Files {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(&repo().join("models/tiny"), dir.path());
        std::fs::create_dir_all(dir.path().join("text_encoder")).unwrap();
        std::fs::copy(
            dir.path().join("unet/model.onnx"),
            dir.path().join("text_encoder/model.onnx"),
        )
        .unwrap();
        std::fs::write(dir.path().join("text_encoder/model.onnx.data"), [0u8; 16]).unwrap();
        std::fs::create_dir_all(dir.path().join("tokenizer")).unwrap();
        std::fs::write(dir.path().join("tokenizer/tokenizer.json"), "{}").unwrap();
        Files { dir }
    }

    /// `Bundle::open_with(copy, false)` of the bundle with `manifest`.
    fn open(&self, manifest: &Value) -> Result<(), String> {
        let case = tempfile::tempdir().unwrap();
        link_dir(self.dir.path(), case.path());
        std::fs::write(
            case.path().join("manifest.json"),
            serde_json::to_string_pretty(manifest).unwrap(),
        )
        .unwrap();
        Bundle::open_with(case.path(), HashCheck::Skip)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
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
        } else if entry.file_name() != "manifest.json" {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn link_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            link_dir(&entry.path(), &target);
        } else if std::fs::hard_link(entry.path(), &target).is_err() {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// `#/$defs/NAME` resolved; other nodes as they are.
fn resolve<'a>(schema: &'a Value, node: &'a Value) -> &'a Value {
    match node.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let name = reference
                .strip_prefix("#/$defs/")
                .unwrap_or_else(|| panic!("unsupported $ref {reference}"));
            &schema["$defs"][name]
        }
        None => node,
    }
}

/// The elements of `node[key]` (none when it is not an array).
fn array<'a>(node: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    node.get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// Every required key of every object in `instance`, as the JSON pointer of
/// the object holding it and the key (present or not: the test manifests
/// conform, so an absent one is a test failure).
fn required_keys(
    schema: &Value,
    node: &Value,
    instance: &Value,
    pointer: &str,
    out: &mut Vec<(String, String)>,
) {
    let node = resolve(schema, node);
    for sub in array(node, "allOf") {
        required_keys(schema, sub, instance, pointer, out);
    }
    for key in array(node, "required") {
        out.push((pointer.to_string(), key.as_str().unwrap().to_string()));
    }
    if let Some(properties) = node.get("properties").and_then(Value::as_object) {
        for (key, sub) in properties {
            if let Some(value) = instance.get(key) {
                required_keys(schema, sub, value, &format!("{pointer}/{key}"), out);
            }
        }
    }
    if let (Some(items), Some(elements)) = (node.get("items"), instance.as_array()) {
        if items.is_object() {
            for (index, element) in elements.iter().enumerate() {
                required_keys(schema, items, element, &format!("{pointer}/{index}"), out);
            }
        }
    }
}

/// `pointer/key` with array indices as `*` and component names kept, e.g.
/// `/components/unet/inputs/*/layout`.
fn label(pointer: &str, key: &str) -> String {
    let segments: Vec<String> = pointer
        .split('/')
        .skip(1)
        .chain(std::iter::once(key))
        .map(|s| {
            if s.parse::<usize>().is_ok() {
                "*".to_string()
            } else {
                s.to_string()
            }
        })
        .collect();
    format!("/{}", segments.join("/"))
}

/// Required keys whose absence the runtime accepts today, and why. The
/// exporter always writes them (the schema requires them of it).
fn runtime_tolerates(label: &str) -> Option<&'static str> {
    let segments: Vec<&str> = label.split('/').skip(1).collect();
    Some(match segments.as_slice() {
        ["name"] => "Manifest.name is an Option: free text, shown by `info` when present",
        ["cross_attention_dim"] => {
            "Manifest.cross_attention_dim is an Option: the runtime takes D from prompt.shape"
        }
        ["provenance", ..] => "the runtime does not read provenance",
        ["schedule", "alphas_cumprod"] => {
            "absent, the runtime computes a scaled_linear schedule from beta_start and beta_end"
        }
        ["prompt", "text"] => "PromptSpec.text is an Option, shown by `info` when present",
        ["components", _, "external_data"] => "ComponentSpec.external_data defaults to []",
        ["components", _, "inputs" | "outputs", "*", "shape"] => {
            "PortSpec.shape defaults to []; sizes come from the graphs (a tiled graph without a \
             [layers, groups] shape is refused when the pipeline opens it, not here)"
        }
        ["components", _, "inputs" | "outputs", "*", "layout"] => {
            "PortSpec.layout is an Option the runtime does not read"
        }
        ["components", _, "group_norm", ..] => {
            "ComponentSpec has no group_norm: the pipeline takes [layers, groups] from the \
             group_norm_mean port's shape"
        }
        ["components", "vae_decoder_tiled", "latent_input"] => {
            "only vae_decoder's latent_input is checked; the tiled decoder is assumed to match it"
        }
        ["components", "text_encoder", "tokenizer"] => {
            "ComponentSpec.tokenizer is an Option: a text encoder without it leaves --prompt \
             refused (no text encoder to use), the rest of the bundle runs"
        }
        _ => return None,
    })
}

#[test]
fn models_tiny_is_accepted() {
    let files = Files::new();
    files.open(&tiny_manifest()).unwrap();
    files.open(&with_text_encoder(tiny_manifest())).unwrap();
}

#[test]
fn every_required_key_is_required_by_the_runtime_or_listed() {
    let schema = schema();
    let files = Files::new();
    let mut checked = BTreeSet::new();
    let mut wrong = Vec::new();
    for manifest in [tiny_manifest(), with_text_encoder(tiny_manifest())] {
        let mut keys = Vec::new();
        required_keys(&schema, &schema, &manifest, "", &mut keys);
        for (pointer, key) in keys {
            let label = label(&pointer, &key);
            if !checked.insert(format!("{pointer}/{key}")) {
                continue;
            }
            let mut edited = manifest.clone();
            let removed = edited
                .pointer_mut(&pointer)
                .and_then(Value::as_object_mut)
                .and_then(|object| object.remove(&key));
            if removed.is_none() {
                wrong.push(format!(
                    "{pointer}/{key}: required, but the test manifest lacks it"
                ));
                continue;
            }
            match (files.open(&edited), runtime_tolerates(&label)) {
                (Err(error), None) if error.contains(&key) => {}
                (Err(error), None) => wrong.push(format!(
                    "{pointer}/{key}: refused, but the message does not name {key:?}: {error}"
                )),
                (Ok(()), None) => wrong.push(format!("{pointer}/{key}: accepted without it")),
                (Ok(()), Some(_)) => {}
                (Err(error), Some(reason)) => wrong.push(format!(
                    "{pointer}/{key}: listed as tolerated ({reason}) but refused: {error}"
                )),
            }
        }
    }
    // The walk reached every level of the schema.
    for expected in [
        "/precision",
        "/components/vae_decoder",
        "/components/vae_decoder/latent_input",
        "/components/unet/inputs/2/dtype",
        "/components/vae_encoder_tiled/group_norm/layers",
        "/components/text_encoder/tokenizer/max_length",
        "/components/vae_decoder_tiled/external_data",
        "/components/text_encoder/external_data/0/sha256",
        "/schedule/beta_start",
        "/defaults/color_fix",
        "/prompt/shape",
        "/vae_encoder_segments/group_norm/groups",
        "/vae_encoder_segments/segments/0/inputs",
    ] {
        assert!(checked.contains(expected), "{expected} was not checked");
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Every `enum` and `const` of the schema, by JSON pointer (`if` conditions
/// left out: they test values, they do not define a set).
fn closed_sets(node: &Value, pointer: &str, out: &mut BTreeSet<String>) {
    match node {
        Value::Object(map) => {
            if map.contains_key("enum") || map.contains_key("const") {
                out.insert(pointer.to_string());
            }
            for (key, value) in map {
                if key != "if" {
                    closed_sets(value, &format!("{pointer}/{key}"), out);
                }
            }
        }
        Value::Array(items) => {
            for (index, value) in items.iter().enumerate() {
                closed_sets(value, &format!("{pointer}/{index}"), out);
            }
        }
        _ => {}
    }
}

/// The allowed values of the set at `pointer`.
fn allowed(schema: &Value, pointer: &str) -> Vec<Value> {
    let node = schema.pointer(pointer).unwrap();
    match (node.get("enum"), node.get("const")) {
        (Some(Value::Array(values)), _) => values.clone(),
        (_, Some(value)) => vec![value.clone()],
        _ => unreachable!(),
    }
}

/// How the test puts a value of a closed set into the tiny manifest: where,
/// and what else must change with it.
fn set_value(manifest: &mut Value, schema_pointer: &str, value: &Value) {
    // graph forms are optional keys (absent in older bundles): inserted
    if let Some(form) = schema_pointer.strip_prefix("/$defs/provenance/properties/") {
        manifest["provenance"][form] = value.clone();
        return;
    }
    let target = match schema_pointer {
        "/properties/format" => "/format",
        "/properties/format_version" => "/format_version",
        "/properties/vae_scale_factor" => "/vae_scale_factor",
        "/properties/precision" => {
            // The float ports the runtime checks follow the precision.
            let dtype = if value == "fp16" {
                "float16"
            } else {
                "float32"
            };
            for component in ["vae_encoder", "unet", "vae_decoder"] {
                for direction in ["inputs", "outputs"] {
                    for port in manifest["components"][component][direction]
                        .as_array_mut()
                        .unwrap()
                    {
                        if port["name"] != "timestep" {
                            port["dtype"] = json!(dtype);
                        }
                    }
                }
            }
            "/precision"
        }
        "/$defs/port/properties/dtype" => {
            // int64 is the timestep's; float16 needs an fp16 bundle.
            if value == "float16" {
                set_value(manifest, "/properties/precision", &json!("fp16"));
            }
            if value == "int64" {
                "/components/unet/inputs/1/dtype"
            } else {
                "/components/unet/inputs/0/dtype"
            }
        }
        "/$defs/port/properties/layout" => "/components/unet/inputs/2/layout",
        "/$defs/named_dim" => "/components/unet/outputs/0/shape/0",
        "/$defs/component/properties/latent_input" => "/components/vae_decoder/latent_input",
        "/$defs/schedule/properties/type" => "/schedule/type",
        "/$defs/defaults/properties/color_fix" => "/defaults/color_fix",
        "/$defs/prompt/properties/dtype" => "/prompt/dtype",
        "/$defs/prompt/properties/shape/prefixItems/0" => "/prompt/shape/0",
        other => panic!("no way to set {other}"),
    };
    *manifest.pointer_mut(target).unwrap() = value.clone();
}

/// The closed sets the runtime does not read at all, and why.
const NOT_READ: [(&str, &str); 2] = [
    (
        "/$defs/source/oneOf/0/properties/kind",
        "provenance.source: the runtime does not read provenance",
    ),
    (
        "/$defs/source/oneOf/1/properties/kind",
        "provenance.source: the runtime does not read provenance",
    ),
];

fn outside_value(schema_pointer: &str) -> Value {
    match schema_pointer {
        "/properties/format" => json!("tadsr-bundle-2"),
        "/properties/format_version" => json!(2),
        "/properties/vae_scale_factor" => json!(16),
        "/properties/precision" => json!("bf16"),
        "/$defs/port/properties/dtype" => json!("bfloat16"),
        "/$defs/port/properties/layout" => json!("NHWC"),
        "/$defs/named_dim" => json!("frames"),
        "/$defs/component/properties/latent_input" => json!("raw"),
        "/$defs/schedule/properties/type" => json!("cosine"),
        "/$defs/defaults/properties/color_fix" => json!("histogram"),
        "/$defs/prompt/properties/dtype" => json!("float16"),
        "/$defs/prompt/properties/shape/prefixItems/0" => json!(2),
        "/$defs/provenance/properties/group_norm" => json!("layerwise"),
        "/$defs/provenance/properties/attention" => json!("flash"),
        "/$defs/provenance/properties/fusions" => json!("rocm"),
        other => panic!("no outside value for {other}"),
    }
}

/// Closed sets that were free strings in the runtime before issue 12's serde
/// enums; their refusal is checked by `values_outside_string_sets_are_refused`.
const STRING_SETS_UNTIL_SERDE_ENUMS: [&str; 5] = [
    "/$defs/port/properties/layout",
    "/$defs/named_dim",
    "/$defs/schedule/properties/type",
    "/$defs/defaults/properties/color_fix",
    "/$defs/prompt/properties/dtype",
];

#[test]
fn every_closed_set_is_covered() {
    let schema = schema();
    let mut found = BTreeSet::new();
    closed_sets(&schema, "", &mut found);
    let not_read: BTreeSet<String> = NOT_READ.iter().map(|(p, _)| p.to_string()).collect();
    for pointer in &found {
        if !not_read.contains(pointer) {
            // Panics for a set this test has no way to set or no outside value for.
            let mut manifest = tiny_manifest();
            set_value(&mut manifest, pointer, &allowed(&schema, pointer)[0]);
            outside_value(pointer);
        }
    }
    for pointer in &not_read {
        assert!(
            found.contains(pointer),
            "{pointer} is not in the schema any more"
        );
    }
    assert!(found.len() >= 14, "the scan found only {found:?}");
}

#[test]
fn every_allowed_value_is_accepted() {
    let schema = schema();
    let files = Files::new();
    let mut found = BTreeSet::new();
    closed_sets(&schema, "", &mut found);
    let mut refused = Vec::new();
    for pointer in found
        .iter()
        .filter(|p| !NOT_READ.iter().any(|(n, _)| n == p))
    {
        for value in allowed(&schema, pointer) {
            let mut manifest = tiny_manifest();
            set_value(&mut manifest, pointer, &value);
            if let Err(error) = files.open(&manifest) {
                refused.push(format!("{pointer} = {value}: {error}"));
            }
        }
    }
    assert!(refused.is_empty(), "{}", refused.join("\n"));
}

#[test]
fn values_outside_checked_sets_are_refused() {
    let schema = schema();
    let files = Files::new();
    let mut found = BTreeSet::new();
    closed_sets(&schema, "", &mut found);
    let mut accepted = Vec::new();
    for pointer in found.iter().filter(|p| {
        !NOT_READ.iter().any(|(n, _)| n == p)
            && !STRING_SETS_UNTIL_SERDE_ENUMS.contains(&p.as_str())
    }) {
        let value = outside_value(pointer);
        let mut manifest = tiny_manifest();
        set_value(&mut manifest, pointer, &value);
        if files.open(&manifest).is_ok() {
            accepted.push(format!("{pointer} = {value}"));
        }
    }
    // dtype and latent_input on the tiled graphs' ports: in
    // `values_outside_string_sets_are_refused`.
    assert!(accepted.is_empty(), "accepted: {}", accepted.join(", "));
}

// These fields were free strings before issue 12's serde enums (an unknown
// color fix became adain; layout, named dimensions, schedule type and prompt
// dtype were not read; the tiled components' dtype and latent_input were not
// checked when the bundle opened).
#[test]
fn values_outside_string_sets_are_refused() {
    let files = Files::new();
    let mut accepted = Vec::new();
    let mut cases: Vec<(String, Value)> = STRING_SETS_UNTIL_SERDE_ENUMS
        .iter()
        .map(|pointer| {
            let mut manifest = tiny_manifest();
            set_value(&mut manifest, pointer, &outside_value(pointer));
            (pointer.to_string(), manifest)
        })
        .collect();
    for (target, value) in [
        (
            "/components/vae_encoder_tiled/inputs/2/dtype",
            json!("bfloat16"),
        ),
        ("/components/vae_decoder_tiled/latent_input", json!("raw")),
    ] {
        let mut manifest = tiny_manifest();
        *manifest.pointer_mut(target).unwrap() = value;
        cases.push((target.to_string(), manifest));
    }
    for (what, manifest) in cases {
        if files.open(&manifest).is_ok() {
            accepted.push(what);
        }
    }
    assert!(accepted.is_empty(), "accepted: {}", accepted.join(", "));
}
