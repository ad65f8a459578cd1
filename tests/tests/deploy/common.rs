//! What the deploy tests share: where things are, which proxy binary runs, text rewriting
//! with a check that the rewritten text was there, certificates in Istio's file layout, an
//! echo backend and a TLS client that reports the certificate it was served.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// The workspace root (the parent of the `tests` package).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests package sits inside the workspace")
        .to_path_buf()
}

/// A file of the workspace, as text.
pub fn read(rel: &str) -> String {
    let path = root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// A binary of this workspace, built next to this test (`cargo test --workspace` builds
/// every workspace binary before running tests).
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test runs from target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built; run `cargo build -p {} --bin {name}` (or `cargo test --workspace`, \
         which builds it) before these tests",
        path.display(),
        if name == "proxy" {
            "proxy"
        } else {
            "iptables-init"
        }
    );
    path
}

/// Which proxy runs an example: the real Envoy, or ours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binary {
    Envoy,
    Ours,
}

// === impl Binary ===

impl Binary {
    /// The executable, or `None` (after saying why) when Envoy is not installed.
    pub fn path(self, test: &str) -> Option<PathBuf> {
        match self {
            Binary::Envoy => e2e::require_envoy(test),
            Binary::Ours => Some(workspace_binary("proxy")),
        }
    }
}

/// Replaces each `from` with `to`, failing if a `from` does not occur: a test that rewrites
/// an example must notice when the example changed under it.
pub fn rewrite(text: &str, pairs: &[(&str, &str)]) -> String {
    let mut out = text.to_string();
    for (from, to) in pairs {
        assert!(
            out.contains(from),
            "expected {from:?} in the file being rewritten; did the example change?"
        );
        out = out.replace(from, to);
    }
    out
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding an ephemeral port")
}

/// A fresh directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

// === impl TempDir ===

impl TempDir {
    pub fn new(label: &str) -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("deploy-{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("creating a temp dir");
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// `self/rel` as a string, created as a directory.
    pub fn dir(&self, rel: &str) -> String {
        let p = self.0.join(rel);
        std::fs::create_dir_all(&p).expect("creating a dir");
        p.display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A TCP echo server on 127.0.0.1 that lives as long as the test process.
pub fn echo_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding the echo server");
    let port = listener.local_addr().expect("local addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 || stream.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = stream.shutdown(Shutdown::Write);
            });
        }
    });
    port
}

/// Sends `payload` over a plain TCP connection, half-closes, and returns what came back
/// (an error if the connection failed or was reset).
pub fn round_trip(addr: SocketAddr, payload: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(payload)?;
    stream.shutdown(Shutdown::Write)?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply)?;
    Ok(reply)
}

/// A mesh CA and the workload certificates it signs, in Istio's OUTPUT_CERTS layout.
pub struct Mesh {
    ca_params: CertificateParams,
    ca_key: KeyPair,
    pub root_pem: String,
}

/// One workload identity: PEM chain and key, and the certificate's DER for comparisons.
#[derive(Clone, Debug)]
pub struct Identity {
    pub chain_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
}

// === impl Mesh ===

impl Mesh {
    pub fn new() -> Self {
        let ca_key = KeyPair::generate().expect("generating the CA key");
        let mut ca_params =
            CertificateParams::new(Vec::<String>::new()).expect("empty CA params are valid");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca_params
            .distinguished_name
            .push(DnType::OrganizationName, "cluster.local");
        let root = ca_params.self_signed(&ca_key).expect("self-signing the CA");
        Self {
            ca_params,
            ca_key,
            root_pem: root.pem(),
        }
    }

    /// A certificate for `spiffe://cluster.local/ns/default/sa/<sa>`.
    pub fn identity(&self, sa: &str) -> Identity {
        let key = KeyPair::generate().expect("generating a workload key");
        let mut params =
            CertificateParams::new(Vec::<String>::new()).expect("empty params are valid");
        let uri = format!("spiffe://cluster.local/ns/default/sa/{sa}");
        params.subject_alt_names = vec![SanType::URI(
            uri.as_str().try_into().expect("a SPIFFE ID is a valid URI"),
        )];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let issuer = Issuer::from_params(&self.ca_params, &self.ca_key);
        let cert = params.signed_by(&key, &issuer).expect("signing");
        Identity {
            chain_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    /// Writes `cert-chain.pem`, `key.pem` and `root-cert.pem` into `dir`, each by an atomic
    /// rename as Istio's agent does, key first.
    pub fn install(&self, id: &Identity, dir: &str) {
        for (name, text) in [
            ("key.pem", &id.key_pem),
            ("cert-chain.pem", &id.chain_pem),
            ("root-cert.pem", &self.root_pem),
        ] {
            let tmp = format!("{dir}/.{name}.tmp");
            std::fs::write(&tmp, text).expect("writing a certificate file");
            std::fs::rename(&tmp, format!("{dir}/{name}")).expect("renaming into place");
        }
    }
}

/// The example SDS files (deploy/examples/sds/) pointed at `certs`, written into `sds`.
pub fn install_sds(certs: &str, sds: &str) {
    for name in ["default.yaml", "rootca.yaml"] {
        let text = rewrite(
            &read(&format!("deploy/examples/sds/{name}")),
            &[("/etc/certs", certs)],
        );
        std::fs::write(format!("{sds}/{name}"), text).expect("writing an SDS file");
    }
}

/// What a TLS client saw: the server's certificate, and the bytes that came back after
/// sending a payload (or why none did).
#[derive(Debug)]
pub struct TlsExchange {
    pub served: Vec<u8>,
    pub reply: std::io::Result<Vec<u8>>,
}

/// Connects with TLS presenting `client`, sends `payload`, half-closes and reads the reply.
/// Fails only if the handshake fails.
pub fn tls_exchange(
    addr: SocketAddr,
    client: &Identity,
    payload: &[u8],
) -> std::io::Result<TlsExchange> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = vec![CertificateDer::from(client.der.clone())];
    let key = PrivateKeyDer::from_pem_slice(client.key_pem.as_bytes())
        .map_err(|e| std::io::Error::other(format!("client key: {e:?}")))?;
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .dangerous()
        .with_custom_certificate_verifier(e2e::tls::AnyServerCert::new(provider))
        .with_client_auth_cert(chain, key)
        .map_err(std::io::Error::other)?;
    let name = ServerName::try_from("server.mesh.internal").map_err(std::io::Error::other)?;
    let mut conn =
        rustls::ClientConnection::new(Arc::new(config), name).map_err(std::io::Error::other)?;
    let mut tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp)?;
    }
    let served = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let reply = (|| {
        tls.write_all(payload)?;
        tls.flush()?;
        tls.conn.send_close_notify();
        tls.flush()?;
        let mut reply = Vec::new();
        match tls.read_to_end(&mut reply) {
            Ok(_) => Ok(reply),
            // A peer that closes without close_notify after sending everything.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(reply),
            Err(e) => Err(e),
        }
    })();
    Ok(TlsExchange { served, reply })
}

/// Polls `f` every 100 ms until it returns `Some`, or gives up after `timeout`.
pub fn eventually<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A proxy process that is not expected to become ready: started with `--admin-address-path`
/// in `cwd`, killed on drop.
#[derive(Debug)]
pub struct Unready {
    child: Child,
    pub admin: SocketAddr,
    log: PathBuf,
}

// === impl Unready ===

impl Unready {
    /// Runs `binary -c <config> <args>` from `cwd` and waits for its admin address.
    pub fn start(binary: &Path, config: &Path, cwd: &Path, args: &[&str]) -> Self {
        let admin_path = cwd.join("admin-address");
        let log = cwd.join("proxy.log");
        let log_file = std::fs::File::create(&log).expect("creating the log file");
        let mut child = Command::new(binary)
            .arg("-c")
            .arg(config)
            .arg("--admin-address-path")
            .arg(&admin_path)
            .args(["--concurrency", "1", "--disable-hot-restart", "-l", "info"])
            .args([
                "--base-id",
                &(std::process::id() % 50000 + 7000).to_string(),
            ])
            .args(args)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        let admin = eventually(Duration::from_secs(20), || {
            std::fs::read_to_string(&admin_path)
                .ok()
                .and_then(|t| t.trim().parse().ok())
        });
        let Some(admin) = admin else {
            let _ = child.kill();
            panic!(
                "{} published no admin address within 20s; log:\n{}",
                binary.display(),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        Self { child, admin, log }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Unready {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `binary --mode validate -c <config> <args>`; `Ok` with stdout if it says the
/// configuration is OK, `Err` with its output otherwise.
pub fn validate(binary: &Path, config: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new(binary)
        .args(["--mode", "validate", "-l", "error", "-c"])
        .arg(config)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", binary.display()));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() && stdout.contains(" OK") {
        Ok(stdout)
    } else {
        Err(format!(
            "{} ({}): {}{}",
            binary.display(),
            out.status,
            stdout,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
