//! The model bundle: `manifest.json` parsed (`manifest.rs`), validated and
//! hash-checked, every path kept inside the bundle's folder, and the opened
//! graphs' ports checked against it (`ports.rs`). See docs/bundle-format.md.

mod manifest;
mod ports;
pub mod verified;

pub use manifest::*;
pub use ports::check_graph_ports;
pub use verified::HashCheck;

use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// A manifest is a few hundred KiB (the longest part, a 100000-step
/// schedule, is under 3 MiB of text); anything much larger is not one.
const MAX_MANIFEST_BYTES: u64 = 16 << 20;

/// What each required graph must take and give (name, dtype).
const REQUIRED_PORTS: [(&str, &[&str], &[&str]); 3] = [
    (
        component::VAE_ENCODER,
        &[port::IMAGE, port::TIMESTEP],
        &[port::LATENT_MEAN, port::LATENT_LOGVAR],
    ),
    (
        component::UNET,
        &[port::LATENT, port::TIMESTEP, port::ENCODER_HIDDEN_STATES],
        &[port::RESIDUAL],
    ),
    (component::VAE_DECODER, &[port::LATENT], &[port::IMAGE]),
];

/// How an open checked the files' sha256: files hashed, files trusted
/// because they matched before in the same state ([`HashCheck::Remembered`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HashReport {
    pub hashed: usize,
    pub remembered: usize,
}

/// A validated bundle on disk.
#[derive(Debug, Clone)]
pub struct Bundle {
    root: PathBuf,
    hash_report: HashReport,
    manifest: Manifest,
}

impl Bundle {
    /// Reads and validates `DIR/manifest.json`; checks every file's sha256.
    pub fn open(dir: &Path) -> Result<Bundle> {
        Self::open_with(dir, HashCheck::Full)
    }

    /// Like [`Bundle::open`], checking the files' sha256 as `hashes` says
    /// (`Skip`: `info` on a large bundle; `Remembered`: a run).
    pub fn open_with(dir: &Path, hashes: HashCheck) -> Result<Bundle> {
        let records = match hashes {
            HashCheck::Remembered => verified::VerifiedFiles::user(),
            HashCheck::Skip | HashCheck::Full => None,
        };
        Self::open_checked(dir, hashes, records.as_ref())
    }

    /// [`HashCheck::Remembered`] with the records kept in `records` instead
    /// of the user's cache folder.
    pub fn open_remembering(dir: &Path, records: &verified::VerifiedFiles) -> Result<Bundle> {
        Self::open_checked(dir, HashCheck::Remembered, Some(records))
    }

    fn open_checked(
        dir: &Path,
        hashes: HashCheck,
        records: Option<&verified::VerifiedFiles>,
    ) -> Result<Bundle> {
        let manifest_path = dir.join("manifest.json");
        if !dir.is_dir() {
            return Err(Error::bundle(
                dir,
                "not a folder; give --model the folder that holds manifest.json",
            ));
        }
        let root = dir
            .canonicalize()
            .map_err(|e| Error::bundle(dir, e.to_string()))?;
        // the manifest is held to what the graphs are held to: inside the
        // folder, a regular file (a FIFO would hang the open), of a sane size
        if let Ok(real) = manifest_path.canonicalize() {
            if !real.starts_with(&root) {
                return Err(Error::bundle(
                    dir,
                    "manifest.json leads out of the bundle's folder (symlink)",
                ));
            }
        }
        let text = crate::regular_file::read_text_capped(&manifest_path, MAX_MANIFEST_BYTES)
            .map_err(|e| Error::bundle(dir, format!("manifest.json: {e}")))?;
        let manifest: Manifest = serde_json::from_str(&text)
            .map_err(|e| Error::bundle(dir, format!("manifest.json is malformed: {e}")))?;
        let mut bundle = Bundle {
            root,
            manifest,
            hash_report: HashReport::default(),
        };
        bundle.validate()?;
        bundle.hash_report = match hashes {
            HashCheck::Skip => HashReport::default(),
            HashCheck::Remembered => bundle.verify_hashes(records)?,
            HashCheck::Full => bundle.verify_hashes(None)?,
        };
        Ok(bundle)
    }

    /// How the open checked the files' sha256.
    pub fn hash_report(&self) -> HashReport {
        self.hash_report
    }

    /// The parsed manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The bundle's folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Bytes of component `name`'s files on disk (its `.onnx` and its
    /// external data), or None when the component is absent or a file
    /// cannot be read.
    pub fn graph_file_bytes(&self, name: &str) -> Option<u64> {
        let spec = self.manifest.components.get(name)?;
        std::iter::once(spec.file.as_str())
            .chain(spec.external_data.iter().map(|data| data.file.as_str()))
            .map(|file| {
                let path = self.resolve(file).ok()?;
                std::fs::metadata(path).ok().map(|meta| meta.len())
            })
            .sum()
    }

    /// Every port's channel axis, where the manifest gives a number, agrees
    /// with what the pipeline will send: `latent_channels` for latents, 3
    /// for images. A mismatch would otherwise fail every input at its first
    /// graph call, not the bundle once.
    fn check_channel_dims(&self) -> Result<()> {
        let m = &self.manifest;
        for (component, spec) in &m.components {
            for port in spec.inputs.iter().chain(&spec.outputs) {
                let expected = match port.name.as_str() {
                    port::LATENT | port::LATENT_MEAN | port::LATENT_LOGVAR | port::RESIDUAL => {
                        m.latent_channels
                    }
                    port::IMAGE => 3,
                    _ => continue,
                };
                let channels = port.shape.get(1).and_then(serde_json::Value::as_u64);
                if channels.is_some_and(|c| c != expected as u64) {
                    return Err(self.fail(format!(
                        "{component} port {:?} has {} channels, expected {expected} (latent_channels is {}; images have 3)",
                        port.name,
                        channels.unwrap_or_default(),
                        m.latent_channels
                    )));
                }
            }
        }
        Ok(())
    }

    fn fail(&self, reason: impl Into<String>) -> Error {
        Error::bundle(&self.root, reason)
    }

    fn validate(&self) -> Result<()> {
        let m = &self.manifest;
        if m.format != "tadsr-bundle" {
            return Err(self.fail(format!(
                "format is {:?}, expected \"tadsr-bundle\"",
                m.format
            )));
        }
        if m.format_version != FORMAT_VERSION {
            return Err(self.fail(format!(
                "format_version {} is not supported (this build reads {FORMAT_VERSION}); re-export the bundle with this version's export/",
                m.format_version
            )));
        }
        m.check_graph_forms().map_err(|reason| self.fail(reason))?;
        let float_dtype = m.precision.float_dtype();
        for (component, inputs, outputs) in REQUIRED_PORTS {
            let spec = m
                .components
                .get(component)
                .ok_or_else(|| self.fail(format!("manifest has no component {component:?}")))?;
            check_ports(self, component, "input", &spec.inputs, inputs, float_dtype)?;
            check_ports(
                self,
                component,
                "output",
                &spec.outputs,
                outputs,
                float_dtype,
            )?;
        }
        if self.decoder().latent_input.is_none() {
            return Err(self
                .fail("vae_decoder.latent_input is missing, expected \"scaled\" or \"unscaled\""));
        }
        if m.latent_channels == 0 || m.vae_scale_factor != 8 {
            return Err(self.fail("latent_channels must be > 0 and vae_scale_factor 8"));
        }
        self.check_channel_dims()?;
        if let Some(segments) = &m.vae_encoder_segments {
            if !m.components.contains_key(component::VAE_ENCODER_TILED) {
                return Err(self.fail(
                    "vae_encoder_segments needs the vae_encoder_tiled component they are cut from",
                ));
            }
            check_encoder_segments(segments)
                .map_err(|reason| self.fail(format!("vae_encoder_segments: {reason}")))?;
            let tiled_shape: Option<Vec<u64>> = self
                .component(component::VAE_ENCODER_TILED)
                .inputs
                .iter()
                .find(|p| p.name == port::GROUP_NORM_MEAN)
                .and_then(|p| p.shape.iter().map(serde_json::Value::as_u64).collect());
            let GroupNormShape { layers, groups } = segments.group_norm;
            // (a shape left out is the pipeline's to refuse when it opens the graph)
            if tiled_shape.as_ref().is_some_and(|shape| {
                !shape.is_empty() && shape[..] != [layers as u64, groups as u64]
            }) {
                return Err(self.fail(format!(
                    "vae_encoder_segments are cut for {layers} layers of {groups} groups, \
                     vae_encoder_tiled's group_norm_mean is {tiled_shape:?}"
                )));
            }
        }
        if !(m.scaling_factor.is_finite() && m.scaling_factor > 0.0) {
            return Err(self.fail("scaling_factor must be a positive number"));
        }
        let s = &m.schedule;
        if s.num_train_timesteps == 0
            || (!s.alphas_cumprod.is_empty() && s.alphas_cumprod.len() != s.num_train_timesteps)
        {
            return Err(self.fail("schedule.alphas_cumprod must hold num_train_timesteps values"));
        }
        if s.alphas_cumprod.iter().any(|a| !(*a > 0.0 && *a <= 1.0)) {
            return Err(self.fail("schedule.alphas_cumprod values must lie in (0, 1]"));
        }
        if s.alphas_cumprod.is_empty() && s.kind != ScheduleType::ScaledLinear {
            return Err(self.fail(format!(
                "schedule.type {} needs schedule.alphas_cumprod (only scaled_linear is computed from its betas)",
                s.kind
            )));
        }
        if m.prompt.dtype != TensorDType::Float32 {
            return Err(self.fail(format!(
                "prompt.dtype is {}, expected float32 (prompt_embeds.npy is float32 in every precision)",
                m.prompt.dtype
            )));
        }
        for (name, component) in &m.components {
            for port in component.inputs.iter().chain(&component.outputs) {
                for dim in &port.shape {
                    let valid = match dim {
                        serde_json::Value::Number(n) => n.as_u64().is_some(),
                        serde_json::Value::String(named) => NAMED_DIMS.contains(&named.as_str()),
                        _ => false,
                    };
                    if !valid {
                        return Err(self.fail(format!(
                            "{name} port {:?}: shape entry {dim} is neither a size nor one of {}",
                            port.name,
                            NAMED_DIMS.join(", ")
                        )));
                    }
                }
            }
        }
        if m.prompt.shape.len() != 3 || m.prompt.shape[0] != 1 {
            return Err(self.fail(format!(
                "prompt.shape {:?} is not [1, tokens, dim]",
                m.prompt.shape
            )));
        }
        for file in self.all_files() {
            self.resolve(&file.file)?;
        }
        Ok(())
    }

    fn all_files(&self) -> Vec<HashedFile> {
        let m = &self.manifest;
        let mut files: Vec<HashedFile> = m
            .components
            .values()
            .flat_map(|c| {
                std::iter::once(HashedFile {
                    file: c.file.clone(),
                    sha256: c.sha256.clone(),
                })
                .chain(c.external_data.iter().cloned())
                .chain(c.tokenizer.iter().map(|t| HashedFile {
                    file: t.file.clone(),
                    sha256: t.sha256.clone(),
                }))
            })
            .collect();
        files.extend(
            m.vae_encoder_segments
                .iter()
                .flat_map(|cut| &cut.segments)
                .map(|segment| HashedFile {
                    file: segment.file.clone(),
                    sha256: segment.sha256.clone(),
                }),
        );
        files.push(HashedFile {
            file: m.prompt.embeds_file.clone(),
            sha256: m.prompt.sha256.clone(),
        });
        files
    }

    /// Hashes every file against the manifest; with `remembered`, a file
    /// that matched before in its present state is trusted without reading
    /// it, and each file that matches now is recorded there.
    fn verify_hashes(&self, remembered: Option<&verified::VerifiedFiles>) -> Result<HashReport> {
        let mut report = HashReport::default();
        for file in self.all_files() {
            let path = self.resolve(&file.file)?;
            let before = remembered.and_then(|_| verified::FileState::of(&path));
            if let (Some(records), Some(state)) = (remembered, &before) {
                if records.holds(&path, &file.sha256, state) {
                    report.remembered += 1;
                    continue;
                }
            }
            let started = std::time::SystemTime::now();
            let actual = sha256_file(&path)?;
            report.hashed += 1;
            if !actual.eq_ignore_ascii_case(&file.sha256) {
                return Err(self.fail(format!(
                    "{} has sha256 {actual}, the manifest says {}; the file is damaged or from another export",
                    file.file, file.sha256
                )));
            }
            if let (Some(records), Some(state)) = (remembered, &before) {
                records.remember(&path, &file.sha256, state, started);
            }
        }
        Ok(report)
    }

    /// A path named by the manifest, refused if it leaves the bundle.
    pub fn resolve(&self, relative: &str) -> Result<PathBuf> {
        let relative_path = Path::new(relative);
        let escapes = relative.is_empty()
            || relative_path.is_absolute()
            || relative_path
                .components()
                .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir));
        if escapes {
            return Err(self.fail(format!("path {relative:?} leaves the bundle's folder")));
        }
        let path = self.root.join(relative_path);
        let real = path
            .canonicalize()
            .map_err(|e| self.fail(format!("{relative}: {e}")))?;
        if !real.starts_with(&self.root) {
            return Err(self.fail(format!(
                "path {relative:?} leads out of the bundle's folder (symlink)"
            )));
        }
        // a FIFO or device where a graph should be would hang or never end
        // the hash and the graph's load; a stat does not block
        let meta = std::fs::metadata(&real).map_err(|e| self.fail(format!("{relative}: {e}")))?;
        if !meta.is_file() {
            return Err(self.fail(format!(
                "{relative} is {}, not a regular file",
                crate::naming::special_file_kind(&meta)
            )));
        }
        Ok(real)
    }

    /// A required component (`vae_encoder`, `unet`, `vae_decoder`).
    pub fn component(&self, name: &str) -> &ComponentSpec {
        &self.manifest.components[name]
    }

    fn decoder(&self) -> &ComponentSpec {
        self.component(component::VAE_DECODER)
    }

    /// Whether the decoder graph divides by the scaling factor itself.
    pub fn decoder_takes_scaled_latent(&self) -> bool {
        self.decoder().latent_input == Some(LatentInput::Scaled)
    }

    /// Total size of the bundle's files in bytes.
    pub fn total_bytes(&self) -> u64 {
        self.all_files()
            .iter()
            .filter_map(|f| self.resolve(&f.file).ok())
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum()
    }
}

fn check_ports(
    bundle: &Bundle,
    component: &str,
    direction: &str,
    ports: &[PortSpec],
    required: &[&str],
    float_dtype: TensorDType,
) -> Result<()> {
    for name in required {
        let port = ports
            .iter()
            .find(|p| p.name == *name)
            .ok_or_else(|| bundle.fail(format!("{component} has no {direction} named {name:?}")))?;
        let expected = if *name == port::TIMESTEP {
            TensorDType::Int64
        } else {
            float_dtype
        };
        if port.dtype != expected {
            return Err(bundle.fail(format!(
                "{component} {direction} {name:?} has dtype {}, expected {expected}",
                port.dtype
            )));
        }
    }
    Ok(())
}

/// Hex sha256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = crate::regular_file::open_regular(path).map_err(|e| Error::bundle(path, e))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(|e| Error::io(path, e))?;
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// The most GroupNorm layers, or groups per layer, a tiled VAE graph may
/// have (SD-2.1's: 22 or 30 layers of 32 groups): statistics buffers are
/// sized from the manifest before any graph runs.
pub const MAX_GROUP_NORM_DIM: usize = 4096;

/// The segments' structure: one per GroupNorm layer (each row once) and a
/// last one giving the latent moments; every carried state made by an
/// earlier segment than the ones taking it; ports named as the format says.
pub fn check_encoder_segments(cut: &EncoderSegments) -> std::result::Result<(), String> {
    let GroupNormShape { layers, groups } = cut.group_norm;
    if !(1..=MAX_GROUP_NORM_DIM).contains(&layers) || !(1..=MAX_GROUP_NORM_DIM).contains(&groups) {
        return Err(format!(
            "group_norm layers and groups must lie in 1..={MAX_GROUP_NORM_DIM} (got {layers} and {groups})"
        ));
    }
    if cut.segments.len() != layers + 1 {
        return Err(format!(
            "{} segments for {layers} GroupNorm layers, expected {}",
            cut.segments.len(),
            layers + 1
        ));
    }
    let graph_inputs = [
        port::IMAGE,
        port::TIMESTEP,
        port::GROUP_NORM_MEAN,
        port::GROUP_NORM_VAR,
        port::GROUP_NORM_FIXED,
    ];
    let mut rows_seen = vec![false; layers];
    let mut made: std::collections::HashSet<&str> = std::collections::HashSet::new();
    for (number, segment) in cut.segments.iter().enumerate() {
        let last = number == layers;
        match (segment.layer, last) {
            (Some(row), false) if row < layers && !rows_seen[row] => rows_seen[row] = true,
            (Some(row), false) => {
                return Err(format!(
                    "segment {number}: layer {row} is out of range or taken twice"
                ))
            }
            (None, true) => {}
            (Some(_), true) => return Err("the last segment has a layer".into()),
            (None, false) => return Err(format!("segment {number} has no layer")),
        }
        for input in &segment.inputs {
            let known = graph_inputs.contains(&input.as_str())
                || (input.starts_with(segment_port::STATE_PREFIX) && made.contains(input.as_str()));
            if !known {
                return Err(format!(
                    "segment {number} takes {input:?}, which no earlier segment gives"
                ));
            }
        }
        let results: &[&str] = if last {
            &[port::LATENT_MEAN, port::LATENT_LOGVAR]
        } else {
            &[segment_port::LAYER_MEAN, segment_port::LAYER_VAR]
        };
        for result in results {
            if !segment.outputs.iter().any(|output| output == result) {
                return Err(format!("segment {number} does not give {result:?}"));
            }
        }
        for output in &segment.outputs {
            if output.starts_with(segment_port::STATE_PREFIX) {
                if !made.insert(output) {
                    return Err(format!("{output:?} is given by two segments"));
                }
            } else if !results.contains(&output.as_str()) {
                return Err(format!("segment {number} gives an unknown {output:?}"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod segment_tests {
    use super::*;

    fn segment(layer: Option<usize>, inputs: &[&str], outputs: &[&str]) -> EncoderSegmentSpec {
        EncoderSegmentSpec {
            layer,
            file: "s.onnx".into(),
            sha256: "0".repeat(64),
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: outputs.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn cut(segments: Vec<EncoderSegmentSpec>) -> EncoderSegments {
        EncoderSegments {
            group_norm: GroupNormShape {
                layers: segments.len().saturating_sub(1),
                groups: 8,
            },
            segments,
        }
    }

    fn good() -> Vec<EncoderSegmentSpec> {
        vec![
            segment(
                Some(1),
                &["image"],
                &["state_000", "group_norm_mean_layer", "group_norm_var_layer"],
            ),
            segment(
                Some(0),
                &["state_000", "group_norm_mean", "group_norm_fixed"],
                &["state_001", "group_norm_mean_layer", "group_norm_var_layer"],
            ),
            segment(
                None,
                &["state_000", "state_001", "timestep"],
                &["latent_mean", "latent_logvar"],
            ),
        ]
    }

    #[test]
    fn a_well_formed_cut_passes() {
        assert_eq!(check_encoder_segments(&cut(good())), Ok(()));
    }

    #[test]
    fn malformed_cuts_are_refused_with_the_reason() {
        let mut twice = good();
        twice[1].layer = Some(1);
        let mut unknown_state = good();
        unknown_state[1].inputs.push("state_009".into());
        let mut later_state = good();
        later_state[0].inputs.push("state_001".into());
        let mut no_moments = good();
        no_moments[2].outputs.pop();
        let mut layer_on_last = good();
        layer_on_last[2].layer = Some(0);
        let mut stray_output = good();
        stray_output[0].outputs.push("extra".into());
        let mut short = good();
        short.pop();
        for (case, expected) in [
            (twice, "taken twice"),
            (unknown_state, "no earlier segment gives"),
            (later_state, "no earlier segment gives"),
            (no_moments, "does not give \"latent_logvar\""),
            (layer_on_last, "the last segment has a layer"),
            (stray_output, "unknown \"extra\""),
        ] {
            let error = check_encoder_segments(&cut(case)).unwrap_err();
            assert!(error.contains(expected), "{error}");
        }
        let mut huge = cut(good());
        huge.group_norm.groups = usize::MAX;
        assert!(check_encoder_segments(&huge)
            .unwrap_err()
            .contains("must lie in 1..=4096"));
        let mut wrong_count = cut(short);
        wrong_count.group_norm.layers = 2;
        assert!(check_encoder_segments(&wrong_count)
            .unwrap_err()
            .contains("2 segments for 2 GroupNorm layers"));
    }
}
