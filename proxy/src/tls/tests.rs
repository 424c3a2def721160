//! TLS tests: config checks, the transport rule, and real handshakes over loopback with
//! certificates made by the test (rcgen): Causeway accepting clients, and connecting to a
//! stand-in server that answers the SSLRequest.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::client::{common_name, negotiate, Negotiated};
use super::*;
use crate::config::{ClientSslMode, ClientTlsConfig, Config, ServerSslMode, ServerTlsConfig};
use crate::protocol::SqlState;

/// A CA in a temporary directory that signs leaf certificates written next to it.
struct Pki {
    dir: tempfile::TempDir,
    name: String,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let pki = Pki {
            dir: tempfile::tempdir().unwrap(),
            name: name.to_owned(),
            issuer,
        };
        std::fs::write(pki.ca(), pki.issuer.pem()).unwrap();
        pki
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join(format!("{}-ca.pem", self.name))
    }

    /// A leaf certificate with `cn` and `sans`; returns (certificate, key) paths.
    fn leaf(&self, cn: &str, sans: &[&str]) -> (PathBuf, PathBuf) {
        let sans: Vec<String> = sans.iter().map(|s| (*s).to_owned()).collect();
        let mut params = CertificateParams::new(sans).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let cert_path = self.dir.path().join(format!("{cn}.crt"));
        let key_path = self.dir.path().join(format!("{cn}.key"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }
}

fn toml_path(path: &std::path::Path) -> String {
    format!("{:?}", path.display().to_string())
}

fn config_error(sections: &str) -> (String, String) {
    let text = format!("[primary]\nhost = \"127.0.0.1\"\nport = 5432\n{sections}");
    let err = Config::from_toml(&text).unwrap_err();
    (err.field().unwrap_or_default().to_owned(), err.to_string())
}

#[test]
fn config_wants_files_that_exist_parse_and_match() {
    let pki = Pki::new("cfg");
    let (cert, key) = pki.leaf("proxy", &["localhost"]);
    let (_, other_key) = pki.leaf("other", &["localhost"]);
    let (field, _) = config_error("[client_tls]\nsslmode = \"require\"\n");
    assert_eq!(field, "client_tls.cert_file");
    let (field, text) = config_error(&format!(
        "[client_tls]\nsslmode = \"verify-ca\"\ncert_file = {}\nkey_file = {}\n",
        toml_path(&cert),
        toml_path(&key)
    ));
    assert_eq!(field, "client_tls.ca_file", "{text}");
    let (field, text) = config_error(&format!(
        "[client_tls]\nsslmode = \"require\"\ncert_file = {}\nkey_file = {}\n",
        toml_path(&cert),
        toml_path(&other_key)
    ));
    assert_eq!(field, "client_tls.key_file", "{text}");
    let (field, text) = config_error(&format!(
        "[client_tls]\nsslmode = \"require\"\ncert_file = \"/nonexistent/c.pem\"\nkey_file = {}\n",
        toml_path(&key)
    ));
    assert_eq!(field, "client_tls.cert_file");
    assert!(text.contains("cannot read /nonexistent/c.pem"), "{text}");
    let (field, text) = config_error(&format!(
        "[client_tls]\nsslmode = \"require\"\ncert_file = {}\nkey_file = {}\n",
        toml_path(&key),
        toml_path(&key)
    ));
    assert_eq!(field, "client_tls.cert_file", "{text}");
    let (field, _) = config_error("[server_tls]\nsslmode = \"verify-full\"\n");
    assert_eq!(field, "server_tls.ca_file");
    let (field, _) = config_error(&format!("[server_tls]\ncert_file = {}\n", toml_path(&cert)));
    assert_eq!(field, "server_tls.key_file");
    let (field, _) = config_error("[session_store]\nca_file = \"/nonexistent/ca.pem\"\n");
    assert_eq!(field, "session_store.ca_file");
    let ok = format!(
        "[primary]\nhost = \"h\"\nport = 1\n[client_tls]\nsslmode = \"verify-full\"\n\
         cert_file = {c}\nkey_file = {k}\nca_file = {ca}\n[server_tls]\nsslmode = \"verify-full\"\n\
         ca_file = {ca}\ncert_file = {c}\nkey_file = {k}\n",
        c = toml_path(&cert),
        k = toml_path(&key),
        ca = toml_path(&pki.ca())
    );
    let config = Config::from_toml(&ok).unwrap();
    assert_eq!(config.client_tls.sslmode, ClientSslMode::VerifyFull);
    assert_eq!(config.server_tls.sslmode, ServerSslMode::VerifyFull);
}

#[test]
fn defaults_are_plaintext_clients_and_preferred_tls_to_servers() {
    let config = Config::from_toml("[primary]\nhost = \"h\"\nport = 1\n").unwrap();
    assert_eq!(config.client_tls, ClientTlsConfig::default());
    assert_eq!(config.client_tls.sslmode, ClientSslMode::Disable);
    assert_eq!(config.server_tls.sslmode, ServerSslMode::Prefer);
    assert!(ClientTls::new(&config.client_tls).unwrap().is_none());
}

#[test]
fn plaintext_is_refused_from_require_and_verify_full_matches_the_cn() {
    let plain = Encryption::None;
    let tls = |cn: Option<&str>| Encryption::Tls {
        common_name: cn.map(str::to_owned),
    };
    for mode in [
        ClientSslMode::Disable,
        ClientSslMode::Allow,
        ClientSslMode::Prefer,
    ] {
        assert!(check_client_transport(mode, &plain, "app").is_ok());
    }
    for mode in [
        ClientSslMode::Require,
        ClientSslMode::VerifyCa,
        ClientSslMode::VerifyFull,
    ] {
        let err = check_client_transport(mode, &plain, "app").unwrap_err();
        assert_eq!(err.code, SqlState::INVALID_AUTHORIZATION_SPECIFICATION);
        assert!(err.hint.unwrap().contains("sslmode=require"));
    }
    assert!(check_client_transport(ClientSslMode::Require, &tls(None), "app").is_ok());
    assert!(check_client_transport(ClientSslMode::VerifyCa, &tls(Some("x")), "app").is_ok());
    assert!(check_client_transport(ClientSslMode::VerifyFull, &tls(Some("app")), "app").is_ok());
    for cn in [Some("other"), None, Some("App")] {
        let err = check_client_transport(ClientSslMode::VerifyFull, &tls(cn), "app").unwrap_err();
        assert_eq!(err.code, SqlState::INVALID_AUTHORIZATION_SPECIFICATION);
    }
}

#[test]
fn the_common_name_is_read_from_a_certificate() {
    let pki = Pki::new("cn");
    let (cert, _) = pki.leaf("alice", &["localhost"]);
    let der = pem::certs("cert_file", &cert).unwrap();
    assert_eq!(common_name(&der[0]).as_deref(), Some("alice"));
    assert_eq!(common_name(b"not a certificate"), None);
}

fn client_tls(pki: &Pki, mode: ClientSslMode) -> ClientTls {
    let (cert, key) = pki.leaf("causeway", &["localhost", "127.0.0.1"]);
    let settings = ClientTlsConfig {
        sslmode: mode,
        cert_file: Some(cert),
        key_file: Some(key),
        ca_file: Some(pki.ca()),
    };
    ClientTls::new(&settings).unwrap().unwrap()
}

/// A rustls client trusting `pki`, with a client certificate for `cn` if given.
fn connector(pki: &Pki, cn: Option<&str>, alpn: bool) -> tokio_rustls::TlsConnector {
    let roots = pem::roots("ca_file", &pki.ca()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match cn {
        Some(cn) => {
            let (cert, key) = pki.leaf(cn, &[]);
            let certs = pem::certs("cert_file", &cert).unwrap();
            let key = pem::key("key_file", &key).unwrap();
            builder.with_client_auth_cert(certs, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    if alpn {
        config.alpn_protocols = vec![b"postgresql".to_vec()];
    }
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

async fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap());
    let (client, accepted) = tokio::join!(client, listener.accept());
    (client.unwrap(), accepted.unwrap().0)
}

const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
const GSSENC_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30];

#[tokio::test]
async fn ssl_request_is_answered_s_and_the_client_certificate_cn_is_kept() {
    let pki = Pki::new("accept");
    let tls = client_tls(&pki, ClientSslMode::VerifyFull);
    let (mut client, server) = pair().await;
    let accept = tokio::spawn(async move { negotiate(&tls, server).await });
    client.write_all(&GSSENC_REQUEST).await.unwrap();
    assert_eq!(client.read_u8().await.unwrap(), b'N');
    client.write_all(&SSL_REQUEST).await.unwrap();
    assert_eq!(client.read_u8().await.unwrap(), b'S');
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut stream = connector(&pki, Some("alice"), false)
        .connect(name, client)
        .await
        .unwrap();
    stream.write_all(b"hello").await.unwrap();
    stream.flush().await.unwrap();
    let Ok(Ok(Negotiated::Tls(mut accepted, opened))) = accept.await else {
        panic!("not accepted over TLS");
    };
    assert_eq!(
        opened.encryption,
        Encryption::Tls {
            common_name: Some("alice".into())
        }
    );
    let mut buf = [0u8; 5];
    accepted.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"hello");
}

#[tokio::test]
async fn verify_ca_refuses_a_client_without_a_certificate() {
    let pki = Pki::new("nocert");
    let tls = client_tls(&pki, ClientSslMode::VerifyCa);
    let (mut client, server) = pair().await;
    let accept = tokio::spawn(async move { negotiate(&tls, server).await });
    client.write_all(&SSL_REQUEST).await.unwrap();
    assert_eq!(client.read_u8().await.unwrap(), b'S');
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let handshake = connector(&pki, None, false).connect(name, client).await;
    // TLS 1.3 may report the refusal on the first read rather than in the handshake.
    if let Ok(mut stream) = handshake {
        let mut buf = [0u8; 1];
        assert!(stream.read(&mut buf).await.map_or(true, |n| n == 0));
    }
    assert!(accept.await.unwrap().is_err());
}

#[tokio::test]
async fn direct_tls_needs_alpn_and_plaintext_startup_bytes_are_kept() {
    let pki = Pki::new("direct");
    let tls = client_tls(&pki, ClientSslMode::Require);
    let (client, server) = pair().await;
    let accept = {
        let tls = tls.clone();
        tokio::spawn(async move { negotiate(&tls, server).await })
    };
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let stream = connector(&pki, None, true).connect(name, client).await;
    assert!(stream.is_ok());
    assert!(matches!(accept.await.unwrap(), Ok(Negotiated::Tls(..))));

    let (client, server) = pair().await;
    let accept = {
        let tls = tls.clone();
        tokio::spawn(async move { negotiate(&tls, server).await })
    };
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let _ = connector(&pki, None, false).connect(name, client).await;
    assert!(accept.await.unwrap().is_err(), "direct TLS without ALPN");

    let (mut client, server) = pair().await;
    let accept = tokio::spawn(async move { negotiate(&tls, server).await });
    let startup = [0, 0, 0, 9, 0, 3, 0, 0, 0];
    client.write_all(&startup).await.unwrap();
    let Ok(Ok(Negotiated::Plain(_, opened))) = accept.await else {
        panic!("not plaintext");
    };
    assert_eq!(&opened.pending[..], &startup[..8]);
    assert_eq!(opened.encryption, Encryption::None);
}

/// A stand-in server: answers the SSLRequest with `answer`, then (for `S`) shakes hands
/// with `cert`/`key` and echoes one byte.
async fn fake_server(
    answer: u8,
    cert: PathBuf,
    key: PathBuf,
) -> (String, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut request = [0u8; 8];
        tcp.read_exact(&mut request).await.unwrap();
        assert_eq!(request, SSL_REQUEST);
        tcp.write_all(&[answer]).await.unwrap();
        if answer != b'S' {
            return;
        }
        let certs = pem::certs("cert_file", &cert).unwrap();
        let key = pem::key("key_file", &key).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        if let Ok(mut stream) = acceptor.accept(tcp).await {
            let mut byte = [0u8; 1];
            if stream.read_exact(&mut byte).await.is_ok() {
                let _ = stream.write_all(&byte).await;
                let _ = stream.flush().await;
            }
        }
    });
    (addr, task)
}

async fn connect_to(
    mode: ServerSslMode,
    ca: Option<PathBuf>,
    host: &str,
    answer: u8,
    cert: (PathBuf, PathBuf),
) -> Result<ServerStream, TlsConnectError> {
    let tls = ServerTls::new(&ServerTlsConfig {
        sslmode: mode,
        ca_file: ca,
        ..ServerTlsConfig::default()
    })
    .unwrap();
    let (addr, _server) = fake_server(answer, cert.0, cert.1).await;
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut stream = tls.connect(host, tcp).await?;
    if stream.is_tls() {
        // Session tickets the server sent after the handshake are not data.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(stream.is_idle_healthy());
        stream.write_all(b"x").await.unwrap();
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await.unwrap();
        assert_eq!(&byte, b"x");
        // The stand-in server has closed: an idle check sees it.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!stream.is_idle_healthy());
    }
    Ok(stream)
}

#[tokio::test]
async fn server_certificates_are_checked_as_the_mode_says() {
    let pki = Pki::new("servers");
    let other = Pki::new("other");
    let good = pki.leaf("db", &["localhost", "127.0.0.1"]);
    let misnamed = pki.leaf("elsewhere", &["elsewhere.example"]);
    let foreign = other.leaf("db2", &["localhost", "127.0.0.1"]);
    let ca = Some(pki.ca());

    for host in ["localhost", "127.0.0.1"] {
        let stream = connect_to(
            ServerSslMode::VerifyFull,
            ca.clone(),
            host,
            b'S',
            good.clone(),
        );
        assert!(stream.await.unwrap().is_tls(), "{host}");
    }
    let err = connect_to(
        ServerSslMode::VerifyFull,
        ca.clone(),
        "localhost",
        b'S',
        misnamed.clone(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, TlsConnectError::Handshake(_)), "{err}");
    assert!(err.to_string().contains("certificate"), "{err}");
    let stream = connect_to(
        ServerSslMode::VerifyCa,
        ca.clone(),
        "localhost",
        b'S',
        misnamed,
    );
    assert!(stream.await.unwrap().is_tls());
    for mode in [ServerSslMode::VerifyCa, ServerSslMode::VerifyFull] {
        let err = connect_to(mode, ca.clone(), "localhost", b'S', foreign.clone())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("UnknownIssuer"), "{mode}: {err}");
    }
    for mode in [ServerSslMode::Prefer, ServerSslMode::Require] {
        let stream = connect_to(mode, None, "localhost", b'S', foreign.clone());
        assert!(
            stream.await.unwrap().is_tls(),
            "{mode} accepts any certificate"
        );
    }
}

#[tokio::test]
async fn a_server_without_tls_is_used_only_when_tls_is_optional() {
    let pki = Pki::new("plain");
    let cert = pki.leaf("db", &["localhost"]);
    let stream = connect_to(ServerSslMode::Prefer, None, "localhost", b'N', cert.clone());
    assert!(!stream.await.unwrap().is_tls());
    for mode in [
        ServerSslMode::Require,
        ServerSslMode::VerifyCa,
        ServerSslMode::VerifyFull,
    ] {
        let ca = Some(pki.ca());
        let err = connect_to(mode, ca, "localhost", b'N', cert.clone())
            .await
            .unwrap_err();
        assert!(
            matches!(err, TlsConnectError::NotOffered(_)),
            "{mode}: {err}"
        );
    }
    let err = connect_to(ServerSslMode::Require, None, "localhost", b'E', cert)
        .await
        .unwrap_err();
    assert!(matches!(err, TlsConnectError::BadAnswer(b'E')));
}
