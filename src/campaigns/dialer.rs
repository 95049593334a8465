//! The background task that calls the contacts of running campaigns. Its
//! state is the database: each call starts with one writer transaction
//! that claims the contact (`dialing`, its attempt number) and inserts the
//! run, then Twilio is asked with an idempotency token of the contact and
//! attempt, then the call's SID is stored. A crash anywhere in between
//! leaves a run without a SID, which `calls::reconcile` looks up by number
//! before the contact can be dialled again: nobody is called twice. The
//! call's end sets the contact's outcome (the `campaign_contact_outcome`
//! trigger): reached, retried after the campaign's delay, or failed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::store::{self, Claim, Claimed, Running};
use crate::calls::phone::{dial, phone_setup, twilio_error, Dialed, PhoneSetup};
use crate::calls::reconcile::{self, NOT_PLACED};
use crate::http::error::ApiError;
use crate::http::extract::ClientInfo;
use crate::http::AppState;
use crate::providers::twilio::CallError;

/// How often running campaigns are looked at.
const TICK: Duration = Duration::from_millis(250);
/// How long an account's calls wait after Twilio could not be reached or
/// asked us to slow down, so an outage is not hammered.
const BACKOFF: Duration = Duration::from_secs(30);

/// The Twilio requests the dialer has under way, by campaign and owner, so
/// that a pause, a stop or a deactivation can wait for them: once it has
/// answered, no request of that campaign (or tenant) reaches Twilio.
#[derive(Default)]
pub struct InFlight {
    calls: Mutex<Vec<(String, String)>>,
    settled: Notify,
}

impl InFlight {
    fn add(&self, claim: &Claim) {
        if let Ok(mut calls) = self.calls.lock() {
            calls.push((claim.campaign_id.clone(), claim.user_id.clone()));
        }
    }

    fn remove(&self, claim: &Claim) {
        if let Ok(mut calls) = self.calls.lock() {
            if let Some(at) = calls
                .iter()
                .position(|(c, u)| *c == claim.campaign_id && *u == claim.user_id)
            {
                calls.swap_remove(at);
            }
        }
        self.settled.notify_waiters();
    }

    fn any(&self, matches: &dyn Fn(&(String, String)) -> bool) -> bool {
        self.calls
            .lock()
            .map(|calls| calls.iter().any(matches))
            .unwrap_or(false)
    }

    /// Waits (at most `limit`) until no request matching is under way.
    async fn wait_until_none(&self, limit: Duration, matches: impl Fn(&(String, String)) -> bool) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.settled.notified();
            if !self.any(&matches) {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return;
            }
        }
    }

    /// Until the campaign's requests under way have been answered.
    pub async fn settle_campaign(&self, campaign_id: &str, limit: Duration) {
        self.wait_until_none(limit, |(c, _)| c == campaign_id).await;
    }

    /// Until the tenant's requests under way have been answered.
    pub async fn settle_user(&self, user_id: &str, limit: Duration) {
        self.wait_until_none(limit, |(_, u)| u == user_id).await;
    }
}

/// How long a pause or a deactivation may wait for requests under way: a
/// Twilio request ends within the provider time-out.
pub fn settle_limit(state: &AppState) -> Duration {
    Duration::from_secs(state.config.provider_timeout_secs + 1)
}

/// When each Twilio account may place its next call: at most one per
/// `interval` (VOXFLOW_DIAL_INTERVAL_MS), later after an outage.
#[derive(Default)]
struct Pacer {
    next: Mutex<HashMap<String, Instant>>,
}

impl Pacer {
    fn ready(&self, account: &str) -> bool {
        self.next
            .lock()
            .map(|m| m.get(account).is_none_or(|t| Instant::now() >= *t))
            .unwrap_or(false)
    }

    fn hold(&self, account: &str, for_: Duration) {
        if let Ok(mut m) = self.next.lock() {
            let until = Instant::now() + for_;
            let entry = m.entry(account.to_string()).or_insert(until);
            *entry = (*entry).max(until);
        }
    }
}

/// Runs until the server stops (the caller aborts it).
pub async fn run_periodically(state: AppState) {
    let pacer = Arc::new(Pacer::default());
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if let Err(e) = dial_once(&state, &pacer).await {
            tracing::warn!(error = %e, "campaign dialer");
        }
    }
}

fn dialer_client() -> ClientInfo {
    ClientInfo {
        ip: "unknown".into(),
        https: false,
        user_agent: Some("VoxFlow campaign dialer".into()),
    }
}

/// One pass: each running campaign whose Twilio account may call now
/// claims its next contact, and the call is placed in a task of its own.
async fn dial_once(state: &AppState, pacer: &Arc<Pacer>) -> Result<(), ApiError> {
    let running = state
        .db
        .read(|c| store::running_campaigns(c).map_err(ApiError::from))
        .await?;
    let mut setups: HashMap<String, Option<Arc<PhoneSetup>>> = HashMap::new();
    for Running {
        campaign_id,
        user_id,
    } in running
    {
        if !setups.contains_key(&user_id) {
            let setup = match phone_setup(state, &user_id).await {
                Ok(s) => Some(Arc::new(s)),
                Err(e) => {
                    // Deleted Twilio credentials, no public URL: paused
                    // rather than burning through the list; resuming tells
                    // the tenant why.
                    tracing::warn!(campaign_id = %campaign_id, error = %e, "campaign paused: it can no longer place calls");
                    let reason = e.message.clone();
                    let id = campaign_id.clone();
                    state
                        .db
                        .write(move |c| {
                            store::pause_running(c, &id, &reason).map_err(ApiError::from)
                        })
                        .await?;
                    None
                }
            };
            setups.insert(user_id.clone(), setup);
        }
        let Some(Some(setup)) = setups.get(&user_id).cloned() else {
            continue;
        };
        if !pacer.ready(&setup.account_sid) {
            continue;
        }
        let claimed = {
            let (setup, id) = (setup.clone(), campaign_id.clone());
            state
                .db
                .write(move |c| {
                    let tx = c.savepoint()?;
                    let claimed = store::claim_next(
                        &tx,
                        &id,
                        &setup,
                        &dialer_client(),
                        jiff::Timestamp::now(),
                    )?;
                    tx.commit()?;
                    Ok::<_, ApiError>(claimed)
                })
                .await?
        };
        match claimed {
            Claimed::Call(claim) => {
                pacer.hold(&setup.account_sid, state.config.dial_interval());
                state.dialing.add(&claim);
                let (state, pacer) = (state.clone(), pacer.clone());
                tokio::spawn(async move {
                    let placed = place(&state, &setup, &claim, &pacer).await;
                    state.dialing.remove(&claim);
                    match placed {
                        Ok(true) => look_up_later(&state, &claim.run_id).await,
                        Ok(false) => {}
                        Err(e) => {
                            tracing::warn!(run_id = %claim.run_id, error = %e, "a campaign call")
                        }
                    }
                });
            }
            Claimed::Paused(reason) => {
                tracing::info!(campaign_id = %campaign_id, %reason, "campaign paused");
            }
            Claimed::Completed => {
                tracing::info!(campaign_id = %campaign_id, "campaign completed");
            }
            Claimed::Nothing => {}
        }
    }
    Ok(())
}

/// A run whose placing Twilio may or may not have done is looked up this
/// long after Twilio's unclear answer: by then a 5xx or a time-out has
/// settled at Twilio's end, and the contact need not wait for the periodic
/// pass of `calls::reconcile`.
const LOOK_UP_AFTER: Duration = Duration::from_secs(5);

async fn look_up_later(state: &AppState, run_id: &str) {
    tokio::time::sleep(LOOK_UP_AFTER).await;
    let id = run_id.to_string();
    let run = state
        .db
        .read(move |c| crate::calls::store::live_phone_run(c, &id).map_err(ApiError::from))
        .await;
    let looked_up = match run {
        Ok(Some(run)) => reconcile::reconcile_run(state, &run).await.map(|_| ()),
        Ok(None) => Ok(()),
        Err(e) => Err(e),
    };
    if let Err(e) = looked_up {
        tracing::warn!(run_id = %run_id, error = %e, "cannot look a campaign call up at Twilio");
    }
}

/// One campaign call tried: `placed`; `unknown` (Twilio may have placed it,
/// it is looked up); `not_placed` (nothing placed, the contact waits
/// uncounted: an outage, Twilio's rate limit, bad credentials); `refused`
/// (Twilio refused the number: a failed attempt).
fn count_attempt(outcome: &'static str) {
    metrics::counter!("voxflow_dialer_attempts_total", "outcome" => outcome).increment(1);
}

/// Places a claimed contact's call and settles what Twilio's answer means;
/// `true` when the answer left it unknown whether the call was placed.
async fn place(
    state: &AppState,
    setup: &PhoneSetup,
    claim: &Claim,
    pacer: &Pacer,
) -> Result<bool, ApiError> {
    let dialed = dial(
        state,
        setup,
        &claim.user_id,
        &claim.run_id,
        &claim.phone_number,
        &claim.attempt_key(),
    )
    .await?;
    let err = match dialed {
        Dialed::Placed(_) => {
            count_attempt("placed");
            return Ok(false);
        }
        Dialed::Unknown(_) => {
            count_attempt("unknown");
            return Ok(true);
        }
        Dialed::NotPlaced(err) => err,
    };
    let (run_id, campaign_id) = (claim.run_id.clone(), claim.campaign_id.clone());
    let reason = twilio_error(&err).message;
    match err {
        // Bad credentials: nothing will work until the tenant fixes them.
        CallError::Refused {
            status: 401 | 403, ..
        } => {
            count_attempt("not_placed");
            state
                .db
                .write(move |c| {
                    reconcile::close_unplaced(c, &run_id, NOT_PLACED)?;
                    store::pause_running(c, &campaign_id, &reason).map_err(ApiError::from)
                })
                .await?;
        }
        // An outage or a rate limit: the contact waits, uncounted, and the
        // account slows down.
        CallError::Unreachable | CallError::Refused { status: 429, .. } => {
            count_attempt("not_placed");
            pacer.hold(&setup.account_sid, BACKOFF);
            state
                .db
                .write(move |c| {
                    reconcile::close_unplaced(c, &run_id, NOT_PLACED).map_err(ApiError::from)
                })
                .await?;
        }
        // Twilio refused this number (21211 and the like): an attempt that
        // failed, retried while retries are left.
        _ => {
            count_attempt("refused");
            state
                .db
                .write(move |c| {
                    reconcile::close_unplaced(c, &run_id, "failed").map_err(ApiError::from)
                })
                .await?;
        }
    }
    Ok(false)
}
