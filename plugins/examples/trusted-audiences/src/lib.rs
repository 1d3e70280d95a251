//! An audience rule with a configured list of trusted audiences: besides this server's
//! FHIR base URL, tokens may be issued for and accepted with any audience of `trusted`
//! (for example an API gateway in front of several FHIR servers).
//!
//! Configuration: `{"trusted": ["https://gateway.example/fhir", ...]}`.

use hestia_sdk::{AudienceRequest, AudienceRule, same_url};
use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct Config {
    trusted: Vec<String>,
}

pub struct TrustedAudiences;

impl AudienceRule for TrustedAudiences {
    fn resolve(request: &AudienceRequest) -> Result<Vec<String>, String> {
        let config: Config = hestia_sdk::config().map_err(|e| e.to_string())?;
        if request.requested().is_empty() {
            return request
                .own_base_url()
                .map(|own| vec![own.to_string()])
                .ok_or_else(|| "no resource server is registered".to_string());
        }
        let allowed = || request.known().iter().chain(&config.trusted);
        request
            .requested()
            .iter()
            .map(|aud| {
                allowed()
                    .find(|a| same_url(a, aud))
                    .cloned()
                    .ok_or_else(|| {
                        format!(
                            "audience {aud} is neither a registered resource server nor trusted"
                        )
                    })
            })
            .collect()
    }

    fn accept(token_audiences: &[String], server_base_url: &str) -> Result<(), String> {
        let config: Config = hestia_sdk::config().map_err(|e| e.to_string())?;
        let acceptable = |aud: &String| {
            same_url(aud, server_base_url) || config.trusted.iter().any(|t| same_url(t, aud))
        };
        if token_audiences.iter().any(acceptable) {
            Ok(())
        } else {
            hestia_sdk::log::info(format!("refused audiences {token_audiences:?}"));
            Err(format!(
                "audience [{}] includes neither {server_base_url} nor a trusted audience",
                token_audiences.join(", ")
            ))
        }
    }
}

hestia_sdk::export_audience_rule!(TrustedAudiences);

#[cfg(test)]
mod tests {
    use hestia_sdk::testing::{self, audience_request};
    use hestia_sdk::{AudienceRule, Level, json};

    use super::TrustedAudiences;

    const OWN: &str = "https://hestia.test/fhir/r4";
    const GATEWAY: &str = "https://gateway.test/fhir";

    #[test]
    fn trusted_audiences_are_issued_and_accepted() {
        testing::set_config(json!({"trusted": [GATEWAY]}));
        assert_eq!(
            TrustedAudiences::resolve(&audience_request([format!("{GATEWAY}/")], [OWN])),
            Ok(vec![GATEWAY.to_string()])
        );
        assert_eq!(
            TrustedAudiences::resolve(&audience_request(Vec::<String>::new(), [OWN])),
            Ok(vec![OWN.to_string()])
        );
        assert_eq!(
            TrustedAudiences::resolve(&audience_request(["https://evil.test"], [OWN])),
            Err(
                "audience https://evil.test is neither a registered resource server nor trusted"
                    .to_string()
            )
        );
        assert_eq!(
            TrustedAudiences::accept(&[GATEWAY.to_string()], OWN),
            Ok(())
        );
        assert_eq!(TrustedAudiences::accept(&[OWN.to_string()], OWN), Ok(()));
        assert_eq!(
            TrustedAudiences::accept(&["https://evil.test".to_string()], OWN),
            Err(format!(
                "audience [https://evil.test] includes neither {OWN} nor a trusted audience"
            ))
        );
        assert_eq!(
            testing::take_logs(),
            [(
                Level::Info,
                "refused audiences [\"https://evil.test\"]".to_string()
            )]
        );
        testing::clear_config();
    }

    #[test]
    fn without_configuration_only_this_server() {
        assert_eq!(
            TrustedAudiences::accept(&[GATEWAY.to_string()], OWN),
            Err(format!(
                "audience [{GATEWAY}] includes neither {OWN} nor a trusted audience"
            ))
        );
    }
}
