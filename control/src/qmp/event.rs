//! Asynchronous QMP events: `{"event": .., "data": .., "timestamp": ..}`
//! broadcast to every monitor connection that completed capabilities
//! negotiation (QEMU's `monitor_qapi_event_emit()` skips the others).

use super::conn::MonitorConn;
use serde_json::{json, Map, Value};
use std::sync::{Arc, Mutex, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

/// Handle for emitting QMP events; clones share one set of subscribers.
/// Every `MonitorServer` started with (a clone of) a bus delivers its
/// events to its negotiated connections.
#[derive(Debug, Clone, Default)]
pub struct EventBus {
    subscribers: Arc<Mutex<Vec<Weak<MonitorConn>>>>,
}

impl EventBus {
    pub fn new() -> Self {
        Self::default()
    }

    /// Emits event `event` to all negotiated monitors. `data` is omitted
    /// from the message when it is `null`, as QEMU does for events without
    /// arguments.
    pub fn emit(&self, event: &str, data: Value) {
        let msg = event_message(event, data, SystemTime::now());
        // Copy the live list out so slow clients don't hold the lock
        // (and connect/disconnect can proceed) while we write.
        let targets: Vec<Arc<MonitorConn>> = {
            let mut subs = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
            subs.retain(|w| w.upgrade().is_some_and(|c| !c.is_closed()));
            subs.iter().filter_map(Weak::upgrade).collect()
        };
        for conn in targets.iter().filter(|c| c.is_negotiated()) {
            conn.send(&msg);
        }
    }

    pub(crate) fn subscribe(&self, conn: &Arc<MonitorConn>) {
        let mut subs = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        subs.retain(|w| w.strong_count() > 0);
        subs.push(Arc::downgrade(conn));
    }
}

/// Builds the event message with QEMU's wall-clock timestamp.
pub(crate) fn event_message(event: &str, data: Value, now: SystemTime) -> Value {
    // A clock before 1970 is a misconfiguration; report the epoch.
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let mut m = Map::new();
    m.insert("event".into(), Value::String(event.to_string()));
    if !data.is_null() {
        m.insert("data".into(), data);
    }
    m.insert(
        "timestamp".into(),
        json!({ "seconds": since.as_secs(), "microseconds": since.subsec_micros() }),
    );
    Value::Object(m)
}
