//! Version 12's per-user totals: after any mix of accounts, agents, runs
//! started, finished, reopened, moved and deleted, usage rows and a month
//! turning, `user_statistics` and `current_month_usage` (which read the
//! totals) say what a recount from `agent_runs` and `user_usage_tracking`
//! says.

use proptest::prelude::*;
use rusqlite::{params, Connection};

use crate::common::migrated_db;

/// Version 2's views, which recount everything at each read: the reference.
const RECOUNT_STATISTICS: &str = "
    SELECT u.id,
           (SELECT count(*) FROM agents a WHERE a.user_id = u.id),
           (SELECT count(*) FROM agent_runs r JOIN agents a ON a.id = r.agent_id
             WHERE a.user_id = u.id AND r.status = 'completed'),
           (SELECT coalesce(sum(r.duration_seconds), 0) FROM agent_runs r JOIN agents a ON a.id = r.agent_id
             WHERE a.user_id = u.id AND r.status = 'completed'),
           (SELECT round(coalesce(sum(r.groq_tokens), 0), 2) FROM agent_runs r JOIN agents a ON a.id = r.agent_id
             WHERE a.user_id = u.id AND r.status = 'completed')
    FROM users u ORDER BY u.id";
const RECOUNT_MONTH: &str = "
    SELECT u.id, round(coalesce(sum(t.total_tokens), 0), 2), coalesce(sum(t.total_calls), 0),
           coalesce(sum(t.total_duration_seconds), 0), round(coalesce(sum(t.api_costs), 0), 6),
           round(u.monthly_token_quota - coalesce(sum(t.total_tokens), 0), 2)
    FROM users u
    LEFT JOIN user_usage_tracking t
           ON t.user_id = u.id
          AND t.date >= strftime('%Y-%m-01', 'now')
          AND t.date < date('now', 'start of month', '+1 month')
    GROUP BY u.id ORDER BY u.id";

#[derive(Debug, Clone)]
enum Op {
    NewUser,
    DeleteUser(usize),
    NewAgent(usize),
    DeleteAgent(usize),
    /// An agent handed to another user.
    MoveAgent(usize, usize),
    StartRun(usize),
    /// As `calls::store::finish_run`: duration and status in one UPDATE
    /// (completed, or failed).
    FinishRun(usize, i64, bool),
    /// A finished run back in progress (an operator's repair).
    ReopenRun(usize),
    DeleteRun(usize),
    /// A run given to another agent.
    MoveRun(usize, usize),
    /// LLM costs of today, as the version 9 trigger adds them.
    LlmCost(usize, i64),
    /// A usage row of another month (-1: last month, 1: next month).
    OtherMonth(usize, i64),
    /// The month turns for a user: their rows of this month become last
    /// month's, and their totals are left as the last write of that month
    /// left them.
    MonthTurns(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let i = || 0usize..64;
    prop_oneof![
        2 => Just(Op::NewUser),
        1 => i().prop_map(Op::DeleteUser),
        4 => i().prop_map(Op::NewAgent),
        1 => i().prop_map(Op::DeleteAgent),
        1 => (i(), i()).prop_map(|(a, u)| Op::MoveAgent(a, u)),
        8 => i().prop_map(Op::StartRun),
        8 => (i(), 0i64..4000, any::<bool>()).prop_map(|(r, s, c)| Op::FinishRun(r, s, c)),
        1 => i().prop_map(Op::ReopenRun),
        1 => i().prop_map(Op::DeleteRun),
        1 => (i(), i()).prop_map(|(r, a)| Op::MoveRun(r, a)),
        2 => (i(), 1i64..5_000_000).prop_map(|(u, m)| Op::LlmCost(u, m)),
        1 => (i(), prop_oneof![Just(-1i64), Just(1i64)]).prop_map(|(u, m)| Op::OtherMonth(u, m)),
        1 => i().prop_map(Op::MonthTurns),
    ]
}

/// The ids of `table` (oldest first), and the `n`th of them modulo their count.
fn pick(conn: &Connection, table: &str, n: usize) -> Option<String> {
    let ids: Vec<String> = conn
        .prepare(&format!("SELECT id FROM {table} ORDER BY rowid"))
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    (!ids.is_empty()).then(|| ids[n % ids.len()].clone())
}

fn apply(conn: &Connection, op: &Op, serial: usize) {
    match op {
        Op::NewUser => {
            conn.execute(
                "INSERT INTO users (email, password_hash, max_agents) VALUES (?1, 'x', 1000)",
                [format!("u{serial}@example.com")],
            )
            .unwrap();
        }
        Op::DeleteUser(u) => {
            if let Some(u) = pick(conn, "users", *u) {
                conn.execute("DELETE FROM users WHERE id = ?1", [u])
                    .unwrap();
            }
        }
        Op::NewAgent(u) => {
            if let Some(u) = pick(conn, "users", *u) {
                conn.execute(
                    "INSERT INTO agents (user_id, name, type, use_case, description)
                     VALUES (?1, 'Desk', 'INBOUND', 'support', 'You answer the phone.')",
                    [u],
                )
                .unwrap();
            }
        }
        Op::DeleteAgent(a) => {
            if let Some(a) = pick(conn, "agents", *a) {
                conn.execute("DELETE FROM agents WHERE id = ?1", [a])
                    .unwrap();
            }
        }
        Op::MoveAgent(a, u) => {
            if let (Some(a), Some(u)) = (pick(conn, "agents", *a), pick(conn, "users", *u)) {
                conn.execute("UPDATE agents SET user_id = ?2 WHERE id = ?1", [a, u])
                    .unwrap();
            }
        }
        Op::StartRun(a) => {
            if let Some(a) = pick(conn, "agents", *a) {
                conn.execute(
                    "INSERT INTO agent_runs (run_number, agent_id, type) VALUES (?1, ?2, 'WEB_CALL')",
                    params![format!("RUN-{serial}"), a],
                )
                .unwrap();
            }
        }
        Op::FinishRun(r, seconds, completed) => {
            if let Some(r) = pick(conn, "agent_runs", *r) {
                let status = if *completed { "completed" } else { "failed" };
                conn.execute(
                    "UPDATE agent_runs SET duration_seconds = ?2, status = ?3,
                            completed_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
                     WHERE id = ?1 AND status = 'in_progress'",
                    params![r, seconds, status],
                )
                .unwrap();
            }
        }
        Op::ReopenRun(r) => {
            if let Some(r) = pick(conn, "agent_runs", *r) {
                conn.execute(
                    "UPDATE agent_runs SET status = 'in_progress' WHERE id = ?1",
                    [r],
                )
                .unwrap();
            }
        }
        Op::DeleteRun(r) => {
            if let Some(r) = pick(conn, "agent_runs", *r) {
                conn.execute("DELETE FROM agent_runs WHERE id = ?1", [r])
                    .unwrap();
            }
        }
        Op::MoveRun(r, a) => {
            if let (Some(r), Some(a)) = (pick(conn, "agent_runs", *r), pick(conn, "agents", *a)) {
                conn.execute("UPDATE agent_runs SET agent_id = ?2 WHERE id = ?1", [r, a])
                    .unwrap();
            }
        }
        Op::LlmCost(u, micros) => {
            if let Some(u) = pick(conn, "users", *u) {
                conn.execute(
                    "INSERT INTO user_usage_tracking (user_id, date, api_costs)
                     VALUES (?1, strftime('%Y-%m-%d', 'now'), round(?2 / 1000000.0, 6))
                     ON CONFLICT (user_id, date) DO UPDATE SET
                         api_costs = round(api_costs + excluded.api_costs, 6)",
                    params![u, micros],
                )
                .unwrap();
            }
        }
        Op::OtherMonth(u, months) => {
            if let Some(u) = pick(conn, "users", *u) {
                conn.execute(
                    "INSERT INTO user_usage_tracking (user_id, date, total_tokens, total_calls, total_duration_seconds)
                     VALUES (?1, date('now', 'start of month', ?2), 1.25, 1, 96)
                     ON CONFLICT (user_id, date) DO UPDATE SET total_calls = total_calls + 1",
                    params![u, format!("{months:+} months")],
                )
                .unwrap();
            }
        }
        Op::MonthTurns(u) => {
            if let Some(u) = pick(conn, "users", *u) {
                let left: (f64, i64, i64, f64) = conn
                    .query_row(
                        "SELECT month_tokens, month_calls, month_duration_seconds, month_costs
                         FROM user_totals WHERE user_id = ?1",
                        [&u],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                    )
                    .unwrap();
                conn.execute(
                    "DELETE FROM user_usage_tracking WHERE user_id = ?1 AND date < date('now', 'start of month')",
                    [&u],
                )
                .unwrap();
                // The same day of last month (at most its 28th, which every
                // month has).
                conn.execute(
                    "UPDATE user_usage_tracking
                     SET date = date('now', 'start of month', '-1 month',
                                     '+' || min(27, CAST(strftime('%d', date) AS INTEGER) - 1) || ' days')
                     WHERE user_id = ?1 AND date >= date('now', 'start of month')
                       AND date < date('now', 'start of month', '+1 month')",
                    [&u],
                )
                .unwrap();
                // What the totals held at the end of that month: nothing has
                // written since the month turned.
                conn.execute(
                    "UPDATE user_totals SET month = strftime('%Y-%m', 'now', 'start of month', '-1 month'),
                            month_tokens = ?2, month_calls = ?3, month_duration_seconds = ?4, month_costs = ?5
                     WHERE user_id = ?1",
                    params![u, left.0, left.1, left.2, left.3],
                )
                .unwrap();
            }
        }
    }
}

type StatRow = (String, i64, i64, i64, f64);
type MonthRow = (String, f64, i64, i64, f64, f64);

fn statistics(conn: &Connection, sql: &str) -> Vec<StatRow> {
    conn.prepare(sql)
        .unwrap()
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn month(conn: &Connection, sql: &str) -> Vec<MonthRow> {
    conn.prepare(sql)
        .unwrap()
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn check(conn: &Connection) -> Result<(), TestCaseError> {
    prop_assert_eq!(
        statistics(
            conn,
            "SELECT id, agent_count, total_runs, total_duration_seconds, total_tokens_used
             FROM user_statistics ORDER BY id"
        ),
        statistics(conn, RECOUNT_STATISTICS)
    );
    prop_assert_eq!(
        month(
            conn,
            "SELECT user_id, tokens_used_this_month, calls_this_month, duration_this_month,
                    costs_this_month, tokens_remaining
             FROM current_month_usage ORDER BY user_id"
        ),
        month(conn, RECOUNT_MONTH)
    );
    // The runs by status the overview sums from the totals.
    let by_status = |sql: &str| -> (i64, i64, i64) {
        conn.query_row(sql, [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
    };
    prop_assert_eq!(
        by_status(
            "SELECT coalesce(sum(runs_in_progress), 0), coalesce(sum(total_runs), 0),
                    coalesce(sum(runs_failed), 0) FROM user_totals"
        ),
        by_status(
            "SELECT coalesce(sum(status = 'in_progress'), 0), coalesce(sum(status = 'completed'), 0),
                    coalesce(sum(status = 'failed'), 0) FROM agent_runs"
        )
    );
    // One row of totals per user, no more, no fewer: the admin list
    // counts users without joining their totals.
    let count = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
    prop_assert_eq!(
        count("SELECT count(*) FROM users u JOIN user_totals t ON t.user_id = u.id"),
        count("SELECT count(*) FROM users")
    );
    prop_assert_eq!(
        count("SELECT count(*) FROM user_totals"),
        count("SELECT count(*) FROM users")
    );
    // This month's figures the overview sums from the totals alone.
    let month_sums = |sql: &str| -> (String, i64, i64) {
        conn.query_row(sql, [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
    };
    prop_assert_eq!(
        month_sums(
            "SELECT printf('%.2f', coalesce(sum(round(month_tokens, 2)), 0)),
                    coalesce(sum(month_calls), 0), coalesce(sum(month_duration_seconds), 0)
             FROM user_totals WHERE month = strftime('%Y-%m', 'now')"
        ),
        month_sums(
            "SELECT printf('%.2f', coalesce(sum(tokens_used_this_month), 0)),
                    coalesce(sum(calls_this_month), 0), coalesce(sum(duration_this_month), 0)
             FROM current_month_usage"
        )
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn the_totals_agree_with_a_recount(ops in proptest::collection::vec(op(), 1..160)) {
        let (_dir, conn) = migrated_db();
        for (serial, op) in ops.iter().enumerate() {
            apply(&conn, op, serial);
        }
        check(&conn)?;
    }
}

/// The totals of a database that held data before version 12 are back-filled.
#[test]
fn migrating_to_12_back_fills_the_totals() {
    let (_dir, mut conn) = migrated_db();
    for (serial, op) in [
        Op::NewUser,
        Op::NewUser,
        Op::NewAgent(0),
        Op::NewAgent(1),
        Op::StartRun(0),
        Op::StartRun(1),
        Op::StartRun(1),
        Op::FinishRun(0, 95, true),
        Op::FinishRun(1, 30, false),
        Op::LlmCost(1, 1234),
    ]
    .iter()
    .enumerate()
    {
        apply(&conn, op, serial);
    }
    let latest = voxflow::db::migrate::latest_version();
    voxflow::db::migrate::down(&mut conn, latest - 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    voxflow::db::migrate::up(&mut conn, dir.path()).unwrap();
    check(&conn).unwrap();
    let (runs, tokens): (i64, f64) = conn
        .query_row(
            "SELECT sum(total_runs), sum(total_tokens_used) FROM user_statistics",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((runs, tokens), (1, 1.24));
}

/// The admin list sorts by the totals, and the overview counts runs from
/// them.
#[tokio::test]
async fn the_admin_list_sorts_by_total_runs_and_the_overview_counts_them() {
    let app = crate::common::TestApp::start().await;
    let token = crate::auth::admin_token(&app).await;
    let conn = voxflow::db::open_connection(&app.db_path(), false).unwrap();
    // Three users with 0, 2 and 1 completed runs, plus one failed run.
    for (serial, op) in [
        Op::NewUser,
        Op::NewUser,
        Op::NewUser,
        Op::NewAgent(1),
        Op::NewAgent(2),
        Op::NewAgent(3),
        Op::StartRun(1),
        Op::StartRun(1),
        Op::StartRun(2),
        Op::StartRun(2),
        Op::FinishRun(0, 60, true),
        Op::FinishRun(1, 60, true),
        Op::FinishRun(2, 60, true),
        Op::FinishRun(3, 60, false),
    ]
    .iter()
    .enumerate()
    {
        apply(&conn, op, serial);
    }
    let (status, body) = crate::auth::get(
        &app,
        "/api/admin/users?sort_by=total_runs&order=desc&limit=2",
        Some(&token),
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    let runs: Vec<i64> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["total_runs"].as_i64().unwrap())
        .collect();
    assert_eq!(runs, [2, 1]);
    assert_eq!(body["data"][0]["email"], "u1@example.com");
    let (status, body) =
        crate::auth::get(&app, "/api/admin/analytics/overview", Some(&token)).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    assert_eq!(
        body["data"]["runs"],
        serde_json::json!({"total": 4, "completed": 3, "in_progress": 0, "failed": 1})
    );
}
