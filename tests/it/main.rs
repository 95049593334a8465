mod agents;
mod auth;
mod calls;
mod cli;
mod common;
mod durability;
mod http;
mod schema;
