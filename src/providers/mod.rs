//! Clients for the outside services a call talks to.

pub mod llm;
