//! `/api/admin/users*`: the accounts, one account in full, and the changes
//! an admin makes to them (each audited in the same transaction).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use rusqlite::{types::Value as SqlValue, Connection, OptionalExtension};
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::audit::{self, Entry};
use crate::agents::{agent_from_row, AGENT_COLUMNS};
use crate::auth::extract::{AdminUser, CurrentUser};
use crate::auth::store::{self, User, USER_COLUMNS};
use crate::auth::{check_organization, normalize_email};
use crate::calls::store::{run_from_row, RUN_COLUMNS};
use crate::http::error::{ok, ApiError, ApiResult, FieldError};
use crate::http::extract::{ApiJson, ApiPath, ApiQuery, ClientInfo};
use crate::http::filters::{given, optional_filter, unless_all, SqlFilter};
use crate::http::openapi::{Envelope, ErrorBody, Paged};
use crate::http::pagination::Page;
use crate::http::AppState;
use crate::tiers;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_users))
        .routes(routes!(user_detail, update_user, delete_user))
        .routes(routes!(update_limits))
        .routes(routes!(toggle_status))
        .routes(routes!(activate))
        .routes(routes!(deactivate))
}

/// One of the roles of `users.role`.
fn check_role<'a>(field: &str, role: &'a str) -> Result<&'a str, ApiError> {
    if ["admin", "user", "enterprise"].contains(&role) {
        Ok(role)
    } else {
        Err(ApiError::field(field, "must be admin, user or enterprise"))
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct UserListQuery {
    page: Option<u32>,
    limit: Option<u32>,
    search: Option<String>,
    role: Option<String>,
    tier: Option<String>,
    #[serde(default, deserialize_with = "optional_filter")]
    is_active: Option<bool>,
    sort_by: Option<String>,
    order: Option<String>,
    /// The first edition's name for `tier`.
    subscription_tier: Option<String>,
    /// The first edition's `active` / `inactive` for `is_active`.
    status: Option<String>,
}

impl UserListQuery {
    /// The first edition's spellings in ours: `all` or an empty value is no
    /// filter, `subscription_tier` is `tier`, `status` is `is_active`.
    fn first_edition(mut self) -> ApiResult<UserListQuery> {
        let own = |v: &Option<String>| unless_all(v).map(str::to_string);
        self.tier = own(&self.tier).or_else(|| own(&self.subscription_tier));
        self.role = own(&self.role);
        self.sort_by = own(&self.sort_by);
        self.order = own(&self.order);
        if self.is_active.is_none() {
            self.is_active = match unless_all(&self.status) {
                None => None,
                Some("active") => Some(true),
                Some("inactive") => Some(false),
                Some(_) => {
                    return Err(ApiError::field("status", "must be all, active or inactive"))
                }
            };
        }
        Ok(self)
    }
}

/// Each row with `current_usage: {agents, tokens_this_month}`, the first
/// edition's shape of the figures beside it.
fn with_current_usage(mut rows: Vec<Value>) -> Vec<Value> {
    for row in &mut rows {
        row["current_usage"] = json!({
            "agents": row["agent_count"],
            "tokens_this_month": row["tokens_this_month"],
        });
    }
    rows
}

/// Users with their figures. `subscription_tier` and `status`
/// (`active`/`inactive`) are the first edition's names for `tier` and
/// `is_active`; `all` or an empty value means no filter.
#[utoipa::path(get, path = "/users", tag = "admin", params(UserListQuery),
    responses((status = 200, body = Paged<serde_json::Value>, description = "Users with `current_usage {agents, tokens_this_month}`")))]
async fn list_users(
    State(state): State<AppState>,
    _admin: AdminUser,
    ApiQuery(q): ApiQuery<UserListQuery>,
) -> ApiResult<Response> {
    let q = q.first_edition()?;
    let page = Page::new(q.page, q.limit)?;
    let mut filters = SqlFilter::default();
    filters.search(given(&q.search), &["u.email", "u.organization_name"])?;
    if let Some(role) = given(&q.role) {
        filters.add(
            "u.role = ?",
            SqlValue::Text(check_role("role", role)?.into()),
        );
    }
    if let Some(tier) = given(&q.tier) {
        let tier = tiers::tier(tier)
            .ok_or_else(|| ApiError::field("tier", "must be free, pro or enterprise"))?;
        filters.add("u.subscription_tier = ?", tier.name.to_string());
    }
    if let Some(active) = q.is_active {
        filters.add("u.is_active = ?", i64::from(active));
    }
    // Sorting by name through a fixed list: never interpolate the client's text.
    let sort = match q.sort_by.as_deref().unwrap_or("created_at") {
        "created_at" => "u.created_at",
        "email" => "u.email",
        "last_login" => "u.last_login",
        "subscription_tier" => "u.subscription_tier",
        "role" => "u.role",
        "total_runs" => "t.total_runs",
        "agent_count" => "t.agent_count",
        _ => {
            return Err(ApiError::field(
                "sort_by",
                "must be created_at, email, last_login, subscription_tier, role, total_runs or agent_count",
            ))
        }
    };
    let order = match q.order.as_deref().unwrap_or("desc") {
        "asc" | "ASC" => "ASC",
        "desc" | "DESC" => "DESC",
        _ => return Err(ApiError::field("order", "must be asc or desc")),
    };
    let (rows, total) = state
        .db
        .read(move |c| {
            filters
                .page_counted_in(
                    c,
                    // Every user has one row of totals (a trigger adds it
                    // with the user, the key's cascade removes it), and
                    // the filters are on users alone: the users are
                    // counted without the join (0.2 ms instead of 4 at
                    // 10,000 users).
                    "users u",
                    // The totals kept by triggers (version 12), read
                    // directly so that their indexes serve the sort.
                    "users u JOIN user_totals t ON t.user_id = u.id",
                    &format!(
                        "{USER_COLUMNS}, t.agent_count, t.total_runs,
                         CASE WHEN t.month = strftime('%Y-%m', 'now') THEN round(t.month_tokens, 2) ELSE 0.0 END"
                    ),
                    &format!("{sort} {order}, u.rowid {order}"),
                    page,
                    |r| {
                        let user = store::user_from_row(r, 0)?;
                        let mut v = serde_json::to_value(&user).unwrap_or_default();
                        v["agent_count"] = json!(r.get::<_, i64>(10)?);
                        v["total_runs"] = json!(r.get::<_, i64>(11)?);
                        v["tokens_this_month"] = json!(r.get::<_, f64>(12)?);
                        Ok(v)
                    },
                )
                .map_err(ApiError::from)
        })
        .await?;
    Ok(page.respond(with_current_usage(rows), total))
}

/// What an admin may change on an account: all of it through
/// `PUT /users/{id}`, the limits, tier and role through `/limits`.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct UserChanges {
    email: Option<String>,
    organization_name: Option<String>,
    role: Option<String>,
    subscription_tier: Option<String>,
    max_agents: Option<i64>,
    monthly_token_quota: Option<i64>,
    is_active: Option<bool>,
    /// Refused, not ignored: a password is its owner's to change, and an
    /// admin who sent one must not believe it was set.
    #[schema(value_type = Option<String>)]
    password: Option<Value>,
}

/// `UserChanges` checked: every value valid, nothing refused for the actor.
struct Checked {
    email: Option<String>,
    /// `Some(None)` clears the organization (an empty string was sent).
    organization: Option<Option<String>>,
    role: Option<String>,
    tier: Option<&'static tiers::Tier>,
    max_agents: Option<i64>,
    quota: Option<i64>,
    is_active: Option<bool>,
}

impl UserChanges {
    /// Checks every field at once (a 400 naming each bad one), then what
    /// the acting admin may not do to their own account.
    fn check(self, admin_id: &str, target_id: &str) -> ApiResult<Checked> {
        let mut errors = Vec::new();
        let mut bad = |field: &str, message: &str| {
            errors.push(FieldError {
                field: field.into(),
                message: message.into(),
            })
        };
        if self.password.is_some() {
            bad("password", "cannot be set by an admin; the user changes it");
        }
        let email = self
            .email
            .as_deref()
            .and_then(|e| normalize_email(e).map_err(|m| bad("email", m)).ok());
        let organization = self.organization_name.as_deref().map(|o| {
            check_organization(Some(o))
                .map_err(|m| bad("organization_name", m))
                .unwrap_or_default()
        });
        let role = self.role.as_deref().and_then(|r| {
            check_role("role", r)
                .map_err(|e| bad("role", &e.errors[0].message))
                .ok()
                .map(str::to_string)
        });
        let tier = self.subscription_tier.as_deref().and_then(|t| {
            let found = tiers::tier(t);
            if found.is_none() {
                bad("subscription_tier", "must be free, pro or enterprise");
            }
            found
        });
        if self.max_agents.is_some_and(|m| !(0..=1000).contains(&m)) {
            bad("max_agents", "must be between 0 and 1000");
        }
        if self
            .monthly_token_quota
            .is_some_and(|q| !(0..=10_000_000).contains(&q))
        {
            bad("monthly_token_quota", "must be between 0 and 10000000");
        }
        if !errors.is_empty() {
            return Err(ApiError::fields(errors));
        }
        if admin_id == target_id {
            if role.as_deref().is_some_and(|r| r != "admin") {
                return Err(ApiError::bad_request(
                    "SELF_DEMOTION",
                    "You cannot remove your own admin role",
                ));
            }
            if self.is_active == Some(false) {
                return Err(self_status());
            }
        }
        Ok(Checked {
            email,
            organization,
            role,
            tier,
            max_agents: self.max_agents,
            quota: self.monthly_token_quota,
            is_active: self.is_active,
        })
    }
}

fn self_status() -> ApiError {
    ApiError::bad_request("SELF_ACTION", "You cannot change your own account's status")
}

/// Refuses a change that would leave no active admin: checked in the
/// writer's transaction, so two admins demoting each other at once cannot
/// both succeed.
fn keeps_an_admin(
    tx: &Connection,
    before: &User,
    role: Option<&str>,
    is_active: Option<bool>,
) -> ApiResult<()> {
    let was_admin = before.role == "admin" && before.is_active;
    let stays_admin =
        role.unwrap_or(&before.role) == "admin" && is_active.unwrap_or(before.is_active);
    if !was_admin || stays_admin {
        return Ok(());
    }
    let others: i64 = tx.query_row(
        "SELECT count(*) FROM users WHERE role = 'admin' AND is_active = 1 AND id <> ?1",
        [&before.id],
        |r| r.get(0),
    )?;
    if others == 0 {
        return Err(ApiError::conflict(
            "LAST_ADMIN",
            "This is the last active admin: make another admin first",
        ));
    }
    Ok(())
}

/// Applies checked changes to `before` and records them: `action` with the
/// values before and the changes, `update_user_subscription` for a new
/// tier and `toggle_user_status` for a new status (the first edition's
/// reports count those). A tier change brings that tier's limits (api.md),
/// else an admin who moves a user to pro leaves them at the free plan's two
/// agents; a limit given in the same request is the admin's choice and
/// wins. Deactivation ends the user's sessions.
fn apply(
    tx: &Connection,
    before: &User,
    c: &Checked,
    action: &str,
    audit: &dyn Fn(&str, Value) -> rusqlite::Result<()>,
) -> ApiResult<()> {
    keeps_an_admin(tx, before, c.role.as_deref(), c.is_active)?;
    if let Some(email) = c.email.as_deref().filter(|e| *e != before.email) {
        if store::user_id_by_email(tx, email)?.is_some() {
            return Err(ApiError::conflict(
                "EMAIL_TAKEN",
                "An account with this email already exists",
            ));
        }
    }
    let new_tier = c.tier.filter(|t| t.name != before.subscription_tier);
    let max_agents = c.max_agents.or(new_tier.map(|t| t.max_agents));
    let quota = c.quota.or(new_tier.map(|t| t.monthly_token_quota));
    tx.execute(
        "UPDATE users SET max_agents = coalesce(?2, max_agents),
                monthly_token_quota = coalesce(?3, monthly_token_quota),
                subscription_tier = coalesce(?4, subscription_tier),
                role = coalesce(?5, role),
                email = coalesce(?6, email),
                organization_name = CASE WHEN ?7 THEN ?8 ELSE organization_name END
         WHERE id = ?1",
        rusqlite::params![
            before.id,
            max_agents,
            quota,
            c.tier.map(|t| t.name),
            c.role,
            c.email,
            c.organization.is_some(),
            c.organization.clone().flatten(),
        ],
    )?;
    if let Some(t) = new_tier {
        tx.execute(
            "UPDATE subscriptions SET plan = ?2, monthly_price = ?3, status = 'active',
                    updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
             WHERE user_id = ?1",
            rusqlite::params![before.id, t.name, t.monthly_price],
        )?;
        audit(
            "update_user_subscription",
            json!({ "from": before.subscription_tier, "to": t.name }),
        )?;
    }
    if let Some(active) = c.is_active.filter(|a| *a != before.is_active) {
        set_active(tx, before, active, audit)?;
    }
    // Only what the request touched, so a limits change reads as before.
    let mut was = serde_json::Map::new();
    let mut changes = serde_json::Map::new();
    let mut note = |key: &str, old: Value, new: Value| {
        was.insert(key.into(), old);
        changes.insert(key.into(), new);
    };
    note("max_agents", json!(before.max_agents), json!(max_agents));
    note(
        "monthly_token_quota",
        json!(before.monthly_token_quota),
        json!(quota),
    );
    note(
        "subscription_tier",
        json!(before.subscription_tier),
        json!(c.tier.map(|t| t.name)),
    );
    note("role", json!(before.role), json!(c.role));
    if c.email.is_some() {
        note("email", json!(before.email), json!(c.email));
    }
    if let Some(org) = &c.organization {
        note(
            "organization_name",
            json!(before.organization_name),
            json!(org),
        );
    }
    if c.is_active.is_some() {
        note("is_active", json!(before.is_active), json!(c.is_active));
    }
    audit(action, json!({ "before": was, "changes": changes }))?;
    Ok(())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LimitsBody {
    max_agents: Option<i64>,
    monthly_token_quota: Option<i64>,
    subscription_tier: Option<String>,
    role: Option<String>,
}

/// Set a user's limits, tier or role.
#[utoipa::path(put, path = "/users/{id}/limits", tag = "admin", params(("id" = Uuid, Path, description = "The user")),
    request_body = LimitsBody,
    responses(
        (status = 200, body = Envelope<User>),
        (status = 409, body = ErrorBody, description = "It would leave no active admin (`LAST_ADMIN`)"),
    ))]
async fn update_limits(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    client: ClientInfo,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<LimitsBody>,
) -> ApiResult<Response> {
    let id = id.to_string();
    if body.max_agents.is_none()
        && body.monthly_token_quota.is_none()
        && body.subscription_tier.is_none()
        && body.role.is_none()
    {
        return Err(ApiError::bad_request(
            "VALIDATION_ERROR",
            "Give at least one of max_agents, monthly_token_quota, subscription_tier, role",
        ));
    }
    let checked = UserChanges {
        max_agents: body.max_agents,
        monthly_token_quota: body.monthly_token_quota,
        subscription_tier: body.subscription_tier,
        role: body.role,
        ..UserChanges::default()
    }
    .check(&admin.user.id, &id)?;
    let user = change_user(&state, &admin, client, id, move |tx, before, audit| {
        apply(tx, before, &checked, "update_user_limits", audit)
    })
    .await?;
    Ok(ok(StatusCode::OK, user))
}

/// `PUT /users/{id}`, the first edition's edit form: email, organization,
/// role, tier, limits and status in one request, each checked as the
/// narrower endpoints check it (an email taken by another account is a
/// 409), audited as `update_user`.
#[utoipa::path(put, path = "/users/{id}", tag = "admin", params(("id" = Uuid, Path, description = "The user")),
    request_body = UserChanges,
    responses(
        (status = 200, body = Envelope<User>),
        (status = 409, body = ErrorBody, description = "The email is taken, or it would leave no active admin"),
    ))]
async fn update_user(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    client: ClientInfo,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<UserChanges>,
) -> ApiResult<Response> {
    let id = id.to_string();
    let checked = body.check(&admin.user.id, &id)?;
    let nothing = checked.email.is_none()
        && checked.organization.is_none()
        && checked.role.is_none()
        && checked.tier.is_none()
        && checked.max_agents.is_none()
        && checked.quota.is_none()
        && checked.is_active.is_none();
    if nothing {
        return Err(ApiError::bad_request(
            "VALIDATION_ERROR",
            "Give at least one of email, organization_name, role, subscription_tier, max_agents, monthly_token_quota, is_active",
        ));
    }
    let deactivating = checked.is_active == Some(false);
    let target = id.clone();
    let user = change_user(&state, &admin, client, id, move |tx, before, audit| {
        apply(tx, before, &checked, "update_user", audit)
    })
    .await?;
    if deactivating {
        settle_deactivated(&state, &target).await;
    }
    Ok(ok(StatusCode::OK, user))
}

/// Runs `change` on user `id` in one write transaction, with the audit rows
/// it records through `audit(action, details)` (the acting admin, the target,
/// the client), and returns the user as it is afterwards. A missing user is
/// a 404 and changes nothing.
async fn change_user<F>(
    state: &AppState,
    admin: &CurrentUser,
    client: ClientInfo,
    id: String,
    change: F,
) -> ApiResult<Option<User>>
where
    F: FnOnce(&Connection, &User, &dyn Fn(&str, Value) -> rusqlite::Result<()>) -> ApiResult<()>
        + Send
        + 'static,
{
    let admin_id = admin.user.id.clone();
    state
        .db
        .write(move |c| {
            let tx = c.savepoint()?;
            let Some(before) = store::user_by_id(&tx, &id)? else {
                return Err(ApiError::not_found("User"));
            };
            let audit = |action: &str, details: Value| {
                audit::record(
                    &tx,
                    &Entry {
                        admin_user_id: &admin_id,
                        action,
                        target_user_id: Some(&id),
                        resource_type: Some("user"),
                        resource_id: Some(&id),
                        details,
                        client: &client,
                    },
                )
            };
            change(&tx, &before, &audit)?;
            let after = store::user_by_id(&tx, &id)?;
            tx.commit()?;
            Ok(after)
        })
        .await
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ToggleBody {
    is_active: bool,
}

/// Activate or deactivate a user (never oneself).
#[utoipa::path(post, path = "/users/{id}/toggle-status", tag = "admin", params(("id" = Uuid, Path, description = "The user")),
    request_body = ToggleBody,
    responses(
        (status = 200, body = Envelope<User>),
        (status = 409, body = ErrorBody, description = "It would leave no active admin (`LAST_ADMIN`)"),
    ))]
async fn toggle_status(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    client: ClientInfo,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<ToggleBody>,
) -> ApiResult<Response> {
    set_status(&state, &admin, client, id, body.is_active).await
}

/// Activate a user: the first edition's form of the toggle.
#[utoipa::path(post, path = "/users/{id}/activate", tag = "admin", params(("id" = Uuid, Path, description = "The user")),
    responses((status = 200, body = Envelope<User>)))]
async fn activate(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    client: ClientInfo,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Response> {
    set_status(&state, &admin, client, id, true).await
}

/// Deactivate a user and end their sessions (never oneself): the first
/// edition's form of the toggle.
#[utoipa::path(post, path = "/users/{id}/deactivate", tag = "admin", params(("id" = Uuid, Path, description = "The user")),
    responses(
        (status = 200, body = Envelope<User>),
        (status = 409, body = ErrorBody, description = "It would leave no active admin (`LAST_ADMIN`)"),
    ))]
async fn deactivate(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    client: ClientInfo,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Response> {
    set_status(&state, &admin, client, id, false).await
}

/// Activates or deactivates user `id` (never the acting admin), audited as
/// `toggle_user_status` even when the status was already so, as the
/// toggle always was. Not the last active admin.
async fn set_status(
    state: &AppState,
    admin: &CurrentUser,
    client: ClientInfo,
    id: Uuid,
    is_active: bool,
) -> ApiResult<Response> {
    let id = id.to_string();
    if id == admin.user.id {
        return Err(self_status());
    }
    let target = id.clone();
    let user = change_user(state, admin, client, id, move |tx, before, audit| {
        keeps_an_admin(tx, before, None, Some(is_active))?;
        set_active(tx, before, is_active, audit)
    })
    .await?;
    if !is_active {
        settle_deactivated(state, &target).await;
    }
    Ok(ok(StatusCode::OK, user))
}

/// Sets the user's status, audited as `toggle_user_status`; deactivation
/// ends the user's sessions.
fn set_active(
    tx: &Connection,
    before: &User,
    is_active: bool,
    audit: &dyn Fn(&str, Value) -> rusqlite::Result<()>,
) -> ApiResult<()> {
    tx.execute(
        "UPDATE users SET is_active = ?2 WHERE id = ?1",
        rusqlite::params![before.id, is_active],
    )?;
    let ended = if is_active {
        0
    } else {
        store::delete_sessions_of(tx, &before.id)?
    };
    audit(
        "toggle_user_status",
        json!({ "from": before.is_active, "to": is_active, "sessions_ended": ended }),
    )?;
    Ok(())
}

/// The dialer claims no contact of an inactive tenant; a call it claimed
/// just before is waited for, so that once this answers, no call of theirs
/// reaches Twilio.
async fn settle_deactivated(state: &AppState, user_id: &str) {
    state
        .dialing
        .settle_user(user_id, crate::campaigns::dialer::settle_limit(state))
        .await;
}

/// Deletes an account and, through the foreign keys, everything it owns
/// (agents, runs, keys, sessions). Not yourself, not another admin: an admin
/// is demoted first, which leaves a trail in the audit log.
/// Delete a user and what they own (never oneself).
#[utoipa::path(delete, path = "/users/{id}", tag = "admin", params(("id" = Uuid, Path, description = "The user")),
    responses(
        (status = 200, body = Envelope<crate::http::openapi::Notice>),
        (status = 409, body = ErrorBody, description = "It would leave no active admin"),
    ))]
async fn delete_user(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    client: ClientInfo,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Response> {
    let id = id.to_string();
    if id == admin.user.id {
        return Err(ApiError::bad_request(
            "SELF_ACTION",
            "You cannot delete your own account",
        ));
    }
    change_user(&state, &admin, client, id, move |tx, user, audit| {
        if user.role == "admin" {
            return Err(ApiError::forbidden(
                "CANNOT_DELETE_ADMIN",
                "Admins cannot be deleted; change the role first",
            ));
        }
        // The audit row names the user before the row goes: the foreign
        // key then sets target_user_id to NULL, the details keep who it was.
        audit(
            "delete_user",
            json!({ "email": user.email, "subscription_tier": user.subscription_tier }),
        )?;
        tx.execute("DELETE FROM users WHERE id = ?1", [&user.id])?;
        Ok(())
    })
    .await?;
    Ok(ok(StatusCode::OK, json!({ "message": "User deleted" })))
}

/// How many of a user's runs the detail page shows, newest first.
/// Rows written in the same millisecond keep the order they were written
/// in (by rowid), so "newest first" holds for quick successions too.
const RECENT_RUNS: i64 = 20;

/// One account in full: the user, their statistics, agents, recent runs, API
/// key metadata (never key material: only columns beside the sealed secret
/// are read), subscription and this month's usage.
/// One user in full: statistics, agents, recent runs, key metadata,
/// subscription and usage.
#[utoipa::path(get, path = "/users/{id}", tag = "admin", params(("id" = Uuid, Path, description = "The user")),
    responses((status = 200, body = Envelope<serde_json::Value>)))]
async fn user_detail(
    State(state): State<AppState>,
    _admin: AdminUser,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Response> {
    let id = id.to_string();
    let data = state
        .db
        .read(move |c| {
            let Some(user) = store::user_by_id(c, &id)? else {
                return Err(ApiError::not_found("User"));
            };
            let statistics = c.query_row(
                "SELECT agent_count, total_runs, total_duration_seconds, total_tokens_used,
                        current_plan, subscription_status
                 FROM user_statistics WHERE id = ?1",
                [&id],
                |r| {
                    Ok(json!({
                        "agent_count": r.get::<_, i64>(0)?,
                        "total_runs": r.get::<_, i64>(1)?,
                        "total_duration_seconds": r.get::<_, i64>(2)?,
                        "total_tokens_used": r.get::<_, f64>(3)?,
                        "current_plan": r.get::<_, Option<String>>(4)?,
                        "subscription_status": r.get::<_, Option<String>>(5)?,
                    }))
                },
            )?;
            let agents = c
                .prepare(&format!(
                    "SELECT {AGENT_COLUMNS} FROM agents a WHERE a.user_id = ?1
                     ORDER BY a.created_at DESC, a.rowid DESC"
                ))?
                .query_map([&id], |r| agent_from_row(r, 0))?
                .collect::<Result<Vec<_>, _>>()?;
            let recent_runs = c
                .prepare(&format!(
                    "SELECT {RUN_COLUMNS}, a.name FROM agent_runs r JOIN agents a ON a.id = r.agent_id
                     WHERE a.user_id = ?1 ORDER BY r.created_at DESC, r.rowid DESC LIMIT ?2"
                ))?
                .query_map(rusqlite::params![id, RECENT_RUNS], |r| {
                    let mut run = serde_json::to_value(run_from_row(r, 0)?).unwrap_or_default();
                    run["agent_name"] = json!(r.get::<_, String>(14)?);
                    Ok(run)
                })?
                .collect::<Result<Vec<_>, _>>()?;
            // The sealed columns (api_key_encrypted, iv, auth_tag) are never
            // selected, so nothing of a key can reach the answer.
            let api_keys = c
                .prepare(
                    "SELECT provider, is_active, created_at, last_used_at FROM user_api_keys
                     WHERE user_id = ?1 ORDER BY provider",
                )?
                .query_map([&id], |r| {
                    Ok(json!({
                        "provider": r.get::<_, String>(0)?,
                        "is_active": r.get::<_, bool>(1)?,
                        "created_at": r.get::<_, String>(2)?,
                        "last_used_at": r.get::<_, Option<String>>(3)?,
                    }))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            let subscription = c
                .query_row(
                    "SELECT id, plan, status, started_at, expires_at, monthly_price, created_at, updated_at
                     FROM subscriptions WHERE user_id = ?1",
                    [&id],
                    |r| {
                        Ok(json!({
                            "id": r.get::<_, String>(0)?,
                            "plan": r.get::<_, String>(1)?,
                            "status": r.get::<_, String>(2)?,
                            "started_at": r.get::<_, Option<String>>(3)?,
                            "expires_at": r.get::<_, Option<String>>(4)?,
                            "monthly_price": r.get::<_, Option<f64>>(5)?,
                            "created_at": r.get::<_, Option<String>>(6)?,
                            "updated_at": r.get::<_, Option<String>>(7)?,
                        }))
                    },
                )
                .optional()?;
            let usage = c.query_row(
                "SELECT monthly_token_quota, tokens_used_this_month, tokens_remaining,
                        calls_this_month, duration_this_month, costs_this_month
                 FROM current_month_usage WHERE user_id = ?1",
                [&id],
                |r| {
                    Ok(json!({
                        "monthly_token_quota": r.get::<_, i64>(0)?,
                        "tokens_used_this_month": r.get::<_, f64>(1)?,
                        "tokens_remaining": r.get::<_, f64>(2)?,
                        "calls_this_month": r.get::<_, i64>(3)?,
                        "duration_this_month": r.get::<_, i64>(4)?,
                        "costs_this_month": r.get::<_, f64>(5)?,
                    }))
                },
            )?;
            Ok::<_, ApiError>(json!({
                "user": user,
                "statistics": statistics,
                "agents": agents,
                "recent_runs": recent_runs,
                "api_keys": api_keys,
                "subscription": subscription,
                "usage": usage,
            }))
        })
        .await?;
    Ok(ok(StatusCode::OK, data))
}
