//! Bounded capture of a guest's stdout and stderr.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// What a guest wrote to stdout or stderr during one invocation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    /// The first bytes written, up to the policy's bound.
    pub bytes: Vec<u8>,
    /// Whether the guest wrote more than the bound; the rest was dropped.
    pub truncated: bool,
}

impl Output {
    /// The captured bytes as text, with invalid UTF-8 replaced.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

/// A stdout/stderr sink that keeps the first `limit` bytes and silently drops the rest.
///
/// Wasmtime's `MemoryOutputPipe` fails the guest's write once full, which makes a Rust guest's
/// `println!` panic. A chatty function should lose its surplus output, not its result.
#[derive(Clone)]
pub(crate) struct Capture(Arc<Mutex<Output>>, usize);

impl Capture {
    pub fn new(limit: usize) -> Self {
        Self(Arc::default(), limit)
    }

    fn lock(&self) -> MutexGuard<'_, Output> {
        // A poisoned lock only means another writer panicked mid-append; the bytes are intact.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn append(&self, bytes: &[u8]) {
        let mut out = self.lock();
        let room = self.1.saturating_sub(out.bytes.len());
        out.bytes.extend_from_slice(&bytes[..bytes.len().min(room)]);
        out.truncated |= bytes.len() > room;
    }

    pub fn take(&self) -> Output {
        std::mem::take(&mut *self.lock())
    }
}

/// How much the guest may write before it waits for readiness. Writes never block: the bound is
/// only a chunk size.
const WRITE_CHUNK: usize = 64 * 1024;

#[wasmtime_wasi::async_trait]
impl Pollable for Capture {
    async fn ready(&mut self) {}
}

impl OutputStream for Capture {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.append(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_CHUNK)
    }
}

impl tokio::io::AsyncWrite for Capture {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl IsTerminal for Capture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Capture {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_first_bytes_and_flags_the_rest() {
        let c = Capture::new(5);
        c.append(b"abc");
        assert!(!c.lock().truncated);
        c.append(b"defg");
        let out = c.take();
        assert_eq!(out.bytes, b"abcde");
        assert!(out.truncated);
    }
}
