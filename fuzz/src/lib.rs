//! Fuzz targets of everything in hestia that parses untrusted input, and a driver for the
//! stable toolchain. See the README's "Fuzzing" section.

pub mod driver;
pub mod generators;
pub mod random;
pub mod seeds;
pub mod targets;

#[cfg(test)]
mod tests;
