//! What an LLM turn costs: a price per model, in dollars per million input
//! (prompt) and output (completion) tokens, as Groq and most providers list
//! them. Built-in list prices for Groq's common models; the operator adds or
//! overrides models with `VOXFLOW_LLM_PRICES`.
//!
//! Prices are kept as whole micro-dollars per million tokens and costs as
//! whole micro-dollars, so a cost is computed with integer arithmetic and
//! the same turn costs the same everywhere.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The LLM provider whose list prices are built in.
const BUILT_IN_PROVIDER: &str = "groq";

/// Groq's list prices (dollars per million input, output tokens) when this
/// was written. They change; an operator follows them with
/// `VOXFLOW_LLM_PRICES`.
const GROQ_PRICES: [(&str, f64, f64); 8] = [
    ("llama-3.3-70b-versatile", 0.59, 0.79),
    ("llama-3.1-8b-instant", 0.05, 0.08),
    ("meta-llama/llama-4-scout-17b-16e-instruct", 0.11, 0.34),
    ("meta-llama/llama-4-maverick-17b-128e-instruct", 0.20, 0.60),
    ("gemma2-9b-it", 0.20, 0.20),
    ("qwen/qwen3-32b", 0.29, 0.59),
    ("openai/gpt-oss-120b", 0.15, 0.75),
    ("openai/gpt-oss-20b", 0.10, 0.50),
];

/// The most a price may say, in dollars per million tokens: far above any
/// real price, it catches a table written in the wrong unit.
const MAX_DOLLARS_PER_MILLION: f64 = 1_000.0;

/// One model's price, in micro-dollars per million tokens (so $0.59 per
/// million is 590,000).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Price {
    pub input: u64,
    pub output: u64,
}

impl Price {
    fn from_dollars(input: f64, output: f64) -> Price {
        let micros = |d: f64| (d * 1_000_000.0).round() as u64;
        Price {
            input: micros(input),
            output: micros(output),
        }
    }

    /// The cost of a turn in whole micro-dollars, rounded half up.
    pub fn cost_micros(&self, prompt_tokens: u64, completion_tokens: u64) -> u64 {
        let scaled = u128::from(prompt_tokens) * u128::from(self.input)
            + u128::from(completion_tokens) * u128::from(self.output);
        u64::try_from((scaled + 500_000) / 1_000_000).unwrap_or(u64::MAX)
    }
}

/// What a turn cost, and whether its model had a price at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cost {
    pub micros: u64,
    pub priced: bool,
}

/// The operator's prices (`VOXFLOW_LLM_PRICES`), on top of the built-in ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PriceTable {
    operator: BTreeMap<String, Price>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceEntry {
    input: f64,
    output: f64,
}

impl PriceTable {
    /// The built-in prices alone, with nothing from the operator.
    pub const fn built_in() -> PriceTable {
        PriceTable {
            operator: BTreeMap::new(),
        }
    }

    /// The price of `model` as `provider` serves it. The operator's table
    /// comes first and applies to every provider. The built-in list prices
    /// are Groq's, so they apply to `groq` only: an `openai_compatible`
    /// server is the operator's own, and Groq's price for a model of the
    /// same name would be made up.
    pub fn price(&self, provider: &str, model: &str) -> Option<Price> {
        if let Some(p) = self.operator.get(model) {
            return Some(*p);
        }
        if provider != BUILT_IN_PROVIDER {
            return None;
        }
        GROQ_PRICES
            .iter()
            .find(|(name, ..)| *name == model)
            .map(|(_, input, output)| Price::from_dollars(*input, *output))
    }

    /// What a turn of `model` with these token counts cost; an unknown
    /// model costs 0 and says so (`priced: false`).
    pub fn cost(
        &self,
        provider: &str,
        model: &str,
        prompt_tokens: u64,
        completion_tokens: u64,
    ) -> Cost {
        match self.price(provider, model) {
            Some(p) => Cost {
                micros: p.cost_micros(prompt_tokens, completion_tokens),
                priced: true,
            },
            None => Cost {
                micros: 0,
                priced: false,
            },
        }
    }

    /// Reads the operator's table: inline JSON (starting with `{`) or the
    /// path of a JSON file holding it, an object of model name →
    /// `{"input": dollars, "output": dollars}` per million tokens.
    pub fn parse(raw: &str) -> Result<PriceTable, String> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Ok(PriceTable::default());
        }
        let text = if raw.starts_with('{') {
            raw.to_string()
        } else {
            std::fs::read_to_string(raw).map_err(|e| format!("cannot read {raw}: {e}"))?
        };
        let entries: BTreeMap<String, PriceEntry> = serde_json::from_str(&text).map_err(|e| {
            format!(
                "must be a JSON object of model name → {{\"input\": dollars, \"output\": dollars}} per million tokens: {e}"
            )
        })?;
        let mut operator = BTreeMap::new();
        for (model, entry) in entries {
            let model = model.trim().to_string();
            if model.is_empty() || model.len() > 100 {
                return Err("model names must be 1–100 characters".into());
            }
            for (what, value) in [("input", entry.input), ("output", entry.output)] {
                if !value.is_finite() || !(0.0..=MAX_DOLLARS_PER_MILLION).contains(&value) {
                    return Err(format!(
                        "{model}: the {what} price must be 0–{MAX_DOLLARS_PER_MILLION} dollars per million tokens"
                    ));
                }
            }
            operator.insert(model, Price::from_dollars(entry.input, entry.output));
        }
        Ok(PriceTable { operator })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groq_models_have_list_prices_for_groq_only() {
        let t = PriceTable::default();
        assert_eq!(
            t.price("groq", "llama-3.3-70b-versatile"),
            Some(Price {
                input: 590_000,
                output: 790_000
            })
        );
        // 1,000 prompt tokens at $0.59/M and 200 completion tokens at
        // $0.79/M: 590 + 158 micro-dollars.
        assert_eq!(
            t.cost("groq", "llama-3.3-70b-versatile", 1_000, 200),
            Cost {
                micros: 748,
                priced: true
            }
        );
        // 9.85 micro-dollars round half up to 10.
        assert_eq!(t.cost("groq", "llama-3.3-70b-versatile", 10, 5).micros, 10);
        assert_eq!(
            t.cost("openai_compatible", "llama-3.3-70b-versatile", 1_000, 200),
            Cost {
                micros: 0,
                priced: false
            }
        );
        assert!(!t.cost("groq", "my-own-model", 10, 10).priced);
    }

    #[test]
    fn the_operator_adds_and_overrides_models_for_every_provider() {
        let t = PriceTable::parse(
            r#"{"llama-3.3-70b-versatile": {"input": 1, "output": 2}, "local-7b": {"input": 0.01, "output": 0}}"#,
        )
        .unwrap();
        assert_eq!(
            t.cost("groq", "llama-3.3-70b-versatile", 1_000_000, 1)
                .micros,
            1_000_002
        );
        assert_eq!(
            t.cost("openai_compatible", "local-7b", 100_000, 9).micros,
            1_000
        );
        assert_eq!(
            t.cost("groq", "llama-3.1-8b-instant", 1_000_000, 0).micros,
            50_000
        );

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("prices.json");
        std::fs::write(&path, r#"{"m": {"input": 3, "output": 4}}"#).unwrap();
        let t = PriceTable::parse(path.to_str().unwrap()).unwrap();
        assert_eq!(t.price("x", "m"), Some(Price::from_dollars(3.0, 4.0)));
        assert_eq!(PriceTable::parse("  ").unwrap(), PriceTable::default());
    }

    #[test]
    fn a_bad_table_is_refused_saying_why() {
        for bad in [
            "{",
            r#"{"m": {"input": 1}}"#,
            r#"{"m": {"input": 1, "output": 2, "cache": 3}}"#,
            r#"{"m": {"input": -1, "output": 2}}"#,
            r#"{"m": {"input": 1, "output": 5000}}"#,
            r#"{"": {"input": 1, "output": 2}}"#,
            "/no/such/prices.json",
        ] {
            assert!(PriceTable::parse(bad).is_err(), "{bad}");
        }
    }
}
