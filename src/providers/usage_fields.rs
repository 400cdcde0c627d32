//! The fields of a response (or one streamed event) that can carry usage or the model, typed so
//! the parser reads them without building a JSON tree. Everything else (the generated content)
//! is skipped.
//!
//! Every field is read leniently, the way lookups in a `serde_json::Value` would be: a count
//! that is not a non-negative integer reads as absent, and a nested object that is not an
//! object reads as absent. Presence alone matters for a few keys (an OpenAI
//! `completion_tokens`, Google's output counts, `usageMetadata`): those keep it.

use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::value::MapAccessDeserializer;
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// The top level of a body or event, and of the envelopes that wrap one.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct Lean {
    #[serde(deserialize_with = "text")]
    pub model: Field<std::sync::Arc<str>>,
    #[serde(rename = "modelVersion", deserialize_with = "text")]
    pub model_version: Field<std::sync::Arc<str>>,
    #[serde(deserialize_with = "object")]
    pub usage: Option<UsageFields>,
    /// Google: present whatever its type.
    #[serde(rename = "usageMetadata", deserialize_with = "present")]
    pub usage_metadata: Option<GoogleUsage>,
    #[serde(deserialize_with = "object")]
    pub meta: Option<Meta>,
    #[serde(deserialize_with = "object")]
    pub message: Option<Box<Lean>>,
    #[serde(deserialize_with = "object")]
    pub response: Option<Box<Lean>>,
    #[serde(deserialize_with = "object")]
    pub result: Option<Box<Lean>>,
    #[serde(deserialize_with = "object")]
    pub x_groq: Option<Box<Lean>>,
    #[serde(deserialize_with = "object")]
    pub delta: Option<Box<Lean>>,
    #[serde(rename = "amazon-bedrock-invocationMetrics", deserialize_with = "object")]
    pub invocation_metrics: Option<BedrockMetrics>,
}

/// A `usage` object, whichever provider's keys it uses.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct UsageFields {
    #[serde(deserialize_with = "count")]
    pub prompt_tokens: Option<u64>,
    #[serde(deserialize_with = "present_count")]
    pub completion_tokens: Field<u64>,
    #[serde(deserialize_with = "object")]
    pub prompt_tokens_details: Option<Details>,
    #[serde(deserialize_with = "count")]
    pub input_tokens: Option<u64>,
    #[serde(deserialize_with = "count")]
    pub output_tokens: Option<u64>,
    #[serde(deserialize_with = "object")]
    pub input_tokens_details: Option<Details>,
    #[serde(deserialize_with = "count")]
    pub cache_read_input_tokens: Option<u64>,
    #[serde(deserialize_with = "count")]
    pub cache_creation_input_tokens: Option<u64>,
    #[serde(rename = "inputTokens", deserialize_with = "count")]
    pub input_tokens_camel: Option<u64>,
    #[serde(rename = "outputTokens", deserialize_with = "count")]
    pub output_tokens_camel: Option<u64>,
    #[serde(rename = "cacheReadInputTokens", deserialize_with = "count")]
    pub cache_read_camel: Option<u64>,
    #[serde(rename = "cacheWriteInputTokens", deserialize_with = "count")]
    pub cache_write_camel: Option<u64>,
    #[serde(deserialize_with = "object")]
    pub billed_units: Option<Billed>,
}

/// `*_tokens_details`.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct Details {
    #[serde(deserialize_with = "count")]
    pub cached_tokens: Option<u64>,
}

/// Google's `usageMetadata`.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct GoogleUsage {
    #[serde(rename = "promptTokenCount", deserialize_with = "count")]
    pub prompt: Option<u64>,
    #[serde(rename = "candidatesTokenCount", deserialize_with = "present_count")]
    pub candidates: Field<u64>,
    #[serde(rename = "thoughtsTokenCount", deserialize_with = "present_count")]
    pub thoughts: Field<u64>,
    #[serde(rename = "cachedContentTokenCount", deserialize_with = "count")]
    pub cached: Option<u64>,
}

/// Cohere's `meta`.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct Meta {
    #[serde(deserialize_with = "object")]
    pub billed_units: Option<Billed>,
}

/// Cohere's `billed_units`.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct Billed {
    #[serde(deserialize_with = "count")]
    pub input_tokens: Option<u64>,
    #[serde(deserialize_with = "count")]
    pub output_tokens: Option<u64>,
}

/// Bedrock `InvokeModel`'s metrics.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct BedrockMetrics {
    #[serde(rename = "inputTokenCount", deserialize_with = "count")]
    pub input: Option<u64>,
    #[serde(rename = "outputTokenCount", deserialize_with = "count")]
    pub output: Option<u64>,
    #[serde(rename = "cacheReadInputTokenCount", deserialize_with = "count")]
    pub cache_read: Option<u64>,
    #[serde(rename = "cacheWriteInputTokenCount", deserialize_with = "count")]
    pub cache_write: Option<u64>,
}

/// A field whose presence matters.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) enum Field<T> {
    /// Not in the object.
    #[default]
    Absent,
    /// In the object, of another type than the one read.
    Other,
    /// In the object, this.
    Is(T),
}

impl<T> Field<T> {
    /// Whether the key was there.
    pub fn present(&self) -> bool {
        !matches!(self, Field::Absent)
    }

    /// The value, when there and of the type read.
    pub fn get(&self) -> Option<&T> {
        match self {
            Field::Is(v) => Some(v),
            _ => None,
        }
    }
}

impl<T> From<Option<T>> for Field<T> {
    fn from(v: Option<T>) -> Self {
        v.map_or(Field::Other, Field::Is)
    }
}

/// What a lenient field makes of each JSON type; anything it does not want is skipped whole.
trait Lenient<'de>: Sized {
    fn from_u64(_: u64) -> Option<Self> {
        None
    }
    fn from_text(_: &str) -> Option<Self> {
        None
    }
    fn from_map<A: MapAccess<'de>>(map: A) -> Result<Option<Self>, A::Error> {
        skip_map(map).map(|()| None)
    }
    /// What a value of any other type (or a skipped one) reads as.
    fn otherwise() -> Option<Self> {
        None
    }
}

struct LenientVisitor<T>(PhantomData<T>);

impl<'de, T: Lenient<'de>> Visitor<'de> for LenientVisitor<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(T::from_u64(v).or_else(T::otherwise))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(u64::try_from(v).ok().and_then(T::from_u64).or_else(T::otherwise))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(T::otherwise())
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(T::otherwise())
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(T::from_text(v).or_else(T::otherwise))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(T::otherwise())
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(T::otherwise())
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(T::otherwise())
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Ok(T::from_map(map)?.or_else(T::otherwise))
    }
}

fn skip_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

fn lenient<'de, D: Deserializer<'de>, T: Lenient<'de>>(d: D) -> Result<Option<T>, D::Error> {
    d.deserialize_any(LenientVisitor(PhantomData))
}

impl Lenient<'_> for u64 {
    fn from_u64(v: u64) -> Option<Self> {
        Some(v)
    }
}

/// Text (a model name) as a shared string: the same model comes back in every answer, so
/// it is interned rather than made anew for each (`text::intern`).
impl Lenient<'_> for std::sync::Arc<str> {
    fn from_text(v: &str) -> Option<Self> {
        Some(crate::text::intern(v))
    }
}

/// An object field: the object's fields, or absent when it is not an object.
struct Object<T>(T);

impl<'de, T: Deserialize<'de>> Lenient<'de> for Object<T> {
    fn from_map<A: MapAccess<'de>>(map: A) -> Result<Option<Self>, A::Error> {
        T::deserialize(MapAccessDeserializer::new(map)).map(|t| Some(Object(t)))
    }
}

/// An object field that counts as present whatever its type (its fields default).
struct Present<T>(T);

impl<'de, T: Deserialize<'de> + Default> Lenient<'de> for Present<T> {
    fn from_map<A: MapAccess<'de>>(map: A) -> Result<Option<Self>, A::Error> {
        T::deserialize(MapAccessDeserializer::new(map)).map(|t| Some(Present(t)))
    }
    fn otherwise() -> Option<Self> {
        Some(Present(T::default()))
    }
}

/// A count: a non-negative integer, else absent.
fn count<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    lenient(d)
}

/// A count whose presence matters.
fn present_count<'de, D: Deserializer<'de>>(d: D) -> Result<Field<u64>, D::Error> {
    lenient::<D, u64>(d).map(Field::from)
}

/// A string whose presence matters.
fn text<'de, D: Deserializer<'de>>(d: D) -> Result<Field<std::sync::Arc<str>>, D::Error> {
    lenient::<D, std::sync::Arc<str>>(d).map(Field::from)
}

fn object<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    lenient::<D, Object<T>>(d).map(|o| o.map(|Object(t)| t))
}

fn present<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(d: D) -> Result<Option<T>, D::Error> {
    lenient::<D, Present<T>>(d).map(|p| p.map(|Present(t)| t))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Read as lookups in a JSON tree would: wrong types are absent, presence is kept where it
    /// matters, unknown keys and content are skipped.
    #[test]
    fn fields_are_read_leniently() {
        let lean: Lean = serde_json::from_str(
            r#"{"model":7,"modelVersion":"gemini-x","choices":[{"message":{"content":"hi"}}],
                "usage":{"prompt_tokens":-3,"completion_tokens":"n/a","input_tokens":4.5,
                         "output_tokens":9,"prompt_tokens_details":[1],"billed_units":null},
                "usageMetadata":"weird","meta":{"billed_units":{"input_tokens":2}},
                "message":"not an object","result":{"usage":{"prompt_tokens":1}}}"#,
        )
        .unwrap();
        assert_eq!(lean.model, Field::Other);
        assert_eq!(lean.model_version, Field::Is("gemini-x".into()));
        let u = lean.usage.unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.input_tokens, u.output_tokens),
            (None, Field::Other, None, Some(9))
        );
        assert!(u.prompt_tokens_details.is_none() && u.billed_units.is_none());
        let g = lean.usage_metadata.unwrap();
        assert!(g.prompt.is_none() && !g.candidates.present());
        assert_eq!(lean.meta.unwrap().billed_units.unwrap().input_tokens, Some(2));
        assert!(lean.message.is_none());
        assert_eq!(lean.result.unwrap().usage.unwrap().prompt_tokens, Some(1));
        let from_tree =
            Lean::deserialize(&serde_json::json!({"model": "m", "usage": {"completion_tokens": 0}})).unwrap();
        assert_eq!(from_tree.model, Field::Is("m".into()));
        assert_eq!(from_tree.usage.unwrap().completion_tokens, Field::Is(0));
    }
}
