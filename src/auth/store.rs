//! SQL over `users`, owned by the auth area.

use rusqlite::{params, Connection, OptionalExtension};

use crate::tiers::Tier;

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
        .query_row("SELECT 1 FROM users WHERE role = 'admin' LIMIT 1", [], |_| Ok(()))
        .optional()?
        .is_some())
}

pub fn user_id_by_email(conn: &Connection, email: &str) -> rusqlite::Result<Option<String>> {
    conn.query_row("SELECT id FROM users WHERE email = ?1", [email], |r| r.get(0))
        .optional()
}

/// Makes `email` an admin with the seed's admin settings (enterprise tier,
/// 100 agents, 1,000,000 tokens), creating the account if needed, and sets its
/// password. Returns whether the account was created.
pub fn upsert_admin(conn: &mut Connection, email: &str, password_hash: &str) -> rusqlite::Result<bool> {
    let enterprise = crate::tiers::tier("enterprise").unwrap_or(&crate::tiers::TIERS[2]);
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
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

/// Sets a new password hash and ends every session of the account.
pub fn set_password(conn: &mut Connection, email: &str, password_hash: &str) -> rusqlite::Result<bool> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let n = tx.execute(
        "UPDATE users SET password_hash = ?2 WHERE email = ?1",
        params![email, password_hash],
    )?;
    tx.execute(
        "DELETE FROM sessions WHERE user_id IN (SELECT id FROM users WHERE email = ?1)",
        [email],
    )?;
    tx.commit()?;
    Ok(n == 1)
}
