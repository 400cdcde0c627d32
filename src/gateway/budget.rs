//! Spend limits and token budgets around a step: the token's allow-lists, then the worst-case
//! cost reserved against every spend rule and budget that applies (and the worst-case tokens
//! against the token's tokens-per-minute), settled when the answer's usage arrives
//! (`LogTap::finish`), released when the request fails. See [`crate::policy::spend`].

use std::sync::Arc;

use serde_json::Value;

use super::Gateway;
use super::step::{Run, Step};
use crate::cluster::{Admission, Held as Reservation, Refusal};
use crate::error::Error;
use crate::policy::GatewayPolicies;
use crate::policy::spend::{Claim, Subject};
use crate::providers::prices::{self, PerToken};
use crate::providers::usage::{Usage, model_from_path};
use crate::store::{TokenRecord, glob};
use crate::time::Clock;

/// A token budget's window when none is given: 30 days.
pub const DEFAULT_BUDGET_PERIOD: u64 = 30 * 86_400;

/// The ledger key of a token's budget.
#[must_use]
pub fn token_budget_key(id: &str) -> String {
    format!("token:{id}|budget")
}

fn tpm_key(id: &str) -> String {
    format!("token:{id}|tpm")
}

/// What one step holds: its reservations, settled or released with its log.
pub struct Held {
    usd: Option<Reservation>,
    tokens: Option<Reservation>,
    clock: Arc<Clock>,
}

impl Held {
    /// Settles to what the answer cost (`success`), or releases everything (a failed answer
    /// is not billed). An unknown cost keeps the worst case reserved as spent.
    pub fn settle(mut self, success: bool, cost: Option<f64>, tokens: Option<u64>) {
        let now = self.clock.now_ms();
        if !success {
            return; // dropping the reservations releases them
        }
        if let Some(r) = self.usd.take() {
            r.settle(cost, now);
        }
        if let Some(r) = self.tokens.take() {
            #[expect(clippy::cast_precision_loss, reason = "token counts are far below 2^52")]
            r.settle(tokens.map(|t| t as f64), now);
        }
    }
}

/// The most output tokens the request allows (the field each wire format names it with).
fn max_output_tokens(body: &Value) -> Option<u64> {
    [
        "/max_tokens",
        "/max_completion_tokens",
        "/max_output_tokens",
        "/max_new_tokens",
        "/generationConfig/maxOutputTokens",
        "/inferenceConfig/maxTokens",
        "/parameters/max_new_tokens",
    ]
    .iter()
    .find_map(|p| body.pointer(p).and_then(Value::as_u64))
}

fn model_allowed(t: &TokenRecord, provider: &str, models: &[String]) -> bool {
    let allowed = &t.limits.allowed_models;
    allowed.is_empty()
        || models.iter().any(|m| {
            let bare = m.split_once('/').filter(|(p, _)| *p == provider).map_or(m.as_str(), |(_, b)| b);
            let qualified = format!("{provider}/{bare}");
            allowed.iter().any(|g| glob(g, m) || glob(g, bare) || glob(g, &qualified))
        })
}

impl Gateway {
    /// Checks the token's allow-lists and reserves the step's worst case against every spend
    /// rule and budget that applies; the refusal otherwise (429, code 2045).
    pub(crate) async fn admit_spend(
        &self,
        run: &Run<'_>,
        step: &Step,
        body: &[u8],
        policies: Option<&GatewayPolicies>,
    ) -> Result<Option<Held>, Error> {
        let rules = policies.and_then(|p| p.spend.as_deref()).filter(|_| run.checks);
        let token = run.token.filter(|_| run.checks);
        let plain_token = token.is_none_or(|t| t.limits == crate::store::TokenLimits::default());
        if rules.is_none() && plain_token && step.budgets.is_empty() {
            return Ok(None);
        }
        let provider = step.target.provider.as_str();
        let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let model = step
            .body_model
            .as_deref()
            .map(str::to_string)
            .or_else(|| model_from_path(step.target.model_in_path, &step.rest));
        let mut names: Vec<String> = step.requested_model.iter().cloned().collect();
        names.extend(model.clone());
        if let Some(t) = token {
            let l = &t.limits;
            if !l.allowed_providers.is_empty() && !l.allowed_providers.iter().any(|g| glob(g, provider)) {
                return Err(Error::NotAllowed(format!("this token may not use provider '{provider}'")));
            }
            if !model_allowed(t, provider, &names) {
                let shown = names.first().map_or("(no model named)", String::as_str);
                return Err(Error::NotAllowed(format!("this token may not use model '{shown}'")));
            }
        }
        let max_out = max_output_tokens(&parsed).unwrap_or(self.config().spend.default_max_output_tokens);
        // Every token is at least one byte of the body: an upper bound on the input.
        let tokens_in = body.len() as u64;
        let worst = Usage { tokens_in, tokens_out: max_out, reported: true, ..Usage::default() };
        let custom = step.options.custom_cost.as_ref().map(|c| PerToken {
            input: c.per_token_in,
            output: c.per_token_out,
            cache_read: c.per_cache_read_token,
            cache_write: c.per_cache_write_token,
        });
        let cost = prices::cost(provider, model.as_deref(), &worst, custom);
        let metadata: Vec<(String, String)> = step
            .options
            .metadata
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_string)))
            .collect();
        let subject = Subject { provider, model: names.first().map(String::as_str), metadata: &metadata };
        let mut claims = Vec::new();
        for rule in rules.into_iter().flatten() {
            if let Some(key) = rule.bucket(&format!("gateway:{}", run.gw.id), &subject) {
                let what =
                    format!("{} for {provider} {}", rule.describe(), model.as_deref().unwrap_or("(unknown model)"));
                claims.push(Claim { key, limit: rule.limit, window: rule.window, sliding: rule.sliding, label: what });
            }
        }
        claims.extend(step.budgets.iter().cloned());
        if let Some(t) = token
            && let Some(limit) = t.limits.budget_usd
        {
            let window = t.limits.budget_period.unwrap_or(DEFAULT_BUDGET_PERIOD);
            let label = format!("the token's budget (${limit} per {window}s)");
            claims.push(Claim { key: token_budget_key(&t.id), limit, window, sliding: true, label });
        }
        let now = self.clock.now_ms();
        // Limits count models with a known price (as Cloudflare's do).
        let usd = self.reserve_usd(run, &claims, cost, now).await?;
        let tokens = match token.and_then(|t| t.limits.tokens_per_minute.map(|n| (t, n))) {
            Some((t, n)) => {
                #[expect(clippy::cast_precision_loss, reason = "token counts are far below 2^52")]
                let (limit, amount) = (n as f64, (tokens_in + max_out) as f64);
                let claim = Claim {
                    key: tpm_key(&t.id),
                    limit,
                    window: 60,
                    sliding: true,
                    label: format!("the token's {n} tokens per minute"),
                };
                Some(self.spend.reserve(&[claim], amount, now).await.map_err(|e| match e {
                    Refusal::Exceeded(e) => Error::SpendLimited {
                        message: format!(
                            "Token rate exceeded: {} (this request may use up to {} tokens)",
                            e.label,
                            tokens_in + max_out
                        ),
                        retry_after_secs: e.retry_after_secs,
                    },
                    Refusal::Unavailable => Error::LimitsUnavailable,
                })?)
            }
            None => None,
        };
        Ok(Some(Held { usd, tokens, clock: Arc::clone(&self.clock) }))
    }

    /// The step's worst case in every spend bucket (with a put-off rate check: one round trip).
    async fn reserve_usd(
        &self,
        run: &Run<'_>,
        claims: &[Claim],
        cost: Option<f64>,
        now: u64,
    ) -> Result<Option<Reservation>, Error> {
        let refused = |e: Refusal| match e {
            Refusal::Exceeded(e) => Error::SpendLimited {
                message: format!("Spend limit exceeded: {}", e.label),
                retry_after_secs: e.retry_after_secs,
            },
            Refusal::Unavailable => Error::LimitsUnavailable,
        };
        Ok(match (cost, run.rate.and_then(super::access::DeferredRate::take)) {
            // The put-off rate check and the reservation: one round trip.
            (Some(amount), Some(rate)) if !claims.is_empty() => {
                Some(self.spend.reserve_with_rate(&self.limiter, &rate, (claims, amount), now).await.map_err(|e| {
                    match e {
                        Admission::RateLimited(ms) => Error::RateLimited { retry_after_secs: ms.div_ceil(1000).max(1) },
                        Admission::Spend(e) => refused(e),
                    }
                })?)
            }
            (_, Some(rate)) => {
                self.check_rate(&rate).await?;
                None
            }
            (Some(amount), None) if !claims.is_empty() => {
                Some(self.spend.reserve(claims, amount, now).await.map_err(refused)?)
            }
            _ => None,
        })
    }
}
