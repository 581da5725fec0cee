//! Certificates and keys for a local control plane, generated fresh for each cluster.
//!
//! One CA signs the API server's serving certificate and the client certificates of the
//! admin and of kube-controller-manager; the API server trusts client certificates from the
//! same CA. A separate key signs service-account tokens.

use std::{fs, io, path::Path};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// Why generating or writing the cluster's credentials failed.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// rcgen refused the parameters; a bug here, not a condition of the machine.
    #[error("generating {what}: {source}")]
    Generate {
        /// Which certificate or key.
        what: &'static str,
        /// The cause.
        #[source]
        source: rcgen::Error,
    },
    /// The file could not be written.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// A certificate and its private key, PEM-encoded.
#[derive(Clone, Debug)]
pub struct CertifiedKey {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PKCS#8 PEM.
    pub key_pem: String,
}

/// Everything a local control plane authenticates with.
#[derive(Clone, Debug)]
pub struct Pki {
    /// The CA that signed every certificate here.
    pub ca: CertifiedKey,
    /// The API server's serving certificate, valid for 127.0.0.1 and `localhost`.
    pub apiserver: CertifiedKey,
    /// A client certificate in `system:masters`, for people, tests and `kubectl`.
    pub admin: CertifiedKey,
    /// kube-controller-manager's client certificate (`system:kube-controller-manager`).
    pub controller_manager: CertifiedKey,
    /// The key that signs service-account tokens, PKCS#8 PEM.
    pub service_account_key_pem: String,
    /// Its public half, which verifies them.
    pub service_account_public_pem: String,
}

impl Pki {
    /// Generates a new CA and the certificates signed by it.
    ///
    /// # Errors
    ///
    /// Only if rcgen rejects the parameters.
    pub fn generate() -> Result<Pki, PkiError> {
        let generate =
            |what| KeyPair::generate().map_err(|source| PkiError::Generate { what, source });

        let ca_key = generate("CA key")?;
        let mut ca_params = CertificateParams::default();
        ca_params.distinguished_name = name("substrate-rs local CA", None);
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params
            .self_signed(&ca_key)
            .map_err(|source| PkiError::Generate { what: "CA certificate", source })?;
        let ca = CertifiedKey { cert_pem: ca_cert.pem(), key_pem: ca_key.serialize_pem() };
        let issuer = Issuer::new(ca_params, ca_key);

        let apiserver = leaf(
            "kube-apiserver serving certificate",
            &issuer,
            name("kube-apiserver", None),
            &[
                "127.0.0.1",
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "10.96.0.1",
            ],
            ExtendedKeyUsagePurpose::ServerAuth,
        )?;
        let admin = leaf(
            "admin client certificate",
            &issuer,
            name("substrate-admin", Some("system:masters")),
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        let controller_manager = leaf(
            "kube-controller-manager client certificate",
            &issuer,
            name("system:kube-controller-manager", None),
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        let service_account_key = generate("service-account key")?;

        Ok(Pki {
            ca,
            apiserver,
            admin,
            controller_manager,
            service_account_key_pem: service_account_key.serialize_pem(),
            service_account_public_pem: service_account_key.public_key_pem(),
        })
    }
}

fn name(common_name: &str, organization: Option<&str>) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    if let Some(organization) = organization {
        name.push(DnType::OrganizationName, organization);
    }
    name
}

fn leaf(
    what: &'static str,
    issuer: &Issuer<'_, KeyPair>,
    subject: DistinguishedName,
    subject_alt_names: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> Result<CertifiedKey, PkiError> {
    let key = KeyPair::generate().map_err(|source| PkiError::Generate { what, source })?;
    let sans: Vec<String> = subject_alt_names.iter().map(|s| (*s).to_owned()).collect();
    let mut params =
        CertificateParams::new(sans).map_err(|source| PkiError::Generate { what, source })?;
    params.distinguished_name = subject;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![usage];
    let cert =
        params.signed_by(&key, issuer).map_err(|source| PkiError::Generate { what, source })?;
    Ok(CertifiedKey { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

/// Writes `contents` to `path`, readable by the owner only: these are credentials.
///
/// # Errors
///
/// When the file cannot be written.
pub fn write_private(path: &Path, contents: &str) -> Result<(), PkiError> {
    use std::os::unix::fs::OpenOptionsExt;

    let write = || -> io::Result<()> {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        io::Write::write_all(&mut file, contents.as_bytes())
    };
    write().map_err(|source| PkiError::Write { path: path.display().to_string(), source })
}
