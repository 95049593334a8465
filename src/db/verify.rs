//! `voxflow verify`: the seed's verification steps, for SQLite.

use std::fmt;

use rusqlite::Connection;

use super::{migrate, DbError};

pub const USERS_COLUMNS: [&str; 11] = [
    "id",
    "email",
    "password_hash",
    "created_at",
    "role",
    "subscription_tier",
    "organization_name",
    "max_agents",
    "monthly_token_quota",
    "is_active",
    "last_login",
];
pub const NEW_TABLES: [&str; 4] = [
    "user_api_keys",
    "user_usage_tracking",
    "subscriptions",
    "admin_audit_logs",
];
pub const TRIGGERS: [(&str, &str); 7] = [
    ("increment_agent_runs", "agent_runs"),
    ("calculate_tokens", "agent_runs"),
    ("enforce_agent_limit", "agents"),
    ("trigger_update_user_usage_tracking", "agent_runs"),
    ("trigger_create_default_subscription", "users"),
    // This edition's: a campaign call's end sets its contact's outcome.
    ("campaign_contact_outcome", "agent_runs"),
    // Version 9: LLM costs into api_costs.
    ("trigger_add_llm_costs", "llm_usage"),
];
/// email, role, tier, max_agents, monthly_token_quota of an admin.
type AdminRow = (String, String, String, i64, i64);

pub const VIEWS: [&str; 2] = ["user_statistics", "current_month_usage"];

#[derive(Debug)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Default)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    fn add(&mut self, name: impl Into<String>, ok: bool, detail: impl Into<String>) {
        self.checks.push(Check {
            name: name.into(),
            ok,
            detail: detail.into(),
        });
    }

    pub fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }

    pub fn failures(&self) -> Vec<&str> {
        self.checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| c.name.as_str())
            .collect()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.checks {
            writeln!(f, "[{}] {}", if c.ok { " ok " } else { "FAIL" }, c.name)?;
            for line in c.detail.lines() {
                writeln!(f, "       {line}")?;
            }
        }
        if self.ok() {
            writeln!(f, "all {} checks passed", self.checks.len())
        } else {
            writeln!(f, "missing or broken: {}", self.failures().join(", "))
        }
    }
}

fn names_of(conn: &Connection, kind: &str) -> Result<Vec<(String, String)>, DbError> {
    let mut stmt =
        conn.prepare("SELECT name, tbl_name FROM sqlite_schema WHERE type = ?1 ORDER BY name")?;
    let rows = stmt.query_map([kind], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Runs every check; only a database that cannot be read at all is an `Err`.
pub fn verify(conn: &Connection) -> Result<Report, DbError> {
    let mut report = Report::default();

    let current = migrate::current_version(conn)?;
    let latest = migrate::latest_version();
    report.add(
        "migrations applied",
        current == latest,
        format!("database at version {current}, this binary's latest is {latest}"),
    );

    // users columns, with types and defaults
    let mut stmt = conn.prepare(
        "SELECT name, type, \"notnull\", dflt_value FROM pragma_table_info('users') ORDER BY cid",
    )?;
    let cols: Vec<(String, String, bool, Option<String>)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<Result<_, _>>()?;
    let missing: Vec<&str> = USERS_COLUMNS
        .iter()
        .copied()
        .filter(|c| !cols.iter().any(|(n, ..)| n == c))
        .collect();
    let detail = cols
        .iter()
        .map(|(n, t, nn, d)| {
            let d = d.as_deref().unwrap_or("none");
            let d = if d.len() > 40 { "(generated)" } else { d };
            format!("{n} {t}{} default {d}", if *nn { " NOT NULL" } else { "" })
        })
        .collect::<Vec<_>>()
        .join("\n");
    report.add(
        "users columns",
        missing.is_empty(),
        if missing.is_empty() {
            detail
        } else {
            format!("missing: {}\n{detail}", missing.join(", "))
        },
    );

    let tables = names_of(conn, "table")?;
    let missing: Vec<&str> = NEW_TABLES
        .iter()
        .copied()
        .filter(|t| !tables.iter().any(|(n, _)| n == t))
        .collect();
    report.add(
        "multi-tenant tables",
        missing.is_empty(),
        if missing.is_empty() {
            NEW_TABLES.join(", ")
        } else {
            format!("missing: {}", missing.join(", "))
        },
    );

    // The admin users and their tier and limits.
    let admins: Result<Vec<AdminRow>, rusqlite::Error> = conn
        .prepare("SELECT email, role, subscription_tier, max_agents, monthly_token_quota FROM users WHERE role = 'admin' ORDER BY created_at")
        .and_then(|mut s| {
            s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))?
                .collect()
        });
    match admins {
        Ok(admins) if !admins.is_empty() => {
            let detail = admins
                .iter()
                .map(|(e, r, t, m, q)| {
                    format!("{e}: role {r}, tier {t}, max_agents {m}, monthly_token_quota {q}")
                })
                .collect::<Vec<_>>()
                .join("\n");
            let first_ok = admins
                .first()
                .is_some_and(|(_, _, t, m, q)| t == "enterprise" && *m >= 100 && *q >= 1_000_000);
            report.add(
                "admin user",
                first_ok,
                if first_ok {
                    detail
                } else {
                    format!("the first admin should be enterprise with at least 100 agents and 1,000,000 tokens\n{detail}")
                },
            );
        }
        Ok(_) => report.add(
            "admin user",
            false,
            "no user has role admin: run `voxflow serve` once or `voxflow admin create`",
        ),
        Err(err) => report.add("admin user", false, err.to_string()),
    }

    let triggers = names_of(conn, "trigger")?;
    let missing: Vec<String> = TRIGGERS
        .iter()
        .filter(|(name, table)| !triggers.iter().any(|(n, t)| n == name && t == table))
        .map(|(name, table)| format!("{name} on {table}"))
        .collect();
    report.add(
        "triggers",
        missing.is_empty(),
        if missing.is_empty() {
            TRIGGERS
                .iter()
                .map(|(n, t)| format!("{n} on {t}"))
                .collect::<Vec<_>>()
                .join("\n")
        } else {
            format!("missing: {}", missing.join(", "))
        },
    );

    for view in VIEWS {
        let read = conn.query_row(&format!("SELECT count(*) FROM {view}"), [], |r| {
            r.get::<_, i64>(0)
        });
        match read {
            Ok(n) => report.add(format!("view {view}"), true, format!("{n} rows")),
            Err(err) => report.add(format!("view {view}"), false, err.to_string()),
        }
    }

    let integrity: Vec<String> = conn
        .prepare("PRAGMA integrity_check")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let ok = integrity.len() == 1 && integrity[0] == "ok";
    report.add("integrity_check", ok, integrity.join("\n"));

    let fk: Vec<String> = conn
        .prepare("PRAGMA foreign_key_check")?
        .query_map([], |r| {
            Ok(format!(
                "{} row {} → {}",
                r.get::<_, String>(0)?,
                r.get::<_, Option<i64>>(1)?.unwrap_or_default(),
                r.get::<_, String>(2)?
            ))
        })?
        .collect::<Result<_, _>>()?;
    report.add(
        "foreign_key_check",
        fk.is_empty(),
        if fk.is_empty() {
            "no orphan rows".to_string()
        } else {
            fk.join("\n")
        },
    );

    Ok(report)
}
