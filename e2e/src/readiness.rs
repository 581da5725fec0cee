//! Waiting, with a deadline, for a process to start answering.

use std::{future::Future, time::Duration};

use tokio::time::{Instant, sleep};

use crate::process::Service;

/// A process did not become ready in time.
#[derive(Debug, thiserror::Error)]
#[error("{what} was not ready after {waited:?}: {last}; see its log at {log}")]
pub struct NotReady {
    /// What was waited for, e.g. `kube-apiserver /readyz`.
    pub what: String,
    /// How long.
    pub waited: Duration,
    /// The last answer or error.
    pub last: String,
    /// Where to look for the reason.
    pub log: String,
}

/// Calls `probe` every 100 ms until it returns `Ok`, or fails once `timeout` has passed or
/// the `watched` process has exited, whichever comes first.
///
/// `probe` returns `Err` with a description of what it saw, reported if time runs out.
///
/// # Errors
///
/// [`NotReady`] with the last thing the probe saw and the watched process's log.
pub async fn wait_until<F, Fut>(
    what: &str,
    watched: &Service,
    timeout: Duration,
    mut probe: F,
) -> Result<(), NotReady>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let start = Instant::now();
    loop {
        let last = match probe().await {
            Ok(()) => return Ok(()),
            Err(last) if !watched.is_running() => format!("{} exited ({last})", watched.name),
            Err(_) if start.elapsed() < timeout => {
                sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(last) => last,
        };
        return Err(NotReady {
            what: what.to_owned(),
            waited: start.elapsed(),
            last,
            log: watched.log.display().to_string(),
        });
    }
}

/// Probes `url` with a plain HTTP GET; ready when it answers with `expected` status.
pub async fn http_status(url: &str, expected: u16) -> Result<(), String> {
    let client =
        crate::http::client().timeout(Duration::from_secs(2)).build().map_err(|e| e.to_string())?;
    match client.get(url).send().await {
        Ok(response) if response.status().as_u16() == expected => Ok(()),
        Ok(response) => Err(format!("GET {url} answered {}", response.status())),
        Err(error) => Err(format!("GET {url}: {error}")),
    }
}
