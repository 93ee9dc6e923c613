//! Actions that belong to the application, requested from the console: reload the config file and
//! shut down. A channel rather than a callback, so the app (which owns the sessions' shared state)
//! needs no reference back to itself: its serve loop takes the receiver and answers.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

/// How long the console waits for the app to answer a reload.
const RELOAD_ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// A request for the application.
#[derive(Debug)]
pub enum ControlRequest {
    /// Re-read the config file and apply it; answer with the error text if that failed.
    Reload(oneshot::Sender<Result<(), String>>),
    /// Start a graceful shutdown, as on SIGTERM.
    Shutdown,
}

/// The sending side held by sessions, with the receiver parked until the app takes it.
#[derive(Debug)]
pub struct Control {
    tx: mpsc::UnboundedSender<ControlRequest>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<ControlRequest>>>,
}

impl Default for Control {
    fn default() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Control {
            tx,
            rx: Mutex::new(Some(rx)),
        }
    }
}

impl Control {
    /// The receiving side, once (the app's serve loop takes it).
    pub fn take_receiver(&self) -> Option<mpsc::UnboundedReceiver<ControlRequest>> {
        self.rx
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
    }

    /// Asks the app to reload and waits (bounded) for the outcome.
    pub async fn reload(&self) -> Result<(), String> {
        let (answer, outcome) = oneshot::channel();
        self.tx
            .send(ControlRequest::Reload(answer))
            .map_err(|_| not_serving())?;
        match tokio::time::timeout(RELOAD_ANSWER_TIMEOUT, outcome).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(not_serving()),
            Err(_) => Err("the proxy did not answer the reload request in time".to_string()),
        }
    }

    /// Asks the app to shut down gracefully.
    pub fn shutdown(&self) -> Result<(), String> {
        self.tx
            .send(ControlRequest::Shutdown)
            .map_err(|_| not_serving())
    }
}

fn not_serving() -> String {
    "the proxy is not serving (no control loop)".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn requests_reach_the_receiver_and_answers_come_back() {
        let control = Control::default();
        let mut rx = control.take_receiver().unwrap();
        assert!(control.take_receiver().is_none());
        let app = tokio::spawn(async move {
            if let Some(ControlRequest::Reload(answer)) = rx.recv().await {
                let _ = answer.send(Err("no config file to reload".into()));
            }
            matches!(rx.recv().await, Some(ControlRequest::Shutdown))
        });
        assert_eq!(
            control.reload().await.unwrap_err(),
            "no config file to reload"
        );
        control.shutdown().unwrap();
        assert!(app.await.unwrap());
        assert!(control.shutdown().is_err(), "receiver gone");
    }
}
