//! Credentials without plaintext (DESIGN.md §8): SCRAM secrets and md5 hashes copied from
//! `pg_authid` as `[[users]] password`, SCRAM pass-through to the primary and replicas,
//! `[auth] auth_user` + `auth_query` for users not listed, wrong passwords refused alike,
//! and no password, secret or hash in Causeway's log at debug level.
//!
//! Causeway runs on its own thread and current-thread runtime here, with a debug-level
//! tracing subscriber set for that thread only, so its whole log is captured without
//! touching the process-wide subscriber other tests may use.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use integration_tests::{Cluster, HOST};
use tokio::sync::{oneshot, OnceCell};

use crate::support::{assert_success, eventually, merge_toml, run_program, sqlstate};

const PSQL: &str = "/usr/lib/postgresql/15/bin/psql";

/// Roles this module creates on the shared cluster, with their passwords.
const SCRAM_USER: (&str, &str) = ("cred_scram", "scram-pass-7Hq");
const LOOKUP_USER: (&str, &str) = ("cred_lookup", "lookup-pass-9Zx");
const AUTH_USER: (&str, &str) = ("cred_auth", "auth-pass-4Kd");

/// The `[[users]]` entry the replica monitor logs in as where every other user has a
/// secret: the harness's `app_trust`, trusted by pg_hba, without a password.
const MONITOR_USER: &str = "[[users]]\nname = \"app_trust\"\npassword = \"\"\n";

/// `pg_authid.rolpassword` of the roles above and of the harness's `app_md5`.
struct Secrets {
    scram: String,
    lookup: String,
    md5: String,
}

static SECRETS: OnceCell<Secrets> = OnceCell::const_new();

/// Creates the roles once (SCRAM passwords, read access to pg_shadow for the auth user)
/// and waits until both replicas have them.
async fn secrets() -> &'static Secrets {
    SECRETS
        .get_or_init(|| async {
            let cluster = Cluster::shared();
            let primary = cluster.node("primary");
            let admin = connect(&primary.conn_string("postgres", "postgres")).await;
            let mut sql = String::from("SET password_encryption = 'scram-sha-256';\n");
            for (role, password) in [SCRAM_USER, LOOKUP_USER, AUTH_USER] {
                sql += &format!(
                    "DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN PASSWORD '{password}';\n\
                     GRANT ALL ON DATABASE app TO {role};\n"
                );
            }
            sql += &format!("GRANT SELECT ON pg_catalog.pg_shadow TO {};\n", AUTH_USER.0);
            admin.batch_execute(&sql).await.expect("create roles");
            let app = connect(&primary.conn_string("postgres", "app")).await;
            app.batch_execute(&format!(
                "GRANT ALL ON SCHEMA public TO {0}, {1};",
                SCRAM_USER.0, LOOKUP_USER.0
            ))
            .await
            .expect("grant schema");
            let secret = |role: &'static str| {
                let admin = &admin;
                async move {
                    admin
                        .query_one(
                            "SELECT rolpassword FROM pg_authid WHERE rolname = $1",
                            &[&role],
                        )
                        .await
                        .expect("read pg_authid")
                        .get::<_, String>(0)
                }
            };
            let secrets = Secrets {
                scram: secret(SCRAM_USER.0).await,
                lookup: secret(LOOKUP_USER.0).await,
                md5: secret("app_md5").await,
            };
            assert!(
                secrets.scram.starts_with("SCRAM-SHA-256$"),
                "{}",
                secrets.scram
            );
            assert!(secrets.md5.starts_with("md5"), "{}", secrets.md5);
            cluster
                .wait_replicas_caught_up(Duration::from_secs(30))
                .await
                .expect("replicas replay the new roles");
            secrets
        })
        .await
}

async fn connect(conninfo: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(conninfo, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect {conninfo}: {e}"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// Causeway on its own thread with its debug log captured.
struct LoggedProxy {
    port: u16,
    log: Arc<Mutex<Vec<u8>>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Appends to the shared log buffer.
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut log) = self.0.lock() {
            log.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LoggedProxy {
    /// Starts Causeway against the shared cluster (with its replicas) with `extra` merged
    /// into the harness config (`users` replaces the harness's list).
    fn start(extra: &str) -> LoggedProxy {
        let cluster = Cluster::shared();
        let toml = merge_toml(
            &cluster.causeway_config_toml("127.0.0.1:0", "127.0.0.1:0", ""),
            extra,
        );
        let config = causeway::config::Config::from_toml(&toml)
            .unwrap_or_else(|e| panic!("test config rejected: {e}\n{toml}"));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("address").port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (stop, stopped) = oneshot::channel::<()>();
        let writer = Arc::clone(&log);
        let thread = std::thread::spawn(move || {
            use tracing_subscriber::util::SubscriberInitExt as _;
            let _guard = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
                .with_ansi(false)
                .with_writer(move || Capture(Arc::clone(&writer)))
                .finish()
                .set_default();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let ctx =
                    causeway::Context::new(config, causeway::Shutdown::default()).expect("context");
                causeway::server::run(ctx, listener, async move {
                    let _ = stopped.await;
                })
                .await;
            });
        });
        LoggedProxy {
            port,
            log,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn conninfo(&self, user: &str, password: &str) -> String {
        format!(
            "host={HOST} port={} user={user} password={password} dbname=app connect_timeout=10",
            self.port
        )
    }

    async fn login(
        &self,
        user: &str,
        password: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, conn) =
            tokio_postgres::connect(&self.conninfo(user, password), tokio_postgres::NoTls).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    /// Stops Causeway and returns everything it logged.
    fn finish(mut self) -> String {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            thread.join().expect("causeway thread");
        }
        let log = self.log.lock().expect("log").clone();
        String::from_utf8_lossy(&log).into_owned()
    }
}

impl Drop for LoggedProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Asserts that no secret appears in `log`: passwords, whole secrets, and their key parts.
fn assert_no_secret(log: &str, secrets: &[&str]) {
    assert!(!log.is_empty(), "the log was captured");
    if let Ok(path) = std::env::var("CREDENTIALS_LOG") {
        let _ = std::fs::write(path, log);
    }
    for secret in secrets {
        assert!(!log.contains(secret), "the log shows {secret:?}");
        // The parts of a SCRAM secret (salt aside) and the hex of an md5 hash.
        for part in secret.split(['$', ':']).skip(2) {
            assert!(
                part.len() < 20 || !log.contains(part),
                "the log shows {part:?}"
            );
        }
        if let Some(hex) = secret.strip_prefix("md5") {
            assert!(!log.contains(hex), "the log shows the md5 hash");
        }
    }
    assert_no_key_material(log);
}

/// Asserts that nothing in `log` looks like a 32-byte key (a SCRAM ClientKey, StoredKey or
/// ServerKey) in the forms Rust or a logger would print one: base64, hex, or a byte array.
fn assert_no_key_material(log: &str) {
    let base64_run = |c: char| c.is_ascii_alphanumeric() || c == '+' || c == '/';
    let mut run = 0;
    for c in log.chars() {
        if c == '=' && run >= 43 {
            panic!("the log holds a base64 key: {log}");
        }
        run = if base64_run(c) { run + 1 } else { 0 };
    }
    let longest_hex = log
        .split(|c: char| !c.is_ascii_hexdigit())
        .map(str::len)
        .max()
        .unwrap_or(0);
    assert!(longest_hex < 64, "the log holds a hex key");
    for array in log.split('[').skip(1) {
        let numbers = array
            .split(']')
            .next()
            .unwrap_or_default()
            .split(", ")
            .filter(|n| n.parse::<u8>().is_ok())
            .count();
        assert!(numbers < 32, "the log holds a byte array: [{array}");
    }
}

async fn server_port(client: &tokio_postgres::Client) -> u16 {
    let port: i32 = client
        .query_one("SELECT inet_server_port()", &[])
        .await
        .expect("read")
        .get(0);
    u16::try_from(port).expect("port")
}

/// A user whose `[[users]] password` is the SCRAM secret from pg_authid: tokio-postgres
/// and psql log in, writes reach the primary and reads the replicas (the pass-through
/// works there too), a wrong password is refused, and nothing secret is logged.
#[tokio::test]
async fn scram_secret_users_log_in_to_primary_and_replicas() {
    let secrets = secrets().await;
    let (user, password) = SCRAM_USER;
    // No plaintext password anywhere: the replica monitor logs in as the first user,
    // app_trust, whom pg_hba trusts (a SCRAM secret cannot log in without a client).
    let proxy = LoggedProxy::start(&format!(
        "{MONITOR_USER}[[users]]\nname = \"{user}\"\npassword = \"{}\"\n",
        secrets.scram
    ));
    let client = proxy
        .login(user, password)
        .await
        .expect("SCRAM secret login");
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS cred_scram_t (id int); INSERT INTO cred_scram_t VALUES (1)",
        )
        .await
        .expect("a write through the pass-through login");
    client
        .batch_execute("SET causeway.consistency = 'eventual'")
        .await
        .expect("eventual reads");
    let cluster = Cluster::shared();
    let replicas: Vec<u16> = ["replica1", "replica2"]
        .iter()
        .map(|name| cluster.node(name).port)
        .collect();
    eventually(
        Duration::from_secs(20),
        "a read reaches a replica",
        || async {
            let port = server_port(&client).await;
            if replicas.contains(&port) {
                Ok(())
            } else {
                Err(format!("the read ran on port {port}"))
            }
        },
    )
    .await;
    let err = proxy
        .login(user, "wrong")
        .await
        .expect_err("wrong password");
    assert_eq!(sqlstate(&err).as_deref(), Some("28P01"), "{err}");
    let out = run_program(
        PSQL,
        &[
            "-X",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            "SELECT current_user || ' ' || count(*) FROM cred_scram_t",
            &format!("host={HOST} port={} user={user} dbname=app", proxy.port),
        ],
        &[("PGPASSWORD", password)],
        Duration::from_secs(30),
    )
    .await
    .expect("psql");
    assert_success("psql with a SCRAM-secret user", &out);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with(user));
    drop(client);
    let log = proxy.finish();
    assert_no_secret(&log, &[password, &secrets.scram]);
}

/// `auth_user` + `auth_query`: a user not in the config logs in with the secret looked up
/// on the primary, and its reads reach a replica; wrong passwords are refused alike for a
/// looked-up user, an unknown user and a listed plaintext user.
#[tokio::test]
async fn auth_query_users_log_in_and_wrong_passwords_are_refused() {
    let secrets = secrets().await;
    let (auth_user, auth_password) = AUTH_USER;
    let (user, password) = LOOKUP_USER;
    let proxy = LoggedProxy::start(&format!(
        "[[users]]\nname = \"{auth_user}\"\npassword = \"{auth_password}\"\n\
         [[users]]\nname = \"app\"\npassword = \"secret\"\n\
         [auth]\nauth_user = \"{auth_user}\"\n"
    ));
    let client = proxy.login(user, password).await.expect("auth_query login");
    let who: String = client
        .query_one("SELECT current_user::text", &[])
        .await
        .expect("query")
        .get(0);
    assert_eq!(who, user);
    client
        .batch_execute("SET causeway.consistency = 'eventual'")
        .await
        .expect("eventual reads");
    let primary = Cluster::shared().node("primary").port;
    eventually(
        Duration::from_secs(20),
        "a read reaches a replica",
        || async {
            let port = server_port(&client).await;
            if port != primary {
                Ok(())
            } else {
                Err("the read ran on the primary".to_owned())
            }
        },
    )
    .await;
    for (name, wrong) in [
        (user, "wrong"),
        ("cred_no_such_user", password),
        ("app", "wrong"),
    ] {
        let err = proxy.login(name, wrong).await.expect_err("refused");
        assert_eq!(sqlstate(&err).as_deref(), Some("28P01"), "{name}: {err}");
    }
    // A second login is served from the cache, and still works.
    proxy.login(user, password).await.expect("cached secret");
    drop(client);
    let log = proxy.finish();
    assert_no_secret(
        &log,
        &[password, auth_password, &secrets.lookup, "secret\""],
    );
}

/// A failed lookup (auth_user cannot log in) refuses the login as a connection failure
/// saying auth_query failed, not as a wrong password.
#[tokio::test]
async fn a_failed_lookup_is_not_a_password_failure() {
    secrets().await;
    let (auth_user, _) = AUTH_USER;
    let proxy = LoggedProxy::start(&format!(
        "[[users]]\nname = \"{auth_user}\"\npassword = \"not-its-password\"\n\
         [auth]\nauth_user = \"{auth_user}\"\n"
    ));
    let err = proxy
        .login(LOOKUP_USER.0, LOOKUP_USER.1)
        .await
        .expect_err("lookup fails");
    assert_eq!(sqlstate(&err).as_deref(), Some("08006"), "{err}");
    let shown = format!("{err:?}");
    assert!(shown.contains("auth_query failed"), "{shown}");
    assert!(
        !shown.contains(auth_user),
        "auth_user's name is for the log: {shown}"
    );
    let log = proxy.finish();
    assert!(
        log.contains("auth_query lookup failed") && log.contains(auth_user),
        "the log says why: {log}"
    );
    assert_no_secret(&log, &["not-its-password"]);
}

/// A user whose `[[users]] password` is the md5 hash from pg_authid (pg_hba asks md5 for
/// it): the client answers an md5 challenge, Causeway answers the server's with the hash.
#[tokio::test]
async fn md5_hash_users_log_in() {
    let secrets = secrets().await;
    let proxy = LoggedProxy::start(&format!(
        "{MONITOR_USER}[[users]]\nname = \"app_md5\"\npassword = \"{}\"\n",
        secrets.md5
    ));
    let client = proxy
        .login("app_md5", "secret")
        .await
        .expect("md5 hash login");
    let who: String = client
        .query_one("SELECT current_user::text", &[])
        .await
        .expect("query")
        .get(0);
    assert_eq!(who, "app_md5");
    let err = proxy
        .login("app_md5", "wrong")
        .await
        .expect_err("wrong password");
    assert_eq!(sqlstate(&err).as_deref(), Some("28P01"), "{err}");
    drop(client);
    let log = proxy.finish();
    assert_no_secret(&log, &[&secrets.md5]);
}
