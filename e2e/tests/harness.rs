//! The whole story on the local cluster: `kubectl apply` of an AgentHarness to a Ready harness,
//! with the atelet, ate-controller and harness-operator as processes and the registry behind
//! a link of a few Mbit/s, so that each pull takes tens of seconds and can be interrupted.

use std::time::Duration;

use e2e::{
    image::{self, PushedImage},
    link::LinkConfig,
    story::{Story, StoryConfig},
};
use proto::{
    AgentHarness,
    conditions::{self, types},
};

const MIB: u64 = 1024 * 1024;

/// About 25 s at 8 Mbit/s.
const CI_IMAGE_LAYERS: [u64; 2] = [16 * MIB, 8 * MIB];

fn link_8_mbps() -> StoryConfig {
    StoryConfig {
        link: LinkConfig { mbps: Some(8.0), ..LinkConfig::default() },
        ..StoryConfig::default()
    }
}

fn image_bytes(image: &PushedImage) -> u64 {
    image.layer_bytes() + image.config.size
}

fn condition<'a>(
    harness: &'a AgentHarness,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    conditions::find(&harness.status.as_ref()?.conditions, type_)
}

fn is_ready(harness: &AgentHarness) -> bool {
    condition(harness, types::READY).is_some_and(|c| c.status == "True")
}

fn bytes_done(harness: &AgentHarness) -> u64 {
    harness.status.as_ref().and_then(|s| s.progress.as_ref()).map_or(0, |p| p.bytes_done)
}

/// Waits until the harness's pull has done at least `fraction` of `total` bytes.
async fn wait_for_fraction(story: &Story<'_>, name: &str, total: u64, fraction: f64) {
    let wanted = (total as f64 * fraction) as u64;
    story.watch_harness(name, Duration::from_secs(90), |_| {}, |h| bytes_done(h) >= wanted).await;
}

/// The template's `ImageReady` message, once Ready.
async fn image_ready_message(story: &Story<'_>, name: &str) -> String {
    let template = story.template(name).await.expect("the harness's ActorTemplate");
    let status = template.status.expect("a template status");
    let image_ready = conditions::find(&status.conditions, types::IMAGE_READY).expect("ImageReady");
    assert_eq!(image_ready.status, "True", "{image_ready:?}");
    image_ready.message.clone()
}

#[tokio::test]
async fn a_harness_becomes_ready_and_its_progress_rises_on_the_way() {
    let work = tempfile::tempdir().unwrap();
    let image =
        image::push_test_image("harness-test", "ready", &CI_IMAGE_LAYERS, work.path()).await;
    let story = Story::start(e2e::cluster::shared(), "story-ready", link_8_mbps()).await;

    story.apply_harness("claw", &image.reference_via(story.link.addr())).await;
    let mut progress = Vec::new();
    let harness = story
        .watch_harness(
            "claw",
            Duration::from_secs(150),
            |h| {
                // The pull's progress, until the template is Ready and the actor's step begins.
                let pulled =
                    condition(h, types::ACTOR_TEMPLATE_READY).is_some_and(|c| c.status == "True");
                let progress_now = h.status.as_ref().and_then(|s| s.progress.as_ref());
                if let Some(p) =
                    progress_now.filter(|p| !pulled && progress.last() != Some(&p.bytes_done))
                {
                    progress.push(p.bytes_done);
                }
            },
            is_ready,
        )
        .await;

    assert!(progress.len() >= 5, "too few progress values: {progress:?}");
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "progress went back: {progress:?}");
    for type_ in [types::ACCEPTED, types::ACTOR_TEMPLATE_READY, types::ACTOR_READY] {
        let c = condition(&harness, type_).unwrap();
        assert_eq!(c.status, "True", "{c:?}");
    }
    let message = image_ready_message(&story, "claw").await;
    let megabytes = image_bytes(&image).div_ceil(1_000_000);
    assert!(message.contains(&format!("({megabytes} MB)")), "{message}");
    assert!(story.link.bytes_served() <= image_bytes(&image) + image_bytes(&image) / 50);
}

/// What is killed with SIGKILL in the middle of a pull.
#[derive(Clone, Copy, Debug)]
enum Crash {
    AteController,
    Atelet,
}

/// Kills `crash` at 40% of the pull and checks that the operation named in the template goes
/// on to Ready, with at most `slack` bytes downloaded twice.
async fn crash_mid_pull(crash: Crash, prefix: &str, slack: u64) {
    let work = tempfile::tempdir().unwrap();
    let image = image::push_test_image("harness-test", prefix, &CI_IMAGE_LAYERS, work.path()).await;
    let mut story = Story::start(e2e::cluster::shared(), prefix, link_8_mbps()).await;

    story.apply_harness("claw", &image.reference_via(story.link.addr())).await;
    wait_for_fraction(&story, "claw", image_bytes(&image), 0.4).await;
    let operation = story.template("claw").await.and_then(|t| t.status?.operation).unwrap();
    match crash {
        Crash::AteController => story.restart_controller().await,
        Crash::Atelet => story.restart_atelet().await,
    }

    // The same operation goes on: the template still names it once bytes have moved on.
    wait_for_fraction(&story, "claw", image_bytes(&image), 0.7).await;
    let now = story.template("claw").await.and_then(|t| t.status?.operation);
    assert_eq!(now.map(|o| o.name), Some(operation.name), "after restarting {crash:?}");
    story.watch_harness("claw", Duration::from_secs(150), |_| {}, is_ready).await;
    let served = story.link.bytes_served();
    assert!(served <= image_bytes(&image) + slack, "served {served} after restarting {crash:?}");
}

#[tokio::test]
async fn a_restarted_ate_controller_continues_the_same_pull() {
    // The atelet never stopped: nothing is downloaded twice (the slack is for manifests).
    crash_mid_pull(Crash::AteController, "story-ctl", MIB / 2).await;
}

#[tokio::test]
async fn a_restarted_atelet_continues_the_same_pull() {
    // Both layers are in flight when it dies: at most a chunk of each comes again.
    crash_mid_pull(Crash::Atelet, "story-atelet", 4 * MIB).await;
}

#[tokio::test]
async fn a_stall_is_shown_and_the_pull_finishes_when_traffic_returns() {
    let work = tempfile::tempdir().unwrap();
    let image =
        image::push_test_image("harness-test", "stall", &CI_IMAGE_LAYERS, work.path()).await;
    let config = StoryConfig { stall_window: Duration::from_secs(5), ..link_8_mbps() };
    let story = Story::start(e2e::cluster::shared(), "story-stall", config).await;

    story.apply_harness("claw", &image.reference_via(story.link.addr())).await;
    wait_for_fraction(&story, "claw", image_bytes(&image), 0.3).await;
    story.link.set_paused(true);
    let stalled = story
        .watch_harness(
            "claw",
            Duration::from_secs(60),
            |_| {},
            |h| condition(h, types::ACTOR_TEMPLATE_READY).is_some_and(|c| c.reason == "Stalled"),
        )
        .await;
    story.link.set_paused(false);
    story.watch_harness("claw", Duration::from_secs(150), |_| {}, is_ready).await;

    let message = &condition(&stalled, types::ACTOR_TEMPLATE_READY).unwrap().message;
    assert!(message.contains("No progress pulling"), "{message}");
    let served = story.link.bytes_served();
    assert!(served <= image_bytes(&image) + 4 * MIB, "served {served}");
}

#[tokio::test]
async fn an_image_that_does_not_exist_fails_the_harness_naming_it() {
    let story = Story::start(e2e::cluster::shared(), "story-missing", StoryConfig::default()).await;
    let missing = format!("{}/harness-test/missing@sha256:{}", story.link.addr(), "0".repeat(64));

    story.apply_harness("claw", &missing).await;
    let harness = story
        .watch_harness(
            "claw",
            Duration::from_secs(60),
            |_| {},
            |h| {
                condition(h, types::ACTOR_TEMPLATE_READY)
                    .is_some_and(|c| c.reason == "ImageNotFound")
            },
        )
        .await;

    let ready = condition(&harness, types::READY).unwrap();
    assert_eq!(ready.status, "False");
    let template = condition(&harness, types::ACTOR_TEMPLATE_READY).unwrap();
    assert!(template.message.contains("harness-test/missing"), "{}", template.message);
}

#[tokio::test]
async fn three_harnesses_on_one_image_are_ready_with_one_image_of_traffic() {
    let work = tempfile::tempdir().unwrap();
    let image =
        image::push_test_image("harness-test", "three", &CI_IMAGE_LAYERS, work.path()).await;
    let story = Story::start(e2e::cluster::shared(), "story-three", link_8_mbps()).await;

    let reference = image.reference_via(story.link.addr());
    for name in ["one", "two", "three"] {
        story.apply_harness(name, &reference).await;
    }
    for name in ["one", "two", "three"] {
        story.watch_harness(name, Duration::from_secs(150), |_| {}, is_ready).await;
    }

    let served = story.link.bytes_served();
    assert!(served <= image_bytes(&image) + image_bytes(&image) / 50, "served {served}");
}
