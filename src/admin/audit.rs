//! `admin_audit_logs`: who did what to whom, from where. Details are JSON
//! and never carry a secret.

use rusqlite::{params, Connection};
use serde_json::Value;

use crate::http::extract::ClientInfo;

pub struct Entry<'a> {
    pub admin_user_id: &'a str,
    pub action: &'a str,
    pub target_user_id: Option<&'a str>,
    pub resource_type: Option<&'a str>,
    pub resource_id: Option<&'a str>,
    pub details: Value,
    pub client: &'a ClientInfo,
}

pub fn record(conn: &Connection, e: &Entry<'_>) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO admin_audit_logs
           (admin_user_id, action, target_user_id, target_resource_type, target_resource_id, details, ip_address, user_agent)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            e.admin_user_id,
            e.action,
            e.target_user_id,
            e.resource_type,
            e.resource_id,
            e.details.to_string(),
            e.client.ip.chars().take(45).collect::<String>(),
            e.client.user_agent
        ],
    )?;
    Ok(())
}
