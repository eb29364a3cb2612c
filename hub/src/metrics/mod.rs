//! Every metric name of a hub node, in one place (OpenMetrics text at
//! `/metrics`, on the internal listener).
//!
//! A dashboard and its alerts must see a series before its first event:
//! `rate()` over a series that does not exist is no data, not zero, so an
//! alert on refusals or 4008 closes would stay silent on a fresh node. Every
//! labelled family is therefore created with all its known label values at
//! zero (the lists in `labels.rs`); a label value outside a list still counts.
//! Names carry the thing counted (`tribune_messages_delivered_total`, not
//! `tribune_deliveries_total`), and one event has one counter: slow
//! consumers are `tribune_closes_total{code="4008"}`.
//!
//! Files: `families.rs`, the [`Metrics`] struct, one field per family,
//! grouped by area; `register.rs`, building it and registering every family
//! with its name and help text, and the text exposition; `labels.rs`, the
//! known label values and their creation at zero; `record.rs`, the helpers
//! that count one event on a labelled family or a histogram.

mod families;
mod labels;
mod record;
mod register;
#[cfg(test)]
mod tests;

pub use families::{Labels, Metrics};
