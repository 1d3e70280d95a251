//! `wasi:random/random` and `wasi:random/insecure` for plugins the settings give no
//! randomness: a fixed pseudo-random sequence, the same in every instance.
//!
//! Interpreter runtimes ask for random bytes as they start answering calls (CPython seeds its
//! hash function and `random` module from them), whether or not the plugin's own code uses
//! randomness; a trap there would make every Python plugin fail. The sequence carries no host
//! data and is predictable by design: a plugin that needs unpredictable bytes asks for
//! `[wasi] random = true`, which the settings must allow.

use wasmtime::component::HasData;
use wasmtime_wasi::p2::bindings::sync::random::{insecure, random};

/// Largest single request: what a runtime's start-up asks for is a few dozen bytes.
const MAX_BYTES: u64 = 1 << 20;

/// A splitmix64 generator from a fixed seed.
#[derive(Debug, Clone)]
pub(crate) struct FixedRandom {
    state: u64,
}

impl Default for FixedRandom {
    fn default() -> Self {
        FixedRandom {
            state: 0x4845_5354_4941_0001,
        }
    }
}

impl FixedRandom {
    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn bytes(&mut self, len: u64) -> wasmtime::Result<Vec<u8>> {
        if len > MAX_BYTES {
            wasmtime::bail!("asked for {len} random bytes; at most {MAX_BYTES} at once");
        }
        let mut out = Vec::with_capacity(len as usize);
        while out.len() < len as usize {
            out.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        out.truncate(len as usize);
        Ok(out)
    }
}

/// The `HasData` of the fixed sequence.
pub(crate) struct Fixed;

impl HasData for Fixed {
    type Data<'a> = &'a mut FixedRandom;
}

impl random::Host for FixedRandom {
    fn get_random_bytes(&mut self, len: u64) -> wasmtime::Result<Vec<u8>> {
        self.bytes(len)
    }

    fn get_random_u64(&mut self) -> wasmtime::Result<u64> {
        Ok(self.next_u64())
    }
}

impl insecure::Host for FixedRandom {
    fn get_insecure_random_bytes(&mut self, len: u64) -> wasmtime::Result<Vec<u8>> {
        self.bytes(len)
    }

    fn get_insecure_random_u64(&mut self) -> wasmtime::Result<u64> {
        Ok(self.next_u64())
    }
}

#[cfg(test)]
mod tests {
    use super::FixedRandom;

    #[test]
    fn every_instance_gets_the_same_sequence_and_long_asks_are_refused() {
        let (mut a, mut b) = (FixedRandom::default(), FixedRandom::default());
        let first = a.bytes(13).unwrap();
        assert_eq!(first.len(), 13);
        assert_eq!(first, b.bytes(13).unwrap());
        assert_ne!(a.bytes(13).unwrap(), first, "the sequence moves on");
        assert!(a.bytes(2 << 20).is_err());
    }
}
