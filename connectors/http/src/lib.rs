//! Switchyard's HTTP connector.
//!
//! - [`apigw`]: the webhook source's event, in the shape API Gateway's HTTP API
//!   (payload format 2.0) hands Lambda, and the mapping of a function's result
//!   back to an HTTP response, as API Gateway does it.
//! - [`HttpDestination`]: POSTs records to a URL; a send succeeds on 2xx.

pub mod apigw;
mod destination;

pub use destination::{HttpDestination, HttpDestinationConfig};
