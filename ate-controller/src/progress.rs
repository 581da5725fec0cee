//! Turning a node operation's metadata into the progress people read in status.

use std::time::{Duration, SystemTime};

use proto::{
    atelet::{OperationMetadata, Phase},
    conditions::reasons,
    progress::Progress,
};

/// The step a phase stands for, as a person would name it.
pub fn step(phase: Phase) -> &'static str {
    match phase {
        Phase::Unspecified | Phase::Queued => "Queued",
        Phase::Resolving => "Resolving",
        Phase::Pulling => "Pulling",
        Phase::Unpacking => "Unpacking",
        Phase::Booting => "Booting",
        Phase::Checkpointing => "Checkpointing",
        Phase::Uploading => "Uploading",
        Phase::Downloading => "Downloading",
        Phase::Restoring => "Restoring",
        Phase::Succeeded => "Succeeded",
        Phase::Failed => "Failed",
        Phase::Cancelled => "Cancelled",
    }
}

/// Whole percent done, when the total is known.
pub fn percent(metadata: &OperationMetadata) -> Option<u64> {
    (metadata.bytes_total > 0)
        .then(|| (metadata.bytes_done.min(metadata.bytes_total) * 100) / metadata.bytes_total)
}

/// The progress of an operation, with a one-line summary such as
/// `Pulling image 45% (160/360 MB, 6.3 MB/s, ETA 32s)`.
pub fn from_metadata(metadata: &OperationMetadata) -> Progress {
    let step = step(metadata.phase());
    let summary = match (metadata.phase(), percent(metadata)) {
        (Phase::Pulling, Some(percent)) => {
            format!("Pulling image {percent}% ({})", detail(metadata))
        }
        (Phase::Resolving, _) => "Resolving image".to_owned(),
        (Phase::Unpacking, _) => "Unpacking image".to_owned(),
        (_, Some(percent)) => format!("{step} {percent}% ({})", detail(metadata)),
        (_, None) => step.to_owned(),
    };
    Progress {
        phase: step.to_owned(),
        bytes_done: metadata.bytes_done,
        bytes_total: metadata.bytes_total,
        bytes_per_second: metadata.bytes_per_second.max(0.0) as u64,
        eta_seconds: metadata.eta_seconds,
        summary,
    }
}

/// `160/360 MB, 6.3 MB/s, ETA 32s`, leaving out what is not known yet.
pub fn detail(metadata: &OperationMetadata) -> String {
    let mut parts = vec![format!(
        "{}/{} MB",
        metadata.bytes_done / 1_000_000,
        metadata.bytes_total.div_ceil(1_000_000)
    )];
    if metadata.bytes_per_second >= 1.0 {
        parts.push(format!("{:.1} MB/s", metadata.bytes_per_second / 1_000_000.0));
    }
    if let Some(eta) = metadata.eta_seconds {
        parts.push(format!("ETA {}", duration(eta)));
    }
    parts.join(", ")
}

/// `32s`, `4m05s`, `1h02m`.
pub fn duration(seconds: u64) -> String {
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m{:02}s", seconds / 60, seconds % 60),
        _ => format!("{}h{:02}m", seconds / 3600, (seconds % 3600) / 60),
    }
}

/// The `Ready` reason and message of an operation still running, e.g. `PullingImage` and
/// `Pulling ghcr.io/…@sha256:d52b…: 45% (160/360 MB, 6.3 MB/s, ETA 32s)`.
pub fn condition_line(
    metadata: &OperationMetadata,
    short: &str,
    node: &str,
) -> (&'static str, String) {
    match metadata.phase() {
        Phase::Pulling => (
            reasons::PULLING_IMAGE,
            format!("Pulling {short}: {}% ({})", percent(metadata).unwrap_or(0), detail(metadata)),
        ),
        Phase::Unpacking => (reasons::UNPACKING_IMAGE, format!("Unpacking {short} on node {node}")),
        Phase::Resolving => (reasons::RESOLVING_IMAGE, format!("Resolving {short} on node {node}")),
        _ => (reasons::PENDING, format!("Queued on node {node}")),
    }
}

/// The condition reason for an operation's failure reason: known ones keep their name.
pub fn failure_reason(reason: &str) -> &'static str {
    match reason {
        "ImageNotFound" => reasons::IMAGE_NOT_FOUND,
        "Unauthorized" => reasons::UNAUTHORIZED,
        "NoMatchingPlatform" => reasons::NO_MATCHING_PLATFORM,
        _ => reasons::FAILED,
    }
}

/// Whether the operation's last progress is older than the window.
pub fn stalled(metadata: &OperationMetadata, window: Duration) -> bool {
    let Some(last) = metadata.last_progress_time else { return false };
    let Ok(last) = SystemTime::try_from(last) else { return false };
    SystemTime::now().duration_since(last).is_ok_and(|quiet| quiet > window)
}

/// What a stalled operation is stuck on, for the condition message.
pub fn stuck_on(metadata: &OperationMetadata) -> String {
    let what =
        format!("{} {}", step(metadata.phase()).to_lowercase(), short_reference(&metadata.subject));
    match percent(metadata) {
        Some(percent) => format!("{what} at {percent}%"),
        None => what,
    }
}

/// `registry/repo@sha256:d52b…`: enough to recognise, short enough for a status line.
pub fn short_reference(image: &str) -> String {
    match image.split_once("@sha256:") {
        Some((repository, hex)) if hex.len() > 4 => format!("{repository}@sha256:{}…", &hex[..4]),
        _ => image.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pull_reads_as_percent_bytes_rate_and_eta() {
        let metadata = OperationMetadata {
            phase: Phase::Pulling as i32,
            bytes_done: 160_400_000,
            bytes_total: 360_000_000,
            bytes_per_second: 6_300_000.0,
            eta_seconds: Some(32),
            ..Default::default()
        };

        let progress = from_metadata(&metadata);

        assert_eq!(progress.summary, "Pulling image 44% (160/360 MB, 6.3 MB/s, ETA 32s)");
        assert_eq!(progress.phase, "Pulling");
        assert_eq!(progress.bytes_per_second, 6_300_000);
    }

    #[test]
    fn unknown_rate_and_eta_are_left_out() {
        let metadata = OperationMetadata {
            phase: Phase::Pulling as i32,
            bytes_done: 0,
            bytes_total: 360_000_000,
            ..Default::default()
        };

        assert_eq!(from_metadata(&metadata).summary, "Pulling image 0% (0/360 MB)");
    }

    #[test]
    fn durations_read_in_the_largest_sensible_unit() {
        let cases = [(0, "0s"), (59, "59s"), (245, "4m05s"), (3720, "1h02m")];
        for (seconds, expected) in cases {
            assert_eq!(duration(seconds), expected, "{seconds}");
        }
    }
}
