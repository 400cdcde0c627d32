//! Cost from usage: the embedded price table (`prices.toml`, USD per million tokens) or the
//! request's `cf-aig-custom-cost` (USD per token). Cached input is priced once, as cached.

use std::collections::HashMap;
use std::sync::LazyLock;

use serde::Deserialize;

use super::usage::Usage;

/// Per-token prices from `cf-aig-custom-cost`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PerToken {
    /// Input token.
    pub input: Option<f64>,
    /// Output token.
    pub output: Option<f64>,
    /// Cached input token read.
    pub cache_read: Option<f64>,
    /// Cache write token.
    pub cache_write: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct Table {
    #[serde(default)]
    same_as: HashMap<String, String>,
    price: Vec<Row>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Row {
    provider: String,
    model: String,
    input: f64,
    output: f64,
    cached_input: Option<f64>,
    cache_write: Option<f64>,
}

static TABLE: LazyLock<Table> = LazyLock::new(|| {
    toml::from_str(include_str!("prices.toml")).unwrap_or(Table { same_as: HashMap::new(), price: Vec::new() })
});

/// The price rows by provider (aliases included), looked up for every answer with usage.
static BY_PROVIDER: LazyLock<HashMap<&'static str, Vec<&'static Row>, foldhash::fast::RandomState>> =
    LazyLock::new(|| {
        let mut by: HashMap<&'static str, Vec<&'static Row>, _> = HashMap::default();
        for row in &TABLE.price {
            by.entry(row.provider.as_str()).or_default().push(row);
        }
        for (alias, provider) in &TABLE.same_as {
            let rows = by.get(provider.as_str()).cloned().unwrap_or_default();
            by.insert(alias.as_str(), rows);
        }
        by
    });

/// A model's row, remembered per thread: the table's rows are scanned for the longest prefix,
/// which for a provider with many rows cost more than the rest of the price. Direct-mapped, so
/// bounded whatever models requests name; a slot taken by another (provider, model) is scanned
/// again.
fn lookup(provider: &str, model: &str) -> Option<&'static Row> {
    /// (provider, model, its row).
    type Slot = Option<(Box<str>, Box<str>, Option<&'static Row>)>;
    const SLOTS: usize = 256;
    thread_local! {
        static SEEN: std::cell::RefCell<Vec<Slot>> = std::cell::RefCell::new(vec![None; SLOTS]);
    }
    use std::hash::BuildHasher as _;
    let hash = foldhash::fast::FixedState::with_seed(0x7072_6963_6573).hash_one((provider, model));
    #[expect(clippy::cast_possible_truncation, reason = "the low bits pick the slot")]
    let at = hash as usize % SLOTS;
    SEEN.with_borrow_mut(|seen| {
        if let Some(Some((p, m, row))) = seen.get(at)
            && **p == *provider
            && **m == *model
        {
            return *row;
        }
        let row = scan(provider, model);
        if let Some(slot) = seen.get_mut(at) {
            *slot = Some((provider.into(), model.into(), row));
        }
        row
    })
}

fn scan(provider: &str, model: &str) -> Option<&'static Row> {
    // Bedrock ids carry a region prefix ("us.") and a version suffix; Vertex ones a publisher.
    let model = model.strip_prefix("us.").or_else(|| model.strip_prefix("eu.")).unwrap_or(model);
    let model = model.rsplit('/').next().filter(|_| !model.starts_with('@')).unwrap_or(model);
    BY_PROVIDER.get(provider)?.iter().copied().filter(|r| model.starts_with(&r.model)).max_by_key(|r| r.model.len())
}

/// Cost in USD, or `None` when the usage or the price is unknown. With custom prices, the
/// missing cache prices fall back to the input price.
#[must_use]
pub fn cost(provider: &str, model: Option<&str>, usage: &Usage, custom: Option<PerToken>) -> Option<f64> {
    if !usage.reported {
        return None;
    }
    #[expect(clippy::cast_precision_loss, reason = "token counts are far below 2^52")]
    let (fresh, read, write, out) = (
        usage.tokens_in.saturating_sub(usage.cached_tokens_in + usage.cache_write_tokens) as f64,
        usage.cached_tokens_in as f64,
        usage.cache_write_tokens as f64,
        usage.tokens_out as f64,
    );
    let (input, output, cache_read, cache_write) = if let Some(c) = custom {
        let input = c.input.unwrap_or(0.0);
        (input, c.output.unwrap_or(0.0), c.cache_read.unwrap_or(input), c.cache_write.unwrap_or(input))
    } else {
        let row = lookup(provider, model?)?;
        let per = |usd_per_million: f64| usd_per_million / 1_000_000.0;
        (
            per(row.input),
            per(row.output),
            per(row.cached_input.unwrap_or(row.input)),
            per(row.cache_write.unwrap_or(row.input)),
        )
    };
    Some(fresh * input + read * cache_read + write * cache_write + out * output)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn same(a: Option<&Row>, b: Option<&Row>) -> bool {
        match (a, b) {
            (Some(a), Some(b)) => std::ptr::eq(a, b),
            (None, None) => true,
            _ => false,
        }
    }

    /// The remembered row is the scanned one, first time and again, for every row of the table,
    /// for names it does not know, and after more names than slots have pushed each other out.
    #[test]
    fn remembered_rows_are_the_scanned_rows() {
        let mut asked: Vec<(String, String)> = Vec::new();
        for (provider, rows) in BY_PROVIDER.iter() {
            for r in rows {
                asked.push(((*provider).to_string(), r.model.clone()));
                asked.push(((*provider).to_string(), format!("{}-2099-01-01", r.model)));
                asked.push(((*provider).to_string(), format!("us.{}", r.model)));
            }
            asked.push(((*provider).to_string(), "no-such-model".into()));
        }
        asked.extend((0..600).map(|i| ("openai".to_string(), format!("gpt-4o-{i}"))));
        asked.push(("no-such-provider".into(), "gpt-4o".into()));
        assert!(asked.len() > 2 * 256, "more names than slots");
        for _ in 0..2 {
            for (p, m) in &asked {
                assert!(same(lookup(p, m), scan(p, m)), "{p} {m}");
            }
        }
        assert!(lookup("openai", "gpt-4o-2024-08-06").is_some());
    }

    fn usage(tokens_in: u64, tokens_out: u64, cached: u64, write: u64) -> Usage {
        Usage {
            tokens_in,
            tokens_out,
            cached_tokens_in: cached,
            cache_write_tokens: write,
            reported: true,
            model: None,
        }
    }

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-12)
    }

    #[test]
    fn table_parses_and_prices_by_longest_prefix() {
        assert!(TABLE.price.len() > 20);
        // gpt-4o-mini must not be priced as gpt-4o.
        assert!(close(cost("openai", Some("gpt-4o-mini-2024-07-18"), &usage(1_000_000, 0, 0, 0), None), 0.15));
        assert!(close(cost("openai", Some("gpt-4o-2024-08-06"), &usage(0, 1_000_000, 0, 0), None), 10.0));
        assert!(close(cost("azure-openai", Some("gpt-4o"), &usage(1_000_000, 0, 0, 0), None), 2.5));
        assert_eq!(cost("openai", Some("unknown-model"), &usage(1, 1, 0, 0), None), None);
        assert_eq!(cost("openai", None, &usage(1, 1, 0, 0), None), None);
    }

    #[test]
    fn cached_tokens_are_not_double_counted() {
        // 1219 in, 1024 of them cached: 195 fresh at 2.50/M + 1024 at 1.25/M + 10 out at 10/M.
        let c = cost("openai", Some("gpt-4o"), &usage(1219, 10, 1024, 0), None);
        assert!(close(c, (195.0 * 2.5 + 1024.0 * 1.25 + 10.0 * 10.0) / 1e6), "{c:?}");
        // Anthropic: 12 fresh + 2000 read + 100 written.
        let c = cost("anthropic", Some("claude-sonnet-4-5-20250929"), &usage(2112, 6, 2000, 100), None);
        assert!(close(c, (12.0 * 3.0 + 2000.0 * 0.3 + 100.0 * 3.75 + 6.0 * 15.0) / 1e6), "{c:?}");
    }

    #[test]
    fn custom_prices_win() {
        let custom = PerToken { input: Some(0.000_001), output: Some(0.000_002), cache_read: None, cache_write: None };
        let c = cost("custom-x", Some("anything"), &usage(100, 50, 20, 0), Some(custom));
        assert!(close(c, 80.0 * 0.000_001 + 20.0 * 0.000_001 + 50.0 * 0.000_002));
        assert_eq!(cost("openai", Some("gpt-4o"), &Usage::default(), Some(custom)), None);
    }
}
