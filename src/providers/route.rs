//! Mapping `/{provider}/{rest}?{query}` onto the provider's upstream URL.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::template::{check_host_part, check_path_part, printable, render};
use super::{Auth, CUSTOM_CREDENTIAL_HEADERS, ModelInPath, Provider, Shape, WireFormat};
use crate::error::Error;

/// Override of one provider's URL template and template parts.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderOverride {
    /// URL template replacing the built-in one (`{resource}`, `{region}`, ... allowed).
    pub base_url: Option<String>,
    /// Cloudflare account id for `workers-ai` (defaults to the path's account id).
    pub account_id: Option<String>,
}

/// Where a request goes: a built-in provider (maybe overridden) or a custom one.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    /// A row of the registry, with the operator's override if any.
    Builtin(&'static Provider, Option<&'a ProviderOverride>),
    /// An admin-defined `custom-{slug}` provider.
    Custom { slug: &'a str, base_url: &'a str },
}

/// The resolved upstream of one request.
#[derive(Debug, Clone)]
pub struct Target {
    /// Provider slug as used in the URL (`openai`, `custom-vllm`).
    pub provider: String,
    /// Full upstream URL: base, rest path and query.
    pub url: String,
    /// Response format for usage extraction.
    pub format: WireFormat,
    /// Headers that carry the provider credential.
    pub credential_headers: &'static [&'static str],
    /// How a stored key goes upstream (custom providers: a bearer token).
    pub auth: Auth,
    /// Where the path names the model.
    pub model_in_path: ModelInPath,
    /// The AWS region a Bedrock request goes to (what a stored credential signs for).
    pub aws_region: Option<String>,
    /// The provider takes `stream_options.include_usage` (see [`super::Provider`]).
    pub stream_usage_option: bool,
}

fn invalid(part: &'static str, reason: String) -> Error {
    Error::InvalidPath { part, reason }
}

/// Resolves the upstream URL. `rest` and `query` are raw (still percent-encoded) and are
/// forwarded byte for byte; `path_account` is the account id segment of the request path.
pub fn resolve_target(source: Source<'_>, rest: &str, query: &str, path_account: &str) -> Result<Target, Error> {
    check_rest(rest)?;
    let aws_region = match source {
        Source::Builtin(p, _) if p.shape == Shape::Bedrock => rest.split('/').nth(1).map(str::to_string),
        _ => None,
    };
    let (provider, base, rest, row) = match source {
        Source::Custom { slug, base_url } => (format!("custom-{slug}"), Cow::Borrowed(base_url), rest, None),
        Source::Builtin(p, over) => {
            let template = over.and_then(|o| o.base_url.as_deref());
            let (base, rest) = builtin_base(p, over, template, rest, path_account)?;
            (p.slug.to_string(), base, rest, Some(p))
        }
    };
    let format = row.map_or(WireFormat::OpenAi, |p| p.format);
    let credential_headers = row.map_or(CUSTOM_CREDENTIAL_HEADERS, |p| p.credential_headers);
    let auth = row.map_or(Auth::Bearer, |p| p.auth);
    let model_in_path = row.map_or(ModelInPath::No, |p| p.model_in_path);
    let stream_usage_option = row.is_some_and(|p| p.stream_usage_option);
    let rest = drop_duplicate_version(&base, rest);
    // Sized once: base, '/', rest, '?', query.
    let base = base.trim_end_matches('/');
    let mut url = String::with_capacity(base.len() + rest.len() + query.len() + 2);
    url.push_str(base);
    if !rest.is_empty() {
        url.push('/');
        url.push_str(rest);
    }
    if !query.is_empty() {
        url.push('?');
        url.push_str(query);
    }
    Ok(Target { provider, url, format, credential_headers, auth, model_in_path, aws_region, stream_usage_option })
}

/// The base URL (borrowed from the template when nothing is filled in) and the rest of the path.
fn builtin_base<'t, 'r>(
    p: &Provider,
    over: Option<&ProviderOverride>,
    template: Option<&'t str>,
    rest: &'r str,
    path_account: &str,
) -> Result<(Cow<'t, str>, &'r str), Error> {
    let chosen = template.unwrap_or(p.template);
    Ok(match p.shape {
        Shape::Plain => (Cow::Borrowed(chosen), rest),
        Shape::WorkersAi => {
            let account = over.and_then(|o| o.account_id.as_deref()).unwrap_or(path_account);
            check_host_part(account).map_err(|r| invalid("account id", r))?;
            let base = render(chosen, &[("account_id", account)]);
            if rest.starts_with("run/") || rest.starts_with("v1/") || rest == "v1" {
                (Cow::Owned(base), rest)
            } else {
                (Cow::Owned(format!("{base}/run")), rest)
            }
        }
        Shape::Azure => {
            let (resource, after) = rest.split_once('/').unwrap_or((rest, ""));
            let (deployment, op) = after.split_once('/').unwrap_or((after, ""));
            check_host_part(resource).map_err(|r| invalid("azure resource", r))?;
            check_path_part(deployment).map_err(|r| invalid("azure deployment", r))?;
            (Cow::Owned(render(chosen, &[("resource", resource), ("deployment", deployment)])), op)
        }
        Shape::Bedrock => {
            let (service, after) = rest.split_once('/').unwrap_or((rest, ""));
            let (region, op) = after.split_once('/').unwrap_or((after, ""));
            if !matches!(service, "bedrock-runtime" | "bedrock-mantle") {
                return Err(invalid(
                    "bedrock service",
                    format!("'{}' is not bedrock-runtime or bedrock-mantle", printable(service)),
                ));
            }
            check_host_part(region).map_err(|r| invalid("bedrock region", r))?;
            let chosen = match (template, service) {
                (None, "bedrock-mantle") => "https://{service}.{region}.api.aws",
                _ => chosen,
            };
            (Cow::Owned(render(chosen, &[("service", service), ("region", region)])), op)
        }
        Shape::Vertex => {
            let region = rest
                .split('/')
                .skip_while(|s| *s != "locations")
                .nth(1)
                .ok_or_else(|| invalid("vertex path", "has no locations/{region} segment".into()))?;
            check_host_part(region).map_err(|r| invalid("vertex region", r))?;
            let base = match template {
                None if region == "global" => "https://aiplatform.googleapis.com".to_string(),
                _ => render(chosen, &[("region", region)]),
            };
            (Cow::Owned(base), rest)
        }
    })
}

/// Checks a custom provider's base URL: http(s), a host, no query, fragment or credentials.
pub fn check_custom_base(url: &str) -> Result<(), String> {
    super::template::check(url, &[])?;
    let authority = url.split("://").nth(1).and_then(|r| r.split('/').next()).unwrap_or("");
    if authority.contains('@') {
        return Err("must not contain credentials".into());
    }
    Ok(())
}

/// Rejects dot segments (plain or percent-encoded, also behind an encoded slash) and control
/// characters, so a client cannot walk the upstream path up from the provider's base.
fn check_rest(rest: &str) -> Result<(), Error> {
    for segment in rest.split('/') {
        // Most segments hold no escape: read in place (decoding made a copy of each).
        let decoded =
            if segment.contains('%') {
                Cow::Owned(percent_decode(segment).ok_or_else(|| {
                    invalid("path", format!("'{}' has a malformed percent-escape", printable(segment)))
                })?)
            } else {
                Cow::Borrowed(segment.as_bytes())
            };
        if decoded.iter().any(u8::is_ascii_control) {
            return Err(invalid("path", "contains control characters".into()));
        }
        if decoded.split(|b| *b == b'/' || *b == b'\\').any(|part| part == b"." || part == b"..") {
            return Err(invalid("path", "contains a '.' or '..' segment".into()));
        }
    }
    Ok(())
}

fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

/// `…/openai/v1/chat/completions` with a base ending in `/v1` must not become `/v1/v1/`.
fn drop_duplicate_version<'r>(base: &str, rest: &'r str) -> &'r str {
    let last = base.trim_end_matches('/').rsplit('/').next().unwrap_or("");
    let is_version = last.len() >= 2 && last.starts_with('v') && last.as_bytes()[1].is_ascii_digit();
    if !is_version {
        return rest;
    }
    match rest.split_once('/') {
        Some((first, after)) if first == last => after,
        None if rest == last => "",
        _ => rest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::builtin;

    fn url(slug: &str, rest: &str, query: &str) -> Result<String, Error> {
        let p = builtin(slug).unwrap();
        resolve_target(Source::Builtin(p, None), rest, query, "acct1").map(|t| t.url)
    }

    #[test]
    fn maps_every_shape() {
        let cases = [
            ("openai", "chat/completions", "", "https://api.openai.com/v1/chat/completions"),
            ("openai", "v1/chat/completions", "", "https://api.openai.com/v1/chat/completions"),
            ("anthropic", "v1/messages", "", "https://api.anthropic.com/v1/messages"),
            (
                "workers-ai",
                "@cf/meta/llama-3.1-8b-instruct",
                "",
                "https://api.cloudflare.com/client/v4/accounts/acct1/ai/run/@cf/meta/llama-3.1-8b-instruct",
            ),
            (
                "workers-ai",
                "v1/chat/completions",
                "",
                "https://api.cloudflare.com/client/v4/accounts/acct1/ai/v1/chat/completions",
            ),
            (
                "azure-openai",
                "myres/gpt4/chat/completions",
                "api-version=2024-02-01",
                "https://myres.openai.azure.com/openai/deployments/gpt4/chat/completions?api-version=2024-02-01",
            ),
            (
                "aws-bedrock",
                "bedrock-runtime/us-east-1/model/anthropic.claude-v2%3A1/invoke",
                "",
                "https://bedrock-runtime.us-east-1.amazonaws.com/model/anthropic.claude-v2%3A1/invoke",
            ),
            (
                "google-vertex-ai",
                "v1/projects/p/locations/us-central1/publishers/google/models/gemini:generateContent",
                "",
                "https://us-central1-aiplatform.googleapis.com/v1/projects/p/locations/us-central1/publishers/google/models/gemini:generateContent",
            ),
            (
                "google-vertex-ai",
                "v1/projects/p/locations/global/publishers/google/models/g:streamGenerateContent",
                "alt=sse",
                "https://aiplatform.googleapis.com/v1/projects/p/locations/global/publishers/google/models/g:streamGenerateContent?alt=sse",
            ),
            (
                "google-ai-studio",
                "v1beta/models/gemini-2.0-flash:generateContent",
                "",
                "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash:generateContent",
            ),
            ("huggingface", "bigcode/starcoder", "", "https://api-inference.huggingface.co/models/bigcode/starcoder"),
            ("replicate", "v1/predictions", "", "https://api.replicate.com/v1/predictions"),
            ("groq", "chat/completions", "", "https://api.groq.com/openai/v1/chat/completions"),
        ];
        for (slug, rest, query, want) in cases {
            assert_eq!(url(slug, rest, query).unwrap(), want, "{slug} {rest}");
        }
    }

    #[test]
    fn rejects_host_steering_and_traversal() {
        let bad = [
            ("azure-openai", "evil.com#/d/chat/completions"),
            ("azure-openai", "a@b/d/x"),
            ("azure-openai", "res/../x"),
            ("azure-openai", "res%2Fx/d/x"),
            ("aws-bedrock", "bedrock-runtime/evil.com%23/model/x/invoke"),
            ("aws-bedrock", "s3/us-east-1/x"),
            ("google-vertex-ai", "v1/projects/p/locations/evil.com/x"),
            ("google-vertex-ai", "v1/projects/p/publishers/x"),
            ("openai", "../admin"),
            ("openai", "a/%2e%2E/b"),
            ("openai", "a/..%2Fb"),
            ("openai", "a/%00"),
            ("openai", "a/%zz"),
            // Without an escape the segment is read in place: the same checks hold.
            ("openai", "a/./b"),
            ("openai", "a/b\tc"),
            ("openai", "a/b\u{7f}"),
        ];
        for (slug, rest) in bad {
            assert!(matches!(url(slug, rest, ""), Err(Error::InvalidPath { .. })), "{slug} {rest}");
        }
        let p = builtin("workers-ai").unwrap();
        assert!(resolve_target(Source::Builtin(p, None), "@cf/x", "", "evil.com#").is_err());
    }

    #[test]
    fn overrides_and_custom() {
        let p = builtin("azure-openai").unwrap();
        let over =
            ProviderOverride { base_url: Some("http://127.0.0.1:9/{resource}/{deployment}".into()), account_id: None };
        let t = resolve_target(Source::Builtin(p, Some(&over)), "r/d/chat/completions", "", "a").unwrap();
        assert_eq!(t.url, "http://127.0.0.1:9/r/d/chat/completions");
        let t =
            resolve_target(Source::Custom { slug: "vllm", base_url: "http://10.0.0.2:8000/v1" }, "v1/models", "", "a")
                .unwrap();
        assert_eq!((t.provider.as_str(), t.url.as_str()), ("custom-vllm", "http://10.0.0.2:8000/v1/models"));
    }
}
