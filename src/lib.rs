//! Switchyard: a self-hosted event-source router and integration gateway.
//!
//! See ARCHITECTURE.md at the repository root for the map of the code.

pub mod cli;
pub mod config;
pub mod destination;
pub mod engine;
pub mod function;
pub mod pipeline;
pub mod queue;
pub mod server;
pub mod shape;
mod sources;
