//! Server metadata (RFC 8414 and OpenID Connect Discovery): exactly what is supported.

use serde_json::{Value, json};

use super::*;

impl AuthServer {
    pub fn metadata(&self) -> Value {
        json!({
            "issuer": self.issuer(),
            "authorization_endpoint": self.url(AUTHORIZE_PATH),
            "token_endpoint": self.url(TOKEN_PATH),
            "jwks_uri": self.url(JWKS_PATH),
            "userinfo_endpoint": self.url(USERINFO_PATH),
            "registration_endpoint": self.url(REGISTER_PATH),
            "introspection_endpoint": self.url(INTROSPECT_PATH),
            "revocation_endpoint": self.url(REVOKE_PATH),
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": grants::GRANT_TYPES,
            "subject_types_supported": ["public"],
            "token_endpoint_auth_methods_supported": client_auth::METHODS,
            "token_endpoint_auth_signing_alg_values_supported": client_auth::ASSERTION_ALGS,
            "introspection_endpoint_auth_methods_supported": client_auth::INTROSPECTION_METHODS,
            "introspection_endpoint_auth_signing_alg_values_supported": client_auth::ASSERTION_ALGS,
            "revocation_endpoint_auth_methods_supported": client_auth::METHODS,
            "revocation_endpoint_auth_signing_alg_values_supported": client_auth::ASSERTION_ALGS,
            "code_challenge_methods_supported": [pkce::S256],
            "id_token_signing_alg_values_supported": keys::SIGNING_ALGS,
            "scopes_supported": [
                "openid", "fhirUser", "launch/patient", "offline_access", "online_access",
                "patient/*.read", "patient/*.rs", "user/*.read", "user/*.rs", "system/*.read", "system/*.rs"
            ],
            "claims_supported": [
                "iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "fhirUser", "preferred_username"
            ],
            "claims_parameter_supported": false,
            "request_parameter_supported": false,
            "request_uri_parameter_supported": false,
            "authorization_response_iss_parameter_supported": true,
            "prompt_values_supported": ["none", "login", "consent"],
        })
    }
}
