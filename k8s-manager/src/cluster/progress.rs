//! The sink an operation reports to while it runs: the engine's (events to
//! the subscribers, states to the record), or a recorder in the unit tests.

use crate::model::config::ClusterConfig;
use crate::model::event::Event;
use crate::model::state::ClusterState;

/// Where a procedure reports: its events, and the state it moves the
/// cluster to (persisted by the engine, so that a GUI and the next manager
/// read it).
pub trait Progress: Send + Sync {
    fn emit(&self, event: Event);
    fn set_state(&self, state: ClusterState);
    /// The cluster is made (or, `None`, thrown away) with this
    /// configuration: what a later stop and reset take down.
    fn made(&self, config: Option<&ClusterConfig>);

    fn notice(&self, message: String) {
        self.emit(Event::Notice { message });
    }
}
