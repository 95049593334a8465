//! `/api/usage/*` and `/api/reports/*`: a tenant's own figures only. Every
//! query joins the runs to the caller's agents; another tenant's agent id is
//! a 404, as on `/api/agents`.

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use rusqlite::{params_from_iter, Connection};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::csv;
use super::{hours_minutes, percent_used, warning, DailyReport, DayWindow, ReportRun};
use crate::agents::routes::find_agent;
use crate::agents::LimitsInfo;
use crate::auth::extract::CurrentUser;
use crate::auth::store;
use crate::calls::store::{dollars, run_from_row, Run, RUN_COLUMNS};
use crate::http::error::{ok, ApiError, ApiResult};
use crate::http::extract::ApiQuery;
use crate::http::filters::{
    check_disposition, given, like_pattern, optional_filter, unless_all, SqlFilter,
};
use crate::http::openapi::{Envelope, ErrorBody, Paged};
use crate::http::pagination::Page;
use crate::http::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(dashboard))
        .routes(routes!(history))
        .routes(routes!(daily_report))
        .routes(routes!(download_report))
}

/// One day of this month's usage, zero-filled when nothing was counted.
#[derive(Serialize, ToSchema)]
struct UsageDay {
    date: String,
    tokens: f64,
    calls: i64,
    duration_seconds: i64,
    costs: f64,
}

/// Every day from the 1st of this month (UTC) to today, from
/// `user_usage_tracking`, which the completion trigger fills.
fn daily_series(conn: &Connection, user_id: &str) -> rusqlite::Result<Vec<UsageDay>> {
    conn.prepare(
        "WITH RECURSIVE days(d) AS (
             SELECT date('now', 'start of month')
             UNION ALL SELECT date(d, '+1 day') FROM days WHERE d < date('now')
         )
         SELECT days.d, round(coalesce(t.total_tokens, 0), 2), coalesce(t.total_calls, 0),
                coalesce(t.total_duration_seconds, 0), round(coalesce(t.api_costs, 0), 6)
         FROM days LEFT JOIN user_usage_tracking t ON t.user_id = ?1 AND t.date = days.d
         ORDER BY days.d",
    )?
    .query_map([user_id], |r| {
        Ok(UsageDay {
            date: r.get(0)?,
            tokens: r.get(1)?,
            calls: r.get(2)?,
            duration_seconds: r.get(3)?,
            costs: r.get(4)?,
        })
    })?
    .collect()
}

/// This month's usage, its warning, the daily series and the agent limit.
#[utoipa::path(get, path = "/usage/dashboard", tag = "usage",
    responses((status = 200, body = Envelope<Dashboard>)))]
async fn dashboard(State(state): State<AppState>, current: CurrentUser) -> ApiResult<Response> {
    let user_id = current.user.id;
    let (month, limits, daily) = state
        .db
        .read(move |c| {
            // One snapshot, so the totals and the series agree.
            let tx = c.savepoint()?;
            let month = store::month_usage(&tx, &user_id)?;
            let limits = LimitsInfo::read(&tx, &user_id)?;
            let daily = daily_series(&tx, &user_id)?;
            Ok::<_, ApiError>((month, limits, daily))
        })
        .await?;
    let percent = percent_used(month.tokens_used, month.quota);
    let period = Period {
        start: daily.first().map(|d| d.date.clone()),
        end: daily.last().map(|d| d.date.clone()),
        timezone: "UTC",
    };
    Ok(ok(
        StatusCode::OK,
        Dashboard {
            period,
            tokens_used: month.tokens_used,
            quota: month.quota,
            remaining: month.tokens_remaining,
            percent,
            warning: warning(percent),
            calls: month.calls,
            duration: month.duration_seconds,
            costs: month.costs,
            agents: limits.json(),
            current_usage: FirstEditionUsage {
                agents: limits.current,
                tokens_this_month: month.tokens_used,
            },
            total_runs: month.calls,
            total_duration_formatted: hours_minutes(month.duration_seconds),
            daily,
        },
    ))
}

/// The days the dashboard covers: this month (UTC) up to today.
#[derive(Serialize, ToSchema)]
struct Period {
    start: Option<String>,
    end: Option<String>,
    timezone: &'static str,
}

/// The first edition's names for figures of the dashboard: this month's
/// tokens and completed calls, the agent count.
#[derive(Serialize, ToSchema)]
struct FirstEditionUsage {
    agents: i64,
    tokens_this_month: f64,
}

#[derive(Serialize, ToSchema)]
struct Dashboard {
    period: Period,
    tokens_used: f64,
    quota: i64,
    remaining: f64,
    /// Of the quota used, 0–100 (100 without a quota).
    percent: f64,
    /// `none`, `80`, `90` or `100`: the threshold passed.
    warning: &'static str,
    /// Completed calls this month.
    calls: i64,
    /// Seconds of calls this month.
    duration: i64,
    costs: f64,
    daily: Vec<UsageDay>,
    /// `{current, max, remaining}`.
    #[schema(value_type = Object)]
    agents: serde_json::Value,
    current_usage: FirstEditionUsage,
    /// `calls`, by the first edition's name.
    total_runs: i64,
    /// `duration` as `1h 02m`.
    total_duration_formatted: String,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct HistoryQuery {
    page: Option<u32>,
    limit: Option<u32>,
    agent_id: Option<String>,
    phone: Option<String>,
    disposition: Option<String>,
    date_from: Option<String>,
    date_to: Option<String>,
    /// A cleared number input sends `min_duration=`: no filter.
    #[serde(default, deserialize_with = "optional_filter")]
    min_duration: Option<u32>,
    #[serde(default, deserialize_with = "optional_filter")]
    max_duration: Option<u32>,
}

/// The caller's agent named by a query's `agent_id`: a malformed id is a
/// 400 naming it, another tenant's a 404 as a missing one.
async fn agent_filter(
    state: &AppState,
    user_id: &str,
    raw: &Option<String>,
) -> ApiResult<Option<String>> {
    let Some(raw) = unless_all(raw) else {
        return Ok(None);
    };
    let id = Uuid::parse_str(raw).map_err(|_| ApiError::field("agent_id", "must be a UUID"))?;
    Ok(Some(find_agent(state, user_id.to_string(), id).await?.id))
}

/// A run with its agent's name and what its LLM turns cost (dollars), as
/// the history lists it.
#[derive(Serialize, ToSchema)]
struct HistoryRun {
    #[serde(flatten)]
    run: Run,
    agent_name: String,
    /// The agent as the first edition's join gave it: `{name}`.
    agents: AgentName,
    api_costs: f64,
}

#[derive(Serialize, ToSchema)]
struct AgentName {
    name: String,
}

/// The micro-dollars the LLM turns of run `r` cost (`llm_usage`).
const RUN_LLM_COST: &str =
    "(SELECT coalesce(sum(u.cost_micros), 0) FROM llm_usage u WHERE u.run_id = r.id)";

/// The caller's runs, newest first, with filters.
#[utoipa::path(get, path = "/usage/history", tag = "usage", params(HistoryQuery),
    responses(
        (status = 200, body = Paged<HistoryRun>),
        (status = 404, body = ErrorBody, description = "`agent_id` is not one of the caller's agents"),
    ))]
async fn history(
    State(state): State<AppState>,
    current: CurrentUser,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> ApiResult<Response> {
    let page = Page::new(q.page, q.limit)?;
    let user_id = current.user.id;
    let mut filter = SqlFilter::default();
    filter.add("a.user_id = ?", user_id.clone());
    if let Some(agent) = agent_filter(&state, &user_id, &q.agent_id).await? {
        filter.add("r.agent_id = ?", agent);
    }
    if let Some(phone) = given(&q.phone) {
        // Part of a number is enough: digits, `+` and the usual separators.
        if phone.len() > 32
            || !phone
                .chars()
                .all(|c| c.is_ascii_digit() || "+-() ".contains(c))
        {
            return Err(ApiError::field(
                "phone",
                "must be (part of) a phone number: digits, +, -, (, ) and spaces",
            ));
        }
        filter.add("r.phone_number LIKE ? ESCAPE '\\'", like_pattern(phone));
    }
    if let Some(d) = unless_all(&q.disposition) {
        filter.add("r.disposition = ?", check_disposition(d)?);
    }
    filter.dates("r.created_at", &q.date_from, &q.date_to)?;
    if let (Some(min), Some(max)) = (q.min_duration, q.max_duration) {
        if min > max {
            return Err(ApiError::field(
                "max_duration",
                "must not be less than min_duration",
            ));
        }
    }
    if let Some(min) = q.min_duration {
        filter.add("r.duration_seconds >= ?", i64::from(min));
    }
    if let Some(max) = q.max_duration {
        filter.add("r.duration_seconds <= ?", i64::from(max));
    }
    let (runs, total) = state
        .db
        .read(move |c| {
            filter
                .page_of(
                    c,
                    "agent_runs r JOIN agents a ON a.id = r.agent_id",
                    &format!("{RUN_COLUMNS}, a.name, {RUN_LLM_COST}"),
                    "r.created_at DESC, r.rowid DESC",
                    page,
                    |r| {
                        let agent_name: String = r.get(14)?;
                        Ok(HistoryRun {
                            run: run_from_row(r, 0)?,
                            agents: AgentName {
                                name: agent_name.clone(),
                            },
                            agent_name,
                            api_costs: dollars(r.get(15)?),
                        })
                    },
                )
                .map_err(ApiError::from)
        })
        .await?;
    Ok(page.respond(runs, total))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ReportQuery {
    /// The local day, `YYYY-MM-DD` (required).
    date: Option<String>,
    agent_id: Option<String>,
    timezone: Option<String>,
}

/// The window of the asked day and the caller's runs completed in it,
/// oldest first.
async fn report_runs(
    state: &AppState,
    user_id: String,
    q: &ReportQuery,
) -> ApiResult<(DayWindow, Option<String>, Vec<ReportRun>)> {
    let date = given(&q.date).ok_or_else(|| ApiError::field("date", "is required"))?;
    let window = DayWindow::new(date, given(&q.timezone))?;
    let agent = agent_filter(state, &user_id, &q.agent_id).await?;
    let (start, end) = window.db_bounds();
    let mut filter = SqlFilter::default();
    filter.add("a.user_id = ?", user_id);
    filter.add("r.status = 'completed' AND r.completed_at >= ?", start);
    filter.add("r.completed_at < ?", end);
    if let Some(agent) = &agent {
        filter.add("r.agent_id = ?", agent.clone());
    }
    let runs = state
        .db
        .read(move |c| {
            c.prepare(&format!(
                "SELECT r.id, a.name, r.phone_number, r.disposition, r.completed_at,
                        r.duration_seconds, r.groq_tokens, {RUN_LLM_COST}
                 FROM agent_runs r JOIN agents a ON a.id = r.agent_id
                 WHERE {} ORDER BY r.completed_at, r.rowid",
                filter.where_sql()
            ))?
            .query_map(params_from_iter(filter.args.iter()), |r| {
                Ok(ReportRun {
                    id: r.get(0)?,
                    agent_name: r.get(1)?,
                    phone_number: r.get(2)?,
                    disposition: r.get(3)?,
                    completed_at: r.get(4)?,
                    duration_seconds: r.get(5)?,
                    tokens: r.get(6)?,
                    api_costs_micros: r.get(7)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()
            .map_err(ApiError::from)
        })
        .await?;
    Ok((window, agent, runs))
}

/// One local day's completed runs, summarised.
#[utoipa::path(get, path = "/reports/daily", tag = "usage", params(ReportQuery),
    responses(
        (status = 200, body = Envelope<DailyReport>),
        (status = 404, body = ErrorBody, description = "`agent_id` is not one of the caller's agents"),
    ))]
async fn daily_report(
    State(state): State<AppState>,
    current: CurrentUser,
    ApiQuery(q): ApiQuery<ReportQuery>,
) -> ApiResult<Response> {
    let (window, agent, runs) = report_runs(&state, current.user.id, &q).await?;
    Ok(ok(StatusCode::OK, DailyReport::new(&window, agent, &runs)))
}

pub const CSV_HEADER: [&str; 7] = [
    "Run ID",
    "Agent Name",
    "Phone",
    "Disposition",
    "Date",
    "Duration",
    "Tokens",
];

/// The same runs as CSV.
#[utoipa::path(get, path = "/reports/download", tag = "usage", params(ReportQuery),
    responses(
        (status = 200, description = "The runs as CSV", content_type = "text/csv", body = String),
        (status = 404, body = ErrorBody, description = "`agent_id` is not one of the caller's agents"),
    ))]
async fn download_report(
    State(state): State<AppState>,
    current: CurrentUser,
    ApiQuery(q): ApiQuery<ReportQuery>,
) -> ApiResult<Response> {
    let (window, _, runs) = report_runs(&state, current.user.id, &q).await?;
    let mut body = csv::record(&CSV_HEADER);
    for run in &runs {
        body.push_str(&csv::record(&[
            run.id.clone(),
            run.agent_name.clone(),
            run.phone_number.clone().unwrap_or_default(),
            run.disposition.clone().unwrap_or_default(),
            window.local_time(&run.completed_at),
            run.duration_seconds.to_string(),
            format!("{:.2}", run.tokens),
        ]));
    }
    // The date was checked as YYYY-MM-DD, so it is safe in the header.
    let disposition = format!(
        "attachment; filename=\"voxflow-report-{}.csv\"",
        window.date
    );
    let disposition =
        HeaderValue::from_str(&disposition).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok((
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8"),
            ),
            (header::CONTENT_DISPOSITION, disposition),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response())
}
