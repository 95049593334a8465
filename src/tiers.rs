//! The tier table of `api.md`: one place used by registration, limits, the
//! upgrade suggestions and the admin pages.

use serde::Serialize;

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Tier {
    pub name: &'static str,
    pub max_agents: i64,
    pub monthly_token_quota: i64,
    /// US dollars per month.
    pub monthly_price: i64,
    pub phone_calls: bool,
    pub concurrent_calls: i64,
    /// The most contacts one campaign's CSV may bring.
    pub max_contacts_per_campaign: i64,
    /// The most contacts a tenant may import in 24 hours (campaigns
    /// deleted since still count): imports are the largest writes a tenant
    /// can make, and every tenant's writes share one writer.
    pub max_contacts_per_day: i64,
}

pub const TIERS: [Tier; 3] = [
    Tier {
        name: "free",
        max_agents: 2,
        monthly_token_quota: 1_000,
        monthly_price: 0,
        phone_calls: false,
        concurrent_calls: 1,
        max_contacts_per_campaign: 1_000,
        max_contacts_per_day: 2_000,
    },
    Tier {
        name: "pro",
        max_agents: 10,
        monthly_token_quota: 50_000,
        monthly_price: 29,
        phone_calls: true,
        concurrent_calls: 5,
        max_contacts_per_campaign: 50_000,
        max_contacts_per_day: 200_000,
    },
    Tier {
        name: "enterprise",
        max_agents: 100,
        monthly_token_quota: 1_000_000,
        monthly_price: 299,
        phone_calls: true,
        concurrent_calls: 25,
        max_contacts_per_campaign: 1_000_000,
        max_contacts_per_day: 3_000_000,
    },
];

pub fn tier(name: &str) -> Option<&'static Tier> {
    TIERS.iter().find(|t| t.name == name)
}

/// The next tier up, if any.
pub fn next_tier(name: &str) -> Option<&'static Tier> {
    let i = TIERS.iter().position(|t| t.name == name)?;
    TIERS.get(i + 1)
}
