//! A real Prometheus server (Debian's `prometheus` package) for tests: scrapes given targets
//! every second, loads given rule files, and answers PromQL through its HTTP API.
//!
//! It lives in a directory of a [`crate::Cluster`] (`<cluster>/prometheus`), so the cluster
//! watchdog kills it through `prometheus.pid` if the test process dies without running Drop;
//! Drop kills it otherwise.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

use crate::ports::free_port;
use crate::process::log_tail;

/// Where Debian's `prometheus` package puts the server.
pub const PROMETHEUS_BIN: &str = "/usr/bin/prometheus";
/// Where Debian's `prometheus` package puts the rule and config checker.
pub const PROMTOOL_BIN: &str = "/usr/bin/promtool";

/// How long the server may take to answer `/-/ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one API call may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// A running Prometheus; killed on drop.
#[derive(Debug)]
pub struct Prometheus {
    /// Its HTTP API and UI on loopback.
    pub addr: SocketAddr,
    dir: PathBuf,
    child: Child,
}

impl Prometheus {
    /// Starts Prometheus in `dir` (created) scraping `targets` as job `causeway` every
    /// second, evaluating `rule_files` every second, and waits until it is ready.
    ///
    /// # Errors
    /// If the binary is missing (run scripts/setup.sh), the server exits, or it is not
    /// ready in time; the message quotes its log.
    pub async fn start(
        dir: &Path,
        targets: &[SocketAddr],
        rule_files: &[PathBuf],
    ) -> anyhow::Result<Prometheus> {
        if !Path::new(PROMETHEUS_BIN).exists() {
            bail!(
                "{PROMETHEUS_BIN} is missing: run scripts/setup.sh \
                 (it installs Debian's prometheus package)"
            );
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let config = dir.join("prometheus.yml");
        std::fs::write(&config, config_yaml(targets, rule_files))
            .with_context(|| format!("writing {}", config.display()))?;
        let mut last_err = None;
        for _ in 0..3 {
            match Prometheus::spawn(dir, &config).await {
                Ok(prometheus) => return Ok(prometheus),
                Err(err) => last_err = Some(err),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("prometheus: no start attempted")))
    }

    async fn spawn(dir: &Path, config: &Path) -> anyhow::Result<Prometheus> {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let log_path = dir.join("prometheus.log");
        let log = std::fs::File::create(&log_path).context("creating prometheus.log")?;
        let child = Command::new(PROMETHEUS_BIN)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("cloning the log handle")?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {PROMETHEUS_BIN}"))?;
        if let Some(pid) = child.id() {
            std::fs::write(dir.join("prometheus.pid"), pid.to_string())
                .context("writing prometheus.pid")?;
        }
        let mut prometheus = Prometheus {
            addr,
            dir: dir.to_owned(),
            child,
        };
        prometheus.wait_ready().await.with_context(|| {
            format!(
                "prometheus on {addr} not ready\n--- {} ---\n{}",
                log_path.display(),
                log_tail(&log_path, 30)
            )
        })?;
        Ok(prometheus)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("prometheus exited: {status}");
            }
            if let Ok((200, _)) = http_get(self.addr, "/-/ready").await {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("not ready within {READY_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `GET /api/v1/<path>` and the `data` of a successful answer.
    ///
    /// # Errors
    /// On an HTTP or API error, with Prometheus's message.
    pub async fn api(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        let (status, body) = http_get(self.addr, &format!("/api/v1/{path}")).await?;
        let json: serde_json::Value = serde_json::from_str(&body)
            .with_context(|| format!("/api/v1/{path}: not JSON ({status}): {body}"))?;
        if status != 200 || json["status"] != "success" {
            bail!("/api/v1/{path}: {status} {json}");
        }
        Ok(json["data"].clone())
    }

    /// Evaluates `expr` now (`/api/v1/query`) and returns the result vector's samples.
    ///
    /// # Errors
    /// If Prometheus rejects the expression or the result is not a vector.
    pub async fn query(&self, expr: &str) -> anyhow::Result<Vec<serde_json::Value>> {
        let data = self
            .api(&format!("query?query={}", percent_encode(expr)))
            .await
            .with_context(|| format!("query {expr}"))?;
        match (data["resultType"].as_str(), data["result"].as_array()) {
            (Some("vector"), Some(samples)) => Ok(samples.clone()),
            _ => bail!("query {expr}: not a vector: {data}"),
        }
    }

    /// The last lines of the server's log, for failure messages.
    pub fn log_tail(&self) -> String {
        log_tail(&self.dir.join("prometheus.log"), 30)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        // Nothing left for the watchdog to kill (the pid could be reused later).
        let _ = std::fs::remove_file(self.dir.join("prometheus.pid"));
    }
}

/// The scrape and rule configuration.
fn config_yaml(targets: &[SocketAddr], rule_files: &[PathBuf]) -> String {
    let mut yaml = String::from(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n",
    );
    yaml += "rule_files:\n";
    for file in rule_files {
        yaml += &format!("  - '{}'\n", file.display());
    }
    yaml += "scrape_configs:\n  - job_name: causeway\n    static_configs:\n      - targets:\n";
    for target in targets {
        yaml += &format!("          - '{target}'\n");
    }
    yaml
}

/// Percent-encodes everything but RFC 3986 unreserved characters (for a query string).
pub fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `GET path` over HTTP/1.0 (so the answer is neither chunked nor kept alive): status and
/// body.
async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        anyhow::Ok(raw)
    };
    let raw = tokio::time::timeout(HTTP_TIMEOUT, exchange)
        .await
        .with_context(|| format!("GET {path}: no answer within {HTTP_TIMEOUT:?}"))??;
    let text = String::from_utf8(raw).context("answer is not UTF-8")?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("GET {path}: incomplete answer {text:?}"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("GET {path}: no status in {head:?}"))?;
    Ok((status, body.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encoding_keeps_only_unreserved_characters() {
        assert_eq!(
            percent_encode("rate(x{a=~\".*\"}[1m]) > 0"),
            "rate%28x%7Ba%3D~%22.%2A%22%7D%5B1m%5D%29%20%3E%200"
        );
    }

    #[test]
    fn config_lists_rules_and_targets() {
        let yaml = config_yaml(
            &[SocketAddr::from(([127, 0, 0, 1], 9930))],
            &[PathBuf::from("/r/alerts.yml")],
        );
        assert!(yaml.contains("  - '/r/alerts.yml'\n"), "{yaml}");
        assert!(yaml.contains("          - '127.0.0.1:9930'\n"), "{yaml}");
    }
}
