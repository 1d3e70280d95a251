//! Hot reload: a watch of the plugin directory. Each batch of changes (events until the
//! directory has been quiet for [`DEBOUNCE`]) rescans the directory on this thread
//! (compilation included), then swaps the new snapshot in; calls never wait for it.
//! Operators should still move files in atomically (write, then rename): a half-written
//! file fails to load and is retried at the next change.
//!
//! Only changes count: inotify also reports every open and read of a file, and the rescan
//! itself opens each plugin's files, so counting those would rescan forever. The debounce
//! is written here rather than taken from `notify-debouncer-mini`, whose batches do not
//! say what happened to a path.

use std::path::Path;
use std::sync::Weak;
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::thread;
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};

const DEBOUNCE: Duration = Duration::from_millis(100);
/// The longest a batch of changes waits for the directory to be quiet.
const MAX_BATCH: Duration = Duration::from_secs(2);
/// How often the thread checks whether the host is gone while nothing changes.
const IDLE_CHECK: Duration = Duration::from_millis(500);

/// Keeps the watch alive; dropping it (with the host) ends the thread.
pub(crate) struct Watcher {
    _watcher: RecommendedWatcher,
}

impl Watcher {
    /// Watches `dir` and calls `reload` on `host` after each batch of changes to `*.wasm`
    /// or `*.toml` files, until `host` is gone.
    pub(crate) fn start<H: Send + Sync + 'static>(
        dir: &Path,
        host: Weak<H>,
        reload: fn(&H),
    ) -> Result<Watcher, String> {
        let (tx, rx) = channel::<Result<(), String>>();
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<Event>| {
            let sent = match event {
                Ok(event) if is_change(&event) => tx.send(Ok(())),
                Ok(_) => Ok(()),
                Err(e) => tx.send(Err(e.to_string())),
            };
            // The receiving thread is gone with the host: nothing is left to tell.
            drop(sent);
        })
        .map_err(|e| format!("cannot watch: {e}"))?;
        watcher
            .watch(dir, RecursiveMode::NonRecursive)
            .map_err(|e| format!("cannot watch: {e}"))?;
        thread::Builder::new()
            .name("hestia-plugin-watch".into())
            .spawn(move || {
                loop {
                    match rx.recv_timeout(IDLE_CHECK) {
                        Ok(Ok(())) => {
                            settle(&rx);
                            let Some(host) = host.upgrade() else { break };
                            reload(&host);
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
        Ok(Watcher { _watcher: watcher })
    }
}

/// Whether `event` changed a plugin's component or manifest: opens, reads and closes
/// after reading do not.
fn is_change(event: &Event) -> bool {
    let read_only = matches!(
        event.kind,
        EventKind::Access(
            AccessKind::Open(_)
                | AccessKind::Read
                | AccessKind::Any
                | AccessKind::Other
                | AccessKind::Close(AccessMode::Read | AccessMode::Execute | AccessMode::Any)
        )
    );
    !read_only
        && event
            .paths
            .iter()
            .any(|p| p.extension().is_some_and(|x| x == "wasm" || x == "toml"))
}

/// Takes the changes that follow the first of a batch until the directory has been quiet
/// for [`DEBOUNCE`] (at most [`MAX_BATCH`]).
fn settle(rx: &Receiver<Result<(), String>>) {
    let started = Instant::now();
    while started.elapsed() < MAX_BATCH {
        match rx.recv_timeout(DEBOUNCE) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("plugin directory watch: {e}"),
            Err(_) => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, ModifyKind, RenameMode};

    fn event(kind: EventKind, path: &str) -> Event {
        Event::new(kind).add_path(path.into())
    }

    #[test]
    fn reads_of_plugin_files_are_not_changes() {
        let open = EventKind::Access(AccessKind::Open(AccessMode::Any));
        assert!(!is_change(&event(open, "/p/a.wasm")));
        let closed = EventKind::Access(AccessKind::Close(AccessMode::Read));
        assert!(!is_change(&event(closed, "/p/a.toml")));
    }

    #[test]
    fn writes_renames_and_removals_of_plugin_files_are_changes() {
        let written = EventKind::Access(AccessKind::Close(AccessMode::Write));
        assert!(is_change(&event(written, "/p/a.wasm")));
        let renamed = EventKind::Modify(ModifyKind::Name(RenameMode::To));
        assert!(is_change(&event(renamed, "/p/a.wasm")));
        assert!(is_change(&event(
            EventKind::Create(CreateKind::File),
            "/p/a.toml"
        )));
        assert!(is_change(&event(
            EventKind::Remove(notify::event::RemoveKind::File),
            "/p/a.wasm"
        )));
    }

    struct Reloads(std::sync::atomic::AtomicUsize);

    fn count(r: &Reloads) {
        r.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// The count of reloads once it reaches `n` (or after 10 s), then after another second
    /// in which a reload loop would have added more.
    fn reloads_reach(r: &Reloads, n: usize) -> usize {
        let load = || r.0.load(std::sync::atomic::Ordering::SeqCst);
        let started = Instant::now();
        while load() < n && started.elapsed() < Duration::from_secs(10) {
            thread::sleep(Duration::from_millis(20));
        }
        thread::sleep(Duration::from_secs(1));
        load()
    }

    /// The rescan of a change reads the plugin's files; those reads must not start another
    /// rescan (a server did, twenty times a second, for as long as it ran).
    #[test]
    fn a_change_reloads_once_and_reading_the_files_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let host = std::sync::Arc::new(Reloads(Default::default()));
        let _watch = Watcher::start(dir.path(), std::sync::Arc::downgrade(&host), count).unwrap();
        std::fs::write(dir.path().join("p.wasm.tmp"), b"component").unwrap();
        std::fs::rename(dir.path().join("p.wasm.tmp"), dir.path().join("p.wasm")).unwrap();
        assert_eq!(reloads_reach(&host, 1), 1);
        for _ in 0..5 {
            std::fs::read(dir.path().join("p.wasm")).unwrap();
            std::fs::read_dir(dir.path()).unwrap().for_each(drop);
        }
        // A reload loop would have run several times within this second.
        assert_eq!(reloads_reach(&host, 1), 1);
        std::fs::remove_file(dir.path().join("p.wasm")).unwrap();
        assert_eq!(reloads_reach(&host, 2), 2);
    }

    #[test]
    fn other_files_are_not_plugins() {
        let renamed = EventKind::Modify(ModifyKind::Name(RenameMode::To));
        assert!(!is_change(&event(renamed, "/p/a.wasm.tmp")));
        assert!(!is_change(&event(renamed, "/p/notes.txt")));
    }
}
