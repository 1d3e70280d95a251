/// Which audiences a token asks for at token time, and which ones are known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudienceRequest {
    pub(crate) client_id: String,
    pub(crate) requested: Vec<String>,
    pub(crate) known: Vec<String>,
}

impl AudienceRequest {
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// From the `aud` and `resource` parameters; empty when the client named none.
    pub fn requested(&self) -> &[String] {
        &self.requested
    }

    /// FHIR base URLs of the registered resource servers; this server's own comes first.
    pub fn known(&self) -> &[String] {
        &self.known
    }

    /// This server's own FHIR base URL (the first known one).
    pub fn own_base_url(&self) -> Option<&str> {
        self.known.first().map(String::as_str)
    }
}

/// Compares URLs the way audiences are compared: ignoring one trailing slash.
pub fn same_url(a: &str, b: &str) -> bool {
    a.strip_suffix('/').unwrap_or(a) == b.strip_suffix('/').unwrap_or(b)
}
