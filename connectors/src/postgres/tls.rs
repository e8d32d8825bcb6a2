//! TLS to PostgreSQL, set with libpq's URL parameters `sslmode` and
//! `sslrootcert`:
//!
//! - `disable`, and `prefer` (the default, as libpq's: TLS when the server
//!   offers it, the certificate not checked);
//! - `require`: encrypted, the certificate is not checked (libpq's meaning);
//! - `verify-ca`: the chain is checked against `sslrootcert` (required), not
//!   the host name;
//! - `verify-full`: chain and host name, against `sslrootcert` or else the
//!   Mozilla roots.
//!
//! tokio-postgres knows only `disable`/`prefer`/`require` and no
//! `sslrootcert`, so [`parse`] takes both off the URL. The same settings
//! drive the tokio-postgres connections (catalog, snapshot, queries, apply
//! targets; through `tokio-postgres-rustls`) and the replication stream
//! (pgwire-replication's own rustls support).

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::path::PathBuf;
use std::sync::Arc;
use tokio_postgres::config::SslMode;

/// libpq's `sslmode` values tidemark supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    Disable,
    #[default]
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// The TLS settings of one URL.
#[derive(Debug, Clone, Default)]
pub struct Tls {
    pub mode: Mode,
    pub root_cert: Option<PathBuf>,
    /// `allow_cleartext_password=true`: send the password even when the
    /// server asks for it in clear text over an unencrypted link.
    pub allow_cleartext: bool,
}

/// A parsed connection URL: what tokio-postgres takes, and the TLS settings.
#[derive(Debug, Clone)]
pub struct PgUrl {
    pub config: tokio_postgres::Config,
    pub tls: Tls,
}

fn bad_url(reason: String) -> String {
    format!("not a valid PostgreSQL URL ({reason})")
}

/// Parses a URL (never echoing it: it may hold a password), taking
/// `sslmode` and `sslrootcert` off for [`Tls`]. Errors say what is wrong,
/// for the caller to prefix with the setting's name.
pub fn parse(url: &str) -> Result<PgUrl, String> {
    let Some(scheme) = ["postgres://", "postgresql://"]
        .iter()
        .find(|p| url.starts_with(*p))
    else {
        return parse_key_value(url);
    };
    // As tokio-postgres (and libpq) read it: credentials up to the first `@`,
    // the parameters after the next `?` (a `?` in a password is not one).
    let rest = &url[scheme.len()..];
    let after_credentials = scheme.len() + rest.find('@').map_or(0, |at| at + 1);
    let (base, query) = match url[after_credentials..].find('?') {
        Some(q) => (
            &url[..after_credentials + q],
            &url[after_credentials + q + 1..],
        ),
        None => (url, ""),
    };
    let (tls, kept) = take_tls_params(query)?;
    let text = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    let mut config = text
        .parse::<tokio_postgres::Config>()
        .map_err(|e| bad_url(e.to_string()))?;
    config.ssl_mode(match tls.mode {
        Mode::Disable => SslMode::Disable,
        Mode::Prefer => SslMode::Prefer,
        _ => SslMode::Require,
    });
    match (&tls.root_cert, tls.mode) {
        (Some(_), Mode::Disable | Mode::Prefer | Mode::Require) => Err(bad_url(
            "sslrootcert is set but sslmode does not verify: use verify-ca or verify-full".into(),
        )),
        // Without a root file the Mozilla roots would stand for any public
        // certificate of any name.
        (None, Mode::VerifyCa) => Err(bad_url(
            "sslmode verify-ca needs sslrootcert (the CA file to check against)".into(),
        )),
        _ => Ok(PgUrl { config, tls }),
    }
}

/// A `key=value` connection string: no TLS settings are taken from it; it
/// gets the default, `prefer`.
fn parse_key_value(url: &str) -> Result<PgUrl, String> {
    if url.contains("sslmode") || url.contains("sslrootcert") {
        return Err(bad_url(
            "set sslmode and sslrootcert as parameters of a postgres:// URL".into(),
        ));
    }
    let mut config = url
        .parse::<tokio_postgres::Config>()
        .map_err(|e| bad_url(e.to_string()))?;
    config.ssl_mode(SslMode::Prefer);
    Ok(PgUrl {
        config,
        tls: Tls::default(),
    })
}

/// Takes the TLS parameters off a URL's query string (tokio-postgres knows
/// none of them); returns them and the parameters left for tokio-postgres.
fn take_tls_params(query: &str) -> Result<(Tls, Vec<&str>), String> {
    let mut tls = Tls::default();
    let mut kept = Vec::new();
    for param in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = param.split_once('=').unwrap_or((param, ""));
        match key {
            "sslmode" => tls.mode = parse_sslmode(value)?,
            "sslrootcert" => tls.root_cert = Some(PathBuf::from(percent_decode(value))),
            "allow_cleartext_password" => tls.allow_cleartext = parse_cleartext_flag(value)?,
            _ => kept.push(param),
        }
    }
    Ok((tls, kept))
}

/// An `sslmode` value.
fn parse_sslmode(value: &str) -> Result<Mode, String> {
    match value {
        "disable" => Ok(Mode::Disable),
        "prefer" => Ok(Mode::Prefer),
        "require" => Ok(Mode::Require),
        "verify-ca" => Ok(Mode::VerifyCa),
        "verify-full" => Ok(Mode::VerifyFull),
        other => Err(bad_url(format!(
            "sslmode {other:?}: use disable, prefer, require, verify-ca or verify-full"
        ))),
    }
}

/// An `allow_cleartext_password` value.
fn parse_cleartext_flag(value: &str) -> Result<bool, String> {
    match value {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(bad_url(
            "allow_cleartext_password: use true or false".into(),
        )),
    }
}

impl PgUrl {
    /// The rustls configuration for these settings, or `None` for a plain
    /// connection: with `disable`, and with `prefer` over Unix sockets only
    /// (libpq never uses TLS there).
    pub fn tls_config(&self) -> Result<Option<rustls::ClientConfig>, String> {
        let sockets_only = !self.config.get_hosts().is_empty()
            && self
                .config
                .get_hosts()
                .iter()
                .all(|h| !matches!(h, tokio_postgres::config::Host::Tcp(_)));
        match self.tls.mode {
            Mode::Prefer if sockets_only => Ok(None),
            mode if sockets_only && mode != Mode::Disable => Err(format!(
                "sslmode {mode:?} over a Unix socket: TLS needs a TCP host"
            )),
            _ => self.tls.client_config(),
        }
    }
}

/// True for a host name or address on this machine.
pub(crate) fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl PgUrl {
    /// A warning when the server is reached over the network without its
    /// identity checked (`sslmode` other than `verify-ca`/`verify-full`).
    pub fn identity_unchecked(&self) -> Option<String> {
        let hosts: Vec<&str> = self
            .config
            .get_hosts()
            .iter()
            .filter_map(|h| match h {
                tokio_postgres::config::Host::Tcp(h) => Some(h.as_str()),
                _ => None,
            })
            .filter(|h| !is_loopback(h))
            .collect();
        let verified = matches!(self.tls.mode, Mode::VerifyCa | Mode::VerifyFull);
        (!hosts.is_empty() && !verified).then(|| {
            format!(
                "host {} is not this machine and the server's certificate is not checked (sslmode {:?}): use sslmode=verify-full with sslrootcert",
                hosts.join(","),
                self.tls.mode
            )
        })
    }

    /// Refuses to connect where the password would cross the network in
    /// clear text: the link is not encrypted (`disable`, or `prefer` with a
    /// server that offers no TLS) and the server asks for password
    /// authentication (`AuthenticationCleartextPassword`). tokio-postgres and
    /// pgwire-replication answer such a request on their own, so this asks
    /// the server first, on a connection of its own that sends no password:
    /// the SSL request as `prefer` makes it, then a startup message, then
    /// the first answer. `replication` asks as the replication stream does
    /// (`pg_hba.conf` may treat it apart). Anything unexpected is left to the
    /// real connection to report.
    pub async fn refuse_cleartext(&self, replication: bool) -> Result<(), String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let config = &self.config;
        let plain_possible = matches!(self.tls.mode, Mode::Disable | Mode::Prefer);
        let (Some(user), Some(tokio_postgres::config::Host::Tcp(host))) =
            (config.get_user(), config.get_hosts().first())
        else {
            return Ok(());
        };
        if self.tls.allow_cleartext || config.get_password().is_none() || !plain_possible {
            return Ok(());
        }
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let database = config.get_dbname().unwrap_or(user);
        let mode = self.tls.mode;
        let asks_cleartext = async {
            let mut stream = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            if mode == Mode::Prefer {
                // SSLRequest: length 8, code 80877103.
                stream.write_all(&[0, 0, 0, 8, 4, 210, 22, 47]).await?;
                let mut answer = [0u8; 1];
                stream.read_exact(&mut answer).await?;
                if answer[0] == b'S' {
                    return Ok::<bool, std::io::Error>(false);
                }
            }
            let mut body = 196_608_i32.to_be_bytes().to_vec();
            let mut pairs = vec![("user", user), ("database", database)];
            if replication {
                pairs.push(("replication", "database"));
            }
            for (key, value) in pairs {
                body.extend_from_slice(key.as_bytes());
                body.push(0);
                body.extend_from_slice(value.as_bytes());
                body.push(0);
            }
            body.push(0);
            let mut message = ((body.len() + 4) as i32).to_be_bytes().to_vec();
            message.extend_from_slice(&body);
            stream.write_all(&message).await?;
            // 'R', length, authentication code (3: cleartext password).
            let mut head = [0u8; 9];
            stream.read_exact(&mut head).await?;
            Ok(head[0] == b'R' && head[5..9] == 3_i32.to_be_bytes())
        };
        match tokio::time::timeout(std::time::Duration::from_secs(10), asks_cleartext).await {
            Ok(Ok(true)) => Err(format!(
                "the server at {host}:{port} asks for the password in clear text and the link is not encrypted (sslmode {}); use sslmode=require or verify-full, or add allow_cleartext_password=true to the URL to send it anyway",
                match mode {
                    Mode::Disable => "disable",
                    _ => "prefer, and the server offers no TLS",
                }
            )),
            _ => Ok(()),
        }
    }
}

/// `%2F`-style escapes, for paths in a URL.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The crypto provider every rustls setup here uses (rustls is built with more
/// than one in this program, so none is implied).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Makes ring the process's default provider, for libraries that build rustls
/// configs without naming one (pgwire-replication). Call once at start.
pub fn install_default_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl Tls {
    /// The rustls client configuration for this mode (`None` for `disable`).
    fn client_config(&self) -> Result<Option<rustls::ClientConfig>, String> {
        if self.mode == Mode::Disable {
            return Ok(None);
        }
        let fail = |e: rustls::Error| format!("TLS setup: {e}");
        let provider = provider();
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(fail)?;
        let verifier: Arc<dyn ServerCertVerifier> = match self.mode {
            Mode::VerifyCa | Mode::VerifyFull => {
                let roots = Arc::new(self.roots()?);
                let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                    .build()
                    .map_err(|e| format!("TLS setup: {e}"))?;
                if self.mode == Mode::VerifyFull {
                    webpki
                } else {
                    Arc::new(Lenient {
                        provider,
                        chain: Some(webpki),
                    })
                }
            }
            _ => Arc::new(Lenient {
                provider,
                chain: None,
            }),
        };
        Ok(Some(
            builder
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth(),
        ))
    }

    fn roots(&self) -> Result<RootCertStore, String> {
        let mut roots = RootCertStore::empty();
        let Some(path) = &self.root_cert else {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            return Ok(roots);
        };
        let unreadable =
            |e: rustls::pki_types::pem::Error| format!("sslrootcert {}: {e}", path.display());
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(unreadable)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(unreadable)?;
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(format!(
                "sslrootcert {} holds no certificate",
                path.display()
            ));
        }
        Ok(roots)
    }

    /// The same settings for the replication stream to `host`.
    pub fn replication(&self, host: &str) -> pgwire_replication::TlsConfig {
        use pgwire_replication::SslMode;
        pgwire_replication::TlsConfig {
            // pgwire-replication refuses verify-full to an IP address unless
            // the name to check is given; the address is that name (checked
            // against the certificate's IP entries, as tokio-postgres does).
            sni_hostname: (self.mode == Mode::VerifyFull
                && host.parse::<std::net::IpAddr>().is_ok())
            .then(|| host.to_string()),
            mode: match self.mode {
                Mode::Disable => SslMode::Disable,
                Mode::Prefer => SslMode::Prefer,
                Mode::Require => SslMode::Require,
                Mode::VerifyCa => SslMode::VerifyCa,
                Mode::VerifyFull => SslMode::VerifyFull,
            },
            ca_pem_path: self.root_cert.clone(),
            ..Default::default()
        }
    }
}

/// Connects with `tls` (from [`PgUrl::tls_config`]); the connection runs on a
/// task of its own, logging at debug level when it ends with an error.
pub async fn connect(
    config: &tokio_postgres::Config,
    tls: Option<rustls::ClientConfig>,
    what: &'static str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    fn spawn<F>(connection: F, what: &'static str)
    where
        F: std::future::Future<Output = Result<(), tokio_postgres::Error>> + Send + 'static,
    {
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("{what} connection closed: {e}");
            }
        });
    }
    Ok(match tls {
        None => {
            let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
            spawn(connection, what);
            client
        }
        Some(tls) => {
            let make = tokio_postgres_rustls::MakeRustlsConnect::new(tls);
            let (client, connection) = config.connect(make).await?;
            spawn(connection, what);
            client
        }
    })
}

/// The certificate check of `require`/`prefer` (none: `chain` is `None`) and
/// of `verify-ca` (the chain must lead to a trusted root; the name may
/// differ). Either way the handshake's signatures are checked against the
/// certificate the server sent.
#[derive(Debug)]
struct Lenient {
    provider: Arc<CryptoProvider>,
    chain: Option<Arc<WebPkiServerVerifier>>,
}

impl ServerCertVerifier for Lenient {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssl_parameters_come_off_the_url() {
        let url = parse(
            "postgres://u@db.example.com:5433/shop?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=x",
        )
        .expect("parse");
        assert_eq!(url.tls.mode, Mode::VerifyFull);
        assert_eq!(url.tls.root_cert, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(
            url.config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );
        assert_eq!(url.config.get_application_name(), Some("x"));
        let plain = parse("postgres://u@h/db").expect("parse");
        assert_eq!(plain.tls.mode, Mode::Prefer, "libpq's default");
        assert_eq!(
            plain.config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Prefer
        );
        assert!(parse("postgres://u@h/db?sslmode=allow").is_err());
        assert!(parse("postgres://u@h/db?sslrootcert=/ca.pem").is_err());
        assert!(parse("postgres://u@h/db?sslmode=verify-ca").is_err());
        // A `?` in the password is not where the parameters start.
        let url = parse("postgres://u:p?x@h/db?sslmode=require").expect("parse");
        assert_eq!(url.config.get_password(), Some(&b"p?x"[..]));
        assert_eq!(url.config.get_dbname(), Some("db"));
        assert_eq!(url.tls.mode, Mode::Require);
        let url = parse("postgres://u:p?x@h/db?sslmode=disable").expect("parse");
        assert_eq!(url.config.get_dbname(), Some("db"));
        assert_eq!(
            url.config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Disable
        );
        // key=value strings keep working, without TLS settings.
        let dsn = parse("host=h user=u dbname=shop").expect("parse");
        assert_eq!(dsn.config.get_dbname(), Some("shop"));
        assert!(parse("host=h dbname=shop sslmode=require").is_err());
        assert!(parse("postgres://u@db.example.com/db")
            .expect("parse")
            .identity_unchecked()
            .is_some_and(|w| w.contains("db.example.com")));
        assert!(parse("postgres://u@db.example.com/db?sslmode=verify-full")
            .expect("parse")
            .identity_unchecked()
            .is_none());
        assert!(parse("postgres://u@127.0.0.1/db")
            .expect("parse")
            .identity_unchecked()
            .is_none());
        assert!(parse("postgres://u@h/db?allow_cleartext_password=maybe").is_err());
        assert!(
            parse("postgres://u@h/db?allow_cleartext_password=true")
                .expect("parse")
                .tls
                .allow_cleartext
        );
        // `prefer` over a Unix socket is plain, as libpq does.
        let socket = parse("postgres://u@%2Frun%2Fpostgresql/db?sslmode=prefer").expect("parse");
        assert!(socket.tls_config().expect("config").is_none());
    }
}
