//! TLS: loading the operator's certificate chain, and development certificates whose names
//! match the host names the server is reached by.
//!
//! A development setup gets its own CA (`ca.pem`) so that clients trust one file, and a
//! server certificate signed by it for every name given (DNS names and IP addresses).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)")]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no PEM private key (expected PKCS#8, PKCS#1 or SEC1)")]
    NoKey { path: PathBuf },
    #[error("{path} is not valid PEM: {source}")]
    Pem {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the certificate and key do not form a usable TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid host name {0:?}")]
    BadName(String),
}

/// The file names of a development certificate set.
#[derive(Debug, Clone)]
pub struct DevCertFiles {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    names_file: PathBuf,
}

impl DevCertFiles {
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            ca_cert: dir.join("ca.pem"),
            ca_key: dir.join("ca-key.pem"),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            names_file: dir.join("names.txt"),
        }
    }
}

/// What [`ensure_dev_cert`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DevCertOutcome {
    Created,
    Reissued,
    Reused,
}

fn write_file(path: &Path, contents: &str, private: bool) -> Result<(), TlsError> {
    let err = |source| TlsError::Write {
        path: path.to_path_buf(),
        source,
    };
    std::fs::write(path, contents).map_err(err)?;
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    }
    #[cfg(not(unix))]
    let _ = private;
    Ok(())
}

fn read_file(what: &'static str, path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

fn san(name: &str) -> Result<SanType, TlsError> {
    if let Ok(ip) = name.parse::<std::net::IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '*')
        });
    if !valid {
        return Err(TlsError::BadName(name.to_string()));
    }
    Ok(SanType::DnsName(
        name.try_into()
            .map_err(|_| TlsError::BadName(name.to_string()))?,
    ))
}

/// Makes sure `dir` holds a development CA and a server certificate for `names`.
///
/// The CA is created once and kept, so clients that trust it keep trusting new server
/// certificates; the server certificate is reissued when the set of names changes.
pub fn ensure_dev_cert(
    dir: &Path,
    names: &[String],
) -> Result<(DevCertFiles, DevCertOutcome), TlsError> {
    let files = DevCertFiles::in_dir(dir);
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut names: Vec<String> = names
        .iter()
        .map(|n| n.trim().to_ascii_lowercase())
        .collect();
    names.sort();
    names.dedup();
    let names_line = names.join(" ");

    let have_ca = files.ca_cert.is_file() && files.ca_key.is_file();
    let have_cert = files.cert.is_file() && files.key.is_file();
    if have_ca
        && have_cert
        && std::fs::read_to_string(&files.names_file).is_ok_and(|n| n.trim() == names_line)
    {
        return Ok((files, DevCertOutcome::Reused));
    }

    let (issuer, created) = dev_ca(&files, have_ca)?;

    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.subject_alt_names = names.iter().map(|n| san(n)).collect::<Result<_, _>>()?;
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        names.first().cloned().unwrap_or_else(|| "localhost".into()),
    );
    params.distinguished_name = dn;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.not_before = rcgen::date_time_ymd(2025, 1, 1);
    // Browsers refuse server certificates valid for more than 398 days.
    let now = std::time::SystemTime::now();
    params.not_after = (now + std::time::Duration::from_secs(397 * 24 * 3600)).into();
    params.not_before = (now - std::time::Duration::from_secs(24 * 3600)).into();
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    // The chain: server certificate, then the CA, so clients that only pin the CA verify it.
    let ca_pem = read_file("CA certificate", &files.ca_cert)?;
    write_file(&files.cert, &format!("{}{}", cert.pem(), ca_pem), false)?;
    write_file(&files.key, &key.serialize_pem(), true)?;
    write_file(&files.names_file, &format!("{names_line}\n"), false)?;
    Ok((
        files,
        if created {
            DevCertOutcome::Created
        } else {
            DevCertOutcome::Reissued
        },
    ))
}

/// The development CA: the one in `files` when `have_ca`, else a new one written there;
/// with whether it was created.
fn dev_ca(
    files: &DevCertFiles,
    have_ca: bool,
) -> Result<(Issuer<'static, KeyPair>, bool), TlsError> {
    if have_ca {
        let key = KeyPair::from_pem(&read_file("CA key", &files.ca_key)?)?;
        let issuer = Issuer::from_ca_cert_pem(&read_file("CA certificate", &files.ca_cert)?, key)?;
        Ok((issuer, false))
    } else {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "Hestia development CA");
        dn.push(DnType::OrganizationName, "Hestia (development only)");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = rcgen::date_time_ymd(2025, 1, 1);
        params.not_after = rcgen::date_time_ymd(2035, 1, 1);
        let cert = params.self_signed(&key)?;
        write_file(&files.ca_cert, &cert.pem(), false)?;
        write_file(&files.ca_key, &key.serialize_pem(), true)?;
        Ok((Issuer::new(params, key), true))
    }
}

/// Reads a PEM certificate chain and its private key into a rustls server configuration.
pub fn server_config(
    cert_path: &Path,
    key_path: &Path,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let cert_pem = std::fs::read(cert_path).map_err(|source| TlsError::Read {
        what: "TLS certificate",
        path: cert_path.to_path_buf(),
        source,
    })?;
    let key_pem = std::fs::read(key_path).map_err(|source| TlsError::Read {
        what: "TLS key",
        path: key_path.to_path_buf(),
        source,
    })?;
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|source| TlsError::Pem {
            path: cert_path.to_path_buf(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert_path.to_path_buf(),
        });
    }
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|source| TlsError::Pem {
            path: key_path.to_path_buf(),
            source,
        })?
        .ok_or_else(|| TlsError::NoKey {
            path: key_path.to_path_buf(),
        })?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The names of the development certificate already in `dir` (none when there is none).
pub fn existing_dev_names(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(DevCertFiles::in_dir(dir).names_file)
        .map(|line| line.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// The names a development certificate gets by default: loopback, plus the public URL's host
/// when it is not one of them (each name once).
pub fn default_dev_names(public_host: Option<&str>) -> Vec<String> {
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    if let Some(host) = public_host
        && !names.iter().any(|name| name == host)
    {
        names.push(host.to_string());
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_dev_names_name_each_host_once() {
        assert_eq!(
            default_dev_names(Some("localhost")),
            ["localhost", "127.0.0.1", "::1"]
        );
        assert_eq!(
            default_dev_names(Some("fhir.test")),
            ["localhost", "127.0.0.1", "::1", "fhir.test"]
        );
    }

    #[test]
    fn dev_cert_is_created_once_and_reissued_for_new_names() {
        let dir = tempfile::tempdir().unwrap();
        let names = default_dev_names(Some("fhir.test"));
        let (files, outcome) = ensure_dev_cert(dir.path(), &names).unwrap();
        assert_eq!(outcome, DevCertOutcome::Created);
        let ca_before = std::fs::read_to_string(&files.ca_cert).unwrap();
        let (_, outcome) = ensure_dev_cert(dir.path(), &names).unwrap();
        assert_eq!(outcome, DevCertOutcome::Reused);
        let (files, outcome) =
            ensure_dev_cert(dir.path(), &default_dev_names(Some("other.test"))).unwrap();
        assert_eq!(outcome, DevCertOutcome::Reissued);
        assert_eq!(
            std::fs::read_to_string(&files.ca_cert).unwrap(),
            ca_before,
            "the CA is kept"
        );
        server_config(&files.cert, &files.key).unwrap();
    }

    #[test]
    fn bad_names_and_files_are_explained() {
        let dir = tempfile::tempdir().unwrap();
        let err = ensure_dev_cert(dir.path(), &["bad name!".into()]).unwrap_err();
        assert!(err.to_string().contains("bad name!"), "{err}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not pem").unwrap();
        let err = server_config(&empty, &empty).unwrap_err().to_string();
        assert!(err.contains("no PEM certificate"), "{err}");
        let err = server_config(&dir.path().join("missing.pem"), &empty)
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing.pem"), "{err}");
    }
}
