//! Helpers shared by the tests that drive the real binary: runs with a
//! watchdog and the child's own peak memory, and signals sent at a known
//! point of the run (after a line on stderr), never after a sleep.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn tiny_model() -> PathBuf {
    repo().join("models/tiny")
}

/// A copy of models/tiny at `to` (created), to edit without touching the
/// committed bundle.
pub fn copy_tiny_bundle(to: &Path) {
    let tiny = tiny_model();
    for file in files_under(&tiny) {
        let target = to.join(file.strip_prefix(&tiny).unwrap());
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(&file, &target).unwrap();
    }
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// `tadsr-edge ARGS --model models/tiny --provider cpu`.
pub fn tadsr_command(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tadsr-edge"));
    command.args(args).args([
        "--model",
        tiny_model().to_str().unwrap(),
        "--provider",
        "cpu",
    ]);
    command
}

/// How a child ended.
#[derive(Debug)]
pub struct Ran {
    /// The exit code, `None` when a signal killed it.
    pub code: Option<i32>,
    /// The signal that killed it, if one did.
    pub killed_by: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub seconds: f64,
    /// The child's own peak resident memory, in MB.
    pub peak_mb: f64,
}

impl Ran {
    /// The lines starting with `error: `.
    pub fn error_lines(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| l.starts_with("error: "))
            .collect()
    }
}

/// A started child whose stderr is read line by line as it comes.
pub struct Running {
    pid: libc::pid_t,
    child: std::process::Child,
    started: Instant,
    lines: mpsc::Receiver<String>,
    stderr_so_far: Vec<String>,
    stdout: std::thread::JoinHandle<String>,
}

impl Running {
    pub fn spawn(mut command: Command) -> Running {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        let (send, lines) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        let mut stdout = child.stdout.take().unwrap();
        let stdout = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stdout.read_to_string(&mut text);
            text
        });
        Running {
            pid: child.id() as libc::pid_t,
            child,
            started: Instant::now(),
            lines,
            stderr_so_far: Vec::new(),
            stdout,
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid as u32
    }

    /// Blocks until a stderr line starting with `prefix` comes (or panics
    /// after `timeout`, or when stderr closes first).
    pub fn wait_for_line(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.stderr_so_far.push(line.clone());
                    if line.starts_with(prefix) {
                        return line;
                    }
                }
                Err(_) => {
                    let _ = self.child.kill();
                    panic!(
                        "no stderr line starting with {prefix:?}; stderr so far:\n{}",
                        self.stderr_so_far.join("\n")
                    );
                }
            }
        }
    }

    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: plain kill(2) on our own child.
        assert_eq!(unsafe { libc::kill(self.pid, signal) }, 0, "kill failed");
    }

    /// Waits for the end (killing the child after `timeout`, which fails
    /// the test: a run that hangs is a bug).
    pub fn finish(mut self, timeout: Duration) -> Ran {
        let deadline = self.started + timeout;
        let mut status: libc::c_int = 0;
        // SAFETY: rusage is plain data, filled by wait4.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        loop {
            // SAFETY: wait4 on our own child, with valid out-pointers.
            let reaped = unsafe { libc::wait4(self.pid, &mut status, libc::WNOHANG, &mut usage) };
            if reaped == self.pid {
                break;
            }
            assert!(reaped == 0, "wait4 failed");
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "the run did not end within {timeout:?} (hung?); stderr so far:\n{}",
                    self.stderr_so_far.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let seconds = self.started.elapsed().as_secs_f64();
        let mut stderr = std::mem::take(&mut self.stderr_so_far);
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            stderr.push(line);
        }
        let exited = libc::WIFEXITED(status);
        Ran {
            code: exited.then(|| libc::WEXITSTATUS(status)),
            killed_by: libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status)),
            stdout: self.stdout.join().unwrap_or_default(),
            stderr: stderr.join("\n"),
            seconds,
            peak_mb: usage.ru_maxrss as f64 / 1024.0,
        }
    }
}

/// Runs a command to its end, failing the test if it takes over `timeout`.
pub fn run_with_timeout(command: Command, timeout: Duration) -> Ran {
    Running::spawn(command).finish(timeout)
}

/// `tadsr-edge ARGS` on models/tiny, on the CPU, within two minutes.
pub fn tadsr(args: &[&str]) -> Ran {
    run_with_timeout(tadsr_command(args), Duration::from_secs(120))
}

/// Files in a folder, hidden ones included (a leftover temporary file would
/// show), sorted; names that are not UTF-8 in their lossy form.
pub fn folder_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A small photo-like RGB image (cheap to run: 48x40 -> 192x160 with
/// `--process-size 0`).
pub fn small_rgb() -> image::DynamicImage {
    image::open(repo().join("examples/coffee.png"))
        .expect("example photo")
        .resize_exact(48, 40, image::imageops::FilterType::Lanczos3)
}

/// A photo-like image of any size.
pub fn photo(width: u32, height: u32) -> image::DynamicImage {
    image::open(repo().join("examples/coffee.png"))
        .expect("example photo")
        .resize_exact(width, height, image::imageops::FilterType::Lanczos3)
}

/// Encoded bytes of `image` in `format`.
pub fn encoded(image: &image::DynamicImage, format: image::ImageFormat) -> Vec<u8> {
    let mut bytes = Vec::new();
    let image = if format == image::ImageFormat::Jpeg {
        image::DynamicImage::ImageRgb8(image.to_rgb8())
    } else {
        image.clone()
    };
    image
        .write_to(&mut std::io::Cursor::new(&mut bytes), format)
        .unwrap();
    bytes
}

pub fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}
