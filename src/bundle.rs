//! The model bundle: `manifest.json` parsed, validated and hash-checked, and
//! every path kept inside the bundle's folder. See docs/bundle-format.md.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The manifest format version this build reads.
pub const FORMAT_VERSION: u32 = 1;

/// One graph input or output as the manifest describes it.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct PortSpec {
    pub name: String,
    pub dtype: String,
    #[serde(default)]
    pub shape: Vec<serde_json::Value>,
    #[serde(default)]
    pub layout: Option<String>,
}

/// A file of the bundle with its hash.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct HashedFile {
    pub file: String,
    pub sha256: String,
}

/// One ONNX graph of the bundle.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ComponentSpec {
    pub file: String,
    pub sha256: String,
    #[serde(default)]
    pub external_data: Vec<HashedFile>,
    pub inputs: Vec<PortSpec>,
    pub outputs: Vec<PortSpec>,
    /// Decoder only: `scaled` (the graph divides by the scaling factor) or `unscaled`.
    #[serde(default)]
    pub latent_input: Option<String>,
}

/// The noise schedule.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ScheduleSpec {
    #[serde(rename = "type")]
    pub kind: String,
    pub beta_start: f64,
    pub beta_end: f64,
    pub num_train_timesteps: usize,
    #[serde(default)]
    pub alphas_cumprod: Vec<f64>,
}

/// The authors' defaults, as exported.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Defaults {
    pub timestep: u32,
    pub upscale: u32,
    pub process_size: u32,
    pub color_fix: String,
}

/// The default prompt embedding.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct PromptSpec {
    pub embeds_file: String,
    pub sha256: String,
    pub shape: Vec<usize>,
    pub dtype: String,
    #[serde(default)]
    pub text: Option<String>,
}

/// `manifest.json`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Manifest {
    pub format: String,
    pub format_version: u32,
    #[serde(default)]
    pub name: Option<String>,
    pub precision: String,
    pub components: BTreeMap<String, ComponentSpec>,
    pub latent_channels: usize,
    pub vae_scale_factor: usize,
    pub scaling_factor: f32,
    #[serde(default)]
    pub cross_attention_dim: Option<usize>,
    pub schedule: ScheduleSpec,
    pub defaults: Defaults,
    pub prompt: PromptSpec,
    #[serde(default)]
    pub provenance: serde_json::Value,
}

/// What each required graph must take and give (name, dtype).
const REQUIRED_PORTS: [(&str, &[&str], &[&str]); 3] = [
    (
        "vae_encoder",
        &["image", "timestep"],
        &["latent_mean", "latent_logvar"],
    ),
    (
        "unet",
        &["latent", "timestep", "encoder_hidden_states"],
        &["residual"],
    ),
    ("vae_decoder", &["latent"], &["image"]),
];

/// A validated bundle on disk.
#[derive(Debug, Clone)]
pub struct Bundle {
    root: PathBuf,
    manifest: Manifest,
}

impl Bundle {
    /// Reads and validates `DIR/manifest.json`; checks every file's sha256.
    pub fn open(dir: &Path) -> Result<Bundle> {
        Self::open_with(dir, true)
    }

    /// Like [`Bundle::open`]; `verify_hashes = false` skips the sha256 check
    /// (`info` on a large bundle).
    pub fn open_with(dir: &Path, verify_hashes: bool) -> Result<Bundle> {
        let manifest_path = dir.join("manifest.json");
        if !dir.is_dir() {
            return Err(Error::bundle(
                dir,
                "not a folder; give --model the folder that holds manifest.json",
            ));
        }
        let text = std::fs::read_to_string(&manifest_path)
            .map_err(|e| Error::bundle(dir, format!("cannot read manifest.json: {e}")))?;
        let manifest: Manifest = serde_json::from_str(&text)
            .map_err(|e| Error::bundle(dir, format!("manifest.json is malformed: {e}")))?;
        let root = dir
            .canonicalize()
            .map_err(|e| Error::bundle(dir, e.to_string()))?;
        let bundle = Bundle { root, manifest };
        bundle.validate()?;
        if verify_hashes {
            bundle.verify_hashes()?;
        }
        Ok(bundle)
    }

    /// The parsed manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The bundle's folder.
    pub fn root(&self) -> &Path {
        &self.root
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
        let float_dtype = match m.precision.as_str() {
            // int8-qdq: int8 QDQ graphs (export/quantize.py) whose float ports stay float32
            "fp32" | "int8-qdq" => "float32",
            "fp16" => "float16",
            other => {
                return Err(self.fail(format!("precision {other:?} is not fp32, fp16 or int8-qdq")))
            }
        };
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
        match self.decoder().latent_input.as_deref() {
            Some("scaled") | Some("unscaled") => {}
            other => {
                return Err(self.fail(format!(
                    "vae_decoder.latent_input is {other:?}, expected \"scaled\" or \"unscaled\""
                )))
            }
        }
        if m.latent_channels == 0 || m.vae_scale_factor != 8 {
            return Err(self.fail("latent_channels must be > 0 and vae_scale_factor 8"));
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
            })
            .collect();
        files.push(HashedFile {
            file: m.prompt.embeds_file.clone(),
            sha256: m.prompt.sha256.clone(),
        });
        files
    }

    fn verify_hashes(&self) -> Result<()> {
        for file in self.all_files() {
            let path = self.resolve(&file.file)?;
            let actual = sha256_file(&path)?;
            if !actual.eq_ignore_ascii_case(&file.sha256) {
                return Err(self.fail(format!(
                    "{} has sha256 {actual}, the manifest says {}; the file is damaged or from another export",
                    file.file, file.sha256
                )));
            }
        }
        Ok(())
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
        Ok(real)
    }

    /// A required component (`vae_encoder`, `unet`, `vae_decoder`).
    pub fn component(&self, name: &str) -> &ComponentSpec {
        &self.manifest.components[name]
    }

    fn decoder(&self) -> &ComponentSpec {
        self.component("vae_decoder")
    }

    /// Whether the decoder graph divides by the scaling factor itself.
    pub fn decoder_takes_scaled_latent(&self) -> bool {
        self.decoder().latent_input.as_deref() == Some("scaled")
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
    float_dtype: &str,
) -> Result<()> {
    for name in required {
        let port = ports
            .iter()
            .find(|p| p.name == *name)
            .ok_or_else(|| bundle.fail(format!("{component} has no {direction} named {name:?}")))?;
        let expected = if *name == "timestep" {
            "int64"
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
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = file.read(&mut buffer).map_err(|e| Error::io(path, e))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}
