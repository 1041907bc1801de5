use std::task::Waker;

use super::*;
use crate::config::Config;
use crate::metrics::Metrics;

const CHUNK: &[u8] = b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n";

/// An upstream that has these events ready, one at every poll, then nothing more, ever (its end
/// never polled); `repeat(CHUNK)`: always ahead of the client.
struct Upstream<I>(I);

impl<I: Iterator<Item = &'static [u8]> + Unpin> Body for Upstream<I> {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self.0.next() {
            Some(event) => Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(event))))),
            None => Poll::Pending,
        }
    }
}

fn stream<B>(inner: B, idle: Duration, drain: &Arc<DrainOver>) -> MeteredBody<B> {
    stream_metered(inner, idle, drain, Metrics::new().unwrap())
}

fn stream_metered<B>(
    inner: B,
    idle: Duration,
    drain: &Arc<DrainOver>,
    metrics: Arc<Metrics>,
) -> MeteredBody<B> {
    let y = "upstreams: { u: { url: \"http://127.0.0.1:1/v1\" } }\nmodels: { m: { upstream: u, id: gpt-4o } }\nroutes: [{ name: r, split: [{ model: m }] }]\n";
    let cfg = Config::from_yaml(y, &|_| None).unwrap();
    let shared = crate::state::Shared::new(cfg, metrics).unwrap();
    let arm = shared.live.load().arm_meter(0, 0, 0).unwrap();
    let meter = RequestMeter::start(arm, Instant::now(), "chat", true, "id".into(), 0, vec![]);
    let limits = BodyLimits {
        idle,
        deadline: None,
        drain: Arc::clone(drain),
        max_sse_event: 1 << 20,
    };
    MeteredBody::sse(inner, meter, false, limits)
}

fn poll<B: Body<Data = Bytes, Error = std::io::Error> + Unpin>(
    body: &mut MeteredBody<B>,
) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
    Pin::new(body).poll_frame(&mut Context::from_waker(Waker::noop()))
}

fn data(p: Poll<Option<Result<Frame<Bytes>, BoxError>>>) -> Bytes {
    match p {
        Poll::Ready(Some(Ok(f))) => f.into_data().unwrap(),
        other => panic!(
            "expected a data frame, got {:?}",
            other.map(|o| o.is_some())
        ),
    }
}

#[tokio::test]
async fn the_drain_ends_a_stream_whose_upstream_never_waits() {
    let drain = Arc::new(DrainOver::default());
    let mut body = stream(
        Upstream(std::iter::repeat(CHUNK)),
        Duration::from_secs(60),
        &drain,
    );
    for _ in 0..3 {
        assert!(data(poll(&mut body)).starts_with(b"data: {\"choices\""));
    }
    drain.fire();
    let last = data(poll(&mut body));
    assert!(
        std::str::from_utf8(&last)
            .unwrap()
            .contains("shutting down"),
        "an error event, not more of the stream"
    );
    assert!(matches!(poll(&mut body), Poll::Ready(None)));
}

#[tokio::test]
async fn the_idle_limit_counts_from_the_first_wait_not_from_the_frame() {
    let drain = Arc::new(DrainOver::default());
    let idle = Duration::from_millis(300);
    let mut body = stream(Upstream(std::iter::once(CHUNK)), idle, &drain);
    data(poll(&mut body));
    // a client slower than the idle limit to ask for more: the upstream has not stalled yet
    tokio::time::sleep(idle * 3).await;
    let waited = Instant::now();
    assert!(poll(&mut body).is_pending());
    let stall = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx));
    let end = tokio::time::timeout(Duration::from_secs(10), stall).await;
    let end = data(Poll::Ready(end.expect("the stall ends the stream")));
    assert!(std::str::from_utf8(&end)
        .unwrap()
        .contains("idle time limit"));
    assert!(waited.elapsed() >= idle - Duration::from_millis(20));
}

/// The outcome label of the one request a test's metrics recorded.
fn outcome_recorded(metrics: &Metrics) -> String {
    let text = String::from_utf8(metrics.encode()).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("tailor_requests_total{"))
        .expect("a request recorded");
    assert!(line.ends_with(" 1"), "{line}");
    line.split("outcome=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_client_that_hangs_up_after_the_end_marker_got_the_whole_answer() {
    let drain = Arc::new(DrainOver::default());
    // the marker as servers spell it: with or without the space, CRLF, cut across two reads;
    // a marker cut short is not one
    for (events, outcome) in [
        (vec![CHUNK, b"data: [DONE]\n\n"], "ok"),
        (vec![CHUNK, b"data:[DONE]\r\n\r\n"], "ok"),
        (vec![CHUNK, b"data: [DO", b"NE]\n\n"], "ok"),
        (vec![CHUNK, b"data: [DON"], "client_cancelled"),
        (vec![CHUNK], "client_cancelled"),
    ] {
        let metrics = Metrics::new().unwrap();
        let mut body = stream_metered(
            Upstream(events.into_iter()),
            Duration::from_secs(60),
            &drain,
            metrics.clone(),
        );
        // everything the upstream sent, read (a piece of an event waits for the rest)
        let mut sent = Vec::new();
        while let Poll::Ready(Some(frame)) = poll(&mut body) {
            sent.extend_from_slice(&frame.unwrap().into_data().unwrap());
        }
        assert!(sent.starts_with(CHUNK));
        assert!(poll(&mut body).is_pending());
        drop(body);
        assert_eq!(outcome_recorded(&metrics), outcome);
    }
}
