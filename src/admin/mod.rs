//! The admin area: users, limits, agents, the audit log, platform analytics
//! and CSV exports. Every change an admin makes is written to
//! `admin_audit_logs` in the same transaction.

mod agents;
mod analytics;
pub mod audit;
mod export;
pub mod routes;
pub(crate) mod users;
