//! The SQLite port of the schema, against a migrated temporary database:
//! every trigger, every view, the types, the constraints, and rolling back.

use std::collections::BTreeSet;

use rusqlite::{params, Connection, OptionalExtension};
use voxflow::db::migrate;

use crate::common::{is_rfc3339_utc, is_uuid_v4, migrated_db, utc_today};

fn insert_user(conn: &Connection, email: &str, tier: &str) -> String {
    conn.query_row(
        "INSERT INTO users (email, password_hash, subscription_tier) VALUES (?1, 'x', ?2) RETURNING id",
        params![email, tier],
        |r| r.get(0),
    )
    .unwrap()
}

fn insert_agent(conn: &Connection, user_id: &str, name: &str) -> rusqlite::Result<String> {
    conn.query_row(
        "INSERT INTO agents (user_id, name, type, use_case, description)
         VALUES (?1, ?2, 'INBOUND', 'support', 'You answer the phone.') RETURNING id",
        params![user_id, name],
        |r| r.get(0),
    )
}

fn insert_run(conn: &Connection, agent_id: &str, run_number: &str) -> String {
    conn.query_row(
        "INSERT INTO agent_runs (run_number, agent_id, type) VALUES (?1, ?2, 'WEB_CALL') RETURNING id",
        params![run_number, agent_id],
        |r| r.get(0),
    )
    .unwrap()
}

/// What the API does when a call ends.
fn complete(conn: &Connection, run_id: &str, seconds: i64) {
    let n = conn
        .execute(
            "UPDATE agent_runs SET duration_seconds = ?2, status = 'completed' WHERE id = ?1",
            params![run_id, seconds],
        )
        .unwrap();
    assert_eq!(n, 1);
}

/// A user with one agent, for tests about runs.
fn user_with_agent(conn: &Connection, email: &str) -> (String, String) {
    let user = insert_user(conn, email, "free");
    let agent = insert_agent(conn, &user, "Front desk").unwrap();
    (user, agent)
}

fn text(conn: &Connection, sql: &str, p: impl rusqlite::Params) -> String {
    conn.query_row(sql, p, |r| r.get(0)).unwrap()
}

fn int(conn: &Connection, sql: &str, p: impl rusqlite::Params) -> i64 {
    conn.query_row(sql, p, |r| r.get(0)).unwrap()
}

fn agent_count(conn: &Connection, user: &str) -> i64 {
    int(
        conn,
        "SELECT count(*) FROM agents WHERE user_id = ?1",
        [user],
    )
}

/// `cents` as the decimal string SQLite's `printf('%.2f')` gives.
fn cents_str(cents: i64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

/// The original's tokens for a call of `seconds`: numeric
/// round(seconds × 0.013, 2), half away from zero, in cents.
fn expected_cents(seconds: i64) -> i64 {
    (seconds * 13 + 5) / 10
}

#[test]
fn a_free_users_third_agent_is_refused_and_the_first_two_stay() {
    let (_dir, mut conn) = migrated_db();
    let user = insert_user(&conn, "free@example.com", "free");
    assert_eq!(
        int(&conn, "SELECT max_agents FROM users WHERE id = ?1", [&user]),
        2
    );

    let tx = conn.transaction().unwrap();
    let first = insert_agent(&tx, &user, "One").unwrap();
    let second = insert_agent(&tx, &user, "Two").unwrap();
    let err = insert_agent(&tx, &user, "Three").unwrap_err();
    let message = err.to_string();
    assert!(
        message.starts_with("Agent limit reached"),
        "unexpected error: {message}"
    );
    assert!(
        message.contains("upgrade your plan"),
        "unexpected error: {message}"
    );
    assert_eq!(
        err.sqlite_error_code(),
        Some(rusqlite::ErrorCode::ConstraintViolation)
    );
    // RAISE(ABORT) undoes the statement, not the transaction around it.
    tx.commit().unwrap();

    let ids: BTreeSet<String> = conn
        .prepare("SELECT id FROM agents WHERE user_id = ?1")
        .unwrap()
        .query_map([&user], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(ids, BTreeSet::from([first, second]));
    assert_eq!(
        int(
            &conn,
            "SELECT count(*) FROM agents WHERE name = 'Three'",
            []
        ),
        0
    );
}

#[test]
fn an_admin_set_limit_of_five_allows_five_and_refuses_the_sixth() {
    let (_dir, conn) = migrated_db();
    let user = insert_user(&conn, "five@example.com", "free");
    conn.execute("UPDATE users SET max_agents = 5 WHERE id = ?1", [&user])
        .unwrap();
    for i in 1..=5 {
        insert_agent(&conn, &user, &format!("Agent {i}"))
            .unwrap_or_else(|e| panic!("agent {i} refused: {e}"));
    }
    let err = insert_agent(&conn, &user, "Agent 6").unwrap_err();
    assert!(err.to_string().starts_with("Agent limit reached"), "{err}");
    assert_eq!(agent_count(&conn, &user), 5);

    // Another user's agents do not count against this one's limit.
    let other = insert_user(&conn, "other@example.com", "free");
    insert_agent(&conn, &other, "Theirs").unwrap();
}

#[test]
fn completing_a_60_second_run_sets_tokens_counts_the_run_and_meters_the_owner() {
    let (_dir, conn) = migrated_db();
    let (user, agent) = user_with_agent(&conn, "caller@example.com");
    let run = insert_run(&conn, &agent, "RUN-1");

    let before = utc_today();
    complete(&conn, &run, 60);
    let after = utc_today();

    let tokens: f64 = conn
        .query_row(
            "SELECT groq_tokens FROM agent_runs WHERE id = ?1",
            [&run],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tokens, 0.78);
    assert_eq!(
        text(
            &conn,
            "SELECT printf('%.2f', groq_tokens) FROM agent_runs WHERE id = ?1",
            [&run]
        ),
        "0.78"
    );
    assert_eq!(
        int(
            &conn,
            "SELECT total_runs FROM agents WHERE id = ?1",
            [&agent]
        ),
        1
    );

    let (date, calls, seconds, tokens, tokens_str): (String, i64, i64, f64, String) = conn
        .query_row(
            "SELECT date, total_calls, total_duration_seconds, total_tokens, printf('%.2f', total_tokens)
             FROM user_usage_tracking WHERE user_id = ?1",
            [&user],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .unwrap();
    assert!(
        date == before || date == after,
        "usage row dated {date}, today (UTC) is {before}"
    );
    assert_eq!((calls, seconds), (1, 60));
    assert_eq!(tokens, 0.78);
    assert_eq!(tokens_str, "0.78");

    // A second completed run the same day adds to the same row.
    let run2 = insert_run(&conn, &agent, "RUN-2");
    complete(&conn, &run2, 30);
    let (rows, calls, seconds, tokens): (i64, i64, i64, String) = conn
        .query_row(
            "SELECT count(*), sum(total_calls), sum(total_duration_seconds), printf('%.2f', sum(total_tokens))
             FROM user_usage_tracking WHERE user_id = ?1",
            [&user],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!((rows, calls, seconds, tokens.as_str()), (1, 2, 90, "1.17"));
    assert_eq!(
        int(
            &conn,
            "SELECT total_runs FROM agents WHERE id = ?1",
            [&agent]
        ),
        2
    );
}

#[test]
fn completing_the_same_run_twice_counts_once() {
    let (_dir, conn) = migrated_db();
    let (user, agent) = user_with_agent(&conn, "twice@example.com");
    let run = insert_run(&conn, &agent, "RUN-1");
    complete(&conn, &run, 60);
    complete(&conn, &run, 60);
    conn.execute(
        "UPDATE agent_runs SET status = 'completed' WHERE id = ?1",
        [&run],
    )
    .unwrap();

    assert_eq!(
        int(
            &conn,
            "SELECT total_runs FROM agents WHERE id = ?1",
            [&agent]
        ),
        1
    );
    let (calls, seconds, tokens): (i64, i64, String) = conn
        .query_row(
            "SELECT total_calls, total_duration_seconds, printf('%.2f', total_tokens)
             FROM user_usage_tracking WHERE user_id = ?1",
            [&user],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!((calls, seconds, tokens.as_str()), (1, 60, "0.78"));
    assert_eq!(
        text(
            &conn,
            "SELECT printf('%.2f', groq_tokens) FROM agent_runs WHERE id = ?1",
            [&run]
        ),
        "0.78"
    );
}

#[test]
fn a_run_that_fails_or_stays_in_progress_is_not_metered() {
    let (_dir, conn) = migrated_db();
    let (user, agent) = user_with_agent(&conn, "failed@example.com");
    let run = insert_run(&conn, &agent, "RUN-1");
    conn.execute(
        "UPDATE agent_runs SET duration_seconds = 40, status = 'failed' WHERE id = ?1",
        [&run],
    )
    .unwrap();
    insert_run(&conn, &agent, "RUN-2");
    assert_eq!(
        int(
            &conn,
            "SELECT total_runs FROM agents WHERE id = ?1",
            [&agent]
        ),
        0
    );
    assert_eq!(
        int(
            &conn,
            "SELECT count(*) FROM user_usage_tracking WHERE user_id = ?1",
            [&user]
        ),
        0
    );
    assert_eq!(
        text(
            &conn,
            "SELECT printf('%.2f', groq_tokens) FROM agent_runs WHERE id = ?1",
            [&run]
        ),
        "0.00"
    );
}

#[test]
fn a_new_user_gets_an_active_subscription_priced_by_tier() {
    let (_dir, conn) = migrated_db();
    for (tier, price, price_str) in [
        ("free", 0.0, "0.00"),
        ("pro", 29.0, "29.00"),
        ("enterprise", 299.0, "299.00"),
    ] {
        let user = insert_user(&conn, &format!("{tier}@example.com"), tier);
        let (plan, status, got, got_str, id): (String, String, f64, String, String) = conn
            .query_row(
                "SELECT plan, status, monthly_price, printf('%.2f', monthly_price), id
                 FROM subscriptions WHERE user_id = ?1",
                [&user],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .unwrap();
        assert_eq!(plan, tier);
        assert_eq!(status, "active");
        assert_eq!(got, price, "{tier}");
        assert_eq!(got_str, price_str, "{tier}");
        assert!(is_uuid_v4(&id), "{id}");
    }
    assert_eq!(int(&conn, "SELECT count(*) FROM subscriptions", []), 3);
}

#[test]
fn current_month_usage_ignores_last_months_rows() {
    let (_dir, conn) = migrated_db();
    let user = insert_user(&conn, "monthly@example.com", "free");
    // The last day of last month, and the 1st of this month (UTC).
    conn.execute(
        "INSERT INTO user_usage_tracking (user_id, date, total_tokens, total_calls, total_duration_seconds, api_costs)
         VALUES (?1, date('now', 'start of month', '-1 day'), 500, 40, 3000, 12.5)",
        [&user],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO user_usage_tracking (user_id, date, total_tokens, total_calls, total_duration_seconds, api_costs)
         VALUES (?1, strftime('%Y-%m-01', 'now'), 1.25, 2, 100, 0.000123)",
        [&user],
    )
    .unwrap();

    let (tokens, calls, seconds, costs, remaining, quota): (String, i64, i64, String, String, i64) =
        conn.query_row(
            "SELECT printf('%.2f', tokens_used_this_month), calls_this_month, duration_this_month,
                    printf('%.6f', costs_this_month), printf('%.2f', tokens_remaining), monthly_token_quota
             FROM current_month_usage WHERE user_id = ?1",
            [&user],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            },
        )
        .unwrap();
    assert_eq!(tokens, "1.25");
    assert_eq!((calls, seconds, quota), (2, 100, 1000));
    // A cost far below a cent is kept, not rounded to zero.
    assert_eq!(costs, "0.000123");
    assert_eq!(remaining, "998.75");

    // A user with no usage has a row of zeros and the whole quota left.
    let idle = insert_user(&conn, "idle@example.com", "free");
    let (tokens, calls, remaining): (f64, i64, f64) = conn
        .query_row(
            "SELECT tokens_used_this_month, calls_this_month, tokens_remaining
             FROM current_month_usage WHERE user_id = ?1",
            [&idle],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!((tokens, calls, remaining), (0.0, 0, 1000.0));
}

#[test]
fn user_statistics_counts_only_completed_runs() {
    let (_dir, conn) = migrated_db();
    let user = insert_user(&conn, "stats@example.com", "pro");
    let a1 = insert_agent(&conn, &user, "One").unwrap();
    let a2 = insert_agent(&conn, &user, "Two").unwrap();
    let done1 = insert_run(&conn, &a1, "R1");
    complete(&conn, &done1, 60);
    let done2 = insert_run(&conn, &a2, "R2");
    complete(&conn, &done2, 10);
    let failed = insert_run(&conn, &a1, "R3");
    conn.execute(
        "UPDATE agent_runs SET duration_seconds = 500, status = 'failed' WHERE id = ?1",
        [&failed],
    )
    .unwrap();
    insert_run(&conn, &a2, "R4"); // still in progress

    let row = conn
        .query_row(
            "SELECT email, role, subscription_tier, max_agents, monthly_token_quota, is_active,
                    agent_count, total_runs, total_duration_seconds, printf('%.2f', total_tokens_used),
                    current_plan, subscription_status
             FROM user_statistics WHERE id = ?1",
            [&user],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, i64>(6)?,
                    r.get::<_, i64>(7)?,
                    r.get::<_, i64>(8)?,
                    r.get::<_, String>(9)?,
                    r.get::<_, String>(10)?,
                    r.get::<_, String>(11)?,
                ))
            },
        )
        .unwrap();
    assert_eq!(
        row,
        (
            "stats@example.com".to_string(),
            "user".to_string(),
            "pro".to_string(),
            2,
            1000,
            1,
            2,
            2,
            70,
            "0.91".to_string(), // 0.78 + 0.13
            "pro".to_string(),
            "active".to_string(),
        )
    );

    let idle = insert_user(&conn, "none@example.com", "free");
    let (agents, runs, seconds, tokens): (i64, i64, i64, f64) = conn
        .query_row(
            "SELECT agent_count, total_runs, total_duration_seconds, total_tokens_used
             FROM user_statistics WHERE id = ?1",
            [&idle],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!((agents, runs, seconds, tokens), (0, 0, 0, 0.0));
}

#[test]
fn tokens_are_exact_to_the_cent_in_rows_and_sums() {
    let (_dir, mut conn) = migrated_db();
    let (user, agent) = user_with_agent(&conn, "cents@example.com");
    // The rounding rule is the original's numeric round, half away from zero:
    // 5 s → 0.065 → 0.07.
    let tx = conn.transaction().unwrap();
    let mut expected_total = 0;
    for seconds in 1..=1000 {
        let run = insert_run(&tx, &agent, &format!("RUN-{seconds}"));
        complete(&tx, &run, seconds);
        expected_total += expected_cents(seconds);
    }
    tx.commit().unwrap();
    let mismatches: Vec<(i64, String)> = conn
        .prepare(
            "SELECT duration_seconds, printf('%.2f', groq_tokens) FROM agent_runs ORDER BY duration_seconds",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .filter(|(s, t): &(i64, String)| *t != cents_str(expected_cents(*s)))
        .collect();
    assert!(mismatches.is_empty(), "tokens off the cent: {mismatches:?}");
    // Every stored value is the double nearest to its two-decimal value.
    assert_eq!(
        int(
            &conn,
            "SELECT count(*) FROM agent_runs WHERE groq_tokens <> round(groq_tokens, 2)",
            []
        ),
        0
    );

    let want = cents_str(expected_total);
    let stats = text(
        &conn,
        "SELECT printf('%.2f', total_tokens_used) FROM user_statistics WHERE id = ?1",
        [&user],
    );
    let usage = text(
        &conn,
        "SELECT printf('%.2f', total_tokens) FROM user_usage_tracking WHERE user_id = ?1",
        [&user],
    );
    let month = text(
        &conn,
        "SELECT printf('%.2f', tokens_used_this_month) FROM current_month_usage WHERE user_id = ?1",
        [&user],
    );
    assert_eq!(
        (stats.as_str(), usage.as_str(), month.as_str()),
        (want.as_str(), want.as_str(), want.as_str())
    );
    for sql in [
        "SELECT total_tokens_used FROM user_statistics WHERE id = ?1",
        "SELECT total_tokens FROM user_usage_tracking WHERE user_id = ?1",
        "SELECT tokens_used_this_month FROM current_month_usage WHERE user_id = ?1",
    ] {
        let v: f64 = conn.query_row(sql, [&user], |r| r.get(0)).unwrap();
        assert_eq!(
            v,
            (v * 100.0).round() / 100.0,
            "{sql}: {v} is not to the cent"
        );
        assert_eq!(format!("{v:.2}"), want, "{sql}");
    }
}

#[test]
fn many_one_second_runs_sum_exactly() {
    let (_dir, mut conn) = migrated_db();
    let (user, agent) = user_with_agent(&conn, "tiny@example.com");
    let tx = conn.transaction().unwrap();
    for i in 0..700 {
        let run = insert_run(&tx, &agent, &format!("R{i}"));
        complete(&tx, &run, 1);
    }
    tx.commit().unwrap();
    assert_eq!(
        int(
            &conn,
            "SELECT count(*) FROM agent_runs WHERE groq_tokens = 0.01",
            []
        ),
        700
    );
    let (stats, usage, month, remaining): (f64, f64, f64, f64) = conn
        .query_row(
            "SELECT s.total_tokens_used, t.total_tokens, m.tokens_used_this_month, m.tokens_remaining
             FROM user_statistics s
             JOIN user_usage_tracking t ON t.user_id = s.id
             JOIN current_month_usage m ON m.user_id = s.id
             WHERE s.id = ?1",
            [&user],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    // Plain float addition of 0.01 seven hundred times gives 7.000000000000…;
    // rounding at every write and sum gives exactly the double nearest 7.00.
    assert_eq!((stats, usage, month, remaining), (7.0, 7.0, 7.0, 993.0));
}

#[test]
fn ids_from_defaults_and_triggers_are_v4_uuids_and_times_are_rfc3339_utc() {
    let (_dir, mut conn) = migrated_db();
    let tx = conn.transaction().unwrap();
    for i in 0..200 {
        insert_user(&tx, &format!("u{i}@example.com"), "free");
    }
    tx.commit().unwrap();
    let (_, agent) = user_with_agent(&conn, "ids@example.com");
    let run = insert_run(&conn, &agent, "RUN-1");
    complete(&conn, &run, 12);

    let mut ids = Vec::new();
    let mut times = Vec::new();
    for (table, id_col, time_cols) in [
        ("users", "id", &["created_at"][..]),
        (
            "subscriptions",
            "id",
            &["started_at", "created_at", "updated_at"][..],
        ),
        (
            "user_usage_tracking",
            "id",
            &["created_at", "updated_at"][..],
        ),
        ("agents", "id", &["created_at"][..]),
        ("agent_runs", "id", &["created_at"][..]),
    ] {
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {id_col}, {} FROM {table}",
                time_cols.join(", ")
            ))
            .unwrap();
        let mut rows = stmt.query([]).unwrap();
        let mut n = 0;
        while let Some(row) = rows.next().unwrap() {
            n += 1;
            ids.push((table, row.get::<_, String>(0).unwrap()));
            for i in 0..time_cols.len() {
                times.push((table, row.get::<_, String>(i + 1).unwrap()));
            }
        }
        assert!(n > 0, "{table} has no rows");
    }
    let bad: Vec<_> = ids.iter().filter(|(_, id)| !is_uuid_v4(id)).collect();
    assert!(bad.is_empty(), "not lowercase v4 UUIDs: {bad:?}");
    let distinct: BTreeSet<&String> = ids.iter().map(|(_, id)| id).collect();
    assert_eq!(distinct.len(), ids.len(), "duplicate ids");
    // Over 400 random ids, every variant nibble shows up.
    let variants: BTreeSet<char> = ids
        .iter()
        .filter_map(|(_, id)| id.chars().nth(19))
        .collect();
    assert_eq!(variants, BTreeSet::from(['8', '9', 'a', 'b']));

    let bad: Vec<_> = times.iter().filter(|(_, t)| !is_rfc3339_utc(t)).collect();
    assert!(bad.is_empty(), "not RFC 3339 UTC: {bad:?}");
    for (table, t) in &times {
        let minutes: f64 = conn
            .query_row(
                "SELECT abs(julianday(?1) - julianday('now')) * 1440",
                [t],
                |r| r.get(0),
            )
            .unwrap();
        assert!(minutes < 10.0, "{table}: {t} is not now");
    }
    let date = text(&conn, "SELECT date FROM user_usage_tracking", []);
    assert_eq!(date.len(), 10);
    assert_eq!(date, utc_today());
}

#[test]
fn foreign_keys_are_enforced_and_cascade() {
    let (_dir, conn) = migrated_db();
    assert_eq!(int(&conn, "PRAGMA foreign_keys", []), 1);

    let err = insert_agent(&conn, "00000000-0000-4000-8000-000000000000", "Orphan").unwrap_err();
    assert!(err.to_string().contains("FOREIGN KEY"), "{err}");
    assert_eq!(int(&conn, "SELECT count(*) FROM agents", []), 0);

    let (user, agent) = user_with_agent(&conn, "gone@example.com");
    let run = insert_run(&conn, &agent, "RUN-1");
    complete(&conn, &run, 60);
    conn.execute(
        "INSERT INTO user_api_keys (user_id, provider, api_key_encrypted, iv, auth_tag) VALUES (?1, 'groq', 'c', 'i', 't')",
        [&user],
    )
    .unwrap();
    let keeper = insert_user(&conn, "keeper@example.com", "free");
    conn.execute(
        "INSERT INTO admin_audit_logs (admin_user_id, action, target_user_id, details) VALUES (?1, 'user.delete', ?2, '{}')",
        [&keeper, &user],
    )
    .unwrap();

    conn.execute("DELETE FROM users WHERE id = ?1", [&user])
        .unwrap();
    for table in [
        "agents",
        "agent_runs",
        "user_api_keys",
        "user_usage_tracking",
    ] {
        assert_eq!(
            int(&conn, &format!("SELECT count(*) FROM {table}"), []),
            0,
            "{table} kept rows of a deleted user"
        );
    }
    assert_eq!(
        int(
            &conn,
            "SELECT count(*) FROM subscriptions WHERE user_id = ?1",
            [&user]
        ),
        0
    );
    // The audit row stays, without its target.
    let target: Option<String> = conn
        .query_row(
            "SELECT target_user_id FROM admin_audit_logs WHERE action = 'user.delete'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(target, None);
    assert!(conn
        .prepare("PRAGMA foreign_key_check")
        .unwrap()
        .query([])
        .unwrap()
        .next()
        .unwrap()
        .is_none());
}

#[test]
fn check_constraints_refuse_bad_values() {
    let (_dir, conn) = migrated_db();
    let user = insert_user(&conn, "checks@example.com", "free");

    let err = conn
        .execute(
            "INSERT INTO agents (user_id, name, type, use_case, description) VALUES (?1, 'A', 'SIDEWAYS', 'x', 'y')",
            [&user],
        )
        .unwrap_err();
    assert!(err.to_string().contains("CHECK constraint failed"), "{err}");

    let err = conn
        .execute("UPDATE users SET role = 'superuser' WHERE id = ?1", [&user])
        .unwrap_err();
    assert!(err.to_string().contains("CHECK constraint failed"), "{err}");

    let err = conn
        .execute(
            "INSERT INTO users (email, password_hash, role) VALUES ('root@example.com', 'x', 'root')",
            [],
        )
        .unwrap_err();
    assert!(err.to_string().contains("CHECK constraint failed"), "{err}");

    for sql in [
        "UPDATE users SET subscription_tier = 'gold' WHERE id = ?1",
        "UPDATE users SET is_active = 2 WHERE id = ?1",
        "INSERT INTO user_api_keys (user_id, provider, api_key_encrypted, iv, auth_tag) VALUES (?1, 'openai', 'c', 'i', 't')",
        "INSERT INTO admin_audit_logs (admin_user_id, action, details) VALUES (?1, 'x', 'not json')",
    ] {
        let err = conn.execute(sql, [&user]).unwrap_err();
        assert!(err.to_string().contains("CHECK constraint failed"), "{sql}: {err}");
    }
    assert_eq!(int(&conn, "SELECT count(*) FROM users", []), 1);
    assert_eq!(
        text(&conn, "SELECT role FROM users WHERE id = ?1", [&user]),
        "user"
    );
}

/// Schema objects other than SQLite's and refinery's own: (type, name, table).
fn schema_objects(conn: &Connection) -> BTreeSet<(String, String, String)> {
    conn.prepare(
        "SELECT type, name, tbl_name FROM sqlite_schema
         WHERE name NOT LIKE 'sqlite_%' AND name <> 'refinery_schema_history'",
    )
    .unwrap()
    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

fn columns(conn: &Connection, table: &str) -> Vec<String> {
    conn.prepare("SELECT name FROM pragma_table_info(?1) ORDER BY cid")
        .unwrap()
        .query_map([table], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn of_type<'a>(objects: &'a BTreeSet<(String, String, String)>, kind: &str) -> BTreeSet<&'a str> {
    objects
        .iter()
        .filter(|(t, ..)| t == kind)
        .map(|(_, n, _)| n.as_str())
        .collect()
}

type V1Rows = Vec<(String, String, String, String, String, i64, String, String)>;

/// Users, agents and runs as version 1 knows them.
fn v1_rows(conn: &Connection, tokens_column: &str) -> V1Rows {
    conn.prepare(&format!(
        "SELECT u.id, u.email, u.password_hash, u.created_at, a.id, a.total_runs, r.id,
                r.status || ' ' || r.duration_seconds || ' ' || printf('%.2f', r.{tokens_column})
         FROM users u JOIN agents a ON a.user_id = u.id JOIN agent_runs r ON r.agent_id = a.id
         ORDER BY r.run_number"
    ))
    .unwrap()
    .query_map([], |r| {
        Ok((
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
            r.get(6)?,
            r.get(7)?,
        ))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

#[test]
fn migrating_down_to_1_and_up_again_keeps_version_1_rows() {
    let (dir, mut conn) = migrated_db();
    let latest = migrate::latest_version();
    assert_eq!(migrate::current_version(&conn).unwrap(), latest);
    let full_schema = schema_objects(&conn);

    // Data in every version-1 table, and some in version-2 tables.
    let (user, agent) = user_with_agent(&conn, "keep@example.com");
    let done = insert_run(&conn, &agent, "RUN-1");
    complete(&conn, &done, 60);
    let open = insert_run(&conn, &agent, "RUN-2");
    let campaign: String = conn
        .query_row(
            "INSERT INTO campaigns (user_id, name, agent_id) VALUES (?1, 'Spring', ?2) RETURNING id",
            [&user, &agent],
            |r| r.get(0),
        )
        .unwrap();
    conn.execute(
        "INSERT INTO campaign_contacts (campaign_id, phone_number, agent_run_id) VALUES (?1, '+15550100', ?2)",
        [&campaign, &done],
    )
    .unwrap();
    conn.execute("INSERT INTO service_configs (user_id) VALUES (?1)", [&user])
        .unwrap();
    conn.execute(
        "INSERT INTO telephony_configs (user_id, account_sid, auth_token, from_phone_number) VALUES (?1, 'AC1', 'tok', '+15550101')",
        [&user],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO user_api_keys (user_id, provider, api_key_encrypted, iv, auth_tag) VALUES (?1, 'groq', 'c', 'i', 't')",
        [&user],
    )
    .unwrap();
    let rows_before = v1_rows(&conn, "groq_tokens");
    assert_eq!(rows_before.len(), 2);
    let v1_counts = |conn: &Connection| -> Vec<i64> {
        [
            "users",
            "agents",
            "agent_runs",
            "campaigns",
            "campaign_contacts",
            "service_configs",
            "telephony_configs",
        ]
        .iter()
        .map(|t| int(conn, &format!("SELECT count(*) FROM {t}"), []))
        .collect()
    };
    let counts_before = v1_counts(&conn);
    assert_eq!(counts_before, vec![1, 1, 2, 1, 1, 1, 1]);

    // Down to 2: sessions go, and groq_tokens is dograh_tokens again.
    let undone = migrate::down(&mut conn, 2).unwrap();
    assert_eq!(undone, (3..=latest).rev().collect::<Vec<_>>());
    assert_eq!(migrate::current_version(&conn).unwrap(), 2);
    let runs_columns = columns(&conn, "agent_runs");
    assert!(runs_columns.contains(&"dograh_tokens".to_string()));
    assert!(!runs_columns.contains(&"groq_tokens".to_string()));
    let at_v2 = schema_objects(&conn);
    let users_at_v2 = columns(&conn, "users");

    // Down to 1: exactly the seed's rollback list goes.
    assert_eq!(migrate::down(&mut conn, 1).unwrap(), vec![2]);
    assert_eq!(migrate::current_version(&conn).unwrap(), 1);
    let at_v1 = schema_objects(&conn);
    let users_at_v1 = columns(&conn, "users");
    assert_eq!(
        users_at_v1,
        ["id", "email", "password_hash", "created_at"].map(String::from)
    );
    let dropped_columns: BTreeSet<&str> = users_at_v2
        .iter()
        .filter(|c| !users_at_v1.contains(c))
        .map(String::as_str)
        .collect();
    assert_eq!(
        dropped_columns,
        BTreeSet::from([
            "role",
            "subscription_tier",
            "organization_name",
            "max_agents",
            "monthly_token_quota",
            "is_active",
            "last_login",
        ])
    );
    assert!(at_v1.is_subset(&at_v2), "rolling back V2 added objects");
    let removed: BTreeSet<(String, String, String)> = at_v2.difference(&at_v1).cloned().collect();
    let new_tables = [
        "user_api_keys",
        "user_usage_tracking",
        "subscriptions",
        "admin_audit_logs",
    ];
    assert_eq!(of_type(&removed, "table"), BTreeSet::from(new_tables));
    assert_eq!(
        of_type(&removed, "trigger"),
        BTreeSet::from([
            "enforce_agent_limit",
            "trigger_update_user_usage_tracking",
            "trigger_create_default_subscription",
        ])
    );
    assert_eq!(
        of_type(&removed, "view"),
        BTreeSet::from(["user_statistics", "current_month_usage"])
    );
    // Indexes go only with their table or their column, as in PostgreSQL.
    let removed_indexes: BTreeSet<&str> = of_type(&removed, "index");
    let expected_indexes: BTreeSet<&str> = at_v2
        .iter()
        .filter(|(t, n, tbl)| {
            t == "index"
                && (new_tables.contains(&tbl.as_str())
                    || (tbl == "users"
                        && dropped_columns
                            .iter()
                            .any(|c| n == &format!("idx_users_{c}"))))
        })
        .map(|(_, n, _)| n.as_str())
        .collect();
    assert_eq!(removed_indexes, expected_indexes);
    assert_eq!(
        removed.len(),
        4 + 3 + 2 + expected_indexes.len(),
        "{removed:?}"
    );
    // Version 1's own triggers stay.
    let v1_triggers = of_type(&at_v1, "trigger");
    assert_eq!(
        v1_triggers,
        BTreeSet::from(["increment_agent_runs", "calculate_tokens"])
    );

    // Version 1's rows are all there, and its triggers still work.
    assert_eq!(v1_rows(&conn, "dograh_tokens"), rows_before);
    assert_eq!(v1_counts(&conn), counts_before);
    complete(&conn, &open, 30);
    assert_eq!(
        text(
            &conn,
            "SELECT printf('%.2f', dograh_tokens) FROM agent_runs WHERE id = ?1",
            [&open]
        ),
        "0.39"
    );
    assert_eq!(
        int(
            &conn,
            "SELECT total_runs FROM agents WHERE id = ?1",
            [&agent]
        ),
        2
    );
    assert_eq!(text(&conn, "PRAGMA integrity_check", []), "ok");
    let rows_at_v1 = v1_rows(&conn, "dograh_tokens");

    // Up again: a backup first (the database holds data), then every version.
    let report = migrate::up(&mut conn, &voxflow::config::backup_dir(dir.path())).unwrap();
    assert_eq!(
        report.applied.iter().map(|(v, _)| *v).collect::<Vec<_>>(),
        (2..=latest).collect::<Vec<_>>()
    );
    let backup = report.backup.expect("a backup before migrating data");
    assert!(backup.starts_with(dir.path().join("backups")), "{backup:?}");
    assert!(backup.exists());
    let copy = Connection::open(&backup).unwrap();
    assert_eq!(v1_rows(&copy, "dograh_tokens"), rows_at_v1);

    assert_eq!(migrate::current_version(&conn).unwrap(), latest);
    assert_eq!(schema_objects(&conn), full_schema);
    assert_eq!(v1_rows(&conn, "groq_tokens"), rows_at_v1);
    assert_eq!(v1_counts(&conn), counts_before);
    // Version 2's columns come back with their defaults; version 3 gives the
    // old user a subscription.
    let (role, tier, max_agents, plan): (String, String, i64, Option<String>) = conn
        .query_row(
            "SELECT u.role, u.subscription_tier, u.max_agents, s.plan
             FROM users u LEFT JOIN subscriptions s ON s.user_id = u.id WHERE u.id = ?1",
            [&user],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!(
        (role.as_str(), tier.as_str(), max_agents, plan.as_deref()),
        ("user", "free", 2, Some("free"))
    );
    assert_eq!(
        text(
            &conn,
            "SELECT printf('%.2f', total_tokens_used) FROM user_statistics WHERE id = ?1",
            [&user]
        ),
        "1.17"
    );
    // The triggers of version 2 are back, reading the renamed column.
    let err =
        insert_agent(&conn, &user, "Second").and_then(|_| insert_agent(&conn, &user, "Third"));
    assert!(err
        .unwrap_err()
        .to_string()
        .starts_with("Agent limit reached"));
    assert!(conn
        .query_row("SELECT 1 FROM user_api_keys", [], |_| Ok(()))
        .optional()
        .unwrap()
        .is_none());
}

#[test]
fn migrating_an_up_to_date_database_does_nothing() {
    let (dir, mut conn) = migrated_db();
    insert_user(&conn, "someone@example.com", "free");
    let report = migrate::up(&mut conn, &voxflow::config::backup_dir(dir.path())).unwrap();
    assert!(report.applied.is_empty());
    assert!(report.backup.is_none());
    let status = migrate::status(&conn).unwrap();
    assert_eq!(status.len() as i32, migrate::latest_version());
    assert!(status.iter().all(|m| m.applied_on.is_some()));
}
