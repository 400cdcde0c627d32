//! Policies that decide what happens to a request and its answer: data-loss prevention and
//! guardrails, compiled per gateway from its settings.

pub mod detectors;
pub mod dlp;
pub mod guardrails;
pub mod route;
pub mod spend;
pub mod stream;

use std::sync::Arc;

use serde_json::Value;

use crate::error::Error;
use crate::store::{DlpProfileRecord, GatewayRecord};

/// A gateway's policies, compiled (kept in the settings snapshot).
#[derive(Debug, Default)]
pub struct GatewayPolicies {
    /// DLP by direction.
    pub dlp: dlp::Dlp,
    /// Guardrails.
    pub guardrails: Option<guardrails::Guardrails>,
    /// Spend limit rules.
    pub spend: Option<Vec<spend::Rule>>,
}

impl GatewayPolicies {
    /// Whether anything applies.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.dlp.request.is_none() && self.dlp.response.is_none() && self.guardrails.is_none() && self.spend.is_none()
    }
}

fn custom_patterns(profiles: &[DlpProfileRecord]) -> Vec<detectors::CustomPattern<'_>> {
    profiles
        .iter()
        .map(|p| detectors::CustomPattern {
            id: &p.id,
            pattern: &p.pattern,
            keywords: &p.keywords,
            proximity: p.proximity,
        })
        .collect()
}

/// Checks a gateway's `dlp` and `guardrails` values against the profiles that exist.
pub fn validate(
    (dlp, guard, spend): (Option<&Value>, Option<&Value>, Option<&Value>),
    profiles: &[DlpProfileRecord],
) -> Result<(), Error> {
    if let Some(v) = spend {
        spend::parse(v)?;
    }
    let ids: Vec<String> = profiles.iter().map(|p| p.id.clone()).collect();
    if let Some(v) = dlp {
        dlp::parse(v, &|id| dlp::profile_exists(id, &ids))?;
    }
    if let Some(v) = guard {
        guardrails::parse(v)?;
    }
    Ok(())
}

/// Compiles a gateway's policies. A setting that no longer compiles (a custom profile deleted
/// under it) fails closed: every request of the gateway is refused until it is fixed.
pub fn compile(gw: &GatewayRecord, profiles: &[DlpProfileRecord]) -> Result<Arc<GatewayPolicies>, String> {
    let ids: Vec<String> = profiles.iter().map(|p| p.id.clone()).collect();
    let dlp = match gw.extra.get("dlp") {
        Some(v) => match dlp::parse(v, &|id| dlp::profile_exists(id, &ids)).map_err(|e| e.to_string())? {
            Some(policies) => dlp::Dlp::compile(&policies, &custom_patterns(profiles))?,
            None => dlp::Dlp::default(),
        },
        None => dlp::Dlp::default(),
    };
    let guardrails = match gw.extra.get("guardrails") {
        Some(v) => guardrails::parse(v).map_err(|e| e.to_string())?,
        None => None,
    };
    let spend = match gw.extra.get("spend_limits") {
        Some(v) => spend::parse(v).map_err(|e| e.to_string())?,
        None => None,
    };
    Ok(Arc::new(GatewayPolicies { dlp, guardrails, spend }))
}
