//! hyper's request-head timeout (`header_read_timeout`) without an allocation per request.
//!
//! hyper asks its `Timer` for a new boxed `Sleep` for every request head it waits for on an
//! HTTP/1 connection (it drops the previous one once a head is parsed), and hyper-util's
//! `TokioTimer` allocates each: one heap allocation per request, a tenth of the proxy's. No
//! crate offers a timer that reuses one sleep per connection, hence this one:
//!
//! - [`scoped`] runs a connection future with one `tokio::time::Sleep` of its own, made once per
//!   connection and lent to a thread-local slot only while the connection is being polled;
//! - [`HeadTimer::sleep_until`] re-arms that sleep (no allocation) and hands hyper a zero-sized
//!   [`ConnSleep`] (a `Box` of a zero-sized type does not allocate), whose `poll` polls the
//!   connection's sleep through the slot. hyper polls and drops it only inside the connection's
//!   own `poll`, so the slot always holds that connection's sleep then.
//!
//! Outside a scope (a connection served without [`scoped`]), `sleep_until` falls back to
//! hyper-util's timer, so the timeout holds either way. The sleep of a finished head stays
//! armed until its deadline (hyper drops only the zero-sized handle): at worst one spurious
//! wake-up of an idle connection, which hyper ignores.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::rt::{Sleep, Timer};
use hyper_util::rt::TokioTimer;

/// A connection's sleep.
type ConnTimer = Pin<Box<tokio::time::Sleep>>;

thread_local! {
    /// The sleep of the connection being polled on this thread, if it runs in [`scoped`].
    static CURRENT: Cell<Option<ConnTimer>> = const { Cell::new(None) };
}

/// Run `f` on the current connection's sleep, if there is one.
fn with_current<R>(f: impl FnOnce(Pin<&mut tokio::time::Sleep>) -> R) -> Option<R> {
    CURRENT.with(|slot| {
        let mut timer = slot.take()?;
        let out = f(timer.as_mut());
        slot.set(Some(timer));
        Some(out)
    })
}

/// Puts the previous slot content back when the poll ends, even by a panic.
struct Lent<'a> {
    own: &'a mut Option<ConnTimer>,
    previous: Option<ConnTimer>,
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        *self.own = CURRENT.with(|slot| slot.replace(self.previous.take()));
    }
}

/// Drive a connection future with a sleep of its own for [`HeadTimer`].
pub async fn scoped<F: Future>(connection: F) -> F::Output {
    let mut connection = std::pin::pin!(connection);
    // Far in the future until hyper arms it; a sleep registers with the timer only when polled.
    let mut own: Option<ConnTimer> = Some(Box::pin(tokio::time::sleep(Duration::from_secs(
        60 * 60 * 24 * 365,
    ))));
    std::future::poll_fn(move |cx| {
        let previous = CURRENT.with(|slot| slot.replace(own.take()));
        let _lent = Lent {
            own: &mut own,
            previous,
        };
        connection.as_mut().poll(cx)
    })
    .await
}

/// The HTTP/1 timer of the proxy's listeners (see the module docs).
#[derive(Clone, Debug, Default)]
pub struct HeadTimer;

/// hyper's handle on the connection's sleep: zero-sized, so boxing it allocates nothing.
struct ConnSleep;

impl Future for ConnSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // Outside a scope there is no sleep to wait on: never time out rather than at once.
        with_current(|sleep| sleep.poll(cx)).unwrap_or(Poll::Pending)
    }
}

impl Sleep for ConnSleep {}

impl Timer for HeadTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.sleep_until(self.now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        match with_current(|sleep| sleep.reset(deadline.into())) {
            Some(()) => Box::pin(ConnSleep),
            None => TokioTimer::new().sleep_until(deadline),
        }
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn Sleep>>, new_deadline: Instant) {
        *sleep = self.sleep_until(new_deadline);
    }

    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[tokio::test]
    async fn in_a_scope_the_handle_waits_for_the_connections_sleep() {
        let timer = HeadTimer;
        let (first, both) = scoped(async move {
            let start = tokio::time::Instant::now();
            timer.sleep(60 * MS).await;
            let first = start.elapsed();
            // Re-armed, not a new allocation: the same sleep, a later deadline.
            timer.sleep(40 * MS).await;
            (first, start.elapsed())
        })
        .await;
        assert!(first >= 60 * MS, "{first:?}");
        assert!(both >= 100 * MS, "{both:?}");
    }

    #[tokio::test]
    async fn outside_a_scope_it_falls_back_to_a_tokio_sleep() {
        let start = tokio::time::Instant::now();
        HeadTimer.sleep(40 * MS).await;
        assert!(start.elapsed() >= 40 * MS);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn scopes_on_one_thread_do_not_share_sleeps() {
        let start = tokio::time::Instant::now();
        let slow = tokio::spawn(scoped(async move {
            HeadTimer.sleep(300 * MS).await;
            start.elapsed()
        }));
        let quick = tokio::spawn(scoped(async move {
            HeadTimer.sleep(30 * MS).await;
            start.elapsed()
        }));
        let (slow, quick) = (slow.await.expect("slow"), quick.await.expect("quick"));
        assert!(quick >= 30 * MS && quick < 300 * MS, "{quick:?}");
        assert!(slow >= 300 * MS, "{slow:?}");
    }
}
