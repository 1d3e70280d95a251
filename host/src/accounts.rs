//! `hestia user` and `hestia policy`: accounts, their roles and access policies, on the
//! store the configuration names (also while `serve` runs). `list` and `show` print a
//! table or text for people, and JSON with `--json` for scripts.

use std::path::Path;

use anyhow::{Context, bail};
use serde_json::json;

use crate::rights::Rights;
use crate::store::{
    Bindings, NewUser, Store, StoredPolicy, UserUpdate, UserWithRoles, checked_roles,
};

/// Columns padded to their widest cell, two spaces apart.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn or_dash(list: &[String]) -> String {
    if list.is_empty() {
        "-".into()
    } else {
        list.join(", ")
    }
}

fn user_json(u: &UserWithRoles) -> serde_json::Value {
    json!({
        "id": u.user.id,
        "username": u.user.username,
        "fhir_user": u.user.fhir_user,
        "roles": u.roles,
        "created_at": u.user.created_at,
    })
}

/// `hestia user add`: the account, then its roles; prints it as JSON.
pub async fn add_user(
    store: &Store,
    new: NewUser,
    roles: &[String],
) -> anyhow::Result<serde_json::Value> {
    // Checked first, so that a bad role creates no account.
    let roles = checked_roles(roles)?;
    let username = new.username.clone();
    store.create_user(new).await?;
    let user = store
        .update_user(
            &username,
            UserUpdate {
                roles: Some(roles),
                fhir_user: None,
            },
        )
        .await?;
    Ok(user_json(&user))
}

/// `hestia user set`: prints what the account is now.
pub async fn set_user(store: &Store, username: &str, update: UserUpdate) -> anyhow::Result<String> {
    if update.roles.is_none() && update.fhir_user.is_none() {
        bail!("nothing to change: give --role, --no-roles, --fhir-user or --no-fhir-user");
    }
    let user = store.update_user(username, update).await?;
    Ok(format!(
        "user {}: fhir user {}, roles {}\n",
        user.user.username,
        user.user.fhir_user.as_deref().unwrap_or("-"),
        or_dash(&user.roles)
    ))
}

pub async fn list_users(store: &Store, as_json: bool) -> anyhow::Result<String> {
    let users = store.list_users().await?;
    if as_json {
        let all: Vec<_> = users.iter().map(user_json).collect();
        return Ok(serde_json::to_string_pretty(&all)? + "\n");
    }
    let rows: Vec<Vec<String>> = users
        .iter()
        .map(|u| {
            vec![
                u.user.username.clone(),
                u.user.fhir_user.clone().unwrap_or_else(|| "-".into()),
                or_dash(&u.roles),
            ]
        })
        .collect();
    Ok(table(&["USERNAME", "FHIR USER", "ROLES"], &rows))
}

/// `hestia user show`: the account and its effective rights.
pub async fn show_user(store: &Store, username: &str, as_json: bool) -> anyhow::Result<String> {
    let Some(user) = store.find_user(username).await? else {
        bail!("no user named {username:?}");
    };
    let rights = store.rights_of(&user.id).await?;
    let account = UserWithRoles {
        roles: rights.roles.clone(),
        user,
    };
    if as_json {
        let mut out = user_json(&account);
        out["rights"] = serde_json::to_value(&rights)?;
        return Ok(serde_json::to_string_pretty(&out)? + "\n");
    }
    let u = &account.user;
    let mut out = format!(
        "username:   {}\nid:         {}\nfhir user:  {}\nroles:      {}\n",
        u.username,
        u.id,
        u.fhir_user.as_deref().unwrap_or("-"),
        or_dash(&account.roles),
    );
    out.push_str(&describe_rights(&rights));
    Ok(out)
}

/// The effective rights in lines of text.
fn describe_rights(rights: &Rights) -> String {
    let grants: Vec<String> = rights.grants.iter().map(|g| g.to_string()).collect();
    let mut out = format!(
        "policies:   {}\ngrants:     {}\n",
        or_dash(&rights.policies),
        if grants.is_empty() {
            "none: no FHIR data through user/ or patient/ scopes".to_string()
        } else {
            grants.join(" ")
        }
    );
    if let Some(patient) = &rights.fhir_user_compartment {
        out.push_str(&format!(
            "within:     the Patient compartment of Patient/{patient} (the account's fhirUser)\n"
        ));
    }
    for note in &rights.notes {
        out.push_str(&format!("note:       {note}\n"));
    }
    out
}

/// `hestia user remove`.
pub async fn remove_user(store: &Store, username: &str) -> anyhow::Result<String> {
    let user = store.remove_user(username).await?;
    Ok(format!(
        "removed user {} ({}); its grants, refresh tokens and access tokens are revoked\n",
        user.username, user.id
    ))
}

fn describe_bindings(b: &Bindings) -> String {
    let mut parts = Vec::new();
    if !b.roles.is_empty() {
        parts.push(format!("role {}", b.roles.join(", role ")));
    }
    if !b.users.is_empty() {
        parts.push(format!("user {}", b.users.join(", user ")));
    }
    parts.join(", ")
}

/// `hestia policy add FILE`: says whether it added or replaced, and what it is attached to.
pub async fn add_policy(
    store: &Store,
    file: &Path,
    bindings: Option<Bindings>,
) -> anyhow::Result<String> {
    let source =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let change = store
        .put_policy(&file.display().to_string(), &source, bindings.as_ref())
        .await?;
    let verb = if change.replaced {
        "replaced the document of"
    } else {
        "added"
    };
    let attached = describe_bindings(&change.bindings);
    let tail = match (attached.is_empty(), change.bindings_set || !change.replaced) {
        (true, _) => format!(
            "not attached to any role or account yet: hestia policy attach {} --role ROLE | --user NAME",
            change.name
        ),
        (false, true) => format!("attached to {attached}"),
        (false, false) => format!("kept its bindings: {attached}"),
    };
    Ok(format!("{verb} policy {}; {tail}\n", change.name))
}

/// `hestia policy attach | detach`.
pub async fn bind_policy(
    store: &Store,
    name: &str,
    bindings: Bindings,
    detach: bool,
) -> anyhow::Result<String> {
    if bindings.is_empty() {
        bail!("give at least one --role ROLE or --user NAME");
    }
    let after = store.bind_policy(name, &bindings, detach).await?;
    let now = describe_bindings(&after);
    Ok(format!(
        "{} policy {name} {} {}; now attached to {}\n",
        if detach { "detached" } else { "attached" },
        if detach { "from" } else { "to" },
        describe_bindings(&bindings),
        if now.is_empty() { "nothing" } else { &now }
    ))
}

pub async fn list_policies(store: &Store, as_json: bool) -> anyhow::Result<String> {
    let policies = store.list_policies().await?;
    if as_json {
        return Ok(serde_json::to_string_pretty(&policies)? + "\n");
    }
    let rows: Vec<Vec<String>> = policies
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                if p.built_in { "built-in" } else { "stored" }.into(),
                or_dash(&p.bindings.roles),
                or_dash(&p.bindings.users),
                p.description.clone().unwrap_or_default(),
            ]
        })
        .collect();
    Ok(table(
        &["NAME", "KIND", "ROLES", "USERS", "DESCRIPTION"],
        &rows,
    ))
}

/// `hestia policy show`: the document as stored, its bindings as comments above it (so
/// the output can be added again as it is).
pub async fn show_policy(store: &Store, name: &str, as_json: bool) -> anyhow::Result<String> {
    let Some(policy) = store.get_policy(name).await? else {
        bail!("no policy named {name:?}");
    };
    if as_json {
        return Ok(serde_json::to_string_pretty(&policy)? + "\n");
    }
    Ok(policy_text(&policy))
}

fn policy_text(p: &StoredPolicy) -> String {
    let mut out = format!(
        "# policy {} ({})\n",
        p.name,
        if p.built_in {
            "built-in".to_string()
        } else {
            format!(
                "stored, updated {}",
                p.updated_at
                    .and_then(|t| u64::try_from(t).ok())
                    .map(|t| httpdate::fmt_http_date(
                        std::time::UNIX_EPOCH + std::time::Duration::from_secs(t)
                    ))
                    .unwrap_or_default()
            )
        }
    );
    out.push_str(&format!("# roles: {}\n", or_dash(&p.bindings.roles)));
    out.push_str(&format!("# users: {}\n", or_dash(&p.bindings.users)));
    out.push_str(&p.source);
    if !p.source.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// `hestia policy remove`.
pub async fn remove_policy(store: &Store, name: &str) -> anyhow::Result<String> {
    store.remove_policy(name).await?;
    Ok(format!("removed policy {name} and its bindings\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["A", "LONGER"],
            &[
                vec!["wide cell".into(), "x".into()],
                vec!["b".into(), "".into()],
            ],
        );
        assert_eq!(t, "A          LONGER\nwide cell  x\nb\n");
    }
}
