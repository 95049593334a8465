mod cli;
mod common;
mod schema;
