//! TLS on every leg (DESIGN.md §8) against a private cluster with `ssl = on` and `hostssl`-only
//! test users, with certificates made here (rcgen): psql and tokio-postgres with
//! `sslmode=verify-full` through Causeway, plaintext clients refused, reads reaching replicas
//! over TLS, a server certificate from another CA refused with the node named, cleartext
//! passwords kept off plaintext server connections, and Redis over `rediss://`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use integration_tests::{Cluster, ClusterOptions, ServerCertificate};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls_pki_types::pem::PemObject;
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

use crate::support::{assert_success, eventually, run_program, sqlstate, wait_store_up, Proxy};

/// A test CA in a directory that lives as long as the test process.
struct Pki {
    dir: PathBuf,
    name: String,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let dir = tempfile::tempdir().unwrap().keep();
        let pki = Pki {
            dir,
            name: name.to_owned(),
            issuer,
        };
        std::fs::write(pki.ca(), pki.issuer.pem()).unwrap();
        pki
    }

    fn ca(&self) -> PathBuf {
        self.dir.join(format!("{}-ca.pem", self.name))
    }

    /// PEM certificate and key for `cn` with `sans`.
    fn leaf_pem(&self, cn: &str, sans: &[&str]) -> (String, String) {
        let sans: Vec<String> = sans.iter().map(|s| (*s).to_owned()).collect();
        let mut params = CertificateParams::new(sans).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// The same, written to files; returns (certificate, key) paths.
    fn leaf(&self, cn: &str, sans: &[&str]) -> (PathBuf, PathBuf) {
        let (cert, key) = self.leaf_pem(cn, sans);
        let cert_path = self.dir.join(format!("{cn}.crt"));
        let key_path = self.dir.join(format!("{cn}.key"));
        std::fs::write(&cert_path, cert).unwrap();
        std::fs::write(&key_path, key).unwrap();
        (cert_path, key_path)
    }
}

/// The module's cluster (TLS on every node), its CA, and Causeway's client-facing files.
struct Setup {
    cluster: Cluster,
    pki: Pki,
    proxy_cert: (PathBuf, PathBuf),
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let pki = Pki::new("nodes");
        let (cert_pem, key_pem) = pki.leaf_pem("postgres-node", &["localhost", "127.0.0.1"]);
        let cert = ServerCertificate { cert_pem, key_pem };
        let options = ClusterOptions {
            replicas: 1,
            ..ClusterOptions::default()
        };
        let cluster = Cluster::start_tls(options, &cert).expect("TLS cluster starts");
        let proxy_cert = pki.leaf("causeway", &["localhost", "127.0.0.1"]);
        Setup {
            cluster,
            pki,
            proxy_cert,
        }
    })
}

fn quoted(path: &Path) -> String {
    format!("{:?}", path.display().to_string())
}

/// `[client_tls]` with `mode` and `[server_tls]` verify-full against the cluster's CA.
fn tls_config(setup: &Setup, client_mode: &str, server_mode: &str, server_ca: &Path) -> String {
    format!(
        "[client_tls]\nsslmode = \"{client_mode}\"\ncert_file = {}\nkey_file = {}\nca_file = {}\n\
         [server_tls]\nsslmode = \"{server_mode}\"\nca_file = {}\n",
        quoted(&setup.proxy_cert.0),
        quoted(&setup.proxy_cert.1),
        quoted(&setup.pki.ca()),
        quoted(server_ca),
    )
}

async fn psql(proxy: &Proxy, user: &str, params: &str, sql: &str) -> std::process::Output {
    let conninfo = format!(
        "host=localhost port={} user={user} dbname=app connect_timeout=10 {params}",
        proxy.port()
    );
    run_program(
        "psql",
        &[
            "-X",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            &conninfo,
            "-c",
            sql,
        ],
        &[("PGPASSWORD", "secret")],
        Duration::from_secs(30),
    )
    .await
    .expect("psql runs")
}

#[tokio::test]
async fn psql_with_verify_full_reads_from_replicas_over_tls() {
    let setup = setup();
    let extra = tls_config(setup, "require", "verify-full", &setup.pki.ca());
    let proxy = Proxy::start_with(&setup.cluster, &extra).await;
    let ca = setup.pki.ca().display().to_string();
    let params = format!("sslmode=verify-full sslrootcert={ca}");
    let out = psql(&proxy, "app", &params, "SHOW ssl").await;
    assert_success("psql with sslmode=verify-full", &out);
    let replica = setup.cluster.replicas[0].port;
    let primary = setup.cluster.primary.port;
    eventually(Duration::from_secs(20), "a read on the replica", || async {
        let out = psql(&proxy, "app", &params, "SELECT inet_server_port()").await;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if text == replica.to_string() {
            Ok(())
        } else {
            Err(format!(
                "{text:?} (primary {primary}) {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    })
    .await;
    // Causeway's connections on the replica (pooled, and the monitor's) are all TLS.
    let node = setup.cluster.replicas[0].client().await.unwrap();
    let row = node
        .query_one(
            "SELECT count(*), bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE a.usename = 'app' AND a.backend_type = 'client backend'",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, i64>(0) >= 1);
    assert_eq!(
        row.get::<_, Option<bool>>(1),
        Some(true),
        "the replica connections are TLS"
    );
    // Writes go to the primary, over TLS too.
    let out = psql(
        &proxy,
        "app",
        &params,
        "CREATE TEMP TABLE t(x int); \
         SELECT inet_server_port() || ' ' || ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    )
    .await;
    assert_success("write through TLS", &out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("{primary} true")), "{text}");
}

#[tokio::test]
async fn plaintext_clients_are_refused_under_require() {
    let setup = setup();
    let extra = tls_config(setup, "require", "verify-full", &setup.pki.ca());
    let proxy = Proxy::start_with(&setup.cluster, &extra).await;
    let out = psql(&proxy, "app", "sslmode=disable", "SELECT 1").await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("sslmode=require"), "{stderr}");
    let err = proxy.client_as("app").await.expect_err("refused");
    assert_eq!(sqlstate(&err).as_deref(), Some("28000"), "{err}");
    // A wrong password over TLS is still a wrong password.
    let ca = setup.pki.ca().display().to_string();
    let conninfo = format!(
        "host=localhost port={} user=app password=wrong dbname=app sslmode=verify-full sslrootcert={ca}",
        proxy.port()
    );
    let out = run_program(
        "psql",
        &["-X", "-d", &conninfo, "-c", "SELECT 1"],
        &[],
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("password"));
}

#[tokio::test]
async fn a_driver_with_verify_full_and_client_certificates() {
    let setup = setup();
    let extra = tls_config(setup, "verify-full", "verify-full", &setup.pki.ca());
    let proxy = Proxy::start_with(&setup.cluster, &extra).await;
    let connect = |cn: &str| {
        let (cert, key) = setup.pki.leaf(cn, &[]);
        let roots = {
            let mut store = rustls::RootCertStore::empty();
            for cert in rustls_pki_types::CertificateDer::pem_file_iter(setup.pki.ca()).unwrap() {
                store.add(cert.unwrap()).unwrap();
            }
            store
        };
        let certs: Vec<_> = rustls_pki_types::CertificateDer::pem_file_iter(cert)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let key = rustls_pki_types::PrivateKeyDer::from_pem_file(key).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(ring_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .unwrap();
        let conninfo = format!(
            "host=localhost port={} user=app password=secret dbname=app sslmode=require connect_timeout=10",
            proxy.port()
        );
        async move {
            let tls = tokio_postgres_rustls::MakeRustlsConnect::new(config);
            let (client, conn) = tokio_postgres::connect(&conninfo, tls).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Ok::<_, tokio_postgres::Error>(client)
        }
    };
    let client = connect("app").await.expect("CN app logs in as app");
    let row = client.query_one("SELECT 41 + 1", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
    let err = connect("mallory").await.expect_err("CN mallory is not app");
    assert_eq!(sqlstate(&err).as_deref(), Some("28000"), "{err}");
}

#[allow(deprecated)]
fn ring_provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

#[tokio::test]
async fn a_server_certificate_from_another_ca_is_refused_naming_the_node() {
    let setup = setup();
    let other = Pki::new("elsewhere");
    let extra = tls_config(setup, "require", "verify-ca", &other.ca());
    let proxy = Proxy::start_with(&setup.cluster, &extra).await;
    let ca = setup.pki.ca().display().to_string();
    let params = format!("sslmode=verify-full sslrootcert={ca}");
    let out = psql(&proxy, "app", &params, "SELECT 1").await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("primary"), "the node is named: {stderr}");
    assert!(
        stderr.contains("UnknownIssuer") || stderr.contains("certificate"),
        "{stderr}"
    );
}

#[tokio::test]
async fn cleartext_passwords_go_to_servers_only_over_tls() {
    let setup = setup();
    let admin = setup.cluster.primary.client().await.unwrap();
    admin
        .batch_execute(
            "DO $$ BEGIN CREATE ROLE app_clear LOGIN PASSWORD 'secret';
             EXCEPTION WHEN duplicate_object THEN NULL; END $$;
             GRANT ALL ON DATABASE app TO app_clear",
        )
        .await
        .unwrap();
    let user = "[[users]]\nname = \"app_clear\"\npassword = \"secret\"\n";
    let plain = format!("{user}[server_tls]\nsslmode = \"disable\"\n");
    let proxy = Proxy::start_with(&setup.cluster, &plain).await;
    let err = proxy.client_as("app_clear").await.expect_err("refused");
    assert_eq!(sqlstate(&err).as_deref(), Some("28000"), "{err}");
    let message = err
        .as_db_error()
        .map(|e| e.message().to_owned())
        .unwrap_or_default();
    assert!(
        message.contains("cleartext") && message.contains("primary"),
        "{message}"
    );
    drop(proxy);

    let allowed = format!("{plain}[auth]\nallow_server_cleartext = true\n");
    let proxy = Proxy::start_with(&setup.cluster, &allowed).await;
    let client = proxy
        .client_as("app_clear")
        .await
        .expect("explicitly allowed");
    client.query_one("SELECT 1", &[]).await.unwrap();
    drop(proxy);

    let tls = format!("{user}[server_tls]\nsslmode = \"require\"\n");
    let proxy = Proxy::start_with(&setup.cluster, &tls).await;
    let client = proxy.client_as("app_clear").await.expect("sent over TLS");
    let ssl: bool = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(ssl);
}

#[tokio::test]
async fn the_session_store_over_rediss() {
    let setup = setup();
    let (cert, key) = setup.pki.leaf("redis", &["localhost", "127.0.0.1"]);
    let port = integration_tests::ports::free_port().unwrap();
    let dir = setup.pki.dir.join("redis-tls");
    std::fs::create_dir_all(&dir).unwrap();
    let mut redis = tokio::process::Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .arg("--tls-cert-file")
        .arg(&cert)
        .arg("--tls-key-file")
        .arg(&key)
        .arg("--tls-ca-cert-file")
        .arg(setup.pki.ca())
        .args([
            "--tls-auth-clients",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(&dir)
        .kill_on_drop(true)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server starts");
    let extra = format!(
        "[session_store]\nkind = \"redis\"\nurl = \"rediss://localhost:{port}\"\nca_file = {}\ntimeout = \"500ms\"\n",
        quoted(&setup.pki.ca())
    );
    let proxy = Proxy::start_with(&setup.cluster, &extra).await;
    wait_store_up(&proxy).await;
    let client = proxy.client_as("app").await.unwrap();
    client.query_one("SELECT 1", &[]).await.unwrap();
    let _ = redis.kill().await;
}

/// A `tracing` writer that keeps everything in memory.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

#[tokio::test]
async fn no_password_or_key_reaches_the_debug_log() {
    let setup = setup();
    let admin = setup.cluster.primary.client().await.unwrap();
    admin
        .batch_execute(
            "DO $$ BEGIN CREATE ROLE app_log LOGIN PASSWORD 'p4ss-Wd-logcheck';
             EXCEPTION WHEN duplicate_object THEN NULL; END $$;
             GRANT ALL ON DATABASE app TO app_log",
        )
        .await
        .unwrap();
    // This test's runtime runs on this thread alone: the subscriber sees all of Causeway.
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
        .with_writer(captured.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing_subscriber::util::SubscriberInitExt::set_default(subscriber);
    let extra = format!(
        "{}[[users]]\nname = \"app_log\"\npassword = \"p4ss-Wd-logcheck\"\n",
        tls_config(setup, "require", "verify-full", &setup.pki.ca())
    );
    let proxy = Proxy::start_with(&setup.cluster, &extra).await;
    let ca = setup.pki.ca().display().to_string();
    for password in ["p4ss-Wd-logcheck", "wr0ng-Pw-logcheck"] {
        let conninfo = format!(
            "host=localhost port={} user=app_log password={password} dbname=app sslmode=verify-full sslrootcert={ca}",
            proxy.port()
        );
        let _ = run_program(
            "psql",
            &["-X", "-d", &conninfo, "-c", "SELECT 1"],
            &[],
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    }
    drop(proxy);
    let log = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    assert!(log.contains("DEBUG"), "debug logging was captured");
    for secret in ["p4ss-Wd-logcheck", "wr0ng-Pw-logcheck", "PRIVATE KEY"] {
        assert!(!log.contains(secret), "{secret:?} appears in the log");
    }
}

/// A certificate rotated at the same path is served after a reload (SIGHUP, `POST /reload`
/// or the console's `RELOAD`), without a restart: new connections get the new one.
#[tokio::test]
async fn a_rotated_client_certificate_is_served_after_a_reload() {
    let setup = setup();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (
        dir.path().join("causeway.crt"),
        dir.path().join("causeway.key"),
    );
    std::fs::copy(&setup.proxy_cert.0, &cert).unwrap();
    std::fs::copy(&setup.proxy_cert.1, &key).unwrap();
    let extra = format!(
        "[client_tls]\nsslmode = \"require\"\ncert_file = {}\nkey_file = {}\n\
         [server_tls]\nsslmode = \"verify-full\"\nca_file = {}\n",
        quoted(&cert),
        quoted(&key),
        quoted(&setup.pki.ca()),
    );
    let causeway = FromFile::start(&setup.cluster, dir.path(), &extra).await;
    let port = causeway.port;
    let connect = |ca: PathBuf| async move {
        let conninfo = format!(
            "host=localhost port={port} user=app dbname=app connect_timeout=10 \
             sslmode=verify-full sslrootcert={}",
            ca.display()
        );
        run_program(
            "psql",
            &["-X", "-At", "-d", &conninfo, "-c", "SELECT 1"],
            &[("PGPASSWORD", "secret")],
            Duration::from_secs(30),
        )
        .await
        .expect("psql runs")
    };
    assert_success("the first certificate", &connect(setup.pki.ca()).await);
    // Rotate: a certificate from another CA at the same paths, then reload.
    let rotated = Pki::new("rotated");
    let (new_cert, new_key) = rotated.leaf_pem("causeway", &["localhost", "127.0.0.1"]);
    std::fs::write(&cert, new_cert).unwrap();
    std::fs::write(&key, new_key).unwrap();
    let report = causeway.reload().await.expect("reload succeeds");
    assert!(report.applied.contains(&"client_tls"), "{report:?}");
    assert_success("the rotated certificate", &connect(rotated.ca()).await);
    assert!(
        !connect(setup.pki.ca()).await.status.success(),
        "the old certificate is no longer served"
    );
    // A key that does not match its certificate: the reload fails and nothing changes.
    let (_, other_key) = rotated.leaf_pem("other", &["localhost"]);
    std::fs::write(&key, other_key).unwrap();
    assert!(
        causeway.reload().await.is_err(),
        "a mismatched key was accepted"
    );
    assert_success(
        "still the rotated certificate",
        &connect(rotated.ca()).await,
    );
    causeway.stop().await;
}

/// `[server_tls]` files are read again at every reload: a CA that does not sign the nodes'
/// certificates refuses every server connection (naming the node, 08006); the right CA
/// written to the same path applies to the connections opened after `reload`, with no
/// restart.
#[tokio::test]
async fn a_rotated_server_ca_is_used_after_a_reload() {
    let setup = setup();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("nodes-ca.crt");
    let wrong = Pki::new("not-the-nodes");
    std::fs::copy(wrong.ca(), &ca).unwrap();
    let extra = format!(
        "[server_tls]\nsslmode = \"verify-full\"\nca_file = {}\n",
        quoted(&ca)
    );
    let causeway = FromFile::start(&setup.cluster, dir.path(), &extra).await;
    let port = causeway.port;
    let query = || async move {
        let conninfo = format!(
            "host=127.0.0.1 port={port} user=app password=secret dbname=app connect_timeout=10"
        );
        let (client, connection) = tokio_postgres::connect(&conninfo, NoTls).await?;
        tokio::spawn(connection);
        let row = client
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await?;
        Ok::<bool, tokio_postgres::Error>(row.get(0))
    };
    let refused = query()
        .await
        .expect_err("a server certificate from another CA");
    let db = refused.as_db_error().expect("an ErrorResponse");
    assert_eq!(db.code(), &SqlState::CONNECTION_FAILURE, "{db:?}");
    // The nodes' CA at the same path, then reload: no restart.
    std::fs::copy(setup.pki.ca(), &ca).unwrap();
    let report = causeway.reload().await.expect("reload succeeds");
    assert!(report.applied.contains(&"server_tls"), "{report:?}");
    assert!(
        query().await.expect("the nodes' CA verifies"),
        "not over TLS"
    );
    // A CA file that cannot be parsed: the reload fails and the working CA stays.
    std::fs::write(&ca, "not a certificate").unwrap();
    assert!(
        causeway.reload().await.is_err(),
        "an unreadable CA was accepted"
    );
    assert!(query().await.expect("still the nodes' CA"), "not over TLS");
    causeway.stop().await;
}

/// Causeway run in-process from a config file (the cluster's config with `extra`) written
/// to `dir`, so that a reload rereads that file and the TLS files it names.
struct FromFile {
    ctx: causeway::Context,
    port: u16,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl FromFile {
    async fn start(cluster: &Cluster, dir: &Path, extra: &str) -> FromFile {
        let toml = crate::support::merge_toml(
            &cluster.causeway_config_toml("127.0.0.1:0", "127.0.0.1:0", ""),
            extra,
        );
        let file = dir.join("causeway.toml");
        std::fs::write(&file, toml).unwrap();
        let config = causeway::config::Config::load(&file).unwrap();
        let ctx = causeway::Context::new(config, causeway::Shutdown::default()).unwrap();
        ctx.reload.set_path(file);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(causeway::server::run(ctx.clone(), listener, async move {
            let _ = stopped.await;
        }));
        FromFile {
            ctx,
            port,
            stop,
            task,
        }
    }

    /// A reload, as `SIGHUP` runs it (off the async threads).
    async fn reload(&self) -> Result<causeway::reload::Report, causeway::reload::ReloadError> {
        let ctx = self.ctx.clone();
        tokio::task::spawn_blocking(move || causeway::reload::reload(&ctx))
            .await
            .unwrap()
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}
