//! {name}: an audience rule. Tokens are issued only for registered resource servers (this
//! server's FHIR base URL when the client names none), and accepted only when one of
//! their audiences is this server's FHIR base URL.

use hestia_sdk::{AudienceRequest, AudienceRule, same_url};

pub struct Rule;

impl AudienceRule for Rule {
    fn resolve(request: &AudienceRequest) -> Result<Vec<String>, String> {
        if request.requested().is_empty() {
            return request
                .own_base_url()
                .map(|own| vec![own.to_string()])
                .ok_or_else(|| "no resource server is registered".to_string());
        }
        request
            .requested()
            .iter()
            .map(|aud| {
                request
                    .known()
                    .iter()
                    .find(|known| same_url(known, aud))
                    .cloned()
                    .ok_or_else(|| format!("audience {aud} is not a registered resource server"))
            })
            .collect()
    }

    fn accept(token_audiences: &[String], server_base_url: &str) -> Result<(), String> {
        if token_audiences.iter().any(|aud| same_url(aud, server_base_url)) {
            Ok(())
        } else {
            Err(format!("the token is not meant for {server_base_url}"))
        }
    }
}

hestia_sdk::export_audience_rule!(Rule);

#[cfg(test)]
mod tests {
    use hestia_sdk::AudienceRule;
    use hestia_sdk::testing::audience_request;

    use super::Rule;

    const OWN: &str = "https://hestia.test/fhir/r4";

    #[test]
    fn only_registered_audiences() {
        assert_eq!(
            Rule::resolve(&audience_request(Vec::<String>::new(), [OWN])),
            Ok(vec![OWN.to_string()])
        );
        assert_eq!(
            Rule::resolve(&audience_request(["https://elsewhere.test"], [OWN])),
            Err("audience https://elsewhere.test is not a registered resource server".to_string())
        );
        assert_eq!(Rule::accept(&[format!("{OWN}/")], OWN), Ok(()));
        assert!(Rule::accept(&["https://elsewhere.test".to_string()], OWN).is_err());
    }
}
