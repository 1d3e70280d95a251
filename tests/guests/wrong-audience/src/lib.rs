//! A deliberately broken audience rule, for the negative run of the client tests
//! (`tests/clients/run --broken`): tokens are minted for an audience next to the one asked
//! for (`<requested>/elsewhere`), while requests are accepted only for this server's base, as
//! the default rule does. Every client that checks `aud`, or uses its token, must fail.

wit_bindgen::generate!({ path: "../../../wit/v0.1.0", world: "audience-rule" });

struct WrongAudience;

impl Guest for WrongAudience {
    fn resolve(request: AudienceRequest) -> Result<Vec<String>, String> {
        let asked = if request.requested.is_empty() {
            request.known.into_iter().take(1).collect()
        } else {
            request.requested
        };
        Ok(asked
            .into_iter()
            .map(|a| format!("{}/elsewhere", a.trim_end_matches('/')))
            .collect())
    }

    fn accept(token_audiences: Vec<String>, server_base_url: String) -> Result<(), String> {
        let base = server_base_url.trim_end_matches('/');
        if token_audiences
            .iter()
            .any(|a| a.trim_end_matches('/') == base)
        {
            Ok(())
        } else {
            Err(format!(
                "audience [{}] does not include {server_base_url}",
                token_audiences.join(", ")
            ))
        }
    }
}

export!(WrongAudience);
