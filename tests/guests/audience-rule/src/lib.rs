//! Audiences must be known; a token is accepted when one of its audiences is this server.

wit_bindgen::generate!({ path: "../../../wit/v0.1.0", world: "audience-rule" });

struct AudienceRule;

impl Guest for AudienceRule {
    fn resolve(request: AudienceRequest) -> Result<Vec<String>, String> {
        if request.requested.is_empty() {
            return Ok(request.known.into_iter().take(1).collect());
        }
        match request
            .requested
            .iter()
            .find(|a| !request.known.contains(a))
        {
            Some(unknown) => Err(format!(
                "unknown audience {unknown} for {}",
                request.client_id
            )),
            None => Ok(request.requested),
        }
    }

    fn accept(token_audiences: Vec<String>, server_base_url: String) -> Result<(), String> {
        if token_audiences.contains(&server_base_url) {
            Ok(())
        } else {
            Err(format!(
                "audiences {token_audiences:?} do not include {server_base_url}"
            ))
        }
    }
}

export!(AudienceRule);
