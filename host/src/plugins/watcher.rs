//! Hot reload: a debounced watch of the plugin directory. Each batch of changes rescans the
//! directory on this thread (compilation included), then swaps the new snapshot in; calls
//! never wait for it. Operators should still move files in atomically (write, then rename):
//! a half-written file fails to load and is retried at the next change.

use std::path::Path;
use std::sync::Weak;
use std::sync::mpsc::{RecvTimeoutError, channel};
use std::thread;
use std::time::Duration;

use notify::RecursiveMode;
use notify_debouncer_mini::{DebounceEventResult, Debouncer, new_debouncer};

const DEBOUNCE: Duration = Duration::from_millis(100);
/// How often the thread checks whether the host is gone while nothing changes.
const IDLE_CHECK: Duration = Duration::from_millis(500);

/// Keeps the watch alive; dropping it (with the host) ends the thread.
pub(crate) struct Watcher {
    _debouncer: Debouncer<notify::RecommendedWatcher>,
}

impl Watcher {
    /// Watches `dir` and calls `reload` on `host` after each batch of changes to `*.wasm`
    /// or `*.toml` files, until `host` is gone.
    pub(crate) fn start<H: Send + Sync + 'static>(
        dir: &Path,
        host: Weak<H>,
        reload: fn(&H),
    ) -> Result<Watcher, String> {
        let (tx, rx) = channel::<DebounceEventResult>();
        let mut debouncer =
            new_debouncer(DEBOUNCE, tx).map_err(|e| format!("cannot watch: {e}"))?;
        debouncer
            .watcher()
            .watch(dir, RecursiveMode::NonRecursive)
            .map_err(|e| format!("cannot watch: {e}"))?;
        thread::Builder::new()
            .name("hestia-plugin-watch".into())
            .spawn(move || {
                loop {
                    match rx.recv_timeout(IDLE_CHECK) {
                        Ok(Ok(events)) => {
                            let relevant = events.iter().any(|e| {
                                e.path
                                    .extension()
                                    .is_some_and(|x| x == "wasm" || x == "toml")
                            });
                            let Some(host) = host.upgrade() else { break };
                            if relevant {
                                reload(&host);
                            }
                        }
                        Ok(Err(e)) => tracing::warn!("plugin directory watch: {e}"),
                        Err(RecvTimeoutError::Timeout) => {
                            if host.strong_count() == 0 {
                                break;
                            }
                        }
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
            })
            .map_err(|e| format!("cannot start the watcher thread: {e}"))?;
        Ok(Watcher {
            _debouncer: debouncer,
        })
    }
}
