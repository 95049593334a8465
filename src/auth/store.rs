//! SQL over `users` and `sessions`, owned by the auth area. Other areas ask
//! these functions for a user's facts instead of reading the tables.

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Serialize;

use crate::crypto::sha256_hex;
use crate::tiers::{self, Tier};

/// A user as the API shows it (never the password hash).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct User {
    pub id: String,
    pub email: String,
    pub role: String,
    pub subscription_tier: String,
    pub organization_name: Option<String>,
    pub max_agents: i64,
    pub monthly_token_quota: i64,
    pub is_active: bool,
    pub created_at: String,
    pub last_login: Option<String>,
}

/// The columns `user_from_row` reads, in order, from `users u`.
pub const USER_COLUMNS: &str = "u.id, u.email, u.role, u.subscription_tier, u.organization_name, \
     u.max_agents, u.monthly_token_quota, u.is_active, u.created_at, u.last_login";

/// Reads a `User` from `row` starting at column `at`.
pub fn user_from_row(row: &Row<'_>, at: usize) -> rusqlite::Result<User> {
    Ok(User {
        id: row.get(at)?,
        email: row.get(at + 1)?,
        role: row.get(at + 2)?,
        subscription_tier: row.get(at + 3)?,
        organization_name: row.get(at + 4)?,
        max_agents: row.get(at + 5)?,
        monthly_token_quota: row.get(at + 6)?,
        is_active: row.get(at + 7)?,
        created_at: row.get(at + 8)?,
        last_login: row.get(at + 9)?,
    })
}

/// A user row as the rest of the code needs it.
pub struct NewUser<'a> {
    pub email: &'a str,
    pub password_hash: &'a str,
    pub role: &'a str,
    pub tier: &'static Tier,
    pub organization_name: Option<&'a str>,
}

/// Inserts a user with the tier's limits; the database trigger adds the
/// subscription. Returns the new id.
pub fn insert_user(conn: &Connection, u: &NewUser<'_>) -> rusqlite::Result<String> {
    conn.query_row(
        "INSERT INTO users (email, password_hash, role, subscription_tier, organization_name, max_agents, monthly_token_quota)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) RETURNING id",
        params![
            u.email,
            u.password_hash,
            u.role,
            u.tier.name,
            u.organization_name,
            u.tier.max_agents,
            u.tier.monthly_token_quota
        ],
        |r| r.get(0),
    )
}

pub fn any_admin(conn: &Connection) -> rusqlite::Result<bool> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM users WHERE role = 'admin' LIMIT 1",
            [],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

pub fn user_id_by_email(conn: &Connection, email: &str) -> rusqlite::Result<Option<String>> {
    conn.query_row("SELECT id FROM users WHERE email = ?1", [email], |r| {
        r.get(0)
    })
    .optional()
}

pub fn user_by_id(conn: &Connection, id: &str) -> rusqlite::Result<Option<User>> {
    conn.query_row(
        &format!("SELECT {USER_COLUMNS} FROM users u WHERE u.id = ?1"),
        [id],
        |r| user_from_row(r, 0),
    )
    .optional()
}

/// The user and its password hash, for a login.
pub fn credentials_by_email(
    conn: &Connection,
    email: &str,
) -> rusqlite::Result<Option<(User, String)>> {
    conn.query_row(
        &format!("SELECT {USER_COLUMNS}, u.password_hash FROM users u WHERE u.email = ?1"),
        [email],
        |r| Ok((user_from_row(r, 0)?, r.get(10)?)),
    )
    .optional()
}

pub fn password_hash_by_id(conn: &Connection, id: &str) -> rusqlite::Result<Option<String>> {
    conn.query_row("SELECT password_hash FROM users WHERE id = ?1", [id], |r| {
        r.get(0)
    })
    .optional()
}

/// Makes `email` an admin with the seed's admin settings (enterprise tier,
/// 100 agents, 1,000,000 tokens), creating the account if needed, and sets its
/// password, ending its sessions. Returns whether the account was created.
pub fn upsert_admin(
    conn: &mut Connection,
    email: &str,
    password_hash: &str,
) -> rusqlite::Result<bool> {
    let enterprise = tiers::tier("enterprise").unwrap_or(&tiers::TIERS[2]);
    let tx = conn.savepoint()?;
    let created = match user_id_by_email(&tx, email)? {
        Some(id) => {
            tx.execute(
                "UPDATE users SET role = 'admin', subscription_tier = 'enterprise', max_agents = ?2,
                        monthly_token_quota = ?3, is_active = 1, password_hash = ?4,
                        organization_name = coalesce(organization_name, 'VoxFlow Admin')
                 WHERE id = ?1",
                params![id, enterprise.max_agents, enterprise.monthly_token_quota, password_hash],
            )?;
            tx.execute(
                "UPDATE subscriptions SET plan = 'enterprise', monthly_price = ?2, status = 'active',
                        updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
                 WHERE user_id = ?1",
                params![id, enterprise.monthly_price],
            )?;
            tx.execute("DELETE FROM sessions WHERE user_id = ?1", [&id])?;
            false
        }
        None => {
            insert_user(
                &tx,
                &NewUser {
                    email,
                    password_hash,
                    role: "admin",
                    tier: enterprise,
                    organization_name: Some("VoxFlow Admin"),
                },
            )?;
            true
        }
    };
    tx.commit()?;
    Ok(created)
}

/// Sets a new password hash and ends every session of the account except
/// `keep_session` (the one that asked for the change, if any).
pub fn set_password(
    conn: &mut Connection,
    user_id: &str,
    password_hash: &str,
    keep_session: Option<&str>,
) -> rusqlite::Result<bool> {
    let tx = conn.savepoint()?;
    let n = tx.execute(
        "UPDATE users SET password_hash = ?2 WHERE id = ?1",
        params![user_id, password_hash],
    )?;
    tx.execute(
        "DELETE FROM sessions WHERE user_id = ?1 AND id IS NOT ?2",
        params![user_id, keep_session],
    )?;
    tx.commit()?;
    Ok(n == 1)
}

/// A session just created: the token goes to the client once and is never
/// stored; the database keeps its SHA-256.
pub struct NewSession {
    pub token: String,
    pub expires_at: String,
}

/// Records a login: a new session and `last_login`, in one transaction.
pub fn create_session(
    conn: &mut Connection,
    user_id: &str,
    ttl_hours: u32,
    ip: Option<&str>,
    user_agent: Option<&str>,
) -> rusqlite::Result<NewSession> {
    let token = hex::encode(crate::crypto::random_bytes::<32>());
    let tx = conn.savepoint()?;
    let expires_at: String = tx.query_row(
        "INSERT INTO sessions (user_id, token_hash, expires_at, ip_address, user_agent)
         VALUES (?1, ?2, strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?3), ?4, ?5)
         RETURNING expires_at",
        params![
            user_id,
            sha256_hex(token.as_bytes()),
            format!("+{ttl_hours} hours"),
            ip,
            user_agent.map(|ua| ua.chars().take(512).collect::<String>())
        ],
        |r| r.get(0),
    )?;
    tx.execute(
        "UPDATE users SET last_login = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = ?1",
        [user_id],
    )?;
    // Expired sessions are dead weight; a login is a natural moment to sweep.
    tx.execute(
        "DELETE FROM sessions WHERE expires_at <= strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
        [],
    )?;
    tx.commit()?;
    Ok(NewSession { token, expires_at })
}

/// The live session behind a token, with its user as of now.
#[derive(Debug, Clone)]
pub struct SessionUser {
    pub session_id: String,
    /// How long this answer stays true if neither the session nor the user
    /// changes: until the session expires or turns stale, whichever is first.
    pub fresh_for: std::time::Duration,
    pub user: User,
}

impl SessionUser {
    /// True when `last_used_at` is over a minute old and worth refreshing:
    /// a live session has nothing else that would end its freshness now.
    pub fn stale(&self) -> bool {
        self.fresh_for.is_zero()
    }
}

/// The session whose token hashes to `token_hash` (`crypto::sha256_hex`).
pub fn session_user(conn: &Connection, token_hash: &str) -> rusqlite::Result<Option<SessionUser>> {
    // Cached: every authenticated request that misses the session cache runs it.
    conn.prepare_cached(&format!(
        "SELECT s.id,
                86400.0 * (min(julianday(s.expires_at), julianday(s.last_used_at) + 60.0 / 86400.0)
                           - julianday('now')),
                {USER_COLUMNS}
             FROM sessions s JOIN users u ON u.id = s.user_id
             WHERE s.token_hash = ?1 AND s.expires_at > strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"
    ))?
    .query_row([token_hash], |r| {
        let fresh_for: f64 = r.get(1)?;
        Ok(SessionUser {
            session_id: r.get(0)?,
            fresh_for: std::time::Duration::try_from_secs_f64(fresh_for)
                .unwrap_or(std::time::Duration::ZERO),
            user: user_from_row(r, 2)?,
        })
    })
    .optional()
}

pub fn touch_session(conn: &Connection, session_id: &str) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE sessions SET last_used_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = ?1",
        [session_id],
    )?;
    Ok(())
}

pub fn delete_session(conn: &Connection, session_id: &str) -> rusqlite::Result<()> {
    conn.execute("DELETE FROM sessions WHERE id = ?1", [session_id])?;
    Ok(())
}

pub fn delete_sessions_of(conn: &Connection, user_id: &str) -> rusqlite::Result<usize> {
    conn.execute("DELETE FROM sessions WHERE user_id = ?1", [user_id])
}

/// This month's usage for `GET /api/auth/me`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CurrentUsage {
    pub tokens_used: f64,
    pub tokens_remaining: f64,
    pub calls: i64,
    pub agent_count: i64,
    pub agents_remaining: i64,
}

/// A user's row of `current_month_usage`: this month (UTC) so far.
#[derive(Debug, Serialize)]
pub struct MonthUsage {
    pub quota: i64,
    pub tokens_used: f64,
    /// Never below zero, though usage may overrun a quota lowered mid-month.
    pub tokens_remaining: f64,
    pub calls: i64,
    pub duration_seconds: i64,
    pub costs: f64,
}

pub fn month_usage(conn: &Connection, user_id: &str) -> rusqlite::Result<MonthUsage> {
    conn.query_row(
        "SELECT monthly_token_quota, tokens_used_this_month, calls_this_month,
                duration_this_month, costs_this_month
         FROM current_month_usage WHERE user_id = ?1",
        [user_id],
        |r| {
            let quota: i64 = r.get(0)?;
            let tokens_used: f64 = r.get(1)?;
            Ok(MonthUsage {
                quota,
                tokens_used,
                tokens_remaining: round2((quota as f64 - tokens_used).max(0.0)),
                calls: r.get(2)?,
                duration_seconds: r.get(3)?,
                costs: r.get(4)?,
            })
        },
    )
}

pub fn current_usage(conn: &Connection, user: &User) -> rusqlite::Result<CurrentUsage> {
    let month = month_usage(conn, &user.id)?;
    let agent_count: i64 = conn.query_row(
        "SELECT count(*) FROM agents WHERE user_id = ?1",
        [&user.id],
        |r| r.get(0),
    )?;
    Ok(CurrentUsage {
        tokens_used: month.tokens_used,
        tokens_remaining: month.tokens_remaining,
        calls: month.calls,
        agent_count,
        agents_remaining: (user.max_agents - agent_count).max(0),
    })
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
