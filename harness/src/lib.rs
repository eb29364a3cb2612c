//! The harness that starts and watches real processes, shared by the
//! integration tests (`tribune-tests`) and the load generator
//! (`tribune-loadtest`). It is a development tool: nothing in the hub
//! depends on it.
//!
//! Layout:
//! - [`procstat`]: memory and CPU time of a process, from `/proc`.

pub mod procstat;
