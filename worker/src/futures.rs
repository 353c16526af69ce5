//! The little async plumbing the engine needs, without an executor crate.
//!
//! Why: one generation loop serves two worlds. In the browser everything GPU is a promise (the
//! adapter, the device, every readback), so a forward pass is a future the worker awaits; the
//! CPU backend and the native CLI have nothing to wait for, so their futures are ready at the
//! first poll and [`block_on`] runs them in place. The GPU readback callbacks hand their result
//! over through a [`oneshot`] channel.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

/// A boxed future that may borrow and need not be `Send` (the worker has one thread).
pub type LocalBoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// Drives `future` to completion on this thread.
///
/// Natively it parks between polls (wgpu resolves its futures from `Device::poll`, which the
/// GPU code runs before awaiting). On wasm32 there is no parking: only futures that complete
/// without the event loop (the CPU backend's) may be given to it, and a pending one is polled
/// again in a spin.
pub fn block_on<F: Future>(future: F) -> F::Output {
    use std::task::Wake;

    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        match future.as_mut().poll(&mut cx) {
            Poll::Ready(value) => return value,
            #[cfg(not(target_arch = "wasm32"))]
            Poll::Pending => std::thread::park_timeout(std::time::Duration::from_millis(1)),
            #[cfg(target_arch = "wasm32")]
            Poll::Pending => std::hint::spin_loop(),
        }
    }
}

struct Shared<T> {
    value: Option<T>,
    /// The sender was dropped without sending.
    closed: bool,
    waker: Option<Waker>,
}

/// The sending half of a [`oneshot`] channel (`Send` when `T` is: wgpu's native callbacks
/// require it).
pub struct Sender<T>(Arc<Mutex<Shared<T>>>);

/// The receiving half: a future of `Some(value)`, or `None` if the sender was dropped unsent.
pub struct Receiver<T>(Arc<Mutex<Shared<T>>>);

/// A channel for one value, from a callback to the code awaiting it.
pub fn oneshot<T>() -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Mutex::new(Shared { value: None, closed: false, waker: None }));
    (Sender(shared.clone()), Receiver(shared))
}

impl<T> Sender<T> {
    pub fn send(self, value: T) {
        if let Ok(mut shared) = self.0.lock() {
            shared.value = Some(value);
        }
        // Drop wakes the receiver.
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        if let Ok(mut shared) = self.0.lock() {
            shared.closed = true;
            if let Some(waker) = shared.waker.take() {
                waker.wake();
            }
        }
    }
}

impl<T> Future for Receiver<T> {
    type Output = Option<T>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let Ok(mut shared) = self.0.lock() else { return Poll::Ready(None) };
        if let Some(value) = shared.value.take() {
            return Poll::Ready(Some(value));
        }
        if shared.closed {
            return Poll::Ready(None);
        }
        shared.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_sent_from_another_thread_arrives() {
        let (tx, rx) = oneshot();
        let sender = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            tx.send(7u32);
        });
        assert_eq!(block_on(rx), Some(7));
        sender.join().unwrap();
    }

    #[test]
    fn a_dropped_sender_ends_the_wait_with_none() {
        let (tx, rx) = oneshot::<u32>();
        drop(tx);
        assert_eq!(block_on(rx), None);
    }
}
