//! Per-plugin metrics. Handles are registered once per chain slot (at its first call after a
//! load or reload), so a call only bumps atomics; the Prometheus recorder must be installed
//! before the first call.

use metrics::{Counter, Histogram, counter, histogram};

use super::info::PluginKind;

/// What one call of one plugin came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Ok,
    Deny,
    Trap,
    Timeout,
    OutOfMemory,
    InstantiateError,
    NotLoaded,
}

impl Outcome {
    const ALL: [Outcome; 7] = [
        Outcome::Ok,
        Outcome::Deny,
        Outcome::Trap,
        Outcome::Timeout,
        Outcome::OutOfMemory,
        Outcome::InstantiateError,
        Outcome::NotLoaded,
    ];

    fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Deny => "deny",
            Outcome::Trap => "trap",
            Outcome::Timeout => "timeout",
            Outcome::OutOfMemory => "out_of_memory",
            Outcome::InstantiateError => "instantiate_error",
            Outcome::NotLoaded => "not_loaded",
        }
    }
}

pub(crate) struct Meters {
    calls: [Counter; Outcome::ALL.len()],
    denials: Counter,
    traps: Counter,
    timeouts: Counter,
    duration: Histogram,
}

impl Meters {
    pub(crate) fn new(plugin: &str, kind: &str) -> Meters {
        let calls = Outcome::ALL.map(|outcome| {
            counter!("hestia_plugin_calls_total",
                "plugin" => plugin.to_string(), "kind" => kind.to_string(), "outcome" => outcome.label())
        });
        Meters {
            calls,
            denials: counter!("hestia_plugin_denials_total", "plugin" => plugin.to_string(), "kind" => kind.to_string()),
            traps: counter!("hestia_plugin_traps_total", "plugin" => plugin.to_string(), "kind" => kind.to_string()),
            timeouts: counter!("hestia_plugin_timeouts_total", "plugin" => plugin.to_string(), "kind" => kind.to_string()),
            duration: histogram!("hestia_plugin_call_duration_seconds", "plugin" => plugin.to_string()),
        }
    }

    /// Records one call; `denied` is whether it ended in a denial (by the plugin, or by
    /// failing closed).
    pub(crate) fn record(&self, outcome: Outcome, denied: bool, seconds: f64) {
        if let Some(i) = Outcome::ALL.iter().position(|o| *o == outcome) {
            self.calls[i].increment(1);
        }
        match outcome {
            Outcome::Trap | Outcome::OutOfMemory | Outcome::InstantiateError => {
                self.traps.increment(1)
            }
            Outcome::Timeout => self.timeouts.increment(1),
            Outcome::Ok | Outcome::Deny | Outcome::NotLoaded => {}
        }
        if denied {
            self.denials.increment(1);
        }
        self.duration.record(seconds);
    }
}

/// A plugin file that failed to load (or to reload).
pub(crate) fn load_failed(plugin: &str, kind: Option<PluginKind>) {
    let kind = kind.map_or("unknown", PluginKind::as_str);
    counter!("hestia_plugin_load_failures_total", "plugin" => plugin.to_string(), "kind" => kind)
        .increment(1);
}
