//! The default audience rule.
//!
//! **Resolve** (token time): with no `aud`/`resource` parameter the token is for this
//! server (the first known base URL); otherwise every requested audience must be the
//! base URL of a registered resource server. URLs compare ignoring one trailing slash;
//! the audiences are returned as the known server writes them, without duplicates.
//!
//! **Accept** (request time): the token's audiences must include this server's FHIR base
//! URL, again ignoring a trailing slash.

use hestia_sdk::{AudienceRequest, AudienceRule, same_url};

pub struct Audience;

impl AudienceRule for Audience {
    fn resolve(request: &AudienceRequest) -> Result<Vec<String>, String> {
        let known = request.known();
        if request.requested().is_empty() {
            return match request.own_base_url() {
                Some(own) => Ok(vec![own.to_string()]),
                None => Err("no resource server is registered, not even this server".into()),
            };
        }
        let mut audiences: Vec<String> = Vec::new();
        for requested in request.requested() {
            let Some(found) = known.iter().find(|k| same_url(k, requested)) else {
                return Err(format!(
                    "audience {requested} is not a registered resource server; known: {}",
                    known.join(", ")
                ));
            };
            if !audiences.contains(found) {
                audiences.push(found.clone());
            }
        }
        Ok(audiences)
    }

    fn accept(token_audiences: &[String], server_base_url: &str) -> Result<(), String> {
        if token_audiences.iter().any(|a| same_url(a, server_base_url)) {
            Ok(())
        } else {
            Err(format!(
                "audience [{}] does not include {server_base_url}",
                token_audiences.join(", ")
            ))
        }
    }
}

hestia_sdk::export_audience_rule!(Audience);

#[cfg(test)]
mod tests {
    use hestia_sdk::AudienceRule;
    use hestia_sdk::testing::audience_request;

    use super::Audience;

    const OWN: &str = "https://hestia.test/fhir/r4";
    const OTHER: &str = "https://other.test/fhir/";

    fn check_resolve(requested: &[&str], known: &[&str], expected: Result<&[&str], &str>) {
        let actual = Audience::resolve(&audience_request(
            requested.iter().copied(),
            known.iter().copied(),
        ));
        let expected = expected
            .map(|a| a.iter().map(ToString::to_string).collect::<Vec<_>>())
            .map_err(String::from);
        assert_eq!(actual, expected, "resolve {requested:?} against {known:?}");
    }

    #[test]
    fn resolve() {
        check_resolve(&[], &[OWN, OTHER], Ok(&[OWN]));
        check_resolve(&[OWN], &[OWN, OTHER], Ok(&[OWN]));
        check_resolve(&["https://hestia.test/fhir/r4/"], &[OWN], Ok(&[OWN]));
        check_resolve(&["https://other.test/fhir"], &[OWN, OTHER], Ok(&[OTHER]));
        check_resolve(
            &[OTHER, OWN, "https://hestia.test/fhir/r4/"],
            &[OWN, OTHER],
            Ok(&[OTHER, OWN]),
        );
        check_resolve(
            &[OWN, "https://evil.test/fhir"],
            &[OWN, OTHER],
            Err(
                "audience https://evil.test/fhir is not a registered resource server; known: https://hestia.test/fhir/r4, https://other.test/fhir/",
            ),
        );
        // A prefix or a different path is another audience.
        check_resolve(
            &["https://hestia.test/fhir"],
            &[OWN],
            Err(
                "audience https://hestia.test/fhir is not a registered resource server; known: https://hestia.test/fhir/r4",
            ),
        );
        check_resolve(
            &[],
            &[],
            Err("no resource server is registered, not even this server"),
        );
    }

    fn check_accept(token: &[&str], base: &str, expected: Result<(), &str>) {
        let token: Vec<String> = token.iter().map(ToString::to_string).collect();
        assert_eq!(
            Audience::accept(&token, base),
            expected.map_err(String::from),
            "accept {token:?} at {base}"
        );
    }

    #[test]
    fn accept() {
        check_accept(&[OWN], OWN, Ok(()));
        check_accept(&["https://hestia.test/fhir/r4/"], OWN, Ok(()));
        check_accept(&[OWN], "https://hestia.test/fhir/r4/", Ok(()));
        check_accept(&[OTHER, OWN], OWN, Ok(()));
        check_accept(
            &[OTHER, "https://x.test"],
            OWN,
            Err(
                "audience [https://other.test/fhir/, https://x.test] does not include https://hestia.test/fhir/r4",
            ),
        );
        check_accept(
            &[],
            OWN,
            Err("audience [] does not include https://hestia.test/fhir/r4"),
        );
        check_accept(
            &["https://hestia.test/fhir/r4/Patient"],
            OWN,
            Err(
                "audience [https://hestia.test/fhir/r4/Patient] does not include https://hestia.test/fhir/r4",
            ),
        );
    }
}
