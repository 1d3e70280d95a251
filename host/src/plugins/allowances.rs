//! What the plugin host allows plugins at most, which the configuration checks its values
//! against: the memory ceiling and the WASI interfaces manifests may ask for. It names
//! nothing else of the host, so that `config` and `plugins` do not import each other.

use serde::Deserialize;

/// Largest memory a manifest may ask for; the pooling allocator is sized for it.
pub const MAX_MEMORY_MIB: u64 = 1024;

/// Which WASI interfaces manifests may ask for. Default: none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct WasiAllowances {
    pub clock: bool,
    pub random: bool,
}
