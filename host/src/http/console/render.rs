//! The console's templates (`host/templates/admin/`), compiled into the binary and
//! rendered with minijinja; `.html` templates escape every value.

use std::sync::OnceLock;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use minijinja::Environment;

macro_rules! templates {
    ($($name:literal),* $(,)?) => {
        &[$(($name, include_str!(concat!("../../../templates/admin/", $name)))),*]
    };
}

const TEMPLATES: &[(&str, &str)] = templates!(
    "base.html",
    "signin.html",
    "message.html",
    "dashboard.html",
    "clients.html",
    "client_form.html",
    "client_new.html",
    "client.html",
    "secret.html",
    "users.html",
    "user.html",
    "registration_tokens.html",
    "keys.html",
    "plugins.html",
    "explain.html",
    "activity.html",
);

pub const STYLE: &str = include_str!("../../../templates/admin/console.css");
pub const SCRIPT: &str = include_str!("../../../templates/admin/console.js");

/// Scripts and styles come only from the console's own files; forms post only to it.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

fn environment() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        for (name, source) in TEMPLATES {
            env.add_template(name, source)
                .unwrap_or_else(|e| panic!("template {name}: {e}"));
        }
        env
    })
}

/// A serializable value as a template value.
pub fn ser<T: serde::Serialize>(value: &T) -> minijinja::Value {
    minijinja::Value::from(minijinja::value::Serde(value))
}

/// A page from template `name` with `context`, as an HTML response with the console's
/// security headers; never cached.
pub fn page(status: StatusCode, name: &str, context: minijinja::Value) -> Response {
    let body = environment()
        .get_template(name)
        .and_then(|t| t.render(context));
    let (status, body) = match body {
        Ok(body) => (status, body),
        Err(e) => {
            tracing::error!(template = name, error = %e, "a console page cannot be rendered");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page cannot be shown; the server log has the cause".to_string(),
            )
        }
    };
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    super::super::oauth::no_store(&mut resp);
    resp
}

/// The stylesheet and the script, cacheable for an hour.
pub fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_template_compiles() {
        let env = super::environment();
        for (name, _) in super::TEMPLATES {
            env.get_template(name).unwrap();
        }
    }
}
