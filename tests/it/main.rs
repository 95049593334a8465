mod agents;
mod calls;
mod cli;
mod common;
mod schema;
