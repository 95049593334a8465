//! Campaigns: a contact list imported from CSV, called by one of the
//! tenant's agents, with a state that moves only along legal transitions,
//! and a dialer whose state is the database (`store`, `dialer`).

pub mod dialer;
pub mod import;
pub mod routes;
pub mod store;
pub mod window;

pub use store::{owned_campaign, Campaign, Counts};

pub const STATES: [&str; 5] = ["created", "running", "paused", "completed", "stopped"];
/// A contact's states; `called` is the first edition's name for `reached`,
/// still accepted as a filter.
pub const CONTACT_STATUSES: [&str; 6] = [
    "pending", "dialing", "reached", "retrying", "failed", "called",
];
