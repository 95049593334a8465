//! A tenant's voice agents: the prompt (`description`) an LLM speaks from,
//! limited in number per tenant by the `enforce_agent_limit` trigger.

pub mod routes;

use rusqlite::{Connection, OptionalExtension, Row};
use serde::Serialize;
use serde_json::{json, Value};

use crate::http::error::{ApiError, FieldError};
use crate::tiers::TIERS;

/// The trigger's literal `RAISE` message (see migration 2).
const LIMIT_MESSAGE: &str = "Agent limit reached.";

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Agent {
    pub id: String,
    pub user_id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub use_case: String,
    /// The agent's prompt: the LLM's system message.
    pub description: String,
    pub total_runs: i64,
    pub created_at: String,
    /// What the agent says when a call starts; `None`: the default greeting.
    pub first_message: Option<String>,
    /// The text-to-speech voice and the language of speech recognition;
    /// `None`: the tenant's service configuration.
    pub voice: Option<String>,
    pub language: Option<String>,
    /// A call is ended (and billed) when it has lasted this long.
    pub max_call_seconds: i64,
    /// Whether Twilio records its phone calls (default off).
    pub record_calls: bool,
}

/// The columns `agent_from_row` reads, in order, from `agents a`.
pub const AGENT_COLUMNS: &str = "a.id, a.user_id, a.name, a.type, a.use_case, a.description, \
     a.total_runs, a.created_at, a.first_message, a.voice, a.language, a.max_call_seconds, \
     a.record_calls";

/// How many columns `AGENT_COLUMNS` holds: a query that selects more after
/// them reads those from this index on.
pub const AGENT_COLUMN_COUNT: usize = 13;

pub fn agent_from_row(r: &Row<'_>, at: usize) -> rusqlite::Result<Agent> {
    Ok(Agent {
        id: r.get(at)?,
        user_id: r.get(at + 1)?,
        name: r.get(at + 2)?,
        kind: r.get(at + 3)?,
        use_case: r.get(at + 4)?,
        description: r.get(at + 5)?,
        total_runs: r.get(at + 6)?,
        created_at: r.get(at + 7)?,
        first_message: r.get(at + 8)?,
        voice: r.get(at + 9)?,
        language: r.get(at + 10)?,
        max_call_seconds: r.get(at + 11)?,
        record_calls: r.get(at + 12)?,
    })
}

/// The agent when it belongs to `user_id`; another tenant's is `None`, as a
/// missing one is.
pub fn owned_agent(
    conn: &Connection,
    user_id: &str,
    agent_id: &str,
) -> rusqlite::Result<Option<Agent>> {
    conn.query_row(
        &format!("SELECT {AGENT_COLUMNS} FROM agents a WHERE a.id = ?1 AND a.user_id = ?2"),
        [agent_id, user_id],
        |r| agent_from_row(r, 0),
    )
    .optional()
}

/// True when `err` is the `enforce_agent_limit` trigger refusing an insert.
pub fn is_limit_error(err: &rusqlite::Error) -> bool {
    matches!(
        err,
        rusqlite::Error::SqliteFailure(e, Some(msg))
            if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_TRIGGER
                && msg.starts_with(LIMIT_MESSAGE)
    )
}

/// How many agents the user has and may have.
pub struct LimitsInfo {
    pub current: i64,
    pub max: i64,
}

impl LimitsInfo {
    pub fn read(conn: &Connection, user_id: &str) -> rusqlite::Result<LimitsInfo> {
        // Cached: every agent create reads it (the profile of
        // `cargo bench --bench load` showed its compilation on the writer).
        conn.prepare_cached(
            "SELECT (SELECT count(*) FROM agents WHERE user_id = ?1), max_agents FROM users WHERE id = ?1",
        )?
        .query_row([user_id], |r| {
            Ok(LimitsInfo {
                current: r.get(0)?,
                max: r.get(1)?,
            })
        })
    }

    pub fn json(&self) -> Value {
        json!({
            "current": self.current,
            "max": self.max,
            "remaining": (self.max - self.current).max(0),
        })
    }
}

fn title(name: &str) -> String {
    let mut chars = name.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// The plan that would lift the limit: the first tier above the user's that
/// allows more than `max_agents` (an admin may have raised the limit by hand
/// beyond the next tier's).
pub fn upgrade_suggestion(tier: &str, max_agents: i64) -> Value {
    let above = TIERS
        .iter()
        .position(|t| t.name == tier)
        .map_or(0, |i| i + 1);
    let on_top = above >= TIERS.len();
    match TIERS[above.min(TIERS.len())..]
        .iter()
        .find(|t| t.max_agents > max_agents)
    {
        Some(t) => json!({
            "current_tier": tier,
            "suggested_tier": t.name,
            "max_agents": t.max_agents,
            "monthly_price": t.monthly_price,
            "message": format!(
                "Upgrade to {} for up to {} agents at ${}/month.",
                title(t.name), t.max_agents, t.monthly_price
            ),
        }),
        None if on_top => json!({
            "current_tier": tier,
            "suggested_tier": null,
            "message": format!(
                "You are on the top tier ({}). Ask an administrator to raise your agent limit.",
                title(tier)
            ),
        }),
        None => json!({
            "current_tier": tier,
            "suggested_tier": null,
            "message": format!(
                "No plan offers more than {max_agents} agents. Ask an administrator to raise your agent limit."
            ),
        }),
    }
}

/// Checked, trimmed agent fields; `None` where the client sent nothing.
#[derive(Debug, Default)]
pub struct AgentInput {
    pub name: Option<String>,
    pub kind: Option<String>,
    pub use_case: Option<String>,
    pub description: Option<String>,
    pub voice: VoiceInput,
}

/// The voice fields as sent: `None` where the client sent nothing,
/// `Some(None)` where it cleared a text field (an empty string).
#[derive(Debug, Default)]
pub struct VoiceInput {
    pub first_message: Option<Option<String>>,
    pub voice: Option<Option<String>>,
    pub language: Option<Option<String>>,
    pub max_call_seconds: Option<i64>,
    pub record_calls: Option<bool>,
}

impl VoiceInput {
    /// Checks the voice fields of a body; errors are added to `errors`.
    pub fn check(
        first_message: Option<&str>,
        voice: Option<&str>,
        language: Option<&str>,
        max_call_seconds: Option<i64>,
        record_calls: Option<bool>,
        errors: &mut Vec<FieldError>,
    ) -> VoiceInput {
        let text = |field: &str, raw: Option<&str>, max: usize, errors: &mut Vec<FieldError>| {
            let raw = raw?;
            let v = raw.trim();
            if v.is_empty() {
                return Some(None);
            }
            if v.chars().count() > max {
                push(errors, field, &format!("must be at most {max} characters"));
            } else if v.chars().any(char::is_control) {
                push(errors, field, "must not contain control characters");
            } else {
                return Some(Some(v.to_string()));
            }
            None
        };
        let max = max_call_seconds.filter(|n| {
            let ok = (10..=14_400).contains(n);
            if !ok {
                push(errors, "max_call_seconds", "must be from 10 to 14400");
            }
            ok
        });
        VoiceInput {
            first_message: text("first_message", first_message, 1000, errors),
            voice: text("voice", voice, 100, errors),
            language: text("language", language, 20, errors),
            max_call_seconds: max,
            record_calls,
        }
    }

    fn is_empty(&self) -> bool {
        self.first_message.is_none()
            && self.voice.is_none()
            && self.language.is_none()
            && self.max_call_seconds.is_none()
            && self.record_calls.is_none()
    }
}

/// `template` with `{{name}}` replaced by each variable's value; a variable
/// the call does not have is left as written, so the prompt's author sees it.
pub fn fill(template: &str, vars: &[(String, String)]) -> String {
    let mut out = template.to_string();
    for (name, value) in vars {
        out = out.replace(&format!("{{{{{name}}}}}"), value);
    }
    out
}

fn push(errors: &mut Vec<FieldError>, field: &str, message: &str) {
    errors.push(FieldError {
        field: field.into(),
        message: message.into(),
    });
}

/// A one-line text: trimmed, `min..=max` characters, no control characters.
fn line(field: &str, raw: &str, max: usize, errors: &mut Vec<FieldError>) -> Option<String> {
    let v = raw.trim();
    let n = v.chars().count();
    if n == 0 {
        push(errors, field, "is required");
    } else if n > max {
        push(errors, field, &format!("must be at most {max} characters"));
    } else if v.chars().any(char::is_control) {
        push(errors, field, "must not contain control characters");
    } else {
        return Some(v.to_string());
    }
    None
}

/// The prompt: 10–5000 characters after trimming; line breaks (any style,
/// stored as `\n`) and tabs are fine, other control characters are not.
fn description(raw: &str, errors: &mut Vec<FieldError>) -> Option<String> {
    let v = raw.replace("\r\n", "\n").replace('\r', "\n");
    let v = v.trim();
    let n = v.chars().count();
    if n < 10 {
        push(errors, "description", "must be at least 10 characters");
    } else if n > 5000 {
        push(errors, "description", "must be at most 5000 characters");
    } else if v.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        push(
            errors,
            "description",
            "must not contain control characters other than line breaks and tabs",
        );
    } else {
        return Some(v.to_string());
    }
    None
}

/// `INBOUND` or `OUTBOUND`, in any case.
fn kind(raw: &str, errors: &mut Vec<FieldError>) -> Option<String> {
    let v = raw.trim().to_ascii_uppercase();
    if v == "INBOUND" || v == "OUTBOUND" {
        Some(v)
    } else {
        push(errors, "type", "must be INBOUND or OUTBOUND");
        None
    }
}

/// The `type` filter of the agent lists: `INBOUND` or `OUTBOUND`, in any case.
pub fn type_filter(raw: Option<&str>) -> Result<Option<String>, ApiError> {
    let Some(raw) = raw else { return Ok(None) };
    let mut errors = Vec::new();
    kind(raw, &mut errors)
        .map(Some)
        .ok_or_else(|| ApiError::fields(errors))
}

impl AgentInput {
    /// Checks what was sent; with `require_all` every field must be there
    /// (creation), otherwise at least one (an update).
    pub fn check(
        name: Option<&str>,
        kind_raw: Option<&str>,
        use_case: Option<&str>,
        desc: Option<&str>,
        require_all: bool,
    ) -> Result<AgentInput, Vec<FieldError>> {
        Self::check_with(
            name,
            kind_raw,
            use_case,
            desc,
            VoiceInput::default(),
            Vec::new(),
            require_all,
        )
    }

    /// `check`, with the voice fields (checked by `VoiceInput::check`, whose
    /// errors come in `errors`), which count towards "at least one" too.
    pub fn check_with(
        name: Option<&str>,
        kind_raw: Option<&str>,
        use_case: Option<&str>,
        desc: Option<&str>,
        voice: VoiceInput,
        mut errors: Vec<FieldError>,
        require_all: bool,
    ) -> Result<AgentInput, Vec<FieldError>> {
        let mut input = AgentInput::default();
        let fields = [
            ("name", name),
            ("type", kind_raw),
            ("use_case", use_case),
            ("description", desc),
        ];
        for (field, value) in fields {
            match value {
                None if require_all => push(&mut errors, field, "is required"),
                None => {}
                Some(v) => match field {
                    "name" => input.name = line(field, v, 255, &mut errors),
                    "type" => input.kind = kind(v, &mut errors),
                    "use_case" => input.use_case = line(field, v, 255, &mut errors),
                    _ => input.description = description(v, &mut errors),
                },
            }
        }
        if !require_all
            && fields.iter().all(|(_, v)| v.is_none())
            && voice.is_empty()
            && errors.is_empty()
        {
            push(
                &mut errors,
                "body",
                "give at least one of name, type, use_case, description, first_message, voice, language, max_call_seconds",
            );
        }
        input.voice = voice;
        if errors.is_empty() {
            Ok(input)
        } else {
            Err(errors)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_suggestion_is_the_next_tier_that_allows_more() {
        let s = upgrade_suggestion("free", 2);
        assert_eq!(s["suggested_tier"], "pro");
        assert_eq!(s["max_agents"], 10);
        assert_eq!(s["monthly_price"], 29);
        assert_eq!(
            s["message"],
            "Upgrade to Pro for up to 10 agents at $29/month."
        );
        let s = upgrade_suggestion("pro", 10);
        assert_eq!(s["suggested_tier"], "enterprise");
        assert_eq!(s["max_agents"], 100);
        assert_eq!(s["monthly_price"], 299);
        // A free user an admin raised to 20 needs enterprise, not pro.
        assert_eq!(
            upgrade_suggestion("free", 20)["suggested_tier"],
            "enterprise"
        );
        let s = upgrade_suggestion("enterprise", 100);
        assert_eq!(s["suggested_tier"], Value::Null);
        assert!(s["message"].as_str().unwrap().contains("top tier"));
        let s = upgrade_suggestion("pro", 500);
        assert_eq!(s["suggested_tier"], Value::Null);
        assert!(s["message"].as_str().unwrap().contains("No plan offers"));
    }

    #[test]
    fn fields_are_trimmed_and_checked() {
        let ok = AgentInput::check(
            Some("  Sales bot "),
            Some("inbound"),
            Some(" sales "),
            Some("You sell things.\r\n\tBe brief."),
            true,
        )
        .unwrap();
        assert_eq!(ok.name.as_deref(), Some("Sales bot"));
        assert_eq!(ok.kind.as_deref(), Some("INBOUND"));
        assert_eq!(
            ok.description.as_deref(),
            Some("You sell things.\n\tBe brief.")
        );

        let errs =
            AgentInput::check(Some(" "), Some("SIDEWAYS"), None, Some("short"), true).unwrap_err();
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["name", "type", "use_case", "description"]);

        let errs = AgentInput::check(Some("a\u{7}b"), None, None, Some("ten chars!\u{0}"), false)
            .unwrap_err();
        assert_eq!(errs.len(), 2);
        assert!(AgentInput::check(None, None, None, None, false).is_err());
        assert!(AgentInput::check(Some(&"x".repeat(256)), None, None, None, false).is_err());
        assert!(AgentInput::check(Some(&"é".repeat(255)), None, None, None, false).is_ok());
    }
}
