//! The benchmarks use the test guest plugins; they are built exactly as for the tests.
include!("../tests/build.rs");
