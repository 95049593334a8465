//! Agent runs: web calls and phone calls (through Twilio) with an LLM, their
//! transcripts, and the sweep that closes the runs nobody ended.

pub mod agent_llm;
pub mod phone;
pub mod reconcile;
pub mod routes;
pub mod store;
pub mod sweep;
pub mod twilio_hooks;
pub mod voice;

/// What a client may give as the outcome of a call it ends (`api.md`).
pub const END_DISPOSITIONS: [&str; 7] = [
    "user_hangup",
    "agent_hangup",
    "no_answer",
    "busy",
    "failed",
    "voicemail",
    "user_idle_max_duration_exceeded",
];

/// Set by the server on runs it closed for lack of activity.
pub const ABANDONED: &str = "abandoned";

/// Set by the server on calls it ended because the month's tokens ran out.
pub const QUOTA_EXCEEDED: &str = "quota_exceeded";

/// The run's script (`store::script`), read off the async workers.
pub(crate) async fn read_script(
    state: &crate::http::AppState,
    run_id: &str,
) -> Result<store::Script, crate::http::error::ApiError> {
    let run_id = run_id.to_string();
    state
        .db
        .read(move |c| store::script(c, &run_id).map_err(Into::into))
        .await
}

/// Set on calls the server ended at their agent's `max_call_seconds`.
pub const MAX_DURATION: &str = "max_duration_exceeded";
