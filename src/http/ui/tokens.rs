//! API tokens: create (the secret shown once), list, revoke.

use actix_web::{HttpResponse, web};
use askama::Template;

use super::Control;
use super::forms::{Errors, Fields};
use super::{Admin, AdminForm, Layout, UiError, blocking, render_checked, see_other};
use crate::auth::NewToken;
use crate::control::{is_valid_id, parse_rfc3339};
use crate::store::Scope;

/// A token as listed: never its secret or hash.
pub struct Line {
    pub id: String,
    pub name: String,
    pub scopes: String,
    pub gateways: String,
    pub created_at: String,
    pub last_used: String,
    pub expires_at: String,
    pub rate_limit: String,
    pub limits: String,
    pub revoked: bool,
}

/// A token's budget (with its spend so far), token rate and allow-lists, in one line.
fn limits_line(t: &crate::store::TokenRecord, (spent, reserved): (f64, f64)) -> String {
    let l = &t.limits;
    let mut parts = Vec::new();
    if let Some(b) = l.budget_usd {
        let period = l.budget_period.unwrap_or(crate::gateway::budget::DEFAULT_BUDGET_PERIOD);
        parts.push(format!("${spent:.4} spent (+${reserved:.4} reserved) of ${b} per {period} s"));
    }
    if let Some(n) = l.tokens_per_minute {
        parts.push(format!("{n} tokens/min"));
    }
    if !l.allowed_providers.is_empty() {
        parts.push(format!("providers {}", l.allowed_providers.join(", ")));
    }
    if !l.allowed_models.is_empty() {
        parts.push(format!("models {}", l.allowed_models.join(", ")));
    }
    if parts.is_empty() { "none".into() } else { parts.join("; ") }
}

#[derive(Template)]
#[template(path = "tokens.html")]
struct TokensPage {
    page: Layout,
    tokens: Vec<Line>,
    v: Fields,
    errors: Errors,
    created: Option<(String, String)>,
}

async fn page(
    who: &Admin,
    gw: &Control,
    v: Fields,
    errors: Errors,
    created: Option<(String, String)>,
) -> Result<HttpResponse, UiError> {
    let mut list = blocking(gw, |s| Ok(s.tokens()?)).await?;
    list.sort_by(|a, b| b.created_at.cmp(&a.created_at));
    let mut usage = Vec::with_capacity(list.len());
    for t in &list {
        let key = crate::gateway::budget::token_budget_key(&t.id);
        usage.push(if t.limits.budget_usd.is_some() {
            gw.spend.usage(&key, gw.clock.now_ms()).await
        } else {
            (0.0, 0.0)
        });
    }
    let tokens = list
        .iter()
        .zip(usage)
        .map(|(t, usage)| Line {
            id: t.id.clone(),
            name: t.name.clone(),
            scopes: t.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
            gateways: if t.gateways.is_empty() { "all".into() } else { t.gateways.join(", ") },
            created_at: t.created_at.clone(),
            last_used: t.last_used_at.clone().unwrap_or_else(|| "never".into()),
            expires_at: t.expires_at.clone().unwrap_or_else(|| "never".into()),
            rate_limit: match (t.rate_limit, t.rate_limit_interval) {
                (Some(n), Some(s)) => format!("{n} / {s} s"),
                _ => "none".into(),
            },
            limits: limits_line(t, usage),
            revoked: t.revoked_at.is_some(),
        })
        .collect();
    let valid = errors.is_empty();
    let resp =
        render_checked(valid, &TokensPage { page: Layout::new(who, "tokens", "Tokens"), tokens, v, errors, created })?;
    Ok(resp)
}

/// `GET /admin/tokens`
pub async fn list(who: Admin, gw: Control) -> Result<HttpResponse, UiError> {
    let mut v = Fields::default();
    v.set("scope", "run");
    page(&who, &gw, v, Errors::default(), None).await
}

fn parse_new(f: &Fields, errors: &mut Errors) -> Option<NewToken> {
    let name = f.get("name").to_string();
    if name.is_empty() || name.len() > 128 {
        errors.add("name", "must be 1-128 characters");
    }
    let mut scopes = Vec::new();
    for s in f.all("scope") {
        match s {
            "run" => scopes.push(Scope::Run),
            "read" => scopes.push(Scope::Read),
            "edit" => scopes.push(Scope::Edit),
            _ => errors.add("scope", "choose among run, read and edit"),
        }
    }
    if scopes.is_empty() {
        errors.add("scope", "choose at least one scope");
    }
    let gateways: Vec<String> =
        f.get("gateways").split([',', ' ']).map(str::trim).filter(|g| !g.is_empty()).map(String::from).collect();
    if gateways.iter().any(|g| !is_valid_id(g)) {
        errors.add("gateways", "gateway ids, separated by commas (empty: all gateways)");
    }
    let expires_at = match f.get("expires_at") {
        "" => None,
        v => {
            let t = if v.len() == 16 { format!("{v}:00Z") } else { v.to_string() };
            if parse_rfc3339(&t).is_none() {
                errors.add("expires_at", "a date and time (UTC)");
            }
            Some(t)
        }
    };
    let rate_limit = match (f.get("rate_limit"), f.get("rate_limit_interval")) {
        ("", "") => None,
        (n, s) => match (n.parse::<u64>(), s.parse::<u64>()) {
            (Ok(n), Ok(s)) if n > 0 && s > 0 => Some((n, s)),
            _ => {
                errors.add("rate_limit", "both the number of requests and the interval, as positive whole numbers");
                None
            }
        },
    };
    let number = |name: &str, errors: &mut Errors| -> Option<f64> {
        match f.get(name).trim() {
            "" => None,
            v => v.parse::<f64>().ok().filter(|n| n.is_finite() && *n >= 0.0).or_else(|| {
                errors.add(name, "a number ≥ 0 (or empty)");
                None
            }),
        }
    };
    let list = |name: &str| -> Vec<String> {
        f.get(name).split([',', ' ']).map(str::trim).filter(|g| !g.is_empty()).map(String::from).collect()
    };
    #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "validated whole numbers")]
    let whole = |v: Option<f64>| v.map(|n| n as u64);
    let limits = crate::store::TokenLimits {
        budget_usd: number("budget_usd", errors),
        budget_period: whole(number("budget_period", errors)),
        tokens_per_minute: whole(number("tokens_per_minute", errors)),
        allowed_providers: list("allowed_providers"),
        allowed_models: list("allowed_models"),
    };
    let new = NewToken { name, scopes, gateways, expires_at, rate_limit, limits };
    if errors.is_empty()
        && let Err((field, reason)) = new.validate()
    {
        errors.add(if field == "scopes" { "scope" } else { field }, &reason);
    }
    errors.is_empty().then_some(new)
}

/// `POST /admin/tokens`: the page that follows shows the secret, once.
pub async fn create(gw: Control, AdminForm { who, form: f }: AdminForm) -> Result<HttpResponse, UiError> {
    let mut errors = Errors::default();
    let Some(new) = parse_new(&f, &mut errors) else {
        return page(&who, &gw, f, errors, None).await;
    };
    let (secret, record) = blocking(&gw, move |s| Ok(s.create_token(new)?)).await?;
    tracing::info!(token = %record.id, admin = %who.0.username, "token created from the admin UI");
    let mut v = Fields::default();
    v.set("scope", "run");
    page(&who, &gw, v, Errors::default(), Some((record.name, secret))).await
}

/// `POST /admin/tokens/{id}/revoke`
pub async fn revoke(gw: Control, path: web::Path<String>, _: AdminForm) -> Result<HttpResponse, UiError> {
    let id = path.into_inner();
    let target = id.clone();
    let found = blocking(&gw, move |s| Ok(s.revoke_token(&target)?)).await?;
    if !found {
        return Err(UiError::NotFound(format!("No token '{}'.", id.chars().take(64).collect::<String>())));
    }
    Ok(see_other("/admin/tokens"))
}
