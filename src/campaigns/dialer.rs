//! The background task that calls the contacts of running campaigns: one
//! call at a time per campaign, through the phone-call code, until no
//! contact is pending.

use std::time::Duration;

use rusqlite::{params, OptionalExtension};

use crate::calls::phone::{phone_setup, place_call};
use crate::db::DbError;
use crate::http::error::ApiError;
use crate::http::extract::ClientInfo;
use crate::http::AppState;
use crate::tiers;

/// How often running campaigns are looked at.
const TICK: Duration = Duration::from_secs(1);

/// A running campaign whose previous call has ended.
struct Due {
    campaign_id: String,
    user_id: String,
    agent_id: String,
    tier: String,
}

/// Runs until the server stops (the caller aborts it).
pub async fn run_periodically(state: AppState) {
    let mut ticker = tokio::time::interval(TICK);
    loop {
        ticker.tick().await;
        if let Err(e) = dial_once(&state).await {
            tracing::warn!(error = %e, "campaign dialer");
        }
    }
}

/// One pass: for each running campaign without a call in progress, calls
/// its next pending contact, or completes it when none is left.
async fn dial_once(state: &AppState) -> Result<(), ApiError> {
    let due = state
        .db
        .read(|c| {
            c.prepare(
                "SELECT c.id, c.user_id, c.agent_id, u.subscription_tier
                 FROM campaigns c JOIN users u ON u.id = c.user_id
                 WHERE c.state = 'running'
                   AND NOT EXISTS (SELECT 1 FROM agent_runs r
                                   WHERE r.campaign_id = c.id AND r.status = 'in_progress')
                 ORDER BY c.created_at",
            )?
            .query_map([], |r| {
                Ok(Due {
                    campaign_id: r.get(0)?,
                    user_id: r.get(1)?,
                    agent_id: r.get(2)?,
                    tier: r.get(3)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()
            .map_err(DbError::from)
        })
        .await?;
    for campaign in due {
        dial_next(state, &campaign).await?;
    }
    Ok(())
}

/// Sets a running campaign's state (a pause or a completion the dialer
/// decides), leaving it alone if the tenant moved it meanwhile.
async fn leave_running(
    state: &AppState,
    campaign_id: &str,
    to: &'static str,
) -> Result<(), ApiError> {
    let id = campaign_id.to_string();
    state
        .db
        .write(move |c| {
            c.execute(
                "UPDATE campaigns SET state = ?2 WHERE id = ?1 AND state = 'running'",
                params![id, to],
            )
            .map_err(DbError::from)
        })
        .await?;
    Ok(())
}

async fn dial_next(state: &AppState, campaign: &Due) -> Result<(), ApiError> {
    let id = campaign.campaign_id.clone();
    let next: Option<(String, String)> = state
        .db
        .read(move |c| {
            c.query_row(
                "SELECT id, phone_number FROM campaign_contacts
                 WHERE campaign_id = ?1 AND status = 'pending' ORDER BY rowid LIMIT 1",
                [&id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(DbError::from)
        })
        .await?;
    let Some((contact_id, number)) = next else {
        return leave_running(state, &campaign.campaign_id, "completed").await;
    };
    // What starting checked may have changed since (a downgrade, deleted
    // Twilio credentials): the campaign is paused rather than burning
    // through its list, and resuming tells the tenant why.
    let phone_allowed = tiers::tier(&campaign.tier).is_some_and(|t| t.phone_calls);
    let setup = match phone_setup(state, &campaign.user_id).await {
        Ok(setup) if phone_allowed => setup,
        Ok(_) | Err(_) => {
            tracing::warn!(campaign_id = %campaign.campaign_id, "campaign paused: it can no longer place calls");
            return leave_running(state, &campaign.campaign_id, "paused").await;
        }
    };
    let client = ClientInfo {
        ip: "unknown".into(),
        user_agent: Some("VoxFlow campaign dialer".into()),
    };
    let placed = place_call(
        state,
        &setup,
        &campaign.user_id,
        &campaign.agent_id,
        &number,
        Some(&campaign.campaign_id),
        &client,
    )
    .await;
    let (status, run_id) = match placed {
        Ok(p) => ("called", Some(p.run_id)),
        // The tenant's plan has all its calls in use (other campaigns, web
        // calls): the contact stays pending for a later round.
        Err(e) if e.code == "CONCURRENT_CALL_LIMIT" => return Ok(()),
        Err(e) if e.status == axum::http::StatusCode::PAYMENT_REQUIRED => {
            tracing::info!(campaign_id = %campaign.campaign_id, "campaign paused: the month's tokens are spent");
            return leave_running(state, &campaign.campaign_id, "paused").await;
        }
        Err(e) => {
            tracing::warn!(campaign_id = %campaign.campaign_id, error = %e, "a campaign call failed");
            let run_id = e
                .extra
                .get("run_id")
                .and_then(|v| v.as_str())
                .map(str::to_string);
            ("failed", run_id)
        }
    };
    state
        .db
        .write(move |c| {
            c.execute(
                "UPDATE campaign_contacts SET status = ?2, agent_run_id = ?3 WHERE id = ?1",
                params![contact_id, status, run_id],
            )
            .map_err(DbError::from)
        })
        .await?;
    Ok(())
}
