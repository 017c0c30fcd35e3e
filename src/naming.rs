//! Where outputs go: `-o FILE` for one input, `-o DIR` for several, names
//! `<stem>.png` or `<stem>_t<T>.png` when several timesteps are asked.
//!
//! The whole batch is planned before anything is computed or written
//! ([`plan_batch`]): every input's outputs are known up front, and an output
//! that is any input of the batch, or that two inputs would share, is refused.
//! Names are handled as bytes (`OsStr`), never through a lossy UTF-8
//! conversion, so two different file names never map to one output.
//!
//! Over 500 lines only with its unit tests beside the code (the code is
//! about 400 lines).

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Longest file name (bytes) most file systems take (`NAME_MAX`).
pub const MAX_NAME_BYTES: usize = 255;

/// What `-o` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputTarget {
    /// One output file (one input).
    File(PathBuf),
    /// A folder for all outputs (created if missing), each `<stem>.<extension>`.
    Dir {
        folder: PathBuf,
        extension: &'static str,
    },
}

impl OutputTarget {
    /// A folder whose outputs are PNG.
    pub fn png_folder(folder: impl Into<PathBuf>) -> Self {
        OutputTarget::Dir {
            folder: folder.into(),
            extension: "png",
        }
    }
}

/// A path as it may be printed on one line: unchanged when it is valid UTF-8
/// without control characters, else quoted with escapes (`"a\nb.png"`,
/// `"caf\xE9.png"`), so a name can neither forge a second line nor be
/// confused with another.
pub fn shown(path: &Path) -> String {
    shown_os(path.as_os_str())
}

/// [`shown`] for any `OsStr`.
pub fn shown_os(name: &OsStr) -> String {
    if let Some(text) = name.to_str() {
        if !text.chars().any(char::is_control) && !text.starts_with('"') {
            return text.to_string();
        }
    }
    let mut out = String::from("\"");
    for chunk in name.as_encoded_bytes().utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if c.is_control() => out.extend(c.escape_default()),
                c => out.push(c),
            }
        }
        for byte in chunk.invalid() {
            out.push_str(&format!("\\x{byte:02X}"));
        }
    }
    out.push('"');
    out
}

/// Decides what `-o` means, refusing what cannot be an output before any
/// work: an existing folder, a path ending in `/` or a path without an
/// extension is a folder; otherwise a file, which needs exactly one input,
/// a supported extension and an existing parent folder. `-o -` and devices,
/// FIFOs or sockets are refused. Outputs in a folder get `folder_extension`.
pub fn output_target(
    output: &Path,
    input_count: usize,
    folder_extension: &'static str,
) -> Result<OutputTarget> {
    let invalid = |m: String| Err(Error::InvalidOption(m));
    if output.as_os_str().is_empty() {
        return invalid("-o is empty; give a file or a folder".into());
    }
    if output.as_os_str() == "-" {
        return invalid(
            "-o - (standard output) is not supported: outputs are files; give a file or a folder"
                .into(),
        );
    }
    let shown_output = shown(output);
    let ends_with_slash = output.as_os_str().as_encoded_bytes().ends_with(b"/");
    match std::fs::metadata(output) {
        Ok(meta) if meta.is_dir() => {
            return Ok(OutputTarget::Dir {
                folder: output.to_path_buf(),
                extension: folder_extension,
            })
        }
        Ok(meta) if !meta.is_file() => {
            return invalid(format!(
                "-o {shown_output} is {}, not a file or a folder; give a file or a folder",
                special_file_kind(&meta)
            ))
        }
        Ok(_) if ends_with_slash || output.extension().is_none() => {
            return invalid(format!(
                "-o {shown_output} is an existing file without an image extension; give a folder, or a file name ending in .png, .jpg, .webp, .bmp or .tiff"
            ))
        }
        _ => {}
    }
    if ends_with_slash || output.extension().is_none() {
        return Ok(OutputTarget::Dir {
            folder: output.to_path_buf(),
            extension: folder_extension,
        });
    }
    if input_count > 1 {
        return invalid(format!(
            "-o {shown_output} is a file name but {input_count} inputs were given; give a folder"
        ));
    }
    crate::image::write::output_format(output)?;
    let name_bytes = output.file_name().map_or(0, |name| name.len());
    if name_bytes > MAX_NAME_BYTES {
        return invalid(format!(
            "-o {shown_output}: the file name is {name_bytes} bytes long, over the {MAX_NAME_BYTES} a file name may have; give a shorter one"
        ));
    }
    let parent = parent_folder(output);
    match std::fs::metadata(parent) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return invalid(format!(
                "-o {shown_output}: {} is not a folder",
                shown(parent)
            ))
        }
        Err(_) => {
            return invalid(format!(
                "-o {shown_output}: the folder {} does not exist; create it first",
                shown(parent)
            ))
        }
    }
    Ok(OutputTarget::File(output.to_path_buf()))
}

/// The folder a file path lives in (`.` for a bare name).
pub fn parent_folder(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// "a FIFO (named pipe)", "a character device", ... for what is neither a
/// regular file nor a folder.
#[cfg(unix)]
pub fn special_file_kind(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let kind = meta.file_type();
    if kind.is_fifo() {
        "a FIFO (named pipe)"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_dir() {
        "a folder"
    } else if kind.is_symlink() {
        "a symbolic link"
    } else {
        "a special file"
    }
}

#[cfg(not(unix))]
pub fn special_file_kind(meta: &std::fs::Metadata) -> &'static str {
    if meta.is_dir() {
        "a folder"
    } else {
        "a special file"
    }
}

/// The output path of `input` at `timestep`. The name is built from the
/// input's bytes, so names that are not UTF-8 stay distinct.
pub fn output_path(
    target: &OutputTarget,
    input: &Path,
    subfolder: &Path,
    timestep: u32,
    several_timesteps: bool,
) -> PathBuf {
    let suffix = if several_timesteps {
        format!("_t{timestep}")
    } else {
        String::new()
    };
    match target {
        OutputTarget::Dir { folder, extension } => {
            let mut name: OsString = input.file_stem().unwrap_or_default().to_os_string();
            name.push(&suffix);
            name.push(".");
            name.push(extension);
            folder.join(subfolder).join(name)
        }
        OutputTarget::File(file) if several_timesteps => {
            let mut name: OsString = file.file_stem().unwrap_or_default().to_os_string();
            name.push(&suffix);
            name.push(".");
            name.push(file.extension().unwrap_or(OsStr::new("png")));
            file.with_file_name(name)
        }
        OutputTarget::File(file) => file.clone(),
    }
}

/// How a file is told apart from others: its real path (symbolic links and
/// `..` resolved) and, when it exists, its device and inode.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct FileIdentity {
    real_path: Option<PathBuf>,
    inode: Option<(u64, u64)>,
}

impl FileIdentity {
    /// Its real path even when it does not exist yet (the real folder joined
    /// with the name), and its inode when it exists.
    fn of(path: &Path) -> FileIdentity {
        FileIdentity {
            real_path: Some(
                path.canonicalize()
                    .unwrap_or_else(|_| real_parent_join(path)),
            ),
            inode: inode(path),
        }
    }

    fn same_file(&self, other: &FileIdentity) -> bool {
        (self.real_path.is_some() && self.real_path == other.real_path)
            || (self.inode.is_some() && self.inode == other.inode)
    }
}

fn real_parent_join(path: &Path) -> PathBuf {
    match path.file_name() {
        Some(name) => parent_folder(path)
            .canonicalize()
            .map(|parent| parent.join(name))
            .unwrap_or_else(|_| path.to_path_buf()),
        None => path.to_path_buf(),
    }
}

/// The device and inode of the file at `path` (symbolic links followed),
/// when it exists.
#[cfg(unix)]
pub fn inode(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(not(unix))]
pub fn inode(_path: &Path) -> Option<(u64, u64)> {
    None
}

/// What the plan says about one input.
#[derive(Debug)]
pub enum Verdict {
    /// Compute it and write `outputs`.
    Go,
    /// The same file as an earlier input (same real path): computed once.
    Duplicate { first: PathBuf },
    /// Refused before any computation; nothing of it is written.
    Refused(Error),
}

/// Whether `output` exists as a regular file itself (not through a symbolic
/// link: a link at an output name is replaced when written, never
/// followed). What `run --skip-existing` leaves as it is.
pub fn output_exists(output: &Path) -> bool {
    std::fs::symlink_metadata(output).is_ok_and(|meta| meta.is_file())
}

/// One input of the batch and its outputs, one per timestep.
#[derive(Debug)]
pub struct PlannedInput {
    pub input: PathBuf,
    pub outputs: Vec<(u32, PathBuf)>,
    pub verdict: Verdict,
}

/// Plans the whole batch before anything is computed or written. Each input
/// gets its outputs (one per timestep) and a verdict: refused when one of
/// its outputs would be any input of the batch (compared by real path and by
/// device and inode, so `cx/a.jpg` into `cy/` never replaces `cy/a.png`),
/// when two inputs would write one output (both are refused: which one wins
/// would be an accident of order), when an output name is too long for the
/// file system, or when an output exists as a folder. `unusable` marks inputs
/// already refused by the caller (not regular files, ...): they are still
/// protected as inputs but claim no output.
pub fn plan_batch(
    target: &OutputTarget,
    inputs: &[PathBuf],
    subfolders: &[PathBuf],
    timesteps: &[u32],
    unusable: &[bool],
) -> Vec<PlannedInput> {
    let several = timesteps.len() > 1;
    let identities: Vec<FileIdentity> = inputs.iter().map(|p| FileIdentity::of(p)).collect();
    let mut plans: Vec<PlannedInput> = inputs
        .iter()
        .enumerate()
        .map(|(index, input)| PlannedInput {
            input: input.clone(),
            outputs: timesteps
                .iter()
                .map(|&t| {
                    let subfolder = subfolders
                        .get(index)
                        .map_or(Path::new(""), PathBuf::as_path);
                    (t, output_path(target, input, subfolder, t, several))
                })
                .collect(),
            verdict: Verdict::Go,
        })
        .collect();

    // Duplicates: the same real file given twice (or a file and its folder).
    for index in 0..plans.len() {
        if unusable.get(index).copied().unwrap_or(false) {
            continue;
        }
        let earlier = (0..index).find(|&j| {
            !unusable.get(j).copied().unwrap_or(false)
                && !matches!(plans[j].verdict, Verdict::Duplicate { .. })
                && identities[j].real_path.is_some()
                && identities[j].real_path == identities[index].real_path
        });
        if let Some(first) = earlier {
            plans[index].verdict = Verdict::Duplicate {
                first: plans[first].input.clone(),
            };
        }
    }

    let mut claimed: HashMap<PathBuf, Vec<usize>> = HashMap::new();
    for (index, plan) in plans.iter_mut().enumerate() {
        if unusable.get(index).copied().unwrap_or(false) {
            plan.verdict = Verdict::Refused(Error::Input("not usable".into()));
            continue;
        }
        if !matches!(plan.verdict, Verdict::Go) {
            continue;
        }
        if let Some(refusal) = check_outputs(plan, index, inputs, &identities) {
            plan.verdict = Verdict::Refused(refusal);
            continue;
        }
        for (_, output) in &plan.outputs {
            let key = FileIdentity::of(output)
                .real_path
                .unwrap_or_else(|| output.clone());
            let owners = claimed.entry(key).or_default();
            if !owners.contains(&index) {
                owners.push(index);
            }
        }
    }

    // Two inputs, one output: refuse every input involved.
    let mut shared: Vec<(usize, PathBuf, usize)> = Vec::new();
    for owners in claimed.values().filter(|owners| owners.len() > 1) {
        for &index in owners {
            let other = owners
                .iter()
                .copied()
                .find(|&o| o != index)
                .unwrap_or(index);
            let output = plans[index]
                .outputs
                .iter()
                .map(|(_, o)| o.clone())
                .find(|o| plans[other].outputs.iter().any(|(_, p)| same_output(o, p)))
                .unwrap_or_default();
            shared.push((index, output, other));
        }
    }
    for (index, output, other) in shared {
        if matches!(plans[index].verdict, Verdict::Go) {
            plans[index].verdict = Verdict::Refused(Error::Input(format!(
                "its output {} would also be the output of {}; rename one of them or run them separately",
                shown(&output),
                shown(&plans[other].input)
            )));
        }
    }
    plans
}

fn same_output(a: &Path, b: &Path) -> bool {
    FileIdentity::of(a).real_path == FileIdentity::of(b).real_path
}

/// Why one input's outputs cannot be written, if they cannot.
fn check_outputs(
    plan: &PlannedInput,
    index: usize,
    inputs: &[PathBuf],
    identities: &[FileIdentity],
) -> Option<Error> {
    for (_, output) in &plan.outputs {
        let name = output.file_name().unwrap_or_default();
        if name.len() > MAX_NAME_BYTES {
            return Some(Error::Input(format!(
                "its output name is {} bytes long, over the {MAX_NAME_BYTES} a file name may have; rename the input (or, with -o FILE, give a shorter name)",
                name.len()
            )));
        }
        let identity = FileIdentity::of(output);
        if let Some(hit) = identities.iter().position(|i| i.same_file(&identity)) {
            return Some(Error::Input(if hit == index {
                format!(
                    "its output {} would overwrite the input itself; choose another -o",
                    shown(output)
                )
            } else {
                format!(
                    "its output {} would overwrite the input {}; choose another -o",
                    shown(output),
                    shown(&inputs[hit])
                )
            }));
        }
        if std::fs::symlink_metadata(output).is_ok_and(|m| m.is_dir()) {
            return Some(Error::Input(format!(
                "its output {} is an existing folder; move it or choose another -o",
                shown(output)
            )));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_and_files() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        assert_eq!(
            output_target(&dir.path().join("out/"), 1, "png").unwrap(),
            OutputTarget::png_folder(dir.path().join("out/"))
        );
        assert_eq!(
            output_target(&out, 3, "jpg").unwrap(),
            OutputTarget::Dir {
                folder: out.clone(),
                extension: "jpg"
            }
        );
        let file = dir.path().join("x.png");
        assert_eq!(
            output_target(&file, 1, "png").unwrap(),
            OutputTarget::File(file.clone())
        );
        assert!(output_target(&file, 2, "png").is_err());
        assert!(output_target(&dir.path().join("x.gif"), 1, "png").is_err());
        assert!(output_target(&dir.path().join("missing/x.png"), 1, "png").is_err());
        assert!(output_target(Path::new("-"), 1, "png").is_err());
    }

    #[test]
    fn names() {
        let dir = OutputTarget::png_folder("out");
        assert_eq!(
            output_path(&dir, Path::new("in/cat.jpg"), Path::new(""), 500, false),
            PathBuf::from("out/cat.png")
        );
        assert_eq!(
            output_path(&dir, Path::new("in/cat.jpg"), Path::new(""), 200, true),
            PathBuf::from("out/cat_t200.png")
        );
        let jpeg_folder = OutputTarget::Dir {
            folder: "out".into(),
            extension: "jpg",
        };
        assert_eq!(
            output_path(
                &jpeg_folder,
                Path::new("in/cat.png"),
                Path::new(""),
                200,
                true
            ),
            PathBuf::from("out/cat_t200.jpg")
        );
        assert_eq!(
            output_path(
                &dir,
                Path::new("in/2024/05/cat.jpg"),
                Path::new("2024/05"),
                500,
                false
            ),
            PathBuf::from("out/2024/05/cat.png")
        );
        let file = OutputTarget::File("res/big.png".into());
        assert_eq!(
            output_path(&file, Path::new("cat.jpg"), Path::new(""), 200, false),
            PathBuf::from("res/big.png")
        );
        assert_eq!(
            output_path(&file, Path::new("cat.jpg"), Path::new(""), 800, true),
            PathBuf::from("res/big_t800.png")
        );
    }

    #[cfg(unix)]
    #[test]
    fn names_that_are_not_utf8_stay_distinct() {
        use std::os::unix::ffi::OsStrExt;
        let dir = OutputTarget::png_folder("out");
        let a = Path::new(OsStr::from_bytes(b"caf\xe9.png"));
        let b = Path::new(OsStr::from_bytes(b"caf\xe8.png"));
        assert_ne!(
            output_path(&dir, a, Path::new(""), 500, false),
            output_path(&dir, b, Path::new(""), 500, false)
        );
        assert_eq!(shown(a), "\"caf\\xE9.png\"");
        assert_eq!(shown(Path::new("a\nb.png")), "\"a\\nb.png\"");
        assert_eq!(shown(Path::new("plain.png")), "plain.png");
    }

    #[test]
    fn two_inputs_for_one_output_are_both_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = OutputTarget::png_folder(dir.path().join("out"));
        let inputs = vec![
            PathBuf::from("a.jpg"),
            PathBuf::from("a.png"),
            PathBuf::from("b.png"),
        ];
        let plans = plan_batch(&target, &inputs, &[], &[500], &[false; 3]);
        for refused in &plans[..2] {
            let Verdict::Refused(error) = &refused.verdict else {
                panic!("{plans:?}")
            };
            assert!(error.to_string().contains("also be the output"));
        }
        assert!(matches!(plans[2].verdict, Verdict::Go));
    }

    #[test]
    fn never_overwrites_any_input_of_the_batch() {
        let dir = tempfile::tempdir().unwrap();
        let (cx, cy) = (dir.path().join("cx"), dir.path().join("cy"));
        std::fs::create_dir_all(&cx).unwrap();
        std::fs::create_dir_all(&cy).unwrap();
        std::fs::write(cx.join("a.jpg"), b"x").unwrap();
        std::fs::write(cy.join("a.png"), b"y").unwrap();
        let inputs = vec![cx.join("a.jpg"), cy.join("a.png")];
        let plans = plan_batch(
            &OutputTarget::png_folder(cy.clone()),
            &inputs,
            &[],
            &[500],
            &[false; 2],
        );
        let reasons: Vec<String> = plans
            .iter()
            .map(|p| match &p.verdict {
                Verdict::Refused(e) => e.to_string(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert!(
            reasons[0].contains("would overwrite the input"),
            "{reasons:?}"
        );
        assert!(reasons[1].contains("the input itself"), "{reasons:?}");
    }

    #[test]
    fn the_same_file_twice_is_a_duplicate() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.png"), b"x").unwrap();
        let inputs = vec![dir.path().join("a.png"), dir.path().join(".").join("a.png")];
        let plans = plan_batch(
            &OutputTarget::png_folder(dir.path().join("out")),
            &inputs,
            &[],
            &[500],
            &[false; 2],
        );
        assert!(matches!(plans[0].verdict, Verdict::Go));
        assert!(matches!(plans[1].verdict, Verdict::Duplicate { .. }));
    }
}
