//! Why a request to the issuer failed, in words that say what to do: an unknown CA, a
//! certificate for other names, a name that does not resolve, a refused connection.
//!
//! reqwest wraps hyper-util's connector error, which wraps an `io::Error`, which wraps the
//! `rustls::Error` of the handshake; the chain is walked (including the payload of every
//! `io::Error`, which `source()` skips) to find the cause.

use std::error::Error as StdError;

/// What went wrong, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The certificate chain does not lead to a trusted CA.
    UnknownCa,
    /// The certificate is valid, but not for the host name of the URL.
    WrongName {
        presented: Vec<String>,
    },
    /// Another TLS failure (expired, bad signature, protocol).
    Tls(String),
    /// The host name does not resolve.
    Dns(String),
    /// Nothing listens at the address.
    Refused,
    Timeout,
    Other(String),
}

/// Every error of the chain below `err`, payloads of `io::Error`s included.
fn chain<'a>(err: &'a (dyn StdError + 'static)) -> Vec<&'a (dyn StdError + 'static)> {
    let mut out = Vec::new();
    let mut stack = vec![err];
    while let Some(e) = stack.pop() {
        if out.len() > 32 {
            break;
        }
        out.push(e);
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
        {
            stack.push(inner as &(dyn StdError + 'static));
        }
        if let Some(source) = e.source() {
            stack.push(source);
        }
    }
    out
}

/// Classifies a failed request to `url`. A connection failure that is neither TLS nor
/// a refusal is checked against the resolver, which tells a name that does not resolve.
pub async fn classify(url: &url::Url, err: &reqwest::Error) -> Failure {
    let (found, text) = classify_chain(err);
    if let Some(failure) = found {
        return failure;
    }
    if err.is_timeout() {
        return Failure::Timeout;
    }
    if err.is_connect()
        && let Some(host) = url.host_str()
    {
        let port = url.port_or_known_default().unwrap_or(443);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if let Err(e) = tokio::net::lookup_host((host, port)).await {
            return Failure::Dns(e.to_string());
        }
    }
    Failure::Other(text)
}

/// What the error chain itself tells (TLS, refusal), and its text.
fn classify_chain(err: &reqwest::Error) -> (Option<Failure>, String) {
    let errors = chain(err);
    for e in &errors {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            use rustls::CertificateError as C;
            let failure = match tls {
                rustls::Error::InvalidCertificate(C::UnknownIssuer) => Failure::UnknownCa,
                rustls::Error::InvalidCertificate(C::NotValidForNameContext {
                    presented, ..
                }) => Failure::WrongName {
                    presented: presented.iter().map(|n| bare_name(n)).collect(),
                },
                rustls::Error::InvalidCertificate(C::NotValidForName) => Failure::WrongName {
                    presented: Vec::new(),
                },
                other => Failure::Tls(other.to_string()),
            };
            return (Some(failure), String::new());
        }
    }
    if errors.iter().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
    }) {
        return (Some(Failure::Refused), String::new());
    }
    let mut unique: Vec<String> = Vec::new();
    for t in errors.iter().map(|e| e.to_string()) {
        if !unique.iter().any(|u| u.contains(&t)) {
            unique.push(t);
        }
    }
    (None, unique.join(": "))
}

/// `DnsName("a.example")` → `a.example`, `IpAddress(10.0.0.1)` → `10.0.0.1`: rustls gives
/// the certificate's names in their `Debug` form.
fn bare_name(presented: &str) -> String {
    match presented.split_once('(') {
        Some((kind, rest)) if kind.chars().all(|c| c.is_ascii_alphanumeric()) => {
            rest.trim_end_matches(')').trim_matches('"').to_string()
        }
        _ => presented.to_string(),
    }
}

/// The sentence for an operator: what failed toward `url`, and what to do.
pub fn explain(url: &url::Url, failure: &Failure) -> String {
    let host = url.host_str().unwrap_or_default();
    let port = url.port_or_known_default().unwrap_or(443);
    match failure {
        Failure::UnknownCa => format!(
            "cannot reach {url}: its TLS certificate is signed by a CA this server does not trust (unknown CA); pass the issuer's CA certificate with --issuer-ca FILE (for a Hestia development certificate: DATA_DIR/tls/ca.pem of the issuer's host)"
        ),
        Failure::WrongName { presented } if presented.is_empty() => format!(
            "cannot reach {url}: its TLS certificate is not valid for the host name {host}; reach the issuer by a name its certificate holds, or reissue the certificate for this name (`hestia dev-cert --hostname {host}`)"
        ),
        Failure::WrongName { presented } => format!(
            "cannot reach {url}: its TLS certificate is not valid for the host name {host} (the certificate's names: {}); use --issuer with one of those names, or reissue the certificate for this name (`hestia dev-cert --hostname {host}`)",
            presented.join(", ")
        ),
        Failure::Tls(reason) => format!("cannot reach {url}: TLS failed: {reason}"),
        Failure::Dns(reason) => format!(
            "cannot reach {url}: the host name {host} does not resolve ({reason}); check the --issuer URL, or this machine's DNS and hosts file"
        ),
        Failure::Refused => format!(
            "cannot reach {url}: the connection to {host} port {port} was refused; is the authorization server running and listening there?"
        ),
        Failure::Timeout => format!("cannot reach {url}: no answer in time"),
        Failure::Other(reason) => format!("cannot reach {url}: {reason}"),
    }
}

/// [`classify`] then [`explain`].
pub async fn describe(url: &str, err: &reqwest::Error) -> String {
    match url::Url::parse(url) {
        Ok(parsed) => explain(&parsed, &classify(&parsed, err).await),
        Err(_) => format!("cannot reach {url}: {err}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_names_are_shown_bare() {
        assert_eq!(bare_name("DnsName(\"a.example\")"), "a.example");
        assert_eq!(bare_name("IpAddress(10.0.0.1)"), "10.0.0.1");
        assert_eq!(bare_name("plain.example"), "plain.example");
    }

    #[test]
    fn explanations_name_the_fix() {
        let url = url::Url::parse("https://as.example:8443/x").unwrap();
        let text = explain(
            &url,
            &Failure::WrongName {
                presented: vec!["other.example".into()],
            },
        );
        assert!(
            text.contains("not valid for the host name as.example")
                && text.contains("other.example")
                && text.contains("hestia dev-cert --hostname as.example"),
            "{text}"
        );
        assert!(explain(&url, &Failure::UnknownCa).contains("--issuer-ca FILE"));
        assert!(explain(&url, &Failure::Refused).contains("port 8443 was refused"));
    }
}
