//! The admin area: users, limits and the audit log. Every change an admin
//! makes is written to `admin_audit_logs` in the same transaction.

pub mod audit;
pub mod routes;
