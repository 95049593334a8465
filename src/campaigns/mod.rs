//! Campaigns: a contact list imported from CSV, called by one of the
//! tenant's agents, with a state that moves only along legal transitions.

pub mod dialer;
pub mod import;
pub mod routes;

use rusqlite::{Connection, OptionalExtension, Row};
use serde::Serialize;
use serde_json::{json, Value};

pub const STATES: [&str; 5] = ["created", "running", "paused", "completed", "stopped"];
pub const CONTACT_STATUSES: [&str; 3] = ["pending", "called", "failed"];

/// A campaign with its agent's name and how its contacts stand.
#[derive(Debug, Serialize)]
pub struct Campaign {
    pub id: String,
    pub name: String,
    pub agent_id: String,
    pub agent_name: String,
    pub source_type: String,
    pub state: String,
    pub created_at: String,
    pub contacts: Counts,
}

#[derive(Debug, Serialize, Clone, Copy)]
pub struct Counts {
    pub total: i64,
    pub pending: i64,
    pub called: i64,
    pub failed: i64,
}

impl Counts {
    /// `{pending, called, failed, success_rate}`: the share of the contacts
    /// dialled so far that were reached, in percent with one decimal (0 while
    /// none has been dialled).
    pub fn progress(&self) -> Value {
        let done = self.called + self.failed;
        let rate = if done == 0 {
            0.0
        } else {
            (self.called as f64 * 1000.0 / done as f64).round() / 10.0
        };
        json!({
            "total": self.total,
            "pending": self.pending,
            "called": self.called,
            "failed": self.failed,
            "success_rate": rate,
        })
    }
}

/// The columns `campaign_from_row` reads, from `campaigns c JOIN agents a`.
pub const CAMPAIGN_COLUMNS: &str =
    "c.id, c.name, c.agent_id, a.name, c.source_type, c.state, c.created_at,
    (SELECT count(*) FROM campaign_contacts k WHERE k.campaign_id = c.id),
    (SELECT count(*) FROM campaign_contacts k WHERE k.campaign_id = c.id AND k.status = 'pending'),
    (SELECT count(*) FROM campaign_contacts k WHERE k.campaign_id = c.id AND k.status = 'called'),
    (SELECT count(*) FROM campaign_contacts k WHERE k.campaign_id = c.id AND k.status = 'failed')";

/// The tables `CAMPAIGN_COLUMNS` reads.
pub const CAMPAIGN_FROM: &str = "campaigns c JOIN agents a ON a.id = c.agent_id";

pub fn campaign_from_row(r: &Row<'_>) -> rusqlite::Result<Campaign> {
    Ok(Campaign {
        id: r.get(0)?,
        name: r.get(1)?,
        agent_id: r.get(2)?,
        agent_name: r.get(3)?,
        source_type: r.get(4)?,
        state: r.get(5)?,
        created_at: r.get(6)?,
        contacts: Counts {
            total: r.get(7)?,
            pending: r.get(8)?,
            called: r.get(9)?,
            failed: r.get(10)?,
        },
    })
}

/// The tenant's campaign, or none (missing and another tenant's alike).
pub fn owned_campaign(
    conn: &Connection,
    user_id: &str,
    id: &str,
) -> rusqlite::Result<Option<Campaign>> {
    conn.query_row(
        &format!(
            "SELECT {CAMPAIGN_COLUMNS} FROM {CAMPAIGN_FROM} WHERE c.id = ?1 AND c.user_id = ?2"
        ),
        [id, user_id],
        campaign_from_row,
    )
    .optional()
}
