//! `run --server URL` against a hostile "server": a plain TCP listener here
//! that answers every request with a body far larger than any health or
//! metadata reply. The client must refuse it after a bounded read, with one
//! line and exit 2, not read it into memory.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use common::*;

#[test]
fn an_endless_health_reply_is_refused_without_filling_memory() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request);
                // claims 1.5 GiB and sends zeros until the client hangs up
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1610612736\r\n\r\n",
                );
                let zeros = vec![b' '; 1 << 20];
                while stream.write_all(&zeros).is_ok() {}
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("a.png");
    std::fs::write(&input, encoded(&small_rgb(), image::ImageFormat::Png)).unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tadsr-edge"));
    command.args([
        "run",
        path_str(&input),
        "-o",
        path_str(&dir.path().join("out.png")),
        "--server",
        &format!("http://127.0.0.1:{port}"),
        "--retries",
        "0",
    ]);
    let run = run_with_timeout(command, Duration::from_secs(60));
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    let errors = run.error_lines();
    assert_eq!(errors.len(), 1, "{}", run.stderr);
    assert!(errors[0].contains("larger than 16 MiB"), "{}", errors[0]);
    assert!(run.peak_mb < 500.0, "peak memory {:.0} MB", run.peak_mb);
    assert!(!dir.path().join("out.png").exists());
}
