//! The server-rendered pages of the authorization endpoint: sign-in, consent and errors.
//! Every value is HTML-escaped; pages load nothing from elsewhere.

use crate::oauth::authorize::{ConsentPage, LoginPage};
use crate::oauth::picker::PatientList;
use crate::oauth::{CONSENT_PATH, LOGIN_PATH};

/// Escapes text for HTML element content and double-quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;background:#f4f5f7;margin:0}\
main{max-width:28rem;margin:3rem auto;background:#fff;padding:2rem;border-radius:8px;box-shadow:0 1px 4px #0002}\
h1{font-size:1.3rem;margin-top:0}label{display:block;margin:.8rem 0 .3rem}\
input[type=text],input[type=password]{width:100%;padding:.5rem;box-sizing:border-box}\
button{padding:.6rem 1.2rem;margin:1rem .5rem 0 0}.error{background:#fdecea;color:#611a15;padding:.7rem;border-radius:4px}\
.scope{display:flex;gap:.6rem;align-items:flex-start;margin:.6rem 0}.scope code{color:#555;font-size:.85em}\
.muted{color:#555;font-size:.9em}";

fn layout(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{} – Hestia</title><style>{STYLE}</style></head><body><main>{body}</main></body></html>\n",
        escape(title)
    )
}

fn error_box(error: &Option<String>) -> String {
    error
        .as_ref()
        .map(|e| {
            format!(
                "<p class=\"error\" role=\"alert\" id=\"error\">{}</p>",
                escape(e)
            )
        })
        .unwrap_or_default()
}

pub fn login(p: &LoginPage) -> String {
    layout(
        "Sign in",
        &format!(
            "<h1>Sign in</h1><p class=\"muted\"><strong>{client}</strong> asks to use your account.</p>{error}\
<form method=\"post\" action=\"{LOGIN_PATH}\" id=\"login\">\
<input type=\"hidden\" name=\"request_id\" value=\"{rid}\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
<label for=\"username\">Username</label><input type=\"text\" id=\"username\" name=\"username\" value=\"{user}\" autocomplete=\"username\" required autofocus>\
<label for=\"password\">Password</label><input type=\"password\" id=\"password\" name=\"password\" autocomplete=\"current-password\" required>\
<button type=\"submit\" id=\"sign-in\">Sign in</button></form>",
            client = escape(&p.client_name),
            error = error_box(&p.error),
            rid = escape(&p.request_id),
            csrf = escape(&p.csrf),
            user = escape(&p.username),
        ),
    )
}

pub fn consent(p: &ConsentPage) -> String {
    let mut scopes = String::new();
    for (i, (scope, words)) in p.scopes.iter().enumerate() {
        scopes.push_str(&format!(
            "<div class=\"scope\"><input type=\"checkbox\" name=\"scope\" id=\"scope-{i}\" value=\"{v}\" checked>\
<label for=\"scope-{i}\" style=\"margin:0\">{w}<br><code>{v}</code></label></div>",
            v = escape(scope),
            w = escape(words),
        ));
    }
    let (search_form, picker) = match (&p.patients, p.patient_picker) {
        (_, false) => (String::new(), String::new()),
        (None, true) => (
            String::new(),
            "<label for=\"patient\">Patient (id of the patient record this app will work with)</label>\
<input type=\"text\" id=\"patient\" name=\"patient\" placeholder=\"e.g. 123\">\
<p class=\"muted\" id=\"patient-note\">This server does not hold the patient records (it serves no FHIR), so it cannot list them or check the id: enter it as the FHIR server knows it.</p>"
                .to_string(),
        ),
        (Some(list), true) => patient_picker(&p.request_id, list),
    };
    let audiences = p
        .audiences
        .iter()
        .map(|a| format!("<code>{}</code>", escape(a)))
        .collect::<Vec<_>>()
        .join(", ");
    layout(
        "Allow access",
        &format!(
            "<h1>Allow {client} to:</h1><p class=\"muted\">Signed in as {user}. Untick anything you do not want to allow.</p>{error}{search_form}\
<form method=\"post\" action=\"{CONSENT_PATH}\" id=\"consent\">\
<input type=\"hidden\" name=\"request_id\" value=\"{rid}\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
{reach}{scopes}{picker}<p class=\"muted\">Data served by: {audiences}</p>\
<button type=\"submit\" name=\"decision\" value=\"approve\" id=\"approve\">Allow</button>\
<button type=\"submit\" name=\"decision\" value=\"deny\" id=\"deny\">Deny</button></form>",
            client = escape(&p.client_name),
            user = escape(&p.username),
            error = error_box(&p.error),
            reach = p
                .reach
                .as_deref()
                .map(|r| format!("<p id=\"reach\"><strong>{}</strong></p>", escape(r)))
                .unwrap_or_default(),
            rid = escape(&p.request_id),
            csrf = escape(&p.csrf),
        ),
    )
}

/// The consent page's patient search form and picker (radio buttons of the patients
/// listed, and what was left out).
fn patient_picker(request_id: &str, list: &PatientList) -> (String, String) {
    let search_form = format!(
        "<form method=\"get\" action=\"{CONSENT_PATH}\" id=\"patient-search\">\
<input type=\"hidden\" name=\"request_id\" value=\"{rid}\">\
<label for=\"patient_search\">Find a patient by name</label>\
<input type=\"text\" id=\"patient_search\" name=\"patient_search\" value=\"{search}\">\
<button type=\"submit\" id=\"search\">Search</button></form>",
        rid = escape(request_id),
        search = escape(&list.search),
    );
    let mut picker =
        String::from("<fieldset id=\"patients\"><legend>Patient this app will work with</legend>");
    if list.limited {
        picker.push_str(
            "<p class=\"muted\" id=\"patients-limited\">Only the patients your account may access are listed.</p>",
        );
    }
    for (i, patient) in list.patients.iter().enumerate() {
        picker.push_str(&format!(
            "<div class=\"scope\"><input type=\"radio\" name=\"patient\" id=\"patient-{i}\" value=\"{id}\">\
<label for=\"patient-{i}\" style=\"margin:0\">{name}{born}<br><code>Patient/{id}</code></label></div>",
            id = escape(&patient.id),
            name = escape(&patient.name),
            born = patient
                .birth_date
                .as_ref()
                .map(|b| format!(", born {}", escape(b)))
                .unwrap_or_default(),
        ));
    }
    let shown = list.patients.len() as i64;
    if shown == 0 {
        picker.push_str(&if list.search.is_empty() && list.limited {
            "<p class=\"muted\" id=\"no-patients\">Your account may not access any patient's records here; untick the patient permission above.</p>".to_string()
        } else if list.search.is_empty() {
            "<p class=\"muted\" id=\"no-patients\">This server holds no patients.</p>".to_string()
        } else {
            format!(
                "<p class=\"muted\">No patient's name starts with “{}”.</p>",
                escape(&list.search)
            )
        });
    } else if list.total > shown {
        picker.push_str(&format!(
            "<p class=\"muted\">Showing {shown} of {} patients, by name; search by name to find others.</p>",
            list.total
        ));
    }
    picker.push_str(&format!(
        "<input type=\"hidden\" name=\"patient_search\" value=\"{}\"></fieldset>",
        escape(&list.search)
    ));
    (search_form, picker)
}

pub fn error(message: &str) -> String {
    layout(
        "Cannot continue",
        &format!(
            "<h1>This request cannot continue</h1><p class=\"error\" role=\"alert\" id=\"error\">{}</p>\
<p class=\"muted\">Nothing was sent back to the application, because where to send it could not be trusted.</p>",
            escape(message)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
