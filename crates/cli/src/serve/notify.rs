//! systemd's service notifications (`Type=notify`): readiness once the node listens, the
//! watchdog while its runtime runs, and stopping on a stop signal. Outside systemd
//! (`$NOTIFY_SOCKET` unset) each is nothing.

use sd_notify::NotifyState;

/// The node listens: systemd starts the units that wait for it. Starts the watchdog's pings if
/// the unit asks for them (`WatchdogSec=`).
pub fn ready() {
    send(&[NotifyState::Ready]);
    if let Some(period) = sd_notify::watchdog_enabled() {
        // Pings come from the async runtime that serves requests: if it stalls, they stop,
        // and systemd restarts the node. Twice per period, as sd_watchdog_enabled(3) advises.
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period / 2);
            loop {
                tick.tick().await;
                send(&[NotifyState::Watchdog]);
            }
        });
    }
}

/// A graceful stop has begun.
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

fn send(state: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!("cannot notify systemd: {e}");
    }
}
