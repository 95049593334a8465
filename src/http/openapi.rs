//! `GET /api/openapi.json`: the OpenAPI 3 description of the API, built from
//! one table, which a test walks to prove every entry is a real route.

use serde_json::{json, Map, Value};

/// Who may call an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Public,
    User,
    Admin,
}

/// A JSON body or query field: name, OpenAPI type, required.
pub type Field = (&'static str, &'static str, bool);

#[derive(Debug)]
pub struct Endpoint {
    pub method: &'static str,
    pub path: &'static str,
    pub tag: &'static str,
    pub summary: &'static str,
    pub access: Access,
    pub body: &'static [Field],
    pub query: &'static [Field],
    /// The body is `multipart/form-data` (a file upload), not JSON.
    pub multipart: bool,
}

const fn ep(
    method: &'static str,
    path: &'static str,
    tag: &'static str,
    summary: &'static str,
    access: Access,
) -> Endpoint {
    Endpoint {
        method,
        path,
        tag,
        summary,
        access,
        body: &[],
        query: &[],
        multipart: false,
    }
}

const fn with_body(mut e: Endpoint, body: &'static [Field]) -> Endpoint {
    e.body = body;
    e
}

/// A `multipart/form-data` body; a `binary` field is a file.
const fn with_form(mut e: Endpoint, body: &'static [Field]) -> Endpoint {
    e.body = body;
    e.multipart = true;
    e
}

const fn with_query(mut e: Endpoint, query: &'static [Field]) -> Endpoint {
    e.query = query;
    e
}

const PAGE: [Field; 2] = [("page", "integer", false), ("limit", "integer", false)];
const AGENT_BODY: &[Field] = &[
    ("name", "string", true),
    ("type", "string", true),
    ("use_case", "string", true),
    ("description", "string", true),
];
const SERVICE_BODY: &[Field] = &[
    ("llm_provider", "string", false),
    ("llm_model", "string", false),
    ("llm_base_url", "string", false),
    ("tts_provider", "string", false),
    ("tts_voice", "string", false),
    ("stt_provider", "string", false),
    ("stt_model", "string", false),
];

const REPORT_QUERY: &[Field] = &[
    ("date", "string", true),
    ("agent_id", "string", false),
    ("timezone", "string", false),
];

use Access::{Admin, Public, User};

pub const ENDPOINTS: &[Endpoint] = &[
    ep(
        "get",
        "/health",
        "health",
        "Status, version, uptime and database",
        Public,
    ),
    ep(
        "get",
        "/health/liveness",
        "health",
        "200 while the process runs",
        Public,
    ),
    ep(
        "get",
        "/health/readiness",
        "health",
        "200 when migrated and the database answers",
        Public,
    ),
    ep(
        "get",
        "/api/openapi.json",
        "health",
        "This description",
        Public,
    ),
    ep(
        "get",
        "/metrics",
        "health",
        "Prometheus metrics (text format), for the addresses in VOXFLOW_METRICS_ALLOW or an admin session; 403 otherwise",
        Public,
    ),
    ep(
        "get",
        "/api/rate-limits/status",
        "auth",
        "The caller's request rate limit: limit, remaining and reset (seconds)",
        User,
    ),
    with_body(
        ep(
            "post",
            "/api/auth/register",
            "auth",
            "Create an account (free tier)",
            Public,
        ),
        &[
            ("email", "string", true),
            ("password", "string", true),
            ("organization_name", "string", false),
        ],
    ),
    with_body(
        ep(
            "post",
            "/api/auth/login",
            "auth",
            "Sign in: a session token",
            Public,
        ),
        &[("email", "string", true), ("password", "string", true)],
    ),
    ep("post", "/api/auth/logout", "auth", "End this session", User),
    ep(
        "get",
        "/api/auth/me",
        "auth",
        "The caller and this month's usage",
        User,
    ),
    with_body(
        ep(
            "post",
            "/api/auth/change-password",
            "auth",
            "Change the password; other sessions end",
            User,
        ),
        &[
            ("current_password", "string", true),
            ("new_password", "string", true),
        ],
    ),
    with_query(
        ep("get", "/api/agents", "agents", "Own agents", User),
        &[
            PAGE[0],
            PAGE[1],
            ("type", "string", false),
            ("search", "string", false),
        ],
    ),
    with_body(
        ep(
            "post",
            "/api/agents",
            "agents",
            "Create an agent (within the plan's limit)",
            User,
        ),
        AGENT_BODY,
    ),
    ep("get", "/api/agents/{id}", "agents", "One agent", User),
    with_body(
        ep("put", "/api/agents/{id}", "agents", "Change an agent", User),
        AGENT_BODY,
    ),
    ep(
        "delete",
        "/api/agents/{id}",
        "agents",
        "Delete an agent (409 while a run is in progress)",
        User,
    ),
    with_query(
        ep(
            "get",
            "/api/agents/{id}/runs",
            "agents",
            "An agent's runs with a summary",
            User,
        ),
        &[
            PAGE[0],
            PAGE[1],
            ("status", "string", false),
            ("disposition", "string", false),
            ("type", "string", false),
            ("date_from", "string", false),
            ("date_to", "string", false),
        ],
    ),
    with_form(
        ep(
            "post",
            "/api/campaigns",
            "campaigns",
            "Create a campaign from a CSV file (at most 10 MB): numbers normalised to E.164, duplicates dropped, bad rows reported; 422 without a valid row",
            User,
        ),
        &[
            ("name", "string", true),
            ("agent_id", "string", true),
            ("file", "binary", true),
        ],
    ),
    with_query(
        ep(
            "get",
            "/api/campaigns",
            "campaigns",
            "Own campaigns with their contact counts",
            User,
        ),
        &[
            PAGE[0],
            PAGE[1],
            ("state", "string", false),
            ("agent_id", "string", false),
        ],
    ),
    ep(
        "get",
        "/api/campaigns/{id}",
        "campaigns",
        "One campaign with its progress",
        User,
    ),
    with_query(
        ep(
            "get",
            "/api/campaigns/{id}/contacts",
            "campaigns",
            "A campaign's contacts, in the file's order",
            User,
        ),
        &[PAGE[0], PAGE[1], ("status", "string", false)],
    ),
    ep(
        "post",
        "/api/campaigns/{id}/start",
        "campaigns",
        "created → running (needs what a phone call needs)",
        User,
    ),
    ep(
        "post",
        "/api/campaigns/{id}/pause",
        "campaigns",
        "running → paused",
        User,
    ),
    ep(
        "post",
        "/api/campaigns/{id}/resume",
        "campaigns",
        "paused → running (needs what a phone call needs)",
        User,
    ),
    ep(
        "post",
        "/api/campaigns/{id}/stop",
        "campaigns",
        "running or paused → stopped",
        User,
    ),
    ep(
        "delete",
        "/api/campaigns/{id}",
        "campaigns",
        "Delete a campaign and its contacts (409 while running)",
        User,
    ),
    ep(
        "get",
        "/api/config/service",
        "configuration",
        "LLM, voice and transcription settings",
        User,
    ),
    with_body(
        ep(
            "post",
            "/api/config/service",
            "configuration",
            "Save the service settings",
            User,
        ),
        SERVICE_BODY,
    ),
    ep(
        "get",
        "/api/config/telephony",
        "configuration",
        "Twilio settings (never the token)",
        User,
    ),
    with_body(
        ep(
            "post",
            "/api/config/telephony",
            "configuration",
            "Save the Twilio settings",
            User,
        ),
        &[
            ("account_sid", "string", false),
            ("auth_token", "string", false),
            ("from_phone_number", "string", false),
        ],
    ),
    with_body(
        ep(
            "post",
            "/api/calls/web/start",
            "calls",
            "Start a web call",
            User,
        ),
        &[("agent_id", "string", true)],
    ),
    with_body(
        ep(
            "post",
            "/api/calls/web/message",
            "calls",
            "Send a message; the agent's reply",
            User,
        ),
        &[("run_id", "string", true), ("message", "string", true)],
    ),
    with_body(
        ep(
            "post",
            "/api/calls/web/end",
            "calls",
            "End a web call",
            User,
        ),
        &[("run_id", "string", true), ("disposition", "string", false)],
    ),
    with_body(
        ep(
            "post",
            "/api/calls/phone/start",
            "calls",
            "Place a phone call through Twilio (not on the free tier)",
            User,
        ),
        &[
            ("agent_id", "string", true),
            ("phone_number", "string", true),
        ],
    ),
    ep(
        "get",
        "/api/calls/run/{id}/recording",
        "calls",
        "The call's recording (audio), fetched from Twilio with the account's credentials",
        User,
    ),
    ep(
        "get",
        "/api/calls/web/{run_id}/audio",
        "calls",
        "A voice call's WebSocket: PCM audio both ways, transcripts, barge-in",
        User,
    ),
    ep(
        "get",
        "/api/calls/twilio/stream/{run_id}",
        "twilio",
        "Twilio Media Streams WebSocket of a phone call (signed by Twilio)",
        Public,
    ),
    ep(
        "post",
        "/api/calls/twilio/webhook/{run_id}",
        "twilio",
        "Twilio: the call was answered; TwiML greeting (signed by Twilio)",
        Public,
    ),
    ep(
        "post",
        "/api/calls/twilio/gather/{run_id}",
        "twilio",
        "Twilio: the caller spoke (SpeechResult); TwiML reply (signed by Twilio)",
        Public,
    ),
    ep(
        "post",
        "/api/calls/twilio/status/{run_id}",
        "twilio",
        "Twilio: the call ended (CallSid, CallStatus); billed with Twilio's REST duration (signed by Twilio)",
        Public,
    ),
    ep(
        "post",
        "/api/calls/twilio/recording/{run_id}",
        "twilio",
        "Twilio: the recording is ready (RecordingUrl) (signed by Twilio)",
        Public,
    ),
    ep("get", "/api/calls/run/{id}", "calls", "A run", User),
    ep(
        "get",
        "/api/calls/transcript/{id}",
        "calls",
        "A run's transcript",
        User,
    ),
    ep(
        "get",
        "/api/api-keys/providers",
        "api-keys",
        "Providers and their key formats",
        User,
    ),
    ep(
        "get",
        "/api/api-keys/status",
        "api-keys",
        "Which key each provider would use",
        User,
    ),
    with_query(
        ep(
            "get",
            "/api/api-keys/validate",
            "api-keys",
            "Whether each provider is usable now",
            User,
        ),
        &[("providers", "string", false)],
    ),
    with_body(
        ep(
            "post",
            "/api/api-keys/{provider}",
            "api-keys",
            "Save a key (Twilio: SID, token, number)",
            User,
        ),
        &[
            ("api_key", "string", false),
            ("account_sid", "string", false),
            ("auth_token", "string", false),
            ("phone_number", "string", false),
        ],
    ),
    ep(
        "delete",
        "/api/api-keys/{provider}",
        "api-keys",
        "Delete the saved key",
        User,
    ),
    ep(
        "post",
        "/api/api-keys/{provider}/test",
        "api-keys",
        "Ask the provider whether the key works",
        User,
    ),
    ep(
        "get",
        "/api/usage/dashboard",
        "usage",
        "This month's usage, warning, daily series, agent limit",
        User,
    ),
    with_query(
        ep(
            "get",
            "/api/usage/history",
            "usage",
            "Own runs with filters",
            User,
        ),
        &[
            PAGE[0],
            PAGE[1],
            ("agent_id", "string", false),
            ("phone", "string", false),
            ("disposition", "string", false),
            ("date_from", "string", false),
            ("date_to", "string", false),
            ("min_duration", "integer", false),
            ("max_duration", "integer", false),
        ],
    ),
    with_query(
        ep(
            "get",
            "/api/reports/daily",
            "reports",
            "One local day's completed runs, summarised",
            User,
        ),
        REPORT_QUERY,
    ),
    with_query(
        ep(
            "get",
            "/api/reports/download",
            "reports",
            "The same runs as CSV",
            User,
        ),
        REPORT_QUERY,
    ),
    with_query(
        ep(
            "get",
            "/api/admin/users",
            "admin",
            "Users with their figures",
            Admin,
        ),
        &[
            PAGE[0],
            PAGE[1],
            ("search", "string", false),
            ("role", "string", false),
            ("tier", "string", false),
            ("is_active", "boolean", false),
            ("sort_by", "string", false),
            ("order", "string", false),
            ("subscription_tier", "string", false),
            ("status", "string", false),
        ],
    ),
    with_body(
        ep(
            "put",
            "/api/admin/users/{id}",
            "admin",
            "Edit email, organization, role, tier, limits and status (the first edition's edit form); 409 for an email taken",
            Admin,
        ),
        &[
            ("email", "string", false),
            ("organization_name", "string", false),
            ("role", "string", false),
            ("subscription_tier", "string", false),
            ("max_agents", "integer", false),
            ("monthly_token_quota", "integer", false),
            ("is_active", "boolean", false),
        ],
    ),
    ep(
        "post",
        "/api/admin/users/{id}/activate",
        "admin",
        "Activate an account",
        Admin,
    ),
    ep(
        "post",
        "/api/admin/users/{id}/deactivate",
        "admin",
        "Deactivate an account and end its sessions",
        Admin,
    ),
    ep(
        "get",
        "/api/admin/dashboard",
        "admin",
        "The overview's figures and the system's health in one answer",
        Admin,
    ),
    ep(
        "get",
        "/api/admin/system-health",
        "admin",
        "The same as /api/admin/analytics/system-health",
        Admin,
    ),
    with_body(
        ep(
            "put",
            "/api/admin/users/{id}/limits",
            "admin",
            "Set limits, tier or role",
            Admin,
        ),
        &[
            ("max_agents", "integer", false),
            ("monthly_token_quota", "integer", false),
            ("subscription_tier", "string", false),
            ("role", "string", false),
        ],
    ),
    with_body(
        ep(
            "post",
            "/api/admin/users/{id}/toggle-status",
            "admin",
            "Activate or deactivate",
            Admin,
        ),
        &[("is_active", "boolean", true)],
    ),
    ep(
        "delete",
        "/api/admin/users/{id}",
        "admin",
        "Delete a user and what it owns",
        Admin,
    ),
    ep(
        "get",
        "/api/admin/users/{id}",
        "admin",
        "One user in full: statistics, agents, recent runs, key metadata, subscription, usage",
        Admin,
    ),
    with_query(
        ep(
            "get",
            "/api/admin/agents",
            "admin",
            "Every agent with its owner",
            Admin,
        ),
        &[
            PAGE[0],
            PAGE[1],
            ("search", "string", false),
            ("type", "string", false),
            ("user_id", "string", false),
        ],
    ),
    ep(
        "get",
        "/api/admin/subscription-tiers",
        "admin",
        "The tiers and how many users are on each",
        Admin,
    ),
    with_query(
        ep(
            "get",
            "/api/admin/audit-logs",
            "admin",
            "The audit log, newest first",
            Admin,
        ),
        &[
            PAGE[0],
            PAGE[1],
            ("action", "string", false),
            ("admin_user_id", "string", false),
            ("target_user_id", "string", false),
            ("date_from", "string", false),
            ("date_to", "string", false),
            ("actor", "string", false),
        ],
    ),
    ep(
        "get",
        "/api/admin/analytics/overview",
        "admin",
        "Users, agents, runs, this month's usage and MRR",
        Admin,
    ),
    with_query(
        ep(
            "get",
            "/api/admin/analytics/user-growth",
            "admin",
            "New users per day, zero-filled",
            Admin,
        ),
        &[("period", "string", false)],
    ),
    ep(
        "get",
        "/api/admin/analytics/usage",
        "admin",
        "Daily usage over 30 days and the top users this month",
        Admin,
    ),
    ep(
        "get",
        "/api/admin/analytics/revenue",
        "admin",
        "MRR, ARR and revenue by plan",
        Admin,
    ),
    ep(
        "get",
        "/api/admin/analytics/system-health",
        "admin",
        "Database size, schema version, quick_check, uptime; overall_status and components",
        Admin,
    ),
    ep(
        "get",
        "/api/admin/analytics/export/{kind}",
        "admin",
        "users, usage, runs or audit as CSV",
        Admin,
    ),
];

fn parameters(e: &Endpoint) -> Vec<Value> {
    let mut params = Vec::new();
    for seg in e.path.split('/') {
        if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            let schema = if name == "id" {
                json!({"type": "string", "format": "uuid"})
            } else {
                json!({"type": "string"})
            };
            params.push(json!({"name": name, "in": "path", "required": true, "schema": schema}));
        }
    }
    for (name, ty, required) in e.query {
        params.push(
            json!({"name": name, "in": "query", "required": required, "schema": {"type": ty}}),
        );
    }
    params
}

fn operation(e: &Endpoint) -> Value {
    let mut op = json!({
        "tags": [e.tag],
        "summary": e.summary,
        "responses": {
            "200": {"description": "`{\"success\": true, \"data\": …}`"},
            "4XX": {"description": "`{\"success\": false, \"message\", \"code\", \"errors\"?}`"},
        },
    });
    if e.tag == "twilio" {
        // Twilio reads TwiML, not the envelope, and is refused in plain text.
        op["responses"] = json!({
            "200": {"description": "TwiML (`text/xml`)"},
            "403": {"description": "`X-Twilio-Signature` missing or wrong"},
            "404": {"description": "No such run"},
        });
    }
    let params = parameters(e);
    if !params.is_empty() {
        op["parameters"] = Value::Array(params);
    }
    if !e.body.is_empty() {
        let mut props = Map::new();
        let mut required = Vec::new();
        for (name, ty, req) in e.body {
            let schema = match *ty {
                "binary" => json!({"type": "string", "format": "binary"}),
                ty => json!({"type": ty}),
            };
            props.insert((*name).into(), schema);
            if *req {
                required.push(json!(name));
            }
        }
        let content_type = if e.multipart {
            "multipart/form-data"
        } else {
            "application/json"
        };
        op["requestBody"] = json!({
            "required": true,
            "content": {content_type: {"schema": {"type": "object", "properties": props, "required": required}}},
        });
    }
    match e.access {
        Public => op["security"] = json!([]),
        User => {}
        Admin => op["description"] = json!("Admins only: anyone else gets 403."),
    }
    op
}

/// The whole document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for e in ENDPOINTS {
        let item = paths
            .entry(e.path.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        item[e.method] = operation(e);
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "VoxFlow API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "AI voice agents for many tenants. Every JSON answer is an envelope: `{success, data}` or `{success: false, message, code, errors?}`.",
        },
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "The token from register or login"},
                "cookie": {"type": "apiKey", "in": "cookie", "name": "voxflow_session", "description": "The web UI's session; writes need a same-origin Origin"},
            },
        },
        "security": [{"bearer": []}, {"cookie": []}],
        "paths": paths,
    })
}
