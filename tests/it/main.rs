mod auth;
mod cli;
mod common;
mod durability;
mod schema;
