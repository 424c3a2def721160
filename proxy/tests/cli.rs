//! The `causeway` binary: `--check-config` accepts the shipped configs and names the bad
//! field of a broken one; SIGTERM stops the listener and exits cleanly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn causeway() -> Command {
    Command::new(env!("CARGO_BIN_EXE_causeway"))
}

fn config_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config")
}

#[test]
fn check_config_accepts_the_shipped_examples() {
    for file in ["minimal.toml", "causeway.toml"] {
        let out = causeway()
            .arg("--check-config")
            .arg(config_dir().join(file))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn check_config_names_the_bad_field() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    writeln!(
        file,
        "[proxy]\nlisten = \"127.0.0.1:6432\"\npool_size = 0\n[primary]\nhost = \"127.0.0.1\"\nport = 5432"
    )
    .unwrap();
    let out = causeway()
        .arg("--check-config")
        .arg(file.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("pool_size"), "{stderr}");
    let out = causeway()
        .arg("--config")
        .arg("/nonexistent/causeway.toml")
        .output()
        .unwrap();
    assert!(!out.status.success());
}

/// A `causeway` process run from a minimal config file, listening on `port`.
#[cfg(unix)]
struct Running {
    child: std::process::Child,
    file: tempfile::NamedTempFile,
    config: String,
    port: u16,
}

/// Starts `causeway` with a trust-auth config (its primary unreachable) and waits until it
/// listens.
#[cfg(unix)]
fn start_listening() -> Running {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let config = format!(
        "[proxy]\nlisten = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:0\"\n[auth]\nmethod = \"trust\"\n[primary]\nhost = \"127.0.0.1\"\nport = 1\n"
    );
    let mut file = tempfile::NamedTempFile::new().unwrap();
    write!(file, "{config}").unwrap();
    let child = causeway()
        .arg("--config")
        .arg(file.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "causeway did not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Running {
        child,
        file,
        config,
        port,
    }
}

/// SIGTERM, then the exit status (within 10 s) and what the process wrote to stderr.
#[cfg(unix)]
fn terminate(mut child: std::process::Child) -> (std::process::ExitStatus, String) {
    send("-TERM", &child);
    let start = Instant::now();
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "causeway did not exit"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (exit, stderr)
}

#[cfg(unix)]
#[test]
fn sigterm_closes_the_listener_and_exits() {
    let Running { child, port, .. } = start_listening();
    let (exit, stderr) = terminate(child);
    assert!(exit.success(), "exit status {exit}");
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "listener still open"
    );
    assert!(stderr.contains("shutdown complete"), "{stderr}");
}

/// `kill -<signal> <pid>`.
#[cfg(unix)]
fn send(signal: &str, child: &std::process::Child) {
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[cfg(unix)]
#[test]
fn sighup_reloads_and_an_invalid_file_keeps_the_process_serving() {
    let Running {
        mut child,
        file,
        config,
        port,
    } = start_listening();
    // A valid change, then a broken file: neither ends the process.
    std::fs::write(
        file.path(),
        format!("{config}[consistency]\ndefault = \"eventual\"\n"),
    )
    .unwrap();
    send("-HUP", &child);
    std::thread::sleep(Duration::from_millis(500));
    std::fs::write(file.path(), "[proxy]\npool_size = \"many\"\n").unwrap();
    send("-HUP", &child);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGHUP ended the process"
    );
    TcpStream::connect(("127.0.0.1", port)).expect("still listening after SIGHUP");

    let (exit, stderr) = terminate(child);
    assert!(exit.success(), "exit status {exit}");
    assert!(stderr.contains("configuration reloaded"), "{stderr}");
    assert!(stderr.contains("[\"consistency\"]"), "{stderr}");
    assert!(stderr.contains("configuration reload failed"), "{stderr}");
}
