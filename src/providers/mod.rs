//! The provider registry: one table of slug → URL template, credential headers and wire format.
//!
//! Passthrough is data. Code exists only where a provider's path carries URL parts
//! (Azure's resource and deployment, Bedrock's service and region, Vertex's region,
//! Workers AI's account); see [`route`].

pub mod aws;
pub mod prices;
pub mod route;
mod template;
mod top_level;
pub mod translate;
pub mod usage;
mod usage_fields;

pub use route::{ProviderOverride, Target, resolve_target};
pub use template::{check_host_part, render};

/// How the path after the slug maps onto the provider's URL template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `{rest}` is appended to the base URL.
    Plain,
    /// `{rest}` becomes `run/{model}` unless it already starts with `run/` or `v1/`.
    WorkersAi,
    /// `{resource}/{deployment}/{rest}`.
    Azure,
    /// `{service}/{region}/{rest}`.
    Bedrock,
    /// `{rest}` contains `locations/{region}/`.
    Vertex,
}

/// Response body format, for usage extraction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireFormat {
    /// OpenAI chat/completions, embeddings, responses and every compatible vendor.
    OpenAi,
    /// Anthropic Messages.
    Anthropic,
    /// Google `generateContent` (AI Studio, Vertex).
    Google,
    /// Cohere chat.
    Cohere,
    /// AWS Bedrock invoke / Converse (event-stream when streaming).
    Bedrock,
    /// Workers AI `result` envelope (OpenAI-style usage).
    WorkersAi,
    /// No known usage format.
    Opaque,
}

impl WireFormat {
    /// What the last event of a complete stream carries (any one of them), or nothing for formats
    /// without a final event: OpenAI chat (`[DONE]`), OpenAI Responses
    /// (`response.completed|incomplete|failed`), Anthropic (`message_stop`), and an upstream's
    /// own error event. A stream that ends without one was cut.
    #[must_use]
    pub const fn final_event_markers(self) -> &'static [&'static [u8]] {
        const OPENAI: &[&[u8]] =
            &[b"[DONE]", b"response.completed", b"response.incomplete", b"response.failed", b"event: error"];
        match self {
            Self::OpenAi | Self::WorkersAi => OPENAI,
            Self::Anthropic => &[b"message_stop", b"event: error"],
            Self::Google | Self::Cohere | Self::Bedrock | Self::Opaque => &[],
        }
    }
}

/// One built-in provider.
#[derive(Debug)]
pub struct Provider {
    /// Slug used in URLs (`openai`, `azure-openai`, ...).
    pub slug: &'static str,
    /// Default upstream URL template.
    pub template: &'static str,
    /// Path mapping rule.
    pub shape: Shape,
    /// Response format for usage extraction.
    pub format: WireFormat,
    /// Headers that carry the provider credential (for redaction and cache keys).
    pub credential_headers: &'static [&'static str],
    /// How a stored key goes upstream.
    pub auth: Auth,
    /// Where the model sits in the request path, for requests whose body does not name it.
    pub model_in_path: ModelInPath,
    /// The chat endpoint under the base URL, for the unified API (`None`: not reachable there
    /// yet). Gemini's path depends on the model and is built by the translator.
    pub chat_path: Option<&'static str>,
    /// Accepts OpenAI's `stream_options.include_usage` on chat completions: Torii asks for the
    /// usage of every stream (and hides the extra chunk from clients that did not ask).
    pub stream_usage_option: bool,
}

/// How a stored provider key authenticates the upstream request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// `authorization: Bearer {key}`.
    Bearer,
    /// `authorization: {scheme} {key}` with a scheme of the provider's own (fal's `Key`).
    Scheme(&'static str),
    /// The key alone, in this header.
    Header(&'static str),
    /// AWS Signature V4 for this service, made from stored AWS credentials (a JSON object).
    SigV4 {
        /// The AWS service name the signature is scoped to.
        service: &'static str,
    },
}

/// Where a provider's request path names the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelInPath {
    /// Not in the path (the body names it, or nothing does).
    No,
    /// From the `@` on (`@cf/meta/llama-3.1-8b-instruct`).
    FromAt,
    /// The whole path (`meta-llama/Llama-3.1-8B`).
    Whole,
    /// The segment after `/model/` (`.../model/anthropic.claude-v2%3A1/invoke`).
    AfterModel,
    /// After the last `/models/`, up to `:` (`.../models/gemini-2.0-flash:generateContent`).
    AfterModels,
}

const BEARER: &[&str] = &["authorization"];

const fn plain(slug: &'static str, template: &'static str, format: WireFormat) -> Provider {
    Provider {
        slug,
        template,
        shape: Shape::Plain,
        format,
        credential_headers: BEARER,
        auth: Auth::Bearer,
        model_in_path: ModelInPath::No,
        stream_usage_option: false,
        chat_path: None,
    }
}

impl Provider {
    const fn streams_usage(mut self) -> Self {
        self.stream_usage_option = true;
        self
    }

    const fn model_in_path(mut self, at: ModelInPath) -> Self {
        self.model_in_path = at;
        self
    }

    const fn chat(mut self, path: &'static str) -> Self {
        self.chat_path = Some(path);
        self
    }
}

/// Every built-in provider, in the order of Cloudflare AI Gateway's provider list.
pub static PROVIDERS: &[Provider] = &[
    Provider {
        slug: "workers-ai",
        template: "https://api.cloudflare.com/client/v4/accounts/{account_id}/ai",
        shape: Shape::WorkersAi,
        format: WireFormat::WorkersAi,
        stream_usage_option: false,
        chat_path: Some("v1/chat/completions"),
        model_in_path: ModelInPath::FromAt,
        auth: Auth::Bearer,
        credential_headers: BEARER,
    },
    plain("openai", "https://api.openai.com/v1", WireFormat::OpenAi).streams_usage().chat("chat/completions"),
    Provider {
        slug: "anthropic",
        template: "https://api.anthropic.com",
        shape: Shape::Plain,
        format: WireFormat::Anthropic,
        stream_usage_option: false,
        chat_path: Some("v1/messages"),
        model_in_path: ModelInPath::No,
        auth: Auth::Header("x-api-key"),
        credential_headers: &["x-api-key", "authorization"],
    },
    Provider {
        slug: "azure-openai",
        template: "https://{resource}.openai.azure.com/openai/deployments/{deployment}",
        shape: Shape::Azure,
        format: WireFormat::OpenAi,
        stream_usage_option: true,
        chat_path: None,
        model_in_path: ModelInPath::No,
        auth: Auth::Header("api-key"),
        credential_headers: &["api-key", "authorization"],
    },
    Provider {
        slug: "aws-bedrock",
        template: "https://{service}.{region}.amazonaws.com",
        shape: Shape::Bedrock,
        format: WireFormat::Bedrock,
        stream_usage_option: false,
        chat_path: None,
        model_in_path: ModelInPath::AfterModel,
        auth: Auth::SigV4 { service: aws::BEDROCK_SERVICE },
        credential_headers: &["authorization", "x-amz-security-token"],
    },
    Provider {
        slug: "google-vertex-ai",
        template: "https://{region}-aiplatform.googleapis.com",
        shape: Shape::Vertex,
        format: WireFormat::Google,
        stream_usage_option: false,
        chat_path: None,
        model_in_path: ModelInPath::AfterModels,
        auth: Auth::Bearer,
        credential_headers: BEARER,
    },
    Provider {
        slug: "google-ai-studio",
        template: "https://generativelanguage.googleapis.com",
        shape: Shape::Plain,
        format: WireFormat::Google,
        stream_usage_option: false,
        chat_path: Some("v1beta/models"),
        model_in_path: ModelInPath::AfterModels,
        auth: Auth::Header("x-goog-api-key"),
        credential_headers: &["x-goog-api-key", "authorization"],
    },
    plain("cohere", "https://api.cohere.ai", WireFormat::Cohere).chat("v2/chat"),
    plain("groq", "https://api.groq.com/openai/v1", WireFormat::OpenAi).streams_usage().chat("chat/completions"),
    plain("huggingface", "https://api-inference.huggingface.co/models", WireFormat::OpenAi)
        .model_in_path(ModelInPath::Whole),
    plain("perplexity-ai", "https://api.perplexity.ai", WireFormat::OpenAi).chat("chat/completions"),
    plain("replicate", "https://api.replicate.com/v1", WireFormat::Opaque),
    plain("mistral", "https://api.mistral.ai", WireFormat::OpenAi).chat("v1/chat/completions"),
    plain("deepseek", "https://api.deepseek.com", WireFormat::OpenAi).streams_usage().chat("chat/completions"),
    plain("grok", "https://api.x.ai", WireFormat::OpenAi).streams_usage().chat("v1/chat/completions"),
    plain("cerebras", "https://api.cerebras.ai/v1", WireFormat::OpenAi).streams_usage().chat("chat/completions"),
    plain("openrouter", "https://openrouter.ai/api", WireFormat::OpenAi).streams_usage().chat("v1/chat/completions"),
    plain("fireworks", "https://api.fireworks.ai/inference/v1", WireFormat::OpenAi)
        .streams_usage()
        .chat("chat/completions"),
    Provider {
        slug: "elevenlabs",
        template: "https://api.elevenlabs.io",
        shape: Shape::Plain,
        format: WireFormat::Opaque,
        stream_usage_option: false,
        chat_path: None,
        model_in_path: ModelInPath::No,
        auth: Auth::Header("xi-api-key"),
        credential_headers: &["xi-api-key"],
    },
    Provider {
        slug: "cartesia",
        template: "https://api.cartesia.ai",
        shape: Shape::Plain,
        format: WireFormat::Opaque,
        stream_usage_option: false,
        chat_path: None,
        model_in_path: ModelInPath::No,
        auth: Auth::Header("x-api-key"),
        credential_headers: &["x-api-key"],
    },
    plain("deepgram", "https://api.deepgram.com", WireFormat::Opaque),
    Provider {
        slug: "ideogram",
        template: "https://api.ideogram.ai",
        shape: Shape::Plain,
        format: WireFormat::Opaque,
        stream_usage_option: false,
        chat_path: None,
        model_in_path: ModelInPath::No,
        auth: Auth::Header("api-key"),
        credential_headers: &["api-key"],
    },
    Provider {
        slug: "parallel",
        template: "https://api.parallel.ai",
        shape: Shape::Plain,
        format: WireFormat::Opaque,
        stream_usage_option: false,
        chat_path: None,
        model_in_path: ModelInPath::No,
        auth: Auth::Header("x-api-key"),
        credential_headers: &["x-api-key"],
    },
    Provider { auth: Auth::Scheme("Key"), ..plain("fal", "https://fal.run", WireFormat::Opaque) },
];

/// Credential headers for custom providers, which may use any of the common ones.
pub const CUSTOM_CREDENTIAL_HEADERS: &[&str] = &["authorization", "x-api-key", "api-key"];

/// Every header any provider (built-in or custom) takes a credential in (a row's stored-key
/// header is always among its credential headers; a test keeps it so).
pub fn credential_headers() -> impl Iterator<Item = &'static str> {
    PROVIDERS.iter().flat_map(|p| p.credential_headers.iter().copied()).chain(CUSTOM_CREDENTIAL_HEADERS.iter().copied())
}

/// Looks up a built-in provider by slug.
#[must_use]
pub fn builtin(slug: &str) -> Option<&'static Provider> {
    PROVIDERS.iter().find(|p| p.slug == slug)
}

/// Placeholders a provider's template may use.
fn allowed_placeholders(shape: Shape) -> &'static [&'static str] {
    match shape {
        Shape::Plain => &[],
        Shape::WorkersAi => &["account_id"],
        Shape::Azure => &["resource", "deployment"],
        Shape::Bedrock => &["service", "region"],
        Shape::Vertex => &["region"],
    }
}

/// Checks an operator-supplied template: http(s), a host, only the placeholders the shape fills.
pub fn check_template(provider: &Provider, url: &str) -> Result<(), String> {
    template::check(url, allowed_placeholders(provider.shape))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Credential header names are looked up as static header names
    /// (`HeaderName::from_static`, which refuses anything but a valid lower-case name).
    #[test]
    fn every_credential_header_is_a_valid_lower_case_name() {
        for name in credential_headers() {
            let parsed = actix_web::http::header::HeaderName::from_bytes(name.as_bytes());
            assert!(parsed.is_ok_and(|n| n.as_str() == name), "{name}");
        }
    }

    /// A stored key replaces the client's credential: the header it goes into must be one of the
    /// row's credential headers (removed first, redacted in logs, left out of cache keys).
    #[test]
    fn every_row_takes_its_stored_key_in_one_of_its_credential_headers() {
        for p in PROVIDERS {
            let header = match p.auth {
                Auth::Bearer | Auth::Scheme(_) => "authorization",
                Auth::Header(name) => name,
                Auth::SigV4 { .. } => "x-amz-security-token",
            };
            assert!(p.credential_headers.contains(&header), "{}: {header}", p.slug);
            assert!(credential_headers().any(|h| h == header), "{}: {header} is redacted", p.slug);
        }
        assert_eq!(builtin("elevenlabs").map(|p| p.auth), Some(Auth::Header("xi-api-key")));
        assert_eq!(builtin("aws-bedrock").map(|p| p.auth), Some(Auth::SigV4 { service: "bedrock" }));
        assert_eq!(builtin("fal").map(|p| p.auth), Some(Auth::Scheme("Key")));
    }
}
