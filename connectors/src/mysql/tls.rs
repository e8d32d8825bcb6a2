//! TLS to MySQL/MariaDB, set with the URL parameters `ssl-mode` and `ssl-ca`,
//! as the `mysql` client's `--ssl-mode` and `--ssl-ca`:
//!
//! - `disabled`: plain;
//! - `preferred` (the default, as the MySQL client's): TLS when the server
//!   offers it, the certificate not checked; plain otherwise;
//! - `required`: encrypted, the certificate not checked;
//! - `verify_ca`: the chain is checked against `ssl-ca` (required), not the
//!   host name;
//! - `verify_identity`: chain and host name, against `ssl-ca` or else the
//!   Mozilla roots.
//!
//! mysql_async's own TLS parameters (`require_ssl`, `verify_ca`,
//! `verify_identity`, `built_in_roots`) are refused with a pointer to
//! `ssl-mode`, so that one URL has one meaning. Every MySQL connection
//! tidemark opens (binlog source, snapshot, poll, apply target, migrate) is
//! made by [`connect`].

use mysql_async::{Conn, Opts, OptsBuilder, SslOpts};
use std::path::PathBuf;

/// The `ssl-mode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    Disabled,
    #[default]
    Preferred,
    Required,
    VerifyCa,
    VerifyIdentity,
}

/// A parsed MySQL URL: mysql_async's options and the TLS mode.
#[derive(Debug, Clone)]
pub struct MyUrl {
    pub opts: Opts,
    pub mode: Mode,
}

fn bad_url(reason: impl std::fmt::Display) -> String {
    format!("not a valid MySQL URL ({reason})")
}

/// Parses a URL (never echoing it, nor any part of it that may hold a
/// secret), taking `ssl-mode` and `ssl-ca` off. Errors say what is wrong, for
/// the caller to prefix with the setting's name.
pub fn parse(text: &str) -> Result<MyUrl, String> {
    let mut url = url::Url::parse(text).map_err(|e| bad_url(e.to_string()))?;
    if url.scheme() != "mysql" {
        return Err(bad_url("use mysql://user:password@host:3306/database"));
    }
    let mut mode = Mode::default();
    let mut ca = None;
    let mut kept = Vec::new();
    for (key, value) in url.query_pairs() {
        match &*key {
            "ssl-mode" | "ssl_mode" | "sslmode" => mode = parse_mode(&value)?,
            "ssl-ca" | "ssl_ca" => ca = Some(PathBuf::from(&*value)),
            "require_ssl" | "verify_ca" | "verify_identity" | "built_in_roots" => {
                return Err(bad_url(format!(
                    "parameter {key}: set TLS with ssl-mode (disabled, preferred, required, verify_ca, verify_identity) and ssl-ca"
                )))
            }
            _ => kept.push((key.into_owned(), value.into_owned())),
        }
    }
    if kept.is_empty() {
        url.set_query(None);
    } else {
        url.query_pairs_mut().clear().extend_pairs(kept);
    }
    let opts = driver_opts(&url)?;
    let ssl = ssl_opts(mode, ca)?;
    let opts = OptsBuilder::from_opts(opts).ssl_opts(ssl).into();
    Ok(MyUrl { opts, mode })
}

/// An `ssl-mode` value.
fn parse_mode(value: &str) -> Result<Mode, String> {
    match value.to_ascii_lowercase().replace('-', "_").as_str() {
        "disabled" => Ok(Mode::Disabled),
        "preferred" => Ok(Mode::Preferred),
        "required" => Ok(Mode::Required),
        "verify_ca" => Ok(Mode::VerifyCa),
        "verify_identity" => Ok(Mode::VerifyIdentity),
        _ => Err(bad_url(
            "ssl-mode: use disabled, preferred, required, verify_ca or verify_identity",
        )),
    }
}

/// mysql_async's options from the URL, TLS parameters taken off.
fn driver_opts(url: &url::Url) -> Result<Opts, String> {
    // mysql_async's errors quote the URL's parameters, never its credentials;
    // only the kind of error is kept anyway.
    Opts::from_url(url.as_str()).map_err(|e| match e {
        mysql_async::UrlError::UnknownParameter { param } => {
            bad_url(format!("unknown parameter {param:?}"))
        }
        mysql_async::UrlError::InvalidParamValue { param, .. } => {
            bad_url(format!("parameter {param:?} has an invalid value"))
        }
        mysql_async::UrlError::UnsupportedScheme { .. } => bad_url("use mysql://"),
        other => bad_url(other.to_string()),
    })
}

/// The TLS options of a mode and CA file; refuses the pairs that do not go
/// together, and a CA file that cannot be read.
fn ssl_opts(mode: Mode, ca: Option<PathBuf>) -> Result<Option<SslOpts>, String> {
    Ok(match (mode, ca) {
        (Mode::Disabled | Mode::Preferred | Mode::Required, Some(_)) => {
            return Err(bad_url(
                "ssl-ca is set but ssl-mode does not verify: use verify_ca or verify_identity",
            ))
        }
        (Mode::VerifyCa, None) => {
            return Err(bad_url(
                "ssl-mode verify_ca needs ssl-ca (the CA file to check against)",
            ))
        }
        (Mode::Disabled, None) => None,
        (Mode::Preferred | Mode::Required, None) => {
            Some(SslOpts::default().with_danger_accept_invalid_certs(true))
        }
        (Mode::VerifyCa | Mode::VerifyIdentity, Some(ca)) => {
            if let Err(e) = std::fs::metadata(&ca) {
                return Err(bad_url(format!("ssl-ca {}: {e}", ca.display())));
            }
            Some(
                SslOpts::default()
                    .with_root_certs(vec![ca.into()])
                    .with_disable_built_in_roots(true)
                    .with_danger_skip_domain_validation(mode == Mode::VerifyCa),
            )
        }
        (Mode::VerifyIdentity, None) => Some(SslOpts::default()),
    })
}

impl MyUrl {
    /// A warning when the server is reached over the network without its
    /// identity checked (`ssl-mode` other than `verify_ca`/`verify_identity`).
    pub fn identity_unchecked(&self) -> Option<String> {
        let host = self.opts.ip_or_hostname();
        let verified = matches!(self.mode, Mode::VerifyCa | Mode::VerifyIdentity);
        (!crate::postgres::tls::is_loopback(host) && !verified).then(|| {
            format!(
                "host {host} is not this machine and the server's certificate is not checked (ssl-mode {:?}): use ssl-mode=verify_identity with ssl-ca",
                self.mode
            )
        })
    }
}

/// Connects as the URL says: with `preferred`, a server that offers no TLS
/// gets a plain connection (a second handshake, as the `mysql` client does).
///
/// `verify_ca`: mysql_async skips the name check by matching the text of
/// rustls' error, which rustls 0.23 no longer writes that way, so a name
/// mismatch comes back as an error. The chain is checked before the name,
/// so such an error means the chain is trusted: the handshake is made again
/// checking a name the certificate carries.
pub async fn connect(url: &MyUrl) -> Result<Conn, mysql_async::Error> {
    match Conn::new(url.opts.clone()).await {
        Err(mysql_async::Error::Driver(mysql_async::DriverError::NoClientSslFlagFromServer))
            if url.mode == Mode::Preferred =>
        {
            tracing::debug!("the MySQL server offers no TLS: connecting in plain text");
            let plain: Opts = OptsBuilder::from_opts(url.opts.clone())
                .ssl_opts(None::<SslOpts>)
                .into();
            Conn::new(plain).await
        }
        Err(e) if url.mode == Mode::VerifyCa => {
            let Some(name) = names_presented(&e).and_then(|n| n.into_iter().next()) else {
                return Err(e);
            };
            let ssl = url
                .opts
                .ssl_opts()
                .cloned()
                .map(|s| s.with_danger_tls_hostname_override(Some(name)));
            Conn::new(OptsBuilder::from_opts(url.opts.clone()).ssl_opts(ssl)).await
        }
        other => other,
    }
}

/// The names a certificate carries, from the error of a handshake that
/// failed on the name alone.
fn names_presented(error: &mysql_async::Error) -> Option<Vec<String>> {
    fn find(error: &(dyn std::error::Error + 'static)) -> Option<Vec<String>> {
        if let Some(rustls::Error::InvalidCertificate(
            rustls::CertificateError::NotValidForNameContext { presented, .. },
        )) = error.downcast_ref::<rustls::Error>()
        {
            // `DnsName("db.example")` and the like: the quoted part.
            return Some(
                presented
                    .iter()
                    .filter_map(|p| p.split('"').nth(1).map(str::to_owned))
                    .collect(),
            );
        }
        if let Some(inner) = error
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            return find(inner);
        }
        error.source().and_then(find)
    }
    find(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tls_option_parses_or_is_refused_in_words() {
        let plain = parse("mysql://u:p@h:3306/db").expect("parse");
        assert_eq!(plain.mode, Mode::Preferred);
        assert!(plain.opts.ssl_opts().is_some());
        let off = parse("mysql://u@h/db?ssl-mode=DISABLED").expect("parse");
        assert!(off.opts.ssl_opts().is_none());
        let required = parse("mysql://u@h/db?ssl-mode=required").expect("parse");
        assert_eq!(required.mode, Mode::Required);
        let ca = std::env::temp_dir().join("tidemark-tls-unit-ca.pem");
        std::fs::write(&ca, "").expect("ca file");
        let ca_param = format!("ssl-ca={}", ca.display());
        let verify = parse(&format!(
            "mysql://u@h/db?ssl-mode=verify_ca&{ca_param}&prefer_socket=false"
        ))
        .expect("parse");
        assert_eq!(verify.mode, Mode::VerifyCa);
        assert!(!verify.opts.prefer_socket(), "other parameters are kept");
        let ssl = verify.opts.ssl_opts().expect("tls");
        assert!(ssl.skip_domain_validation() && !ssl.accept_invalid_certs());
        let identity = parse(&format!(
            "mysql://u@h/db?ssl-mode=VERIFY_IDENTITY&{ca_param}"
        ))
        .expect("parse");
        let ssl = identity.opts.ssl_opts().expect("tls");
        assert!(!ssl.skip_domain_validation() && !ssl.accept_invalid_certs());
        for (url, expected) in [
            ("mysql://u@h/db?ssl-mode=sometimes", "ssl-mode: use"),
            ("mysql://u@h/db?require_ssl=true", "set TLS with ssl-mode"),
            (
                "mysql://u@h/db?verify_identity=true",
                "set TLS with ssl-mode",
            ),
            (
                "mysql://u@h/db?built_in_roots=false",
                "set TLS with ssl-mode",
            ),
            ("mysql://u@h/db?ssl-mode=verify_ca", "needs ssl-ca"),
            (
                "mysql://u@h/db?ssl-mode=required&ssl-ca=/x",
                "does not verify",
            ),
            (
                "mysql://u@h/db?ssl-mode=verify_identity&ssl-ca=/no/such/ca.pem",
                "/no/such/ca.pem",
            ),
            ("mysql://u@h/db?frobnicate=1", "unknown parameter"),
            ("postgres://u@h/db", "use mysql://"),
        ] {
            let error = parse(url).expect_err(url);
            assert!(error.contains(expected), "{url}: {error}");
        }
        assert!(parse("mysql://u@db.example.com/db")
            .expect("parse")
            .identity_unchecked()
            .is_some_and(|w| w.contains("db.example.com")));
        assert!(parse("mysql://u@127.0.0.1/db")
            .expect("parse")
            .identity_unchecked()
            .is_none());
        assert!(identity.identity_unchecked().is_none());
        let secret = parse("mysql://u:s3cret@h/db?stmt_cache_size=lots").expect_err("bad value");
        assert!(!secret.contains("s3cret"), "{secret}");
    }
}
