//! Where outputs go: `-o FILE` for one input, `-o DIR` for several, names
//! `<stem>.png` or `<stem>_t<T>.png` when several timesteps are asked.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// What `-o` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputTarget {
    /// One output file (one input).
    File(PathBuf),
    /// A folder for all outputs (created if missing).
    Dir(PathBuf),
}

/// Decides what `-o` means: an existing folder, a path ending in `/` or a
/// path without an extension is a folder; otherwise a file, which needs
/// exactly one input.
pub fn output_target(output: &Path, input_count: usize) -> Result<OutputTarget> {
    let text = output.to_string_lossy();
    let looks_like_dir = output.is_dir() || text.ends_with('/') || output.extension().is_none();
    if looks_like_dir {
        return Ok(OutputTarget::Dir(output.to_path_buf()));
    }
    if input_count > 1 {
        return Err(Error::InvalidOption(format!(
            "-o {} is a file name but {input_count} inputs were given; give a folder",
            output.display()
        )));
    }
    Ok(OutputTarget::File(output.to_path_buf()))
}

/// The output path of `input` at `timestep`.
pub fn output_path(
    target: &OutputTarget,
    input: &Path,
    timestep: u32,
    several_timesteps: bool,
) -> PathBuf {
    let suffix = if several_timesteps {
        format!("_t{timestep}")
    } else {
        String::new()
    };
    match target {
        OutputTarget::Dir(dir) => {
            let stem = input
                .file_stem()
                .map(|s| s.to_string_lossy())
                .unwrap_or_default();
            dir.join(format!("{stem}{suffix}.png"))
        }
        OutputTarget::File(file) if several_timesteps => {
            let stem = file
                .file_stem()
                .map(|s| s.to_string_lossy())
                .unwrap_or_default();
            let extension = file
                .extension()
                .map(|e| e.to_string_lossy())
                .unwrap_or_else(|| "png".into());
            file.with_file_name(format!("{stem}{suffix}.{extension}"))
        }
        OutputTarget::File(file) => file.clone(),
    }
}

/// For each input, `Ok(())` or why it cannot be written: its output would
/// overwrite the input itself or an earlier input's output (`a.jpg` and
/// `a.png` into one folder).
pub fn check_collisions(
    target: &OutputTarget,
    inputs: &[PathBuf],
    timesteps: &[u32],
) -> Vec<Result<()>> {
    let several = timesteps.len() > 1;
    let mut claimed: HashMap<PathBuf, &Path> = HashMap::new();
    let canonical = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    inputs
        .iter()
        .map(|input| {
            let input_real = canonical(input);
            for &timestep in timesteps {
                let output = output_path(target, input, timestep, several);
                let output_real = output
                    .parent()
                    .map(|parent| canonical(parent).join(output.file_name().unwrap_or_default()))
                    .unwrap_or_else(|| output.clone());
                if output_real == input_real {
                    return Err(Error::InvalidOption(format!(
                        "the output {} would overwrite the input; choose another -o",
                        output.display()
                    )));
                }
                if let Some(first) = claimed.get(&output_real) {
                    return Err(Error::InvalidOption(format!(
                        "the output {} is already the output of {}; rename one of them",
                        output.display(),
                        first.display()
                    )));
                }
            }
            for &timestep in timesteps {
                let output = output_path(target, input, timestep, several);
                let output_real = output
                    .parent()
                    .map(|parent| canonical(parent).join(output.file_name().unwrap_or_default()))
                    .unwrap_or(output);
                claimed.insert(output_real, input);
            }
            Ok(())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_and_files() {
        assert_eq!(
            output_target(Path::new("out/"), 1).unwrap(),
            OutputTarget::Dir("out/".into())
        );
        assert_eq!(
            output_target(Path::new("out"), 3).unwrap(),
            OutputTarget::Dir("out".into())
        );
        assert_eq!(
            output_target(Path::new("x.png"), 1).unwrap(),
            OutputTarget::File("x.png".into())
        );
        assert!(output_target(Path::new("x.png"), 2).is_err());
    }

    #[test]
    fn names() {
        let dir = OutputTarget::Dir("out".into());
        assert_eq!(
            output_path(&dir, Path::new("in/cat.jpg"), 500, false),
            PathBuf::from("out/cat.png")
        );
        assert_eq!(
            output_path(&dir, Path::new("in/cat.jpg"), 200, true),
            PathBuf::from("out/cat_t200.png")
        );
        let file = OutputTarget::File("res/big.png".into());
        assert_eq!(
            output_path(&file, Path::new("cat.jpg"), 200, false),
            PathBuf::from("res/big.png")
        );
        assert_eq!(
            output_path(&file, Path::new("cat.jpg"), 800, true),
            PathBuf::from("res/big_t800.png")
        );
    }

    #[test]
    fn collisions_are_reported_for_the_later_input() {
        let dir = tempfile::tempdir().unwrap();
        let target = OutputTarget::Dir(dir.path().join("out"));
        let inputs = vec![
            PathBuf::from("a.jpg"),
            PathBuf::from("a.png"),
            PathBuf::from("b.png"),
        ];
        let checks = check_collisions(&target, &inputs, &[500]);
        assert!(checks[0].is_ok());
        assert!(checks[1]
            .as_ref()
            .unwrap_err()
            .to_string()
            .contains("a.jpg"));
        assert!(checks[2].is_ok());
    }

    #[test]
    fn never_overwrites_an_input() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("photo.png");
        std::fs::write(&input, b"x").unwrap();
        let target = OutputTarget::Dir(dir.path().to_path_buf());
        let checks = check_collisions(&target, &[input], &[500]);
        assert!(checks[0]
            .as_ref()
            .unwrap_err()
            .to_string()
            .contains("overwrite the input"));
    }
}
