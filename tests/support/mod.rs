//! Test support shared by integration-test binaries: stand-ins for the
//! services Switchyard talks to. Include it from a test crate with
//! `#[path = "../support/mod.rs"] mod support;`.

pub mod fake_upstream;
